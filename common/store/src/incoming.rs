//! Incoming sync state: the per-connector cursor, fetch runs and their windows, Close webhook
//! subscriptions and the webhook events already accepted.
//!
//! A fetch run reads the leads updated in `[since, until)`. It is split into windows, each read
//! page by page by a chain of jobs; a page job is identified by `(run, window, seq)` and a
//! window only accepts the commit of its `next_seq`, so duplicated or stale jobs change
//! nothing. At most one run per connector is active (a partial unique index); a run holds a
//! lease that every committed page extends, and a run whose lease expired is abandoned (the
//! next run resumes from the cursor). The cursor only moves forward, to the progress of the
//! first unfinished window, after the page before it was accepted by Hull.

use crate::prepared::Prepared;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::parking::PARKED_FILTER;
use super::{Store, StoreError};

/// A full import (everything) or an incremental fetch (since the cursor, minus the overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchKind {
    /// Every lead.
    Full,
    /// Leads updated since the cursor (minus the overlap window).
    Incremental,
}

impl FetchKind {
    /// `full` or `incremental` (the SQL value).
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchKind::Full => "full",
            FetchKind::Incremental => "incremental",
        }
    }

    fn from_sql(s: &str) -> FetchKind {
        // The column's CHECK constraint allows these two values only.
        if s == "full" {
            FetchKind::Full
        } else {
            FetchKind::Incremental
        }
    }
}

