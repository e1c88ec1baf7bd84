//! Incoming sync: Close leads and contacts → Hull accounts and users.
//!
//! - `fetch_start` plans a fetch run: it splits `[since, until)` into time windows (from the
//!   oldest and newest `date_updated` in the range), applies the event log's deletions and
//!   merges (incremental runs), records the windows and publishes the first page job of each.
//! - `fetch_page` reads one page of a window (`POST /data/search/`, `date_updated` ascending,
//!   keyset on the last `date_updated` seen, so no search sequence comes near Close's 10 000
//!   cap and no cursor has to outlive a job), writes it to the firehose, commits the window's
//!   progress (which advances the connector's cursor) and publishes the next page job.
//! - `refresh_lead` (webhooks) reads one lead with its contacts and writes it.
//! - `close_deleted` marks a deleted lead or contact (or a lead merged away) in Hull.
//!
//! Traits and claims come from `common::mapping`, exactly as the original connector: account
//! traits and claims per lead (plus the opportunity summary when `sync_opportunities` is on),
//! user traits and claims per contact, and the user → account link. Every write goes to the
//! firehose before anything is committed: a failed firehose call fails the job (retried),
//! and the cursor never moves past data Hull has not accepted.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use common::changes::{changes_from_event, CloseChange, EVENT_LOG_ACTIONS};
use common::closeio::{parse_close_datetime, CloseError, EventQuery};
use common::error::{Classify, ErrorClass};
use common::hull::FirehoseEntry;
use common::jobs::{EntityKind, Envelope, Job};
use common::mapping::{self, CloseMetadata, Settings, ANONYMOUS_ID_PREFIX};
use common::store::{FetchRun, FetchWindow, PageCommit, PageCommitResult, PlanResult};

use crate::outcome::Outcome;
use crate::tenant::{tenant, Tenant};
use crate::{Ctx, JobError};

/// Page size of the event log (Close's cap).
const EVENT_PAGE_SIZE: u32 = 50;

/// Most search pages one page job follows while every lead has the same `date_updated`.
const MAX_SAME_TIMESTAMP_PAGES: usize = 50;

/// How long a page job may take to appear after its publication was claimed before another
/// job publishes it again.
pub const SUCCESSOR_GRACE: std::time::Duration = std::time::Duration::from_secs(90);

/// `FetchStart`: plan a run and publish its first pages.
pub async fn fetch_start(ctx: &Ctx, connector_id: &str, run_id: Uuid) -> Result<Outcome, JobError> {
    let result = plan(ctx, connector_id, run_id).await;
    on_run_error(ctx, run_id, result).await
}

/// `FetchPage`: read, write and commit one page of a window.
pub async fn fetch_page(
    ctx: &Ctx,
    connector_id: &str,
    run_id: Uuid,
    window: i32,
    seq: i32,
) -> Result<Outcome, JobError> {
    let result = page(ctx, connector_id, run_id, window, seq).await;
    on_run_error(ctx, run_id, result).await
}

/// Records a run's failure: a configuration error ends the run (the connector is parked and
/// the scheduler starts no other run until its settings are fixed); other errors are noted on
/// the run while the job is retried.
async fn on_run_error(
    ctx: &Ctx,
    run_id: Uuid,
    result: Result<Outcome, JobError>,
) -> Result<Outcome, JobError> {
    let Err(e) = result else { return result };
    let message = e.to_string();
    let class = e.class();
    if matches!(class, ErrorClass::Retryable { .. }) {
        tracing::warn!(run = %run_id, class = class.label(), error = %message, "incoming.job.error");
    } else {
        tracing::error!(run = %run_id, class = class.label(), error = %message, "incoming.job.error");
    }
    let recorded = match class {
        ErrorClass::Configuration => ctx.store.fail_fetch_run(run_id, &message).await,
        _ => ctx.store.note_fetch_error(run_id, &message).await,
    };
    if let Err(store) = recorded {
        tracing::warn!(run = %run_id, error = %store, "could not record the run's error");
    }
    Err(e)
}

/// A fetch run a job may work on, or why it may not.
enum RunCheck {
    /// Planning or running.
    Active(FetchRun),
    /// Finished, abandoned or gone: the job has nothing to do.
    Stale(String),
}

