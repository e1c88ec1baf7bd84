//! The Postgres store: connectors (settings, encrypted secrets, cached Close metadata), sync
//! state per entity, retries and dead letters.
//!
//! Migrations live in `common/store/migrations/` and run from one place, `closeio-ctl migrate`
//! (or [`migrate`] in tests), never from every replica at boot.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use serde::Serialize;
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

use domain::crypto::{constant_time_eq, fingerprint, CryptoError, SecretBox};
use domain::error::{Classify, ErrorClass};
use domain::jobs::{EntityKind, Envelope};

mod prepared;
use prepared::Prepared;
mod budget;
pub use budget::Reservation;
#[macro_use]
mod lease;
pub use lease::{EntityLease, FirstAnswer, FirstRead};
mod pending;
pub use pending::{Claim, Gathering, Joined, LeadLookupNote, NestedContact, PendingContact};
mod incoming;
pub use incoming::*;
mod parking;
pub use parking::{Parking, PARKED_FILTER};
mod console;
mod trust;
pub use console::{
    Activity, BudgetRow, ConsoleSession, EntityError, EntityState, SubscriptionSummary,
};
pub use trust::{EventAcceptance, KeyCheck};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// A database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Postgres answered with an error or the connection failed.
    #[error("Postgres: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No connection could be taken from the pool.
    #[error("Postgres pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The configuration of the pool is wrong.
    #[error("Postgres configuration: {0}")]
    Config(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// A stored secret cannot be decrypted.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// A statement shared by several callers failed (each of them gets its message).
    #[error("{0}")]
    Batch(String),
    /// This job's lease on an entity expired and was taken over: it must not commit (the job
    /// is retried and repairs by lookup).
    #[error("the lease on {entity} was lost (expired); nothing was committed")]
    LeaseLost {
        /// `kind/hull id`.
        entity: String,
    },
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Crypto(_) | StoreError::Config(_) => ErrorClass::Configuration,
            _ => ErrorClass::Retryable { after: None },
        }
    }
}

/// Applies every pending migration. Returns the versions applied.
pub async fn migrate(database_url: &str) -> Result<Vec<String>, StoreError> {
    let (mut client, conn) = tokio_postgres::connect(database_url, NoTls).await?;
    let handle = tokio::spawn(async move {
        let _ = conn.await;
    });
    let report = embedded::migrations::runner()
        .run_async(&mut client)
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    drop(client);
    let _ = handle.await;
    Ok(report
        .applied_migrations()
        .iter()
        .map(|m| m.to_string())
        .collect())
}

/// A connector as stored, with its secrets decrypted.
#[derive(Clone)]
pub struct Connector {
    /// Hull connector id.
    pub id: String,
    /// Hull organization host.
    pub organization: String,
    /// Hull connector secret.
    pub secret: String,
    /// Private settings without `api_key`.
    pub private_settings: Value,
    /// The Close API key, if set.
    pub api_key: Option<String>,
    /// Result of the last status check: ok, warning, error, setupRequired or unknown.
    pub status: String,
    /// Messages of the last status check.
    pub status_messages: Vec<String>,
    /// Why the connector's jobs are parked (a configuration error), if they are.
    pub parked_reason: Option<String>,
    /// Cached Close metadata (statuses, custom fields).
    pub metadata: Option<Value>,
    /// When the metadata was fetched.
    pub metadata_fetched_at: Option<DateTime<Utc>>,
    /// Bumped by every change of settings, key or credentials (see `store::parking`).
    pub settings_version: i64,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("id", &self.id)
            .field("organization", &self.organization)
            .field("api_key", &self.api_key.as_deref().map(fingerprint))
            .field("status", &self.status)
            .field("parked_reason", &self.parked_reason)
            .finish()
    }
}

impl Connector {
    /// The private settings as Hull holds them (with `api_key`), for the mapping's parser.
    pub fn settings_with_key(&self) -> Value {
        let mut v = self.private_settings.clone();
        if let (Some(obj), Some(key)) = (v.as_object_mut(), &self.api_key) {
            obj.insert("api_key".into(), Value::String(key.clone()));
        }
        v
    }
}