impl std::fmt::Display for FetchKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a fetch run stands (`fetch_runs.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FetchRunState {
    /// Being split into windows.
    Planning,
    /// Pages being read.
    Running,
    /// Every window read; the cursor advanced.
    Completed,
    /// No progress within its lease: given up (a later run reads the range again).
    Abandoned,
    /// Stopped by a configuration error (the connector is parked).
    Failed,
}

impl FetchRunState {
    /// The SQL value.
    pub fn as_str(&self) -> &'static str {
        match self {
            FetchRunState::Planning => "planning",
            FetchRunState::Running => "running",
            FetchRunState::Completed => "completed",
            FetchRunState::Abandoned => "abandoned",
            FetchRunState::Failed => "failed",
        }
    }

    fn from_sql(s: &str) -> FetchRunState {
        match s {
            "planning" => FetchRunState::Planning,
            "running" => FetchRunState::Running,
            "completed" => FetchRunState::Completed,
            "abandoned" => FetchRunState::Abandoned,
            // The column's CHECK constraint allows no other value.
            _ => FetchRunState::Failed,
        }
    }
}

impl std::fmt::Display for FetchRunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parameters of a new run.
#[derive(Debug, Clone, PartialEq)]
pub struct NewFetchRun {
    /// Full or incremental.
    pub kind: FetchKind,
    /// Lower bound of `date_updated` (inclusive); `None` = from the beginning.
    pub since: Option<DateTime<Utc>>,
    /// Upper bound of `date_updated` (exclusive).
    pub until: DateTime<Utc>,
    /// Leads per search page.
    pub page_size: i32,
    /// Windows the run is split into at most.
    pub windows: i32,
    /// Lease duration in seconds (extended by every committed page).
    pub lease_secs: f64,
}

/// A connector that may need a fetch: it has an API key, is not parked and has no active run.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchCandidate {
    /// Connector id.
    pub connector_id: String,
    /// The incoming cursor.
    pub cursor: Option<DateTime<Utc>>,
    /// When the first full import completed.
    pub full_import_completed_at: Option<DateTime<Utc>>,
    /// When the last run started.
    pub last_run_started_at: Option<DateTime<Utc>>,
    /// A fetch was requested (Hull's `/fetch`, the admin button, the CLI).
    pub fetch_requested_at: Option<DateTime<Utc>>,
    /// A full import was requested.
    pub full_import_requested: bool,
}

/// A fetch run as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchRun {
    /// Run id.
    pub id: Uuid,
    /// Connector id.
    pub connector_id: String,
    /// Full import or incremental fetch.
    pub kind: FetchKind,
    /// Where it stands.
    pub state: FetchRunState,
    /// Lower bound of `date_updated`.
    pub since: Option<DateTime<Utc>>,
    /// Upper bound of `date_updated`.
    pub until: DateTime<Utc>,
    /// Leads per page.
    pub page_size: i32,
    /// Windows asked for.
    pub windows: i32,
    /// Lease duration.
    pub lease_secs: f64,
    /// Lease expiry.
    pub lease_until: DateTime<Utc>,
    /// Pages written to Hull.
    pub pages_done: i32,
    /// Leads written to Hull.
    pub leads_imported: i64,
    /// Contacts written to Hull.
    pub contacts_imported: i64,
    /// Deletions and merges applied from the event log.
    pub events_applied: i64,
    /// Why the run stopped, when it failed or was abandoned.
    pub last_error: Option<String>,
    /// Start.
    pub started_at: DateTime<Utc>,
    /// End.
    pub finished_at: Option<DateTime<Utc>>,
}

impl FetchRun {
    /// Whether the run is planning or running.
    pub fn is_active(&self) -> bool {
        matches!(self.state, FetchRunState::Planning | FetchRunState::Running)
    }

    /// Whether this is a full import.
    pub fn is_full(&self) -> bool {
        self.kind == FetchKind::Full
    }
}

/// A window of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FetchWindow {
    /// Run id.
    pub run_id: Uuid,
    /// Position within the run (windows are in time order).
    pub idx: i32,
    /// Lower bound (inclusive).
    pub since: Option<DateTime<Utc>>,
    /// Upper bound (exclusive).
    pub until: DateTime<Utc>,
    /// Sequence number of the next page job.
    pub next_seq: i32,
    /// `date_updated` of the last lead of the last committed page.
    pub progress: Option<DateTime<Utc>>,
    /// Leads at exactly `progress` already written.
    pub skip_ids: Vec<String>,
    /// Every page read.
    pub done: bool,
    /// Pages written.
    pub pages_done: i32,
    /// Leads written.
    pub leads: i64,
}

impl FetchWindow {
    /// Where the next page starts.
    pub fn resume_from(&self) -> Option<DateTime<Utc>> {
        self.progress.or(self.since)
    }
}

/// What one page job wrote, to commit.
#[derive(Debug, Clone, PartialEq)]
pub struct PageCommit {
    /// Run id.
    pub run_id: Uuid,
    /// Window.
    pub idx: i32,
    /// The job's sequence number.
    pub seq: i32,
    /// `date_updated` of the last lead written (`None`: no lead in the page).
    pub progress: Option<DateTime<Utc>>,
    /// Leads at exactly `progress` written by this page (and the previous ones).
    pub skip_ids: Vec<String>,
    /// The window has no more pages.
    pub done: bool,
    /// Leads written.
    pub leads: i64,
    /// Contacts written.
    pub contacts: i64,
}

/// Result of [`Store::commit_fetch_page`].
#[derive(Debug, Clone, PartialEq)]
pub enum PageCommitResult {
    /// The run is no longer active or another job committed this page: nothing changed.
    Stale,
    /// Committed.
    Committed {
        /// This was the last page of the run.
        run_completed: bool,
        /// The connector's cursor after the commit.
        cursor: Option<DateTime<Utc>>,
    },
}

/// Result of [`Store::plan_fetch_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanResult {
    /// Windows recorded; the run is running.
    Planned,
    /// The run was already planned (a redelivered job): its windows stand.
    AlreadyPlanned,
    /// The run is no longer active.
    Inactive,
}

/// Where a connector's incoming sync stands, for operators (`/admin`, CLI, API).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncomingProgress {
    /// Connector id.
    pub connector_id: String,
    /// Every lead updated before this instant is in Hull.
    pub cursor: Option<DateTime<Utc>>,
    /// Seconds between now and the cursor.
    pub lag_seconds: Option<f64>,
    /// When the first full import completed.
    pub full_import_completed_at: Option<DateTime<Utc>>,
    /// When the last run started.
    pub last_run_started_at: Option<DateTime<Utc>>,
    /// A pending fetch request.
    pub fetch_requested_at: Option<DateTime<Utc>>,
    /// The most recent run.
    pub last_run: Option<FetchRun>,
    /// Its windows.
    pub windows: Vec<FetchWindow>,
}