async fn active_run(ctx: &Ctx, run_id: Uuid) -> Result<RunCheck, JobError> {
    Ok(match ctx.store.fetch_run(run_id).await? {
        Some(run) if run.is_active() => RunCheck::Active(run),
        Some(run) => RunCheck::Stale(format!("run {run_id} is {}", run.state)),
        None => RunCheck::Stale(format!("run {run_id} does not exist")),
    })
}

async fn plan(ctx: &Ctx, connector_id: &str, run_id: Uuid) -> Result<Outcome, JobError> {
    let run = match active_run(ctx, run_id).await? {
        RunCheck::Active(run) => run,
        RunCheck::Stale(why) => return Ok(Outcome::Stale(why)),
    };
    let t = tenant(ctx, connector_id).await?;
    tracing::info!(run = %run_id, kind = %run.kind,
        since = ?run.since.map(|s| s.to_rfc3339()), until = %run.until.to_rfc3339(), "incoming.job.start");
    let mut events = 0;
    let mut windows_planned = 0;
    if run.state == common::store::FetchRunState::Planning {
        let windows = plan_windows(ctx, &t, &run).await?;
        if !run.is_full() {
            events = apply_event_log(ctx, &t, run.since, run.until).await?;
        }
        windows_planned = windows.len();
        match ctx
            .store
            .plan_fetch_run(run_id, &windows, events as i64)
            .await?
        {
            PlanResult::Planned | PlanResult::AlreadyPlanned => {}
            PlanResult::Inactive => {
                return Ok(Outcome::Stale(format!("run {run_id} ended while planning")))
            }
        }
    }
    // Only the windows whose page job nobody published recently: a redelivered FetchStart
    // publishes nothing twice.
    let open: Vec<FetchWindow> = ctx
        .store
        .claim_open_pages(run_id, SUCCESSOR_GRACE.as_secs_f64())
        .await?;
    let jobs: Vec<Envelope> = open
        .iter()
        .map(|w| {
            Envelope::new(
                connector_id,
                Job::FetchPage {
                    run_id,
                    window: w.idx,
                    seq: w.next_seq,
                },
            )
        })
        .collect();
    if let Err(e) = ctx.queue.publish_all(&jobs).await {
        let idxs: Vec<i32> = open.iter().map(|w| w.idx).collect();
        ctx.store.release_open_pages(run_id, &idxs).await?;
        return Err(e.into());
    }
    Ok(Outcome::Planned {
        windows: windows_planned.max(open.len()),
        events,
    })
}

fn date_updated(lead: &Value) -> Option<DateTime<Utc>> {
    lead.get("date_updated")
        .and_then(Value::as_str)
        .and_then(parse_close_datetime)
}

/// Splits the run's range into at most `run.windows` windows of equal duration between the
/// oldest and the newest `date_updated` it holds (two one-lead searches).
async fn plan_windows(
    ctx: &Ctx,
    t: &Tenant,
    run: &FetchRun,
) -> Result<Vec<(Option<DateTime<Utc>>, DateTime<Utc>)>, JobError> {
    let single = vec![(run.since, run.until)];
    if run.windows <= 1 {
        return Ok(single);
    }
    let Some(first) = ctx
        .close
        .lead_updated_boundary(&t.key, run.since, run.until, false)
        .await?
    else {
        return Ok(single);
    };
    let Some(last) = ctx
        .close
        .lead_updated_boundary(&t.key, run.since, run.until, true)
        .await?
    else {
        return Ok(single);
    };
    let span = last - first;
    let n = run.windows.max(1);
    if span <= chrono::Duration::seconds(i64::from(n)) {
        return Ok(single);
    }
    let step = span / n;
    let mut windows = Vec::with_capacity(n as usize);
    let mut since = run.since;
    for i in 1..n {
        let bound = first + step * i;
        windows.push((since, bound));
        since = Some(bound);
    }
    windows.push((since, run.until));
    Ok(windows)
}

