//! What the trust boundary records: how a connector was registered, the notification ids
//! already accepted (replays are no-ops), the `ENCRYPTION_KEY` check value, and dead letters
//! for messages refused at the door.

use crate::prepared::Prepared;
use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::{Store, StoreError, UpsertOutcome};
use domain::crypto::CryptoError;
use domain::jobs::Envelope;

/// The plaintext sealed in `key_check`.
const KEY_CHECK_PLAINTEXT: &str = "closeio-sync key check v1";

/// What [`Store::accept_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAcceptance {
    /// First time seen; its jobs were published.
    Accepted,
    /// Seen before; nothing was published.
    Duplicate,
    /// Publishing failed; nothing was recorded (the sender should retry).
    PublishFailed(String),
}

/// The outcome of [`Store::check_encryption_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// The stored check value opens with the configured key.
    Verified,
    /// There was none yet; one was written with the configured key.
    Recorded,
}

impl Store {
    /// Checks that `ENCRYPTION_KEY` (or `ENCRYPTION_KEY_PREVIOUS`) opens what is stored: the
    /// check value, or — in a database from before the check existed — a connector secret.
    /// Records the check value when there is none. `Err(StoreError::Crypto)` means the key is
    /// wrong: the process must not start.
    pub async fn check_encryption_key(&self) -> Result<KeyCheck, StoreError> {
        let c = self.pool.get().await?;
        if let Some(row) = c
            .query_opt_p("SELECT sealed FROM key_check WHERE id = 1", &[])
            .await?
        {
            let plain = self.secrets.open(row.get::<_, Vec<u8>>(0).as_slice())?;
            if plain != KEY_CHECK_PLAINTEXT {
                return Err(CryptoError::Malformed.into());
            }
            return Ok(KeyCheck::Verified);
        }
        if let Some(row) = c
            .query_opt_p("SELECT secret_enc FROM connectors LIMIT 1", &[])
            .await?
        {
            self.secrets.open(row.get::<_, Vec<u8>>(0).as_slice())?;
        }
        let sealed = self.secrets.seal(KEY_CHECK_PLAINTEXT);
        let inserted = c
            .execute_p(
                "INSERT INTO key_check (id, sealed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                &[&sealed],
            )
            .await?;
        if inserted == 0 {
            // Another process recorded it first, perhaps with another key: check that one.
            let row = c
                .query_one_p("SELECT sealed FROM key_check WHERE id = 1", &[])
                .await?;
            self.secrets.open(row.get::<_, Vec<u8>>(0).as_slice())?;
            return Ok(KeyCheck::Verified);
        }
        Ok(KeyCheck::Recorded)
    }

    /// Records `key` with `insert_sql` (an `INSERT … ON CONFLICT DO NOTHING` taking `params`)
    /// and publishes in one step: the row commits only after `publish` succeeded, so a
    /// duplicate is never published twice (a concurrent one waits for the first) and a failed
    /// publish leaves nothing recorded (the sender retries).
    async fn accept_once<F, Fut, E>(
        &self,
        insert_sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        dead_letters: &[(Envelope, String)],
        publish: F,
    ) -> Result<EventAcceptance, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        if tx.execute_p(insert_sql, params).await? == 0 {
            return Ok(EventAcceptance::Duplicate);
        }
        insert_dead_letters(&tx, dead_letters).await?;
        if let Err(e) = publish().await {
            return Ok(EventAcceptance::PublishFailed(e.to_string()));
        }
        tx.commit().await?;
        Ok(EventAcceptance::Accepted)
    }

    /// Records a Close webhook event and publishes its jobs ([`Self::accept_once`]).
    pub async fn accept_webhook_event<F, Fut, E>(
        &self,
        connector_id: &str,
        event_key: &str,
        publish: F,
    ) -> Result<EventAcceptance, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.accept_once(
            "INSERT INTO webhook_events (connector_id, event_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&connector_id, &event_key],
            &[],
            publish,
        )
        .await
    }

    /// Records a Hull notification id, with the dead letters of its refused messages, and
    /// publishes its jobs ([`Self::accept_once`]): Hull's retry of a notification already
    /// accepted publishes (and records) nothing.
    pub async fn accept_notification<F, Fut, E>(
        &self,
        connector_id: &str,
        notification_id: &str,
        dead_letters: &[(Envelope, String)],
        publish: F,
    ) -> Result<EventAcceptance, StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        self.accept_once(
            "INSERT INTO notifications_seen (notification_id, connector_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&notification_id, &connector_id],
            dead_letters,
            publish,
        )
        .await
    }

    /// Forgets notification ids accepted more than `older_than_secs` ago.
    pub async fn purge_notifications(&self, older_than_secs: f64) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute_p(
            "DELETE FROM notifications_seen WHERE seen_at < now() - make_interval(secs => $1)",
            &[&older_than_secs],
        )
        .await?)
    }

    /// Records a connector from a verified notification: Hull's word on its organization,
    /// secret and (when given) settings always wins over what was recorded before.
    pub async fn record_verified_connector(
        &self,
        id: &str,
        organization: &str,
        secret: &str,
        private_settings: Option<&Value>,
    ) -> Result<UpsertOutcome, StoreError> {
        let outcome = match private_settings {
            Some(settings) => {
                self.upsert_connector(id, organization, secret, settings)
                    .await?
            }
            None => {
                let Some(current) = self.connector(id).await? else {
                    return Ok(UpsertOutcome::default());
                };
                if current.organization != organization || current.secret != secret {
                    let c = self.pool.get().await?;
                    c.execute_p(
                        "UPDATE connectors SET organization = $2, secret_enc = $3, updated_at = now(),
                           settings_version = settings_version + 1 WHERE id = $1",
                        &[&id, &organization, &self.secrets.seal(secret)],
                    )
                    .await?;
                }
                UpsertOutcome::default()
            }
        };
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE connectors SET registered_by = 'notification' WHERE id = $1 AND registered_by <> 'notification'",
            &[&id],
        )
        .await?;
        Ok(outcome)
    }

    /// Records a connector that Hull's REST API confirmed for query credentials. Never
    /// overwrites an existing connector.
    pub async fn record_confirmed_connector(
        &self,
        id: &str,
        organization: &str,
        secret: &str,
        private_settings: &Value,
    ) -> Result<UpsertOutcome, StoreError> {
        if self.connector(id).await?.is_some() {
            return Ok(UpsertOutcome::default());
        }
        let outcome = self
            .upsert_connector(id, organization, secret, private_settings)
            .await?;
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE connectors SET registered_by = 'query' WHERE id = $1 AND created_at = updated_at",
            &[&id],
        )
        .await?;
        Ok(outcome)
    }

    /// How a connector was first recorded (`notification` or `query`).
    pub async fn registered_by(&self, id: &str) -> Result<Option<String>, StoreError> {
        let c = self.pool.get().await?;
        Ok(
            c.query_opt_p("SELECT registered_by FROM connectors WHERE id = $1", &[&id])
                .await?
                .map(|r| r.get(0)),
        )
    }
}