/// A connector's Close webhook subscription, with its signing key decrypted.
#[derive(Clone, PartialEq)]
pub struct StoredSubscription {
    /// `whsub_…`
    pub subscription_id: String,
    /// Delivery URL.
    pub url: String,
    /// Hex signing key.
    pub signature_key: String,
    /// Fingerprint of the API key it was created with.
    pub api_key_fingerprint: Option<String>,
    /// Last upkeep.
    pub checked_at: DateTime<Utc>,
}

impl std::fmt::Debug for StoredSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSubscription")
            .field("subscription_id", &self.subscription_id)
            .field("url", &self.url)
            .field("signature_key", &"<redacted>")
            .field("checked_at", &self.checked_at)
            .finish()
    }
}

const RUN_COLUMNS: &str = "id, connector_id, kind, state, since, until, page_size, windows, lease_secs, lease_until,
    pages_done, leads_imported, contacts_imported, events_applied, last_error, started_at, finished_at";

const WINDOW_COLUMNS: &str =
    "run_id, idx, since, until, next_seq, progress, skip_ids, done, pages_done, leads";

fn run_from_row(r: &tokio_postgres::Row) -> FetchRun {
    FetchRun {
        id: r.get(0),
        connector_id: r.get(1),
        kind: FetchKind::from_sql(r.get(2)),
        state: FetchRunState::from_sql(r.get(3)),
        since: r.get(4),
        until: r.get(5),
        page_size: r.get(6),
        windows: r.get(7),
        lease_secs: r.get(8),
        lease_until: r.get(9),
        pages_done: r.get(10),
        leads_imported: r.get(11),
        contacts_imported: r.get(12),
        events_applied: r.get(13),
        last_error: r.get(14),
        started_at: r.get(15),
        finished_at: r.get(16),
    }
}

fn window_from_row(r: &tokio_postgres::Row) -> FetchWindow {
    let skip: Value = r.get(6);
    FetchWindow {
        run_id: r.get(0),
        idx: r.get(1),
        since: r.get(2),
        until: r.get(3),
        next_seq: r.get(4),
        progress: r.get(5),
        skip_ids: serde_json::from_value(skip).unwrap_or_default(),
        done: r.get(7),
        pages_done: r.get(8),
        leads: r.get(9),
    }
}

impl Store {
    /// The connector's most recent fetch runs, newest first.
    pub async fn recent_fetch_runs(
        &self,
        connector_id: &str,
        limit: i64,
    ) -> Result<Vec<FetchRun>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                &format!("SELECT {RUN_COLUMNS} FROM fetch_runs WHERE connector_id = $1 ORDER BY started_at DESC LIMIT $2"),
                &[&connector_id, &limit],
            )
            .await?;
        Ok(rows.iter().map(run_from_row).collect())
    }
}