/// Applies the deletions and merges of the event log in `[since, until)` (the safety net for
/// missed webhooks). Returns how many events were applied.
async fn apply_event_log(
    ctx: &Ctx,
    t: &Tenant,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
) -> Result<usize, JobError> {
    let mut entries = Vec::new();
    let mut applied = 0;
    for (object_type, action) in EVENT_LOG_ACTIONS {
        let mut cursor = None;
        loop {
            let page = ctx
                .close
                .events(
                    &t.key,
                    EventQuery {
                        object_type: Some((*object_type).to_string()),
                        action: Some((*action).to_string()),
                        date_updated_gte: since,
                        date_updated_lt: Some(until),
                        cursor: cursor.take(),
                        limit: Some(EVENT_PAGE_SIZE),
                        ..EventQuery::default()
                    },
                )
                .await?;
            for event in &page.data {
                for change in changes_from_event(event) {
                    if let CloseChange::Deleted {
                        kind,
                        close_id,
                        at,
                        merged_into,
                    } = change
                    {
                        entries.push(deletion_entry(
                            kind,
                            &close_id,
                            &at,
                            merged_into.as_deref(),
                        )?);
                        applied += 1;
                    }
                }
            }
            match page.cursor_next {
                Some(next) if !page.data.is_empty() => cursor = Some(next),
                _ => break,
            }
        }
    }
    ctx.firehose.send(&t.creds, entries).await?;
    Ok(applied)
}

/// The firehose entry marking a deleted lead (account) or contact (user), or a lead merged
/// away, claimed by `anonymous_id: closeio:<id>`.
fn deletion_entry(
    kind: EntityKind,
    close_id: &str,
    at: &str,
    merged_into: Option<&str>,
) -> Result<FirehoseEntry, JobError> {
    let mut claims = Map::new();
    claims.insert(
        "anonymous_id".into(),
        Value::String(format!("{ANONYMOUS_ID_PREFIX}{close_id}")),
    );
    let entry = match (kind, merged_into) {
        (EntityKind::Account, Some(destination)) => {
            FirehoseEntry::traits_account(claims, mapping::merged_traits(destination, at))
        }
        (EntityKind::Account, None) => {
            FirehoseEntry::traits_account(claims, mapping::deleted_traits(at))
        }
        (EntityKind::User, _) => FirehoseEntry::traits_user(claims, mapping::deleted_traits(at)),
    };
    Ok(entry?)
}

/// Firehose entries of one lead: the account, then per contact the user and its link to the
/// account. Leads or contacts that give no usable claims are logged and skipped.
#[derive(Default)]
struct LeadEntries {
    entries: Vec<FirehoseEntry>,
    /// What to log once Hull accepted the entries.
    written: Written,
}

/// The success lines of one lead, logged once Hull accepted its entries. The traits are kept
/// as their JSON text (and only when info is logged), not as a second copy of the maps.
#[derive(Default)]
struct Written {
    /// `(lead id, account traits)`.
    account: Option<(String, Option<String>)>,
    /// `(contact id, user traits)` per contact.
    users: Vec<(String, Option<String>)>,
}

/// The traits as logged with a success line, when info lines are logged at all.
fn traits_for_log(traits: &Map<String, Value>) -> Option<String> {
    if tracing::enabled!(tracing::Level::INFO) {
        serde_json::to_string(traits).ok()
    } else {
        None
    }
}

/// Maps one lead, consuming it: its contacts are moved out, not copied, so a page's leads are
/// freed one by one as they are mapped.
fn lead_entries(s: &Settings, meta: &CloseMetadata, mut lead: Value) -> LeadEntries {
    let mut out = LeadEntries::default();
    let lead_id = lead
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let account_claims = mapping::account_claims(s, &lead);
    let mut traits = mapping::lead_traits(s, meta, &lead);
    if s.sync_opportunities {
        traits.extend(mapping::opportunity_traits(&lead));
    }
    let account_log = traits_for_log(&traits);
    match FirehoseEntry::traits_account(account_claims.clone(), traits) {
        Ok(entry) => out.entries.push(entry),
        Err(e) => {
            tracing::error!(lead_id = %lead_id, error = %e, "incoming.account.error");
            return out;
        }
    }
    let contacts = match lead.get_mut("contacts").map(Value::take) {
        Some(Value::Array(contacts)) => contacts,
        _ => Vec::new(),
    };
    drop(lead);
    for mut contact in contacts {
        if let Some(obj) = contact.as_object_mut() {
            if obj.get("lead_id").is_none_or(Value::is_null) {
                obj.insert("lead_id".into(), Value::String(lead_id.clone()));
            }
        }
        let contact_id = contact
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let user_claims = mapping::user_claims(&contact);
        let user_traits = mapping::contact_traits(s, meta, &contact);
        let user_log = traits_for_log(&user_traits);
        let built =
            FirehoseEntry::link_user_to_account(user_claims.clone(), account_claims.clone())
                .and_then(|link| Ok((FirehoseEntry::traits_user(user_claims, user_traits)?, link)));
        match built {
            Ok((user, link)) => {
                out.entries.push(user);
                out.entries.push(link);
                out.written.users.push((contact_id, user_log));
            }
            Err(e) => {
                tracing::error!(lead_id = %lead_id, contact_id = %contact_id, error = %e, "incoming.user.error")
            }
        }
    }
    out.written.account = Some((lead_id, account_log));
    out
}