/// Records dead letters in one statement (messages refused at the door: no retries before
/// them).
async fn insert_dead_letters(
    c: &impl GenericClient,
    items: &[(Envelope, String)],
) -> Result<(), StoreError> {
    if items.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(items.len());
    let mut connectors = Vec::with_capacity(items.len());
    let mut names = Vec::with_capacity(items.len());
    let mut keys: Vec<Option<String>> = Vec::with_capacity(items.len());
    let mut envelopes = Vec::with_capacity(items.len());
    let mut errors = Vec::with_capacity(items.len());
    let mut last = Vec::with_capacity(items.len());
    let now = chrono::Utc::now();
    for (env, error) in items {
        ids.push(env.id);
        connectors.push(env.connector_id.clone());
        names.push(env.job.name().to_string());
        keys.push(env.job.entity_key());
        envelopes.push(serde_json::to_value(env).unwrap_or(Value::Null));
        errors.push(serde_json::json!([{"at": now, "attempt": 0, "error": error}]));
        last.push(error.clone());
    }
    c.execute_p(
        "INSERT INTO dead_letters (id, connector_id, job_name, entity_key, envelope, attempts, errors, last_error)
         SELECT id, connector_id, job_name, entity_key, envelope, 0, errors, last_error
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::text[])
           AS t(id, connector_id, job_name, entity_key, envelope, errors, last_error)",
        &[&ids, &connectors, &names, &keys, &envelopes, &errors, &last],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Records dead letters for messages refused outside a notification (a `/batch`
    /// extract's bad lines).
    pub async fn dead_letter_many(&self, items: &[(Envelope, String)]) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        insert_dead_letters(&c, items).await
    }
}

impl Store {
    /// [`Self::check_encryption_key`] for a process starting: a wrong key is an error that
    /// names `ENCRYPTION_KEY`; an unreachable database is only logged (the process waits for
    /// it as usual, and `/readyz` says so).
    pub async fn check_key_at_start(&self) -> Result<(), String> {
        // The database may still be starting: try for a while before giving up on the check.
        let mut pause = std::time::Duration::from_millis(200);
        for attempt in 1..=6 {
            match self.check_encryption_key().await {
                Ok(_) => return Ok(()),
                Err(StoreError::Crypto(e)) => {
                    return Err(format!(
                        "ENCRYPTION_KEY cannot open the stored secrets ({e}); start with the key the data was written with \
                         (and ENCRYPTION_KEY_PREVIOUS during a rotation)"
                    ))
                }
                Err(e) if attempt == 6 => {
                    // Secrets are still never re-sealed with an unchecked key: a value that
                    // does not open is an error wherever it is read.
                    tracing::warn!(error = %e, "could not check ENCRYPTION_KEY against the database at start");
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
        Ok(())
    }
}

impl Store {
    /// Records a message that is not a job of this version (unreadable): kept as a dead
    /// letter named `unreadable`, with its text, so `closeio-ctl dlq list` shows it. The
    /// connector is taken from the message when it names one.
    pub async fn dead_letter_unreadable(
        &self,
        raw: &[u8],
        error: &str,
    ) -> Result<uuid::Uuid, StoreError> {
        const KEPT: usize = 1 << 20;
        let text = String::from_utf8_lossy(&raw[..raw.len().min(KEPT)]).into_owned();
        let connector = serde_json::from_slice::<Value>(raw)
            .ok()
            .and_then(|v| {
                v.get("connector_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "(unknown)".into());
        let id = uuid::Uuid::new_v4();
        let errors = serde_json::json!([{"at": chrono::Utc::now(), "attempt": 0, "error": error}]);
        let c = self.pool.get().await?;
        c.execute_p(
            "INSERT INTO dead_letters (id, connector_id, job_name, entity_key, envelope, attempts, errors, last_error, error_class)
             VALUES ($1, $2, 'unreadable', NULL, $3, 1, $4, $5, 'unreadable')",
            &[&id, &connector, &serde_json::json!({"raw": text}), &errors, &error],
        )
        .await?;
        Ok(id)
    }
}

impl Store {
    /// Whether notification `id` was accepted already (within the replay window).
    pub async fn notification_seen(&self, id: &str) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.query_opt_p(
            "SELECT 1 FROM notifications_seen WHERE notification_id = $1",
            &[&id],
        )
        .await?
        .is_some())
    }
}