/// What [`Store::upsert_connector`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpsertOutcome {
    /// The connector was new.
    pub created: bool,
    /// The API key differs from the stored one (or appeared).
    pub api_key_changed: bool,
    /// The private settings differ from the stored ones.
    pub settings_changed: bool,
}

/// See [`Store::connector_version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorVersion {
    /// Raised by every change of settings, API key or credentials.
    pub settings_version: i64,
    /// When the Close metadata was last fetched.
    pub metadata_fetched_at: Option<DateTime<Utc>>,
    /// Why it is parked, if it is.
    pub parked_reason: Option<String>,
}

/// The sync state of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct SyncState {
    /// Close lead or contact id.
    pub close_id: Option<String>,
    /// For users: the lead the contact lives under.
    pub lead_id: Option<String>,
    /// Hash of the last body written to Close.
    pub body_hash: Option<String>,
    /// Consecutive failures.
    pub failures: i32,
}

/// A connector row for listings (no secrets).
#[derive(Debug, Clone, Serialize)]
pub struct ConnectorSummary {
    /// Hull connector id.
    pub id: String,
    /// Hull organization.
    pub organization: String,
    /// Last status.
    pub status: String,
    /// Status messages.
    pub status_messages: Vec<String>,
    /// Parked reason.
    pub parked_reason: Option<String>,
    /// Entities with a Close id, per kind.
    pub synced_accounts: i64,
    /// Users with a Close id.
    pub synced_users: i64,
    /// Jobs waiting for a retry.
    pub retries: i64,
    /// Jobs parked.
    pub parked: i64,
    /// Dead letters not yet replayed.
    pub dead_letters: i64,
    /// Most recent successful write.
    pub last_success_at: Option<DateTime<Utc>>,
}

/// A dead letter as listed to operators.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Id.
    pub id: Uuid,
    /// Connector.
    pub connector_id: String,
    /// Job name.
    pub job_name: String,
    /// Entity (`account:<id>`).
    pub entity_key: Option<String>,
    /// Attempts made.
    pub attempts: i32,
    /// Last error, readable.
    pub last_error: String,
    /// Every error.
    pub errors: Value,
    /// The job.
    pub envelope: Value,
    /// When it died.
    pub created_at: DateTime<Utc>,
    /// When it was replayed, if it was.
    pub replayed_at: Option<DateTime<Utc>>,
    /// What kind of error killed it (a short label such as `close_bad_request`).
    pub error_class: String,
    /// The body last sent to Close for the entity, when the job sent one.
    pub last_body: Option<Value>,
}

/// Which dead letters a listing, a count, a replay or a purge is about.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterQuery {
    /// Only this connector.
    pub connector: Option<String>,
    /// Only this job name.
    pub job_name: Option<String>,
    /// Only this error class.
    pub error_class: Option<String>,
    /// Only those whose last error contains this text (case-insensitive).
    pub error_contains: Option<String>,
    /// Only those that died at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only those that died at or before this instant (a bulk action confirmed on a page acts
    /// on what the page counted, not on what died since).
    pub until: Option<DateTime<Utc>>,
    /// Include dead letters already replayed.
    pub include_replayed: bool,
}

impl DeadLetterQuery {
    /// The `ILIKE` pattern of `error_contains`: the text itself, `%` and `_` included.
    fn pattern(&self) -> Option<String> {
        self.error_contains.as_ref().map(|e| {
            let escaped = e
                .replace('\\', r"\\")
                .replace('%', r"\%")
                .replace('_', r"\_");
            format!("%{escaped}%")
        })
    }

    /// The parameters `$1`..`$7` of [`DEAD_LETTER_WHERE`].
    fn params<'a>(
        &'a self,
        pattern: &'a Option<String>,
    ) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
        vec![
            &self.connector,
            &self.job_name,
            &self.error_class,
            pattern,
            &self.since,
            &self.include_replayed,
            &self.until,
        ]
    }
}

/// Dead letters of one error class, by age.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorClassCount {
    /// The error class.
    pub error_class: String,
    /// Died in the last hour.
    pub last_hour: i64,
    /// Died in the last day.
    pub last_day: i64,
    /// Died in the last week.
    pub last_week: i64,
    /// All of them.
    pub total: i64,
}

