//! The connections every service builds from the shared configuration.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::closeio::{
    Budget, BudgetError, CloseClient, CloseClientConfig, CloseError, LanePlaces, Slot,
};
use crate::config::CommonConfig;
use crate::crypto::SecretBox;
use crate::hull::{HullClient, HullClientConfig, HullError};
use crate::queue::Queue;
use crate::store::{Store, StoreError};

/// Why the clients could not be built (a configuration problem: nothing is connected yet).
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The Postgres pool.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Close client.
    #[error(transparent)]
    Close(#[from] CloseError),
    /// The Hull client.
    #[error(transparent)]
    Hull(#[from] HullError),
}

/// Postgres, RabbitMQ, Close and Hull, configured; connections open on demand.
#[derive(Clone)]
pub struct Clients {
    /// The Postgres store.
    pub store: Store,
    /// The RabbitMQ facade.
    pub queue: Queue,
    /// The Close API client.
    pub close: CloseClient,
    /// The Hull platform client.
    pub hull: HullClient,
}

impl Clients {
    /// Builds every client from the shared configuration, with a pool of `pool_size`
    /// Postgres connections.
    pub fn new(c: &CommonConfig, pool_size: usize) -> Result<Clients, ClientsError> {
        let store = Store::connect(
            &c.database_url,
            pool_size,
            SecretBox::new(c.encryption_key, c.encryption_key_previous),
        )?;
        let queue = Queue::lazy(&c.amqp_url, &c.queue_prefix);
        let close = CloseClient::with_budget(
            CloseClientConfig {
                base_url: c.close_api_url.clone(),
                timeout: c.close_timeout,
                rate_limit_rps: c.close_rate_limit_rps,
                burst: c.close_rate_limit_burst,
                ..CloseClientConfig::default()
            },
            Arc::new(SharedBudget(store.clone())),
        )?;
        let hull = HullClient::new(HullClientConfig {
            protocol: c.hull_protocol.clone(),
            firehose_url: c.hull_firehose_url.clone(),
            organizations: c.hull_organizations.clone(),
            ..HullClientConfig::default()
        })?;
        Ok(Clients {
            store,
            queue,
            close,
            hull,
        })
    }
}

/// The credentials Hull gave a connector, to call Hull back for it.
pub fn hull_credentials(c: &crate::store::Connector) -> crate::hull::HullCredentials {
    crate::hull::HullCredentials {
        id: c.id.clone(),
        secret: c.secret.clone(),
        organization: c.organization.clone(),
    }
}

/// The Close request budget in Postgres, shared by every process of the deployment (see
/// `closeio::budget`).
#[derive(Clone)]
pub struct SharedBudget(pub Store);

/// The budget's store failed: the request is not sent (a retryable Close error).
fn unavailable(e: StoreError) -> BudgetError {
    BudgetError(e.to_string())
}

impl Budget for SharedBudget {
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
        burst: u32,
        max_wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Slot, BudgetError>> {
        Box::pin(async move {
            self.0
                .budget_reserve(key, group, spacing, burst, max_wait)
                .await
                .map(|r| match r {
                    crate::store::Reservation::Reserved { wait, .. } => Slot::Reserved(wait),
                    crate::store::Reservation::Busy { after, spacing } => {
                        Slot::Busy { after, spacing }
                    }
                })
                .map_err(unavailable)
        })
    }

    fn defer<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        places: u32,
    ) -> BoxFuture<'a, Result<LanePlaces, BudgetError>> {
        Box::pin(async move {
            self.0
                .budget_defer_places(key, group, places)
                .await
                .map(|(first, spacing)| LanePlaces { first, spacing })
                .map_err(unavailable)
        })
    }

    fn set_spacing<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>> {
        Box::pin(async move {
            self.0
                .budget_set_spacing(key, group, spacing)
                .await
                .map_err(unavailable)
        })
    }

    fn pause<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>> {
        Box::pin(async move {
            self.0
                .budget_pause(key, group, wait)
                .await
                .map_err(unavailable)
        })
    }
}