fn log_written(written: &[Written]) -> (usize, usize) {
    let (mut leads, mut contacts) = (0, 0);
    for w in written {
        if let Some((lead_id, traits)) = &w.account {
            leads += 1;
            tracing::info!(lead_id = %lead_id, traits = traits.as_deref().unwrap_or_default(), "incoming.account.success");
        }
        for (contact_id, traits) in &w.users {
            contacts += 1;
            tracing::info!(contact_id = %contact_id, traits = traits.as_deref().unwrap_or_default(), "incoming.user.success");
        }
    }
    metrics::counter!("incoming_leads_total").increment(leads as u64);
    metrics::counter!("incoming_contacts_total").increment(contacts as u64);
    (leads, contacts)
}

/// Maps and writes leads to the firehose; returns `(leads, contacts)` written. Each lead is
/// dropped as soon as it is mapped, so a page is held once, not alongside its entries.
async fn write_leads(
    ctx: &Ctx,
    t: &Tenant,
    meta: &CloseMetadata,
    leads: Vec<Value>,
) -> Result<(usize, usize), JobError> {
    let mut entries = Vec::new();
    let mut written = Vec::with_capacity(leads.len());
    for lead in leads {
        let mapped = lead_entries(&t.settings, meta, lead);
        entries.extend(mapped.entries);
        written.push(mapped.written);
    }
    ctx.firehose.send(&t.creds, entries).await?;
    Ok(log_written(&written))
}

/// Leads of one page job: what was read, whether the window is exhausted.
struct PageRead {
    leads: Vec<Value>,
    exhausted: bool,
}

/// Reads the next page of a window from `since`. When every lead read has exactly `since` as
/// `date_updated` (a page full of ties), the same search sequence is followed further so the
/// window always moves forward.
async fn read_page(
    ctx: &Ctx,
    t: &Tenant,
    since: Option<DateTime<Utc>>,
    until: DateTime<Utc>,
    page_size: u32,
) -> Result<PageRead, JobError> {
    let mut leads: Vec<Value> = Vec::new();
    let mut cursor = None;
    for _ in 0..MAX_SAME_TIMESTAMP_PAGES {
        let page = ctx
            .close
            .search_leads_updated(&t.key, since, Some(until), cursor.take(), page_size)
            .await?;
        metrics::counter!("incoming_pages_total").increment(1);
        let full = page.data.len() >= page_size as usize;
        leads.extend(page.data);
        let exhausted = !full || page.cursor.is_none();
        let moved = since.is_none() || leads.last().and_then(date_updated) != since;
        if exhausted || moved {
            return Ok(PageRead { leads, exhausted });
        }
        cursor = page.cursor;
    }
    Err(JobError::Permanent(format!(
        "more than {} leads share the date_updated {since:?}; cannot page past them",
        MAX_SAME_TIMESTAMP_PAGES * page_size as usize
    )))
}