/// The `WHERE` clause of a [`DeadLetterQuery`], over parameters `$1`..`$7`.
const DEAD_LETTER_WHERE: &str = r"($1::text IS NULL OR connector_id = $1) AND ($2::text IS NULL OR job_name = $2)
   AND ($3::text IS NULL OR error_class = $3) AND ($4::text IS NULL OR last_error ILIKE $4 ESCAPE '\')
   AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6 OR replayed_at IS NULL)
   AND ($7::timestamptz IS NULL OR created_at <= $7)";

/// The columns of [`dead_letter_from_row`].
const DEAD_LETTER_COLUMNS: &str = "id, connector_id, job_name, entity_key, attempts, last_error, errors, envelope, created_at, replayed_at, error_class, last_body";

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    secrets: SecretBox,
}

impl Store {
    /// A pool of `size` connections to `url` (connections are opened on demand).
    pub fn connect(url: &str, size: usize, secrets: SecretBox) -> Result<Store, StoreError> {
        let pg =
            tokio_postgres::Config::from_str(url).map_err(|e| StoreError::Config(e.to_string()))?;
        let mut pg = pg;
        pg.connect_timeout(std::time::Duration::from_secs(5));
        let mgr = Manager::from_config(
            pg,
            NoTls,
            // `Fast`: a connection going back into use is checked by its state (closed when
            // the server ended it), not with a round trip. `Verified` sent an empty query
            // on every checkout: 43 % of all statements in the scale benchmark.
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(size)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(5)))
            .recycle_timeout(Some(std::time::Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Store { pool, secrets })
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The secret box (for callers that seal other secrets).
    pub fn secrets(&self) -> &SecretBox {
        &self.secrets
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// Records a connector's credentials and settings. The API key is taken out of the
    /// settings and stored encrypted.
    pub async fn upsert_connector(
        &self,
        id: &str,
        organization: &str,
        secret: &str,
        private_settings: &Value,
    ) -> Result<UpsertOutcome, StoreError> {
        let mut settings = private_settings.clone();
        let api_key = settings
            .as_object_mut()
            .and_then(|o| o.remove("api_key"))
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|k| !k.is_empty());
        let fp = api_key.as_deref().map(fingerprint);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let existing = tx
            .query_opt_p(
                "SELECT private_settings, api_key_fingerprint, organization, secret_enc FROM connectors WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
        let mut credentials_changed = false;
        let outcome = match &existing {
            None => UpsertOutcome {
                created: true,
                api_key_changed: api_key.is_some(),
                settings_changed: true,
            },
            Some(row) => {
                let old_settings: Value = row.get(0);
                let old_fp: Option<String> = row.get(1);
                let old_org: String = row.get(2);
                // A secret that does not open means a wrong ENCRYPTION_KEY: an error, never a
                // reason to re-seal it with that key.
                let old_secret = self.secrets.open(row.get::<_, Vec<u8>>(3).as_slice())?;
                credentials_changed = old_org != organization || old_secret != secret;
                UpsertOutcome {
                    created: false,
                    api_key_changed: old_fp != fp,
                    settings_changed: old_settings != settings,
                }
            }
        };
        if outcome.created
            || outcome.api_key_changed
            || outcome.settings_changed
            || credentials_changed
        {
            let key_enc = api_key.as_deref().map(|k| self.secrets.seal(k));
            let secret_enc = self.secrets.seal(secret);
            tx.execute_p(
                "INSERT INTO connectors (id, organization, secret_enc, private_settings, api_key_enc, api_key_fingerprint)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET organization = EXCLUDED.organization, secret_enc = EXCLUDED.secret_enc,
                   private_settings = EXCLUDED.private_settings, api_key_enc = EXCLUDED.api_key_enc,
                   api_key_fingerprint = EXCLUDED.api_key_fingerprint, updated_at = now(),
                   settings_version = connectors.settings_version + 1",
                &[&id, &organization, &secret_enc, &settings, &key_enc, &fp],
            )
            .await?;
        }
        if outcome.api_key_changed {
            // A new key invalidates cached metadata.
            tx.execute_p(
                "UPDATE connectors SET metadata = NULL, metadata_fetched_at = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
        }
        if !outcome.created && (outcome.api_key_changed || outcome.settings_changed) {
            // Settings were fixed (or changed): parked jobs get another chance now.
            parking::unpark_in(&tx, id).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }

    /// Whether `secret` is the stored secret of connector `id` (`None`: unknown connector).
    pub async fn check_secret(&self, id: &str, secret: &str) -> Result<Option<bool>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p("SELECT secret_enc FROM connectors WHERE id = $1", &[&id])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let stored = self.secrets.open(row.get::<_, Vec<u8>>(0).as_slice())?;
        Ok(Some(constant_time_eq(stored.as_bytes(), secret.as_bytes())))
    }

    /// What decides whether a copy of the connector read earlier is still current: its
    /// settings version (raised by every change of settings, key or credentials), when its
    /// metadata was fetched, and whether it is parked. One small row, nothing to decrypt.
    pub async fn connector_version(
        &self,
        id: &str,
    ) -> Result<Option<ConnectorVersion>, StoreError> {
        let mut versions = self.connector_versions(&[id.to_owned()]).await?;
        Ok(versions.pop().flatten())
    }

    /// [`Store::connector_version`] of several connectors in one statement, in the order of
    /// `ids` (`None` for an unknown one; an id may be asked more than once).
    pub async fn connector_versions(
        &self,
        ids: &[String],
    ) -> Result<Vec<Option<ConnectorVersion>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT id, settings_version, metadata_fetched_at, parked_reason FROM connectors
                 WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        let found: std::collections::HashMap<String, ConnectorVersion> = rows
            .iter()
            .map(|row| {
                (
                    row.get::<_, String>(0),
                    ConnectorVersion {
                        settings_version: row.get(1),
                        metadata_fetched_at: row.get(2),
                        parked_reason: row.get(3),
                    },
                )
            })
            .collect();
        Ok(ids.iter().map(|id| found.get(id).cloned()).collect())
    }

    /// A connector with its secrets decrypted.
    pub async fn connector(&self, id: &str) -> Result<Option<Connector>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                "SELECT id, organization, secret_enc, private_settings, api_key_enc, status, status_messages,
                        parked_reason, metadata, metadata_fetched_at, settings_version
                 FROM connectors WHERE id = $1",
                &[&id],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let key_enc: Option<Vec<u8>> = row.get(4);
        let messages: Value = row.get(6);
        Ok(Some(Connector {
            id: row.get(0),
            organization: row.get(1),
            secret: self.secrets.open(row.get::<_, Vec<u8>>(2).as_slice())?,
            private_settings: row.get(3),
            api_key: key_enc.map(|k| self.secrets.open(&k)).transpose()?,
            status: row.get(5),
            status_messages: serde_json::from_value(messages).unwrap_or_default(),
            parked_reason: row.get(7),
            metadata: row.get(8),
            metadata_fetched_at: row.get(9),
            settings_version: row.get(10),
        }))
    }

    /// Every connector with counters, for operators.
    pub async fn connector_summaries(&self) -> Result<Vec<ConnectorSummary>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT c.id, c.organization, c.status, c.status_messages, c.parked_reason,
                   (SELECT count(*) FROM sync_state s WHERE s.connector_id = c.id AND s.kind = 'account' AND s.close_id IS NOT NULL),
                   (SELECT count(*) FROM sync_state s WHERE s.connector_id = c.id AND s.kind = 'user' AND s.close_id IS NOT NULL),
                   (SELECT count(*) FROM retries r WHERE r.connector_id = c.id AND r.state = 'scheduled'),
                   (SELECT count(*) FROM retries r WHERE r.connector_id = c.id AND r.state = 'parked'),
                   (SELECT count(*) FROM dead_letters d WHERE d.connector_id = c.id AND d.replayed_at IS NULL),
                   (SELECT max(last_success_at) FROM sync_state s WHERE s.connector_id = c.id)
                 FROM connectors c ORDER BY c.id",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ConnectorSummary {
                id: r.get(0),
                organization: r.get(1),
                status: r.get(2),
                status_messages: serde_json::from_value(r.get::<_, Value>(3)).unwrap_or_default(),
                parked_reason: r.get(4),
                synced_accounts: r.get(5),
                synced_users: r.get(6),
                retries: r.get(7),
                parked: r.get(8),
                dead_letters: r.get(9),
                last_success_at: r.get(10),
            })
            .collect())
    }

    /// Records the result of a status check.
    pub async fn set_status(
        &self,
        id: &str,
        status: &str,
        messages: &[String],
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let msgs = serde_json::to_value(messages).unwrap_or(Value::Array(vec![]));
        c.execute_p(
            "UPDATE connectors SET status = $2, status_messages = $3, status_checked_at = now() WHERE id = $1",
            &[&id, &status, &msgs],
        )
        .await?;
        Ok(())
    }

    /// Stores freshly fetched Close metadata.
    pub async fn set_metadata(&self, id: &str, metadata: &Value) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE connectors SET metadata = $2, metadata_fetched_at = now() WHERE id = $1",
            &[&id, metadata],
        )
        .await?;
        Ok(())
    }

    /// Schedules another attempt of a job (or parks it when `parked`; prefer [`Store::park`],
    /// which also parks the connector).
    pub async fn schedule_retry(
        &self,
        env: &Envelope,
        error: &str,
        next_attempt_at: DateTime<Utc>,
        parked: bool,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        upsert_retry(&c, env, error, next_attempt_at, parked).await
    }

    /// Records a deferred job (see the worker's `fairness`): it is republished at `at` with the
    /// same attempt number, and nothing is added to its error history.
    pub async fn defer(
        &self,
        env: &Envelope,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        // Serialised straight into the parameter, without a `Value` tree in between.
        let body = tokio_postgres::types::Json(env);
        c.execute_p(
            "INSERT INTO retries (id, connector_id, job_name, entity_key, envelope, attempts, last_error, state, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'scheduled', $8)
             ON CONFLICT (id) DO UPDATE SET envelope = EXCLUDED.envelope, state = 'scheduled',
               next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()",
            &[
                &env.id,
                &env.connector_id,
                &env.job.name(),
                &env.job.entity_key(),
                &body,
                &(env.attempt as i32),
                &reason,
                &at,
            ],
        )
        .await?;
        Ok(())
    }

    /// [`Store::defer`] for several jobs in one statement (a bundle's first pass): each job
    /// with the time it comes back and the reason.
    pub async fn defer_all(
        &self,
        deferred: &[(Envelope, DateTime<Utc>, String)],
    ) -> Result<(), StoreError> {
        if deferred.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = deferred.iter().map(|(e, ..)| e.id).collect();
        let connectors: Vec<&str> = deferred
            .iter()
            .map(|(e, ..)| e.connector_id.as_str())
            .collect();
        let names: Vec<&str> = deferred.iter().map(|(e, ..)| e.job.name()).collect();
        let keys: Vec<Option<String>> = deferred.iter().map(|(e, ..)| e.job.entity_key()).collect();
        // Serialised straight into the parameter, without a `Value` tree in between.
        let bodies: Vec<tokio_postgres::types::Json<&Envelope>> = deferred
            .iter()
            .map(|(e, ..)| tokio_postgres::types::Json(e))
            .collect();
        let attempts: Vec<i32> = deferred.iter().map(|(e, ..)| e.attempt as i32).collect();
        let ats: Vec<DateTime<Utc>> = deferred.iter().map(|(_, at, _)| *at).collect();
        let reasons: Vec<&str> = deferred.iter().map(|(.., r)| r.as_str()).collect();
        let c = self.pool.get().await?;
        c.execute_p(
            "INSERT INTO retries (id, connector_id, job_name, entity_key, envelope, attempts, last_error, state, next_attempt_at)
             SELECT id, connector_id, job_name, entity_key, envelope, attempts, reason, 'scheduled', at
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::int4[],
                         $7::text[], $8::timestamptz[])
                  AS d(id, connector_id, job_name, entity_key, envelope, attempts, reason, at)
             ON CONFLICT (id) DO UPDATE SET envelope = EXCLUDED.envelope, state = 'scheduled',
               next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()",
            &[&ids, &connectors, &names, &keys, &bodies, &attempts, &reasons, &ats],
        )
        .await?;
        Ok(())
    }

    /// Records a dead letter with every error seen (those recorded with earlier retries too).
    pub async fn dead_letter(
        &self,
        env: &Envelope,
        error: &str,
        error_class: &str,
        last_body: Option<&Value>,
    ) -> Result<Uuid, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let previous: Value = tx
            .query_opt_p(
                "DELETE FROM retries WHERE id = $1 RETURNING errors",
                &[&env.id],
            )
            .await?
            .map(|r| r.get(0))
            .unwrap_or_else(|| Value::Array(vec![]));
        let mut errors = previous.as_array().cloned().unwrap_or_default();
        errors.push(serde_json::json!({"at": Utc::now(), "attempt": env.attempt, "error": error}));
        let body = serde_json::to_value(env).unwrap_or(Value::Null);
        let id = Uuid::new_v4();
        tx.execute_p(
            "INSERT INTO dead_letters (id, connector_id, job_name, entity_key, envelope, attempts, errors, last_error, error_class, last_body)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            &[
                &id,
                &env.connector_id,
                &env.job.name(),
                &env.job.entity_key(),
                &body,
                &(env.attempt as i32 + 1),
                &Value::Array(errors),
                &error,
                &error_class,
                &last_body,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Removes a job's retry row after it succeeded.
    pub async fn clear_retry(&self, id: Uuid) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p("DELETE FROM retries WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    /// Dead letters, newest first, optionally filtered.
    pub async fn dead_letters(
        &self,
        connector: Option<&str>,
        job_name: Option<&str>,
        error_contains: Option<&str>,
        include_replayed: bool,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters_where(
            &DeadLetterQuery {
                connector: connector.map(str::to_owned),
                job_name: job_name.map(str::to_owned),
                error_contains: error_contains.map(str::to_owned),
                include_replayed,
                ..Default::default()
            },
            limit,
        )
        .await
    }

    /// Dead letters matching `q`, newest first, at most `limit`.
    pub async fn dead_letters_where(
        &self,
        q: &DeadLetterQuery,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let c = self.pool.get().await?;
        let pattern = q.pattern();
        let mut params = q.params(&pattern);
        params.push(&limit);
        let rows = c
            .query_p(
                &format!(
                    "SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE {DEAD_LETTER_WHERE}
                     ORDER BY created_at DESC LIMIT $8"
                ),
                &params,
            )
            .await?;
        Ok(rows.iter().map(dead_letter_from_row).collect())
    }

    /// Dead letters matching `q`, counted per error class and age, most frequent first.
    pub async fn dead_letter_classes(
        &self,
        q: &DeadLetterQuery,
    ) -> Result<Vec<ErrorClassCount>, StoreError> {
        let c = self.pool.get().await?;
        let pattern = q.pattern();
        let rows = c
            .query_p(
                &format!(
                    "SELECT error_class,
                            count(*) FILTER (WHERE created_at >= now() - interval '1 hour'),
                            count(*) FILTER (WHERE created_at >= now() - interval '1 day'),
                            count(*) FILTER (WHERE created_at >= now() - interval '7 days'),
                            count(*)
                     FROM dead_letters WHERE {DEAD_LETTER_WHERE}
                     GROUP BY error_class ORDER BY count(*) DESC, error_class"
                ),
                &q.params(&pattern),
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ErrorClassCount {
                error_class: r.get(0),
                last_hour: r.get(1),
                last_day: r.get(2),
                last_week: r.get(3),
                total: r.get(4),
            })
            .collect())
    }

    /// How many dead letters match `q`.
    pub async fn count_dead_letters_where(&self, q: &DeadLetterQuery) -> Result<i64, StoreError> {
        let c = self.pool.get().await?;
        let pattern = q.pattern();
        Ok(c.query_one_p(
            &format!("SELECT count(*) FROM dead_letters WHERE {DEAD_LETTER_WHERE}"),
            &q.params(&pattern),
        )
        .await?
        .get(0))
    }

    /// Deletes the dead letters matching `q`; returns how many.
    pub async fn purge_dead_letters_where(&self, q: &DeadLetterQuery) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        let pattern = q.pattern();
        Ok(c.execute_p(
            &format!("DELETE FROM dead_letters WHERE {DEAD_LETTER_WHERE}"),
            &q.params(&pattern),
        )
        .await?)
    }

    /// Deletes one dead letter; whether it existed.
    pub async fn delete_dead_letter(&self, id: Uuid) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        Ok(
            c.execute_p("DELETE FROM dead_letters WHERE id = $1", &[&id])
                .await?
                > 0,
        )
    }

    /// Deletes the dead letters older than `cutoff` (the retention); returns how many.
    pub async fn purge_dead_letters_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        Ok(
            c.execute_p("DELETE FROM dead_letters WHERE created_at < $1", &[&cutoff])
                .await?,
        )
    }

    /// One dead letter.
    pub async fn dead_letter_by_id(&self, id: Uuid) -> Result<Option<DeadLetter>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                &format!("SELECT {DEAD_LETTER_COLUMNS} FROM dead_letters WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(dead_letter_from_row))
    }

    /// Marks a dead letter replayed.
    pub async fn mark_replayed(&self, id: Uuid) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE dead_letters SET replayed_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }
}