impl Store {
    /// Asks for a fetch of a connector (Hull's `/fetch`, the admin button, `closeio-ctl`); the
    /// scheduler starts it on its next pass (a full import when `full`, or when none has
    /// completed yet). Returns `false` when the connector is unknown.
    pub async fn request_fetch(&self, connector_id: &str, full: bool) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let n = c
            .execute_p(
                "INSERT INTO incoming_state (connector_id, fetch_requested_at, full_import_requested)
                 SELECT id, now(), $2 FROM connectors WHERE id = $1
                 ON CONFLICT (connector_id) DO UPDATE SET fetch_requested_at = now(),
                   full_import_requested = incoming_state.full_import_requested OR EXCLUDED.full_import_requested,
                   updated_at = now()",
                &[&connector_id, &full],
            )
            .await?;
        Ok(n > 0)
    }

    /// Connectors with an API key, not parked and without an active run, with their incoming
    /// state (the scheduler decides which are due).
    pub async fn fetch_candidates(&self) -> Result<Vec<FetchCandidate>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                &format!("SELECT c.id, s.cursor, s.full_import_completed_at, s.last_run_started_at, s.fetch_requested_at,
                        COALESCE(s.full_import_requested, false)
                 FROM connectors c LEFT JOIN incoming_state s ON s.connector_id = c.id
                 WHERE c.api_key_enc IS NOT NULL AND {PARKED_FILTER}
                   AND NOT EXISTS (SELECT 1 FROM fetch_runs r WHERE r.connector_id = c.id AND r.state IN ('planning', 'running'))
                 ORDER BY c.id"),
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| FetchCandidate {
                connector_id: r.get(0),
                cursor: r.get(1),
                full_import_completed_at: r.get(2),
                last_run_started_at: r.get(3),
                fetch_requested_at: r.get(4),
                full_import_requested: r.get(5),
            })
            .collect())
    }

    /// Abandons the active runs whose lease expired (a crashed or stuck run); returns
    /// `(run id, connector id)` of each. The next run resumes from the cursor.
    pub async fn expire_fetch_runs(&self) -> Result<Vec<(Uuid, String)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "UPDATE fetch_runs SET state = 'abandoned', finished_at = now(),
                   last_error = COALESCE(last_error, 'lease expired without progress')
                 WHERE state IN ('planning', 'running') AND lease_until < now()
                 RETURNING id, connector_id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Creates a run in state `planning` unless the connector already has an active one
    /// (`None` then), and clears the connector's pending fetch request.
    pub async fn create_fetch_run(
        &self,
        connector_id: &str,
        run: &NewFetchRun,
    ) -> Result<Option<Uuid>, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let id = Uuid::new_v4();
        let n = tx
            .execute_p(
                "INSERT INTO fetch_runs (id, connector_id, kind, state, since, until, page_size, windows, lease_secs, lease_until)
                 VALUES ($1, $2, $3, 'planning', $4, $5, $6, $7, $8, now() + make_interval(secs => $8))
                 ON CONFLICT DO NOTHING",
                &[&id, &connector_id, &run.kind.as_str(), &run.since, &run.until, &run.page_size, &run.windows, &run.lease_secs],
            )
            .await?;
        if n == 0 {
            return Ok(None);
        }
        tx.execute_p(
            "INSERT INTO incoming_state (connector_id, last_run_started_at) VALUES ($1, now())
             ON CONFLICT (connector_id) DO UPDATE SET last_run_started_at = now(), fetch_requested_at = NULL,
               full_import_requested = false, updated_at = now()",
            &[&connector_id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Ends an active run as `abandoned` (e.g. its first job could not be published).
    pub async fn abandon_fetch_run(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        self.end_fetch_run(run_id, "abandoned", reason).await
    }

    /// Ends an active run as `failed` (the connector's configuration must be fixed first).
    pub async fn fail_fetch_run(&self, run_id: Uuid, reason: &str) -> Result<(), StoreError> {
        self.end_fetch_run(run_id, "failed", reason).await
    }

    async fn end_fetch_run(
        &self,
        run_id: Uuid,
        state: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE fetch_runs SET state = $2, last_error = $3, finished_at = now()
             WHERE id = $1 AND state IN ('planning', 'running')",
            &[&run_id, &state, &reason],
        )
        .await?;
        Ok(())
    }

    /// Records the last error of a run without ending it (it is being retried).
    pub async fn note_fetch_error(&self, run_id: Uuid, error: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE fetch_runs SET last_error = $2 WHERE id = $1",
            &[&run_id, &error],
        )
        .await?;
        Ok(())
    }

    /// One run.
    pub async fn fetch_run(&self, run_id: Uuid) -> Result<Option<FetchRun>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                &format!("SELECT {RUN_COLUMNS} FROM fetch_runs WHERE id = $1"),
                &[&run_id],
            )
            .await?;
        Ok(row.as_ref().map(run_from_row))
    }

    /// The windows of a run, in order.
    /// Claims the publication of the `next_seq` page of every open window of a run whose page
    /// job was not published within `grace_secs` (never, or by a job that died): returns the
    /// windows the caller must publish. A redelivered `FetchStart` claims nothing, so it
    /// cannot double a chain.
    pub async fn claim_open_pages(
        &self,
        run_id: Uuid,
        grace_secs: f64,
    ) -> Result<Vec<FetchWindow>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                &format!(
                    "UPDATE fetch_windows SET next_published_at = now()
                     WHERE run_id = $1 AND NOT done
                       AND (next_published_at IS NULL OR next_published_at < now() - make_interval(secs => $2))
                     RETURNING {WINDOW_COLUMNS}"
                ),
                &[&run_id, &grace_secs],
            )
            .await?;
        let mut windows: Vec<FetchWindow> = rows.iter().map(window_from_row).collect();
        windows.sort_by_key(|w| w.idx);
        Ok(windows)
    }

    /// Gives back claims of [`Self::claim_open_pages`] whose jobs could not be published.
    pub async fn release_open_pages(&self, run_id: Uuid, idxs: &[i32]) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE fetch_windows SET next_published_at = NULL WHERE run_id = $1 AND idx = ANY($2)",
            &[&run_id, &idxs],
        )
        .await?;
        Ok(())
    }

    /// Claims the publication of page `next_seq` of one window, as [`Self::claim_open_pages`];
    /// `Some(true)`: publish it; `Some(false)`: published recently, retry later; `None`: the
    /// window moved on.
    pub async fn claim_successor(
        &self,
        run_id: Uuid,
        idx: i32,
        next_seq: i32,
        grace_secs: f64,
    ) -> Result<Option<bool>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                "UPDATE fetch_windows SET next_published_at = CASE
                     WHEN next_published_at IS NULL OR next_published_at < now() - make_interval(secs => $4) THEN now()
                     ELSE next_published_at END
                 WHERE run_id = $1 AND idx = $2 AND next_seq = $3 AND NOT done
                 RETURNING next_published_at = now()",
                &[&run_id, &idx, &next_seq, &grace_secs],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn fetch_windows(&self, run_id: Uuid) -> Result<Vec<FetchWindow>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                &format!(
                    "SELECT {WINDOW_COLUMNS} FROM fetch_windows WHERE run_id = $1 ORDER BY idx"
                ),
                &[&run_id],
            )
            .await?;
        Ok(rows.iter().map(window_from_row).collect())
    }

    /// One window of a run.
    pub async fn fetch_window(
        &self,
        run_id: Uuid,
        idx: i32,
    ) -> Result<Option<FetchWindow>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                &format!(
                    "SELECT {WINDOW_COLUMNS} FROM fetch_windows WHERE run_id = $1 AND idx = $2"
                ),
                &[&run_id, &idx],
            )
            .await?;
        Ok(row.as_ref().map(window_from_row))
    }

    /// Records the windows of a planned run (`(since, until)` in time order) and the events
    /// applied while planning, and sets it running.
    pub async fn plan_fetch_run(
        &self,
        run_id: Uuid,
        windows: &[(Option<DateTime<Utc>>, DateTime<Utc>)],
        events_applied: i64,
    ) -> Result<PlanResult, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let state: Option<String> = tx
            .query_opt_p(
                "SELECT state FROM fetch_runs WHERE id = $1 FOR UPDATE",
                &[&run_id],
            )
            .await?
            .map(|r| r.get(0));
        match state.as_deref() {
            Some("planning") => {}
            Some("running") => return Ok(PlanResult::AlreadyPlanned),
            _ => return Ok(PlanResult::Inactive),
        }
        for (idx, (since, until)) in windows.iter().enumerate() {
            let idx = i32::try_from(idx).unwrap_or(i32::MAX);
            tx.execute_p(
                "INSERT INTO fetch_windows (run_id, idx, since, until) VALUES ($1, $2, $3, $4)",
                &[&run_id, &idx, since, until],
            )
            .await?;
        }
        tx.execute_p(
            "UPDATE fetch_runs SET state = 'running', events_applied = $2, lease_until = now() + make_interval(secs => lease_secs)
             WHERE id = $1",
            &[&run_id, &events_applied],
        )
        .await?;
        tx.commit().await?;
        Ok(PlanResult::Planned)
    }

    /// Commits a page written to Hull: moves the window forward (only if `seq` is its next
    /// page), extends the run's lease, completes the run after its last page, and advances the
    /// connector's cursor to the progress of the first unfinished window.
    pub async fn commit_fetch_page(
        &self,
        page: &PageCommit,
    ) -> Result<PageCommitResult, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await?;
        let run = tx
            .query_opt_p(
                "SELECT connector_id, state, until, kind FROM fetch_runs WHERE id = $1 FOR UPDATE",
                &[&page.run_id],
            )
            .await?;
        let Some(run) = run else {
            return Ok(PageCommitResult::Stale);
        };
        let (connector_id, state, until, kind): (String, String, DateTime<Utc>, String) =
            (run.get(0), run.get(1), run.get(2), run.get(3));
        if state != "running" {
            return Ok(PageCommitResult::Stale);
        }
        let skip = serde_json::to_value(&page.skip_ids).unwrap_or_else(|_| Value::Array(vec![]));
        let n = tx
            .execute_p(
                "UPDATE fetch_windows SET next_seq = next_seq + 1, progress = COALESCE($4, progress), skip_ids = $5,
                   done = $6, pages_done = pages_done + 1, leads = leads + $7, updated_at = now(),
                   next_published_at = now()
                 WHERE run_id = $1 AND idx = $2 AND next_seq = $3 AND NOT done",
                &[&page.run_id, &page.idx, &page.seq, &page.progress, &skip, &page.done, &page.leads],
            )
            .await?;
        if n == 0 {
            return Ok(PageCommitResult::Stale);
        }
        tx.execute_p(
            "UPDATE fetch_runs SET pages_done = pages_done + 1, leads_imported = leads_imported + $2,
               contacts_imported = contacts_imported + $3, last_error = NULL,
               lease_until = now() + make_interval(secs => lease_secs)
             WHERE id = $1",
            &[&page.run_id, &page.leads, &page.contacts],
        )
        .await?;
        let windows = tx
            .query_p("SELECT done, COALESCE(progress, since) FROM fetch_windows WHERE run_id = $1 ORDER BY idx", &[&page.run_id])
            .await?;
        let first_open = windows.iter().find(|w| !w.get::<_, bool>(0));
        let run_completed = first_open.is_none();
        let candidate: Option<DateTime<Utc>> = match first_open {
            Some(w) => w.get(1),
            None => Some(until),
        };
        if run_completed {
            tx.execute_p(
                "UPDATE fetch_runs SET state = 'completed', finished_at = now() WHERE id = $1",
                &[&page.run_id],
            )
            .await?;
            if kind == FetchKind::Full.as_str() {
                tx.execute_p(
                    "INSERT INTO incoming_state (connector_id, full_import_completed_at) VALUES ($1, now())
                     ON CONFLICT (connector_id) DO UPDATE SET full_import_completed_at = now(), updated_at = now()",
                    &[&connector_id],
                )
                .await?;
            }
        }
        let cursor: Option<DateTime<Utc>> = tx
            .query_one_p(
                "INSERT INTO incoming_state (connector_id, cursor) VALUES ($1, $2)
                 ON CONFLICT (connector_id) DO UPDATE SET cursor = GREATEST(incoming_state.cursor, EXCLUDED.cursor),
                   updated_at = now()
                 RETURNING cursor",
                &[&connector_id, &candidate],
            )
            .await?
            .get(0);
        tx.commit().await?;
        Ok(PageCommitResult::Committed {
            run_completed,
            cursor,
        })
    }

    /// Where a connector's incoming sync stands (cursor, lag, last run with its windows).
    /// `None` for an unknown connector.
    pub async fn incoming_progress(
        &self,
        connector_id: &str,
    ) -> Result<Option<IncomingProgress>, StoreError> {
        let c = self.pool.get().await?;
        let exists = c
            .query_opt_p("SELECT 1 FROM connectors WHERE id = $1", &[&connector_id])
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let state = c
            .query_opt_p(
                "SELECT cursor, full_import_completed_at, last_run_started_at, fetch_requested_at
                 FROM incoming_state WHERE connector_id = $1",
                &[&connector_id],
            )
            .await?;
        let run = c
            .query_opt_p(
                &format!("SELECT {RUN_COLUMNS} FROM fetch_runs WHERE connector_id = $1 ORDER BY started_at DESC LIMIT 1"),
                &[&connector_id],
            )
            .await?
            .as_ref()
            .map(run_from_row);
        drop(c);
        let windows = match &run {
            Some(r) => self.fetch_windows(r.id).await?,
            None => Vec::new(),
        };
        let cursor: Option<DateTime<Utc>> = state.as_ref().and_then(|s| s.get(0));
        Ok(Some(IncomingProgress {
            connector_id: connector_id.to_string(),
            cursor,
            lag_seconds: cursor.map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0),
            full_import_completed_at: state.as_ref().and_then(|s| s.get(1)),
            last_run_started_at: state.as_ref().and_then(|s| s.get(2)),
            fetch_requested_at: state.as_ref().and_then(|s| s.get(3)),
            last_run: run,
            windows,
        }))
    }

    /// The connector's webhook subscription, with its signing key decrypted.
    pub async fn webhook_subscription(
        &self,
        connector_id: &str,
    ) -> Result<Option<StoredSubscription>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                "SELECT subscription_id, url, signature_key_enc, api_key_fingerprint, checked_at
                 FROM webhook_subscriptions WHERE connector_id = $1",
                &[&connector_id],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(StoredSubscription {
            subscription_id: row.get(0),
            url: row.get(1),
            signature_key: self.secrets.open(row.get::<_, Vec<u8>>(2).as_slice())?,
            api_key_fingerprint: row.get(3),
            checked_at: row.get(4),
        }))
    }

    /// Records a new subscription (its signing key encrypted), replacing the previous one.
    pub async fn save_webhook_subscription(
        &self,
        connector_id: &str,
        subscription_id: &str,
        url: &str,
        signature_key: &str,
        api_key_fingerprint: &str,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        let sealed = self.secrets.seal(signature_key);
        c.execute_p(
            "INSERT INTO webhook_subscriptions (connector_id, subscription_id, url, signature_key_enc, api_key_fingerprint)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (connector_id) DO UPDATE SET subscription_id = EXCLUDED.subscription_id, url = EXCLUDED.url,
               signature_key_enc = EXCLUDED.signature_key_enc, api_key_fingerprint = EXCLUDED.api_key_fingerprint,
               created_at = now(), checked_at = now()",
            &[&connector_id, &subscription_id, &url, &sealed, &api_key_fingerprint],
        )
        .await?;
        Ok(())
    }

    /// Marks the subscription checked now.
    pub async fn touch_webhook_subscription(&self, connector_id: &str) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE webhook_subscriptions SET checked_at = now() WHERE connector_id = $1",
            &[&connector_id],
        )
        .await?;
        Ok(())
    }

    /// Connectors (with an API key, not parked) whose subscription is missing, was made with
    /// another API key, or was last checked more than `interval_secs` ago.
    pub async fn connectors_due_for_webhooks(
        &self,
        interval_secs: f64,
    ) -> Result<Vec<String>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                &format!("SELECT c.id FROM connectors c LEFT JOIN webhook_subscriptions w ON w.connector_id = c.id
                 WHERE c.api_key_enc IS NOT NULL AND {PARKED_FILTER}
                   AND (w.connector_id IS NULL OR w.api_key_fingerprint IS DISTINCT FROM c.api_key_fingerprint
                        OR w.checked_at < now() - make_interval(secs => $1))
                 ORDER BY c.id"),
                &[&interval_secs],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Forgets webhook events older than `older_than_secs` (Close retries for 72 hours at most).
    pub async fn purge_webhook_events(&self, older_than_secs: f64) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        Ok(c.execute_p(
            "DELETE FROM webhook_events WHERE received_at < now() - make_interval(secs => $1)",
            &[&older_than_secs],
        )
        .await?)
    }
}