async fn page(
    ctx: &Ctx,
    connector_id: &str,
    run_id: Uuid,
    idx: i32,
    seq: i32,
) -> Result<Outcome, JobError> {
    let run = match active_run(ctx, run_id).await? {
        RunCheck::Active(run) => run,
        RunCheck::Stale(why) => return Ok(Outcome::Stale(why)),
    };
    let Some(window) = ctx.store.fetch_window(run_id, idx).await? else {
        return Ok(Outcome::Stale(format!("run {run_id} has no window {idx}")));
    };
    if window.done {
        return Ok(Outcome::Stale(format!(
            "window {idx} of run {run_id} is done"
        )));
    }
    if seq != window.next_seq {
        if seq + 1 == window.next_seq {
            // This page was committed; its committer publishes the successor. If that did not
            // happen within the grace period (it died in between), this job does — once.
            match ctx
                .store
                .claim_successor(run_id, idx, window.next_seq, SUCCESSOR_GRACE.as_secs_f64())
                .await?
            {
                Some(true) => publish_page(ctx, connector_id, run_id, idx, window.next_seq).await?,
                Some(false) => {
                    return Err(JobError::Later {
                        reason: format!(
                        "page {} of window {idx} was published moments ago; checking again later",
                        window.next_seq
                    ),
                        after: SUCCESSOR_GRACE + std::time::Duration::from_secs(1),
                    })
                }
                None => {}
            }
        }
        return Ok(Outcome::Stale(format!(
            "page {seq} of window {idx} is not the next one ({})",
            window.next_seq
        )));
    }
    let t = tenant(ctx, connector_id).await?;
    let meta = ctx
        .metadata
        .get(&ctx.store, &ctx.close, &t.connector, ctx.cfg.metadata_ttl)
        .await?;
    let since = window.resume_from();
    let page_size = u32::try_from(run.page_size).unwrap_or(100).max(1);
    let read = read_page(ctx, &t, since, window.until, page_size).await?;

    let progress = read.leads.iter().filter_map(date_updated).max();
    let mut skip_ids: Vec<String> = read
        .leads
        .iter()
        .filter(|l| progress.is_some() && date_updated(l) == progress)
        .filter_map(|l| l.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    if progress.is_some() && progress == since {
        skip_ids.extend(window.skip_ids.iter().cloned());
        skip_ids.sort();
        skip_ids.dedup();
    }
    // Leads at exactly `since` that an earlier page already wrote are not written again.
    let already = |l: &Value| {
        since.is_some()
            && date_updated(l) == since
            && l.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| window.skip_ids.iter().any(|s| s == id))
    };
    let exhausted = read.exhausted;
    let fresh: Vec<Value> = read.leads.into_iter().filter(|l| !already(l)).collect();
    let (leads, contacts) = write_leads(ctx, &t, &meta, fresh).await?;

    let commit = PageCommit {
        run_id,
        idx,
        seq,
        progress,
        skip_ids,
        done: exhausted,
        leads: leads as i64,
        contacts: contacts as i64,
    };
    match ctx.store.commit_fetch_page(&commit).await? {
        PageCommitResult::Stale => Ok(Outcome::Stale(format!(
            "page {seq} of window {idx} was committed by another job"
        ))),
        PageCommitResult::Committed {
            run_completed,
            cursor,
        } => {
            tracing::info!(run = %run_id, window = idx, page = seq, leads, contacts,
                cursor = ?cursor.map(|c| c.to_rfc3339()), "incoming.job.progress");
            if let Some(c) = cursor {
                metrics::gauge!("incoming_lag_seconds", "connector" => connector_id.to_string())
                    .set((Utc::now() - c).num_milliseconds() as f64 / 1000.0);
            }
            if run_completed {
                let totals = ctx.store.fetch_run(run_id).await?;
                tracing::info!(run = %run_id, kind = %run.kind,
                    leads = totals.as_ref().map(|r| r.leads_imported), contacts = totals.as_ref().map(|r| r.contacts_imported),
                    pages = totals.as_ref().map(|r| r.pages_done), "incoming.job.success");
                metrics::counter!("incoming_runs_total", "kind" => run.kind.as_str()).increment(1);
            } else if !exhausted {
                publish_page(ctx, connector_id, run_id, idx, seq + 1).await?;
            }
            Ok(Outcome::Page {
                leads,
                contacts,
                run_completed,
            })
        }
    }
}