/// Inserts or updates the retry row of a job (its errors accumulate).
async fn upsert_retry(
    c: &impl GenericClient,
    env: &Envelope,
    error: &str,
    next_attempt_at: DateTime<Utc>,
    parked: bool,
) -> Result<(), StoreError> {
    let body = serde_json::to_value(env).unwrap_or(Value::Null);
    let state = if parked { "parked" } else { "scheduled" };
    let entry = serde_json::json!([{"at": Utc::now(), "attempt": env.attempt, "error": error}]);
    c.execute_p(
        "INSERT INTO retries (id, connector_id, job_name, entity_key, envelope, attempts, errors, last_error, state, next_attempt_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET envelope = EXCLUDED.envelope, attempts = EXCLUDED.attempts,
           errors = retries.errors || EXCLUDED.errors, last_error = EXCLUDED.last_error, state = EXCLUDED.state,
           next_attempt_at = EXCLUDED.next_attempt_at, updated_at = now()",
        &[
            &env.id,
            &env.connector_id,
            &env.job.name(),
            &env.job.entity_key(),
            &body,
            &(env.attempt as i32),
            &entry,
            &error,
            &state,
            &next_attempt_at,
        ],
    )
    .await?;
    Ok(())
}

fn dead_letter_from_row(r: &tokio_postgres::Row) -> DeadLetter {
    DeadLetter {
        id: r.get(0),
        connector_id: r.get(1),
        job_name: r.get(2),
        entity_key: r.get(3),
        attempts: r.get(4),
        last_error: r.get(5),
        errors: r.get(6),
        envelope: r.get(7),
        created_at: r.get(8),
        replayed_at: r.get(9),
        error_class: r.get(10),
        last_body: r.get(11),
    }
}

/// Reads an entity's sync state.
pub async fn load_state(
    tx: &impl GenericClient,
    connector_id: &str,
    kind: EntityKind,
    hull_id: &str,
) -> Result<SyncState, StoreError> {
    let row = tx
        .query_opt_p(
            "SELECT close_id, lead_id, body_hash, failures FROM sync_state
             WHERE connector_id = $1 AND kind = $2 AND hull_id = $3",
            &[&connector_id, &kind.as_str(), &hull_id],
        )
        .await?;
    Ok(row
        .map(|r| SyncState {
            close_id: r.get(0),
            lead_id: r.get(1),
            body_hash: r.get(2),
            failures: r.get(3),
        })
        .unwrap_or_default())
}

/// Records a failed attempt on an entity (nothing for a connector that is not recorded).
pub async fn save_failure(
    c: &impl GenericClient,
    connector_id: &str,
    kind: EntityKind,
    hull_id: &str,
    error: &str,
    next_retry_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    c.execute_p(
        "INSERT INTO sync_state (connector_id, kind, hull_id, failures, last_error, next_retry_at)
         SELECT $1, $2, $3, 1, $4, $5 WHERE EXISTS (SELECT 1 FROM connectors WHERE id = $1)
         ON CONFLICT (connector_id, kind, hull_id) DO UPDATE SET failures = sync_state.failures + 1,
           last_error = EXCLUDED.last_error, next_retry_at = EXCLUDED.next_retry_at, updated_at = now()",
        &[&connector_id, &kind.as_str(), &hull_id, &error, &next_retry_at],
    )
    .await?;
    Ok(())
}