async fn publish_page(
    ctx: &Ctx,
    connector_id: &str,
    run_id: Uuid,
    window: i32,
    seq: i32,
) -> Result<(), JobError> {
    let env = Envelope::new(
        connector_id,
        Job::FetchPage {
            run_id,
            window,
            seq,
        },
    );
    ctx.queue.publish_all(std::slice::from_ref(&env)).await?;
    Ok(())
}

/// `RefreshLead`: read the lead with its contacts and write it to Hull.
pub async fn refresh_lead(
    ctx: &Ctx,
    connector_id: &str,
    lead_id: &str,
) -> Result<Outcome, JobError> {
    let t = tenant(ctx, connector_id).await?;
    let meta = ctx
        .metadata
        .get(&ctx.store, &ctx.close, &t.connector, ctx.cfg.metadata_ttl)
        .await?;
    let lead = match ctx.close.get_lead(&t.key, lead_id).await {
        Ok(lead) => lead,
        // Deleted since: its deletion event marks it.
        Err(CloseError::NotFound { .. }) => {
            return Ok(Outcome::Stale(format!("lead {lead_id} no longer exists")))
        }
        Err(e) => return Err(e.into()),
    };
    let (_, contacts) = write_leads(ctx, &t, &meta, vec![lead]).await?;
    Ok(Outcome::Refreshed { contacts })
}

/// `CloseDeleted`: set `closeio/deleted_at` (and `closeio/merged_into`) in Hull.
pub async fn close_deleted(
    ctx: &Ctx,
    connector_id: &str,
    kind: EntityKind,
    close_id: &str,
    at: &str,
    merged_into: Option<&str>,
) -> Result<Outcome, JobError> {
    let t = tenant(ctx, connector_id).await?;
    let entry = deletion_entry(kind, close_id, at, merged_into)?;
    ctx.firehose.send(&t.creds, vec![entry]).await?;
    match kind {
        EntityKind::Account => {
            tracing::info!(lead_id = close_id, deleted_at = at,
            merged_into = ?merged_into, "incoming.account.success")
        }
        EntityKind::User => tracing::info!(
            connector = connector_id,
            contact_id = close_id,
            deleted_at = at,
            "incoming.user.success"
        ),
    }
    Ok(Outcome::Marked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> Settings {
        Settings::from_private_settings(&v).expect("settings")
    }

    #[test]
    fn a_lead_gives_account_user_and_link_entries() {
        let s = settings(
            json!({"api_key": "abcdefgh", "lead_attributes_inbound": ["name"], "sync_opportunities": true}),
        );
        let lead = json!({
            "id": "lead_1", "name": "Acme", "url": "https://acme.com", "date_updated": "2024-01-01T00:00:00+00:00",
            "opportunities": [],
            "contacts": [{"id": "cont_1", "emails": [{"type": "office", "email": "a@acme.com"}]}, {"id": "cont_2"}]
        });
        let out = lead_entries(&s, &CloseMetadata::default(), lead);
        assert_eq!(out.entries.len(), 5);
        assert_eq!(out.written.users.len(), 2);
        let account = &out.entries[0];
        assert_eq!(
            account.account_claims.as_ref().unwrap()["domain"],
            json!("acme.com")
        );
        assert!(account.body.contains_key("closeio/opportunities_count"));
        let link = &out.entries[2];
        assert!(link.body.is_empty());
        assert_eq!(
            link.user_claims.as_ref().unwrap()["email"],
            json!("a@acme.com")
        );
        let user = &out.entries[3];
        assert_eq!(user.body["closeio/lead_id"]["value"], json!("lead_1"));
    }

    #[test]
    fn deletion_entries_claim_the_anonymous_id() {
        let e = deletion_entry(EntityKind::Account, "lead_1", "t", Some("lead_2")).unwrap();
        assert_eq!(
            e.account_claims.as_ref().unwrap()["anonymous_id"],
            json!("closeio:lead_1")
        );
        assert_eq!(e.body["closeio/merged_into"]["value"], json!("lead_2"));
        let e = deletion_entry(EntityKind::User, "cont_1", "t", None).unwrap();
        assert_eq!(
            e.user_claims.as_ref().unwrap()["anonymous_id"],
            json!("closeio:cont_1")
        );
        assert!(e.body.contains_key("closeio/deleted_at"));
    }
}