/// A retry row, as listed to operators.
#[derive(Debug, Clone, Serialize)]
pub struct RetryRow {
    /// Job id.
    pub id: Uuid,
    /// Connector.
    pub connector_id: String,
    /// Job name.
    pub job_name: String,
    /// Entity.
    pub entity_key: Option<String>,
    /// Attempts so far.
    pub attempts: i32,
    /// `scheduled`, `queued` (republished, waiting for a worker) or `parked`.
    pub state: String,
    /// Last error.
    pub last_error: String,
    /// When it is due.
    pub next_attempt_at: DateTime<Utc>,
}

impl Store {
    /// Publishes due retries through `publish` and marks them queued, in one transaction
    /// (`FOR UPDATE SKIP LOCKED`, so two schedulers never take the same rows). Returns how
    /// many were republished.
    pub async fn republish_due_retries<F, Fut, E>(
        &self,
        limit: i64,
        publish: F,
    ) -> Result<usize, StoreError>
    where
        F: FnOnce(Vec<Envelope>) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query_p(
                "SELECT id, envelope FROM retries WHERE state = 'scheduled' AND next_attempt_at <= now()
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED",
                &[&limit],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut envelopes = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: Uuid = r.get(0);
            match serde_json::from_value::<Envelope>(r.get(1)) {
                Ok(mut env) => {
                    env.from_retries = true;
                    ids.push(id);
                    envelopes.push(env);
                }
                Err(e) => {
                    tracing::error!(retry = %id, error = %e, "unreadable retry row left in place")
                }
            }
        }
        let n = envelopes.len();
        if let Err(e) = publish(envelopes).await {
            tracing::warn!(error = %e, "could not republish due retries; they stay scheduled");
            return Ok(0);
        }
        tx.execute_p(
            "UPDATE retries SET state = 'queued', updated_at = now() WHERE id = ANY($1)",
            &[&ids],
        )
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Retries (scheduled, queued, parked), soonest first.
    pub async fn retries(
        &self,
        connector: Option<&str>,
        limit: i64,
    ) -> Result<Vec<RetryRow>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT id, connector_id, job_name, entity_key, attempts, state, last_error, next_attempt_at
                 FROM retries WHERE ($1::text IS NULL OR connector_id = $1) ORDER BY next_attempt_at LIMIT $2",
                &[&connector, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| RetryRow {
                id: r.get(0),
                connector_id: r.get(1),
                job_name: r.get(2),
                entity_key: r.get(3),
                attempts: r.get(4),
                state: r.get(5),
                last_error: r.get(6),
                next_attempt_at: r.get(7),
            })
            .collect())
    }

    /// Connectors whose status was not checked within `interval_secs`.
    pub async fn connectors_due_for_status(
        &self,
        interval_secs: f64,
    ) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT id FROM connectors
                 WHERE status_checked_at IS NULL OR status_checked_at < now() - make_interval(secs => $1)
                 ORDER BY id",
                &[&interval_secs],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Connectors with an API key whose metadata is older than `interval_secs`.
    pub async fn connectors_due_for_metadata(
        &self,
        interval_secs: f64,
    ) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "SELECT id FROM connectors
                 WHERE api_key_enc IS NOT NULL
                   AND (metadata_fetched_at IS NULL OR metadata_fetched_at < now() - make_interval(secs => $1))
                 ORDER BY id",
                &[&interval_secs],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

impl Store {
    /// Deletes dead letters (of one connector, or all; only replayed ones if asked).
    pub async fn purge_dead_letters(
        &self,
        connector: Option<&str>,
        replayed_only: bool,
    ) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute_p(
            "DELETE FROM dead_letters WHERE ($1::text IS NULL OR connector_id = $1) AND (NOT $2 OR replayed_at IS NOT NULL)",
            &[&connector, &replayed_only],
        )
        .await?)
    }
}

/// Forgets the Close id of an entity (it no longer exists in Close), keeping its row.
pub async fn forget_close_id(
    c: &impl GenericClient,
    connector_id: &str,
    kind: EntityKind,
    hull_id: &str,
) -> Result<(), StoreError> {
    c.execute_p(
        "UPDATE sync_state SET close_id = NULL, body_hash = NULL, updated_at = now()
         WHERE connector_id = $1 AND kind = $2 AND hull_id = $3",
        &[&connector_id, &kind.as_str(), &hull_id],
    )
    .await?;
    Ok(())
}
