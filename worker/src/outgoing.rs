//! Outgoing sync: a Hull account becomes a Close lead, a Hull user a Close contact.
//!
//! For every entity: filters and skip reasons as the original connector; the Close id comes from
//! the sync state, then the Hull `closeio/id` attribute, then a lookup in Close (the lead by its
//! identifier field, the contact by email within its lead); only when nothing matches is the
//! object created. The job holds the entity's lease (`crate::lease`) for the whole operation, so
//! two workers never create the same lead or contact, and the sync state is committed (fenced by
//! the lease) only after Close and the Hull firehose accepted the write: a crash in between is
//! repaired by the lookup on redelivery. No transaction or connection is held meanwhile.

use serde_json::{Map, Value};

use common::closeio::{CloseError, EndpointGroup};
use common::hull::FirehoseEntry;
use common::jobs::{EntityKind, OutgoingMessage};
use common::mapping::{self, account_key, CloseMetadata, SkipReason};
use common::store::{self, Claim, NestedContact, PendingContact, SyncState};

use crate::outcome::{Action, Outcome};
use crate::tenant::{tenant, Tenant};
use crate::{Ctx, JobError};

pub(crate) fn object<'a>(v: &'a Value, field: &str) -> Option<&'a Map<String, Value>> {
    v.get(field).and_then(Value::as_object)
}

pub(crate) fn segment_ids(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.get("id").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a str> {
    m.get(k).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Claims of a Hull entity from its own attributes (what `asAccount(account)` keeps).
fn claims_from(m: &Map<String, Value>, keys: &[&str]) -> Map<String, Value> {
    keys.iter()
        .filter_map(|k| {
            m.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| (k.to_string(), v.clone()))
        })
        .collect()
}

fn log_skip(kind: EntityKind, connector: &str, hull_id: &str, reason: &SkipReason) -> Outcome {
    let msg = reason.message();
    match kind {
        EntityKind::Account => {
            tracing::info!(connector, account_id = hull_id, reason = %msg, "outgoing.account.skip")
        }
        EntityKind::User => {
            tracing::info!(connector, user_id = hull_id, reason = %msg, "outgoing.user.skip")
        }
    }
    Outcome::Skipped(msg)
}

/// `account:update`: push the account as a lead.
pub async fn account(
    ctx: &Ctx,
    connector_id: &str,
    msg: &OutgoingMessage,
) -> Result<Outcome, JobError> {
    let account = object(&msg.message, "account")
        .ok_or_else(|| JobError::Permanent("message has no account object".into()))?;
    let hull_id = account_key(account)
        .ok_or_else(|| JobError::Permanent("account has no id, external_id or domain".into()))?;
    let hull_id = hull_id.as_str();
    // Hull's echo of our own write-back is skipped before anything is read: whatever the
    // connector's settings or state, it has nothing to write.
    if !msg.is_export && mapping::changes_only_closeio(msg.message.get("changes")) {
        return Ok(log_skip(
            EntityKind::Account,
            connector_id,
            hull_id,
            &SkipReason::EchoOnly,
        ));
    }
    let t = tenant(ctx, connector_id).await?;
    let account_segments = segment_ids(&msg.message, "account_segments");
    if let Err(reason) =
        mapping::filter_account(&t.settings, account, &account_segments, msg.is_export)
    {
        return Ok(log_skip(
            EntityKind::Account,
            connector_id,
            hull_id,
            &reason,
        ));
    }
    let meta = ctx
        .metadata
        .get(&ctx.store, &ctx.close, &t.connector, ctx.cfg.metadata_ttl)
        .await?;
    if let Some(deferred) =
        crate::gathering::defer_while_gathering(ctx, &t, account, hull_id).await?
    {
        return Err(deferred);
    }
    let (outcome, _lead_id) = sync(ctx, &t, &meta, Target::Lead { account }, None, true).await?;
    Ok(outcome)
}

/// What is written: an account as a lead, or a user as a contact under its lead. Everything
/// else about a write is the same for both and lives in [`sync`].
enum Target<'a> {
    /// A Hull account → a Close lead.
    Lead { account: &'a Map<String, Value> },
    /// A Hull user → a Close contact of lead `lead_id`.
    Contact {
        user: &'a Map<String, Value>,
        lead_id: &'a str,
    },
}

impl Target<'_> {
    fn kind(&self) -> EntityKind {
        match self {
            Target::Lead { .. } => EntityKind::Account,
            Target::Contact { .. } => EntityKind::User,
        }
    }

    /// The Close object's name, for logs and metrics.
    fn object(&self) -> &'static str {
        match self {
            Target::Lead { .. } => "lead",
            Target::Contact { .. } => "contact",
        }
    }

    fn entity(&self) -> &Map<String, Value> {
        match self {
            Target::Lead { account } => account,
            Target::Contact { user, .. } => user,
        }
    }

    /// The sync-state key.
    fn hull_id(&self) -> Result<String, JobError> {
        match self {
            Target::Lead { account } => account_key(account).ok_or_else(|| {
                JobError::Permanent("account has no id, external_id or domain".into())
            }),
            Target::Contact { user, .. } => str_field(user, "id")
                .map(str::to_string)
                .ok_or_else(|| JobError::Permanent("user has no id".into())),
        }
    }

    /// The attribute Hull keeps our Close id in.
    fn known_attribute(&self) -> &'static str {
        match self {
            Target::Lead { .. } => "closeio/id",
            Target::Contact { .. } => "traits_closeio/id",
        }
    }

    fn lead_id(&self) -> Option<&str> {
        match self {
            Target::Lead { .. } => None,
            Target::Contact { lead_id, .. } => Some(lead_id),
        }
    }
}

/// Creates or updates the Close object of an entity, writes Close's answer back to Hull, and
/// records the sync state. Returns the outcome and the Close id. `seen` is the entity's state
/// as [`common::store::Store::state_unless_leased`] reads it, if the job read it already.
/// `last`: this write is the job's last (its own entity), so its commit also clears the job's
/// `retries` row (see [`crate::take_retry_row`]).
async fn sync(
    ctx: &Ctx,
    t: &Tenant,
    meta: &CloseMetadata,
    target: Target<'_>,
    seen: Option<Option<SyncState>>,
    last: bool,
) -> Result<(Outcome, String), JobError> {
    let cid = t.connector.id.as_str();
    let (kind, object) = (target.kind(), target.object());
    let hull_id = target.hull_id()?;
    let hull_id = hull_id.as_str();
    let body = match &target {
        Target::Lead { account } => mapping::lead_body(&t.settings, account, false),
        Target::Contact { user, lead_id } => mapping::contact_body(&t.settings, user, lead_id),
    };
    let hash = mapping::body_hash(&body);
    // Nothing to write is found without a lease (one statement instead of three); otherwise
    // the state is read again under the lease, which another job may have released since.
    let seen = match seen {
        Some(seen) => seen,
        // A job back for the lead write booked for it has a lead to create: it goes
        // straight for the lease.
        None if matches!(target, Target::Lead { .. })
            && common::closeio::is_booked(EndpointGroup::LeadWrite.as_str()) =>
        {
            None
        }
        None => {
            ctx.first_reads
                .read(store::FirstRead::entity(cid, kind, hull_id))
                .await?
                .state
        }
    };
    if let Some(state) = seen {
        if let Some(id) = unchanged_id(&state, &hash, target.lead_id()) {
            log_unchanged(kind, hull_id, id);
            return Ok((
                Outcome::Unchanged {
                    close_id: id.clone(),
                },
                id.clone(),
            ));
        }
    }
    // The state is read again under the lease; an account Hull knows no lead of also claims
    // its gathering lead (if due) there.
    let pending_lead = match &target {
        Target::Lead { account }
            if !ctx.cfg.new_lead_gather.is_zero() && str_field(account, "closeio/id").is_none() =>
        {
            Some(LOOKUP_FRESH)
        }
        _ => None,
    };
    let (lease, state, claim) = crate::lease::hold(ctx, cid, kind, hull_id, pending_lead).await?;
    if let Some(id) = unchanged_id(&state, &hash, target.lead_id()) {
        lease.release().await?;
        log_unchanged(kind, hull_id, id);
        return Ok((
            Outcome::Unchanged {
                close_id: id.clone(),
            },
            id.clone(),
        ));
    }
    // A write-back is on its way: the connector's open firehose batch waits for it (see
    // `firehose_sink`), so the creators of a burst, served one budget spacing apart, share
    // one firehose call.
    let write_back = ctx.firehose.expect(cid);
    let known_id = state
        .close_id
        .clone()
        .or_else(|| str_field(target.entity(), target.known_attribute()).map(str::to_string));

    let mut written: Option<(Value, Action)> = None;
    // Contacts created nested in a new lead, and whether a gathering is to be ended.
    let mut nested: Vec<PendingContact> = Vec::new();
    let mut gathered = false;
    if let Some(id) = &known_id {
        let updated = match &target {
            Target::Lead { .. } => ctx.close.update_lead(&t.key, id, &body).await,
            Target::Contact { .. } => ctx.close.update_contact(&t.key, id, &body).await,
        };
        match updated {
            Ok(v) => written = Some((v, Action::Updated)),
            // Deleted in Close (or a stale id): find or create it again.
            Err(CloseError::NotFound { .. }) => {
                tracing::warn!(hull_id, close_id = %id, object, "known Close object no longer exists; looking it up again");
            }
            Err(e) => return noting_body(Err(e.into()), &body),
        }
    }
    let (answer, action) = match (written, &target) {
        (Some(w), _) => w,
        (None, Target::Lead { account }) => {
            let new = new_lead(ctx, t, account, &body, hull_id, claim).await?;
            (nested, gathered) = (new.nested, new.gathered);
            (new.lead, new.action)
        }
        (None, Target::Contact { user, lead_id }) => {
            create_or_adopt_contact(ctx, t, user, &body, lead_id).await?
        }
    };
    let close_id = answer
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| JobError::Permanent(format!("Close answered a {object} without id")))?
        .to_string();

    // Write back to Hull before committing: if this fails, the job is retried and the lookup
    // finds the object again.
    let entry = match &target {
        Target::Lead { account } => {
            let mut traits = mapping::lead_traits(&t.settings, meta, &answer);
            if t.settings.sync_opportunities {
                traits.extend(mapping::opportunity_traits(&answer));
            }
            FirehoseEntry::traits_account(
                claims_from(account, &["id", "external_id", "domain"]),
                traits,
            )?
        }
        Target::Contact { user, lead_id } => {
            let mut response = answer.clone();
            if let Some(o) = response.as_object_mut() {
                o.insert("lead_id".into(), Value::String(lead_id.to_string()));
            }
            let traits = mapping::contact_traits(&t.settings, meta, &response);
            FirehoseEntry::traits_user(claims_from(user, &["id", "email", "external_id"]), traits)?
        }
    };
    let (mut entries, nested_states) = nested_contacts(t, meta, &answer, &close_id, &nested)?;
    entries.push(entry);
    write_back.send(&t.creds, entries).await?;

    let new_state = SyncState {
        close_id: Some(close_id.clone()),
        lead_id: target.lead_id().map(str::to_string),
        body_hash: Some(hash),
        failures: 0,
    };
    let retry_row = if last { crate::take_retry_row() } else { None };
    if gathered {
        let finished = lease
            .commit_lead_with_contacts(&new_state, &nested_states, retry_row)
            .await
            .inspect_err(|_| crate::put_back_retry_row(retry_row))?;
        if !nested_states.is_empty() {
            metrics::counter!("outgoing_contacts_nested_total")
                .increment(nested_states.len() as u64);
            for n in &nested_states {
                tracing::info!(user_id = %n.user_id, contact_id = ?n.state.close_id, lead_id = %close_id,
                    action = ?Action::Created, nested = true, "outgoing.user.success");
            }
        }
        // The users' jobs whose scheduled returns the commit deleted are done: their
        // contacts were written.
        metrics::counter!("worker_jobs_total", "job" => "outgoing_user", "outcome" => "written")
            .increment(finished);
    } else {
        lease
            .commit(&new_state, retry_row)
            .await
            .inspect_err(|_| crate::put_back_retry_row(retry_row))?;
    }
    match kind {
        EntityKind::Account => {
            tracing::info!(account_id = hull_id, lead_id = %close_id, action = ?action, "outgoing.account.success")
        }
        EntityKind::User => {
            tracing::info!(user_id = hull_id, contact_id = %close_id, action = ?action, "outgoing.user.success")
        }
    }
    // The body only at debug: serialising it for every success costs more than the rest of
    // the log line.
    if tracing::enabled!(tracing::Level::DEBUG) {
        let body = Value::Object(body);
        tracing::debug!(hull_id, close_id = %close_id, body = %body, "body sent to Close");
    }
    metrics::counter!("outgoing_writes_total", "kind" => object, "action" => format!("{action:?}").to_lowercase()).increment(1);
    Ok((
        Outcome::Written {
            close_id: close_id.clone(),
            action,
        },
        close_id,
    ))
}

/// The Close id of an entity whose recorded state already has this body hash (and, for a
/// contact, this lead: a contact that moved to another lead is written again even with the
/// same body).
fn unchanged_id<'s>(state: &'s SyncState, hash: &str, lead_id: Option<&str>) -> Option<&'s String> {
    match (&state.close_id, &state.body_hash) {
        (Some(id), Some(h)) if h == hash && state.lead_id.as_deref() == lead_id => Some(id),
        _ => None,
    }
}

fn log_unchanged(kind: EntityKind, hull_id: &str, close_id: &str) {
    match kind {
        EntityKind::Account => tracing::info!(account_id = hull_id, lead_id = %close_id,
            reason = "the lead in Close already has these values", "outgoing.account.skip"),
        EntityKind::User => tracing::info!(user_id = hull_id, contact_id = %close_id,
            reason = "the contact in Close already has these values", "outgoing.user.skip"),
    }
}

/// Passes `r`, the result of a Close write of `body`, through, recording `body` for the job's
/// dead letter when the write failed (not when it was only deferred). Only write calls are
/// wrapped, so the body recorded is the one Close refused.
fn noting_body<T>(r: Result<T, JobError>, body: &Map<String, Value>) -> Result<T, JobError> {
    if let Err(e) = &r {
        if !matches!(e, JobError::Deferred { .. } | JobError::Later { .. }) {
            crate::note_failed_body(body);
        }
    }
    r
}

/// The placeholder `lead_id` of a contact body gathered before its lead exists.
const PENDING_LEAD_ID: &str = "";

/// What [`new_lead`] wrote.
struct NewLead {
    lead: Value,
    action: Action,
    /// The gathered contacts created nested in the lead, in the order sent.
    nested: Vec<PendingContact>,
    /// Whether the account had a gathering to end.
    gathered: bool,
}

/// No known lead. With `NEW_LEAD_GATHER_SECS`, the account's new lead first gathers the
/// contacts of its users (the job is deferred until then, burning no attempt); the holder of
/// the account's lease then claims the gathering. The lead is looked up by its identifier
/// field and created — with the gathered contacts nested — only when nothing matches.
async fn new_lead(
    ctx: &Ctx,
    t: &Tenant,
    account: &Map<String, Value>,
    update_body: &Map<String, Value>,
    account_key: &str,
    claimed: Option<Claim>,
) -> Result<NewLead, JobError> {
    let mut nested = Vec::new();
    // The gathering claimed, whose contacts the create takes when it is sent.
    let mut sealing = None;
    // The identifier value a fresh lookup found no lead for, and when (it may serve this
    // create if the value is the same).
    let mut looked_up: Option<(chrono::DateTime<chrono::Utc>, Value)> = None;
    let gather = ctx.cfg.new_lead_gather;
    let gathered = !gather.is_zero();
    if gathered {
        let cid = t.connector.id.as_str();
        // The gathering normally exists (the account's job started it on its first run, or a
        // user's job did): it is claimed in one statement. Without one, it is started now.
        let mut claim = match claimed {
            Some(claim) => claim,
            None => {
                ctx.store
                    .claim_pending_lead(cid, account_key, LOOKUP_FRESH)
                    .await?
            }
        };
        if matches!(claim, Claim::None) {
            let due_in = ctx
                .store
                .gather_lead(cid, account_key, gather)
                .await?
                .map_or(std::time::Duration::ZERO, |g| g.due_in);
            claim = if due_in.is_zero() {
                // Started by another job a moment ago, and due already.
                ctx.store
                    .claim_pending_lead(cid, account_key, LOOKUP_FRESH)
                    .await?
            } else {
                Claim::NotDue(due_in)
            };
        }
        match claim {
            Claim::NotDue(after) => {
                look_up_while_gathering(ctx, t, account_key, update_body);
                return Err(JobError::Deferred {
                    after,
                    booked: None,
                });
            }
            Claim::Claimed(fresh) => {
                sealing = Some(account_key);
                looked_up = fresh;
            }
            Claim::None => {}
        }
    }
    let written = write_new_lead(
        ctx,
        t,
        account,
        update_body,
        sealing,
        &mut nested,
        &mut looked_up,
    )
    .await;
    let (lead, action) = match written {
        // The tenant's budget is busy: this job is deferred with its return booked, and the
        // gathering stays open until then (its users wait for this job, not try themselves);
        // a lookup just made serves the create when it comes back.
        Err(JobError::Close(CloseError::BudgetBusy { key_fp, group, .. })) if gathered => {
            let after = crate::fairness::book_return(ctx, &key_fp, group).await?;
            ctx.store
                .unclaim_pending_lead(&t.connector.id, account_key, after, looked_up.as_ref())
                .await?;
            return Err(JobError::Deferred {
                after,
                booked: Some(group),
            });
        }
        other => other?,
    };
    Ok(NewLead {
        lead,
        action,
        nested,
        gathered,
    })
}

/// Contacts nested in one lead create at most.
const MAX_NESTED: usize = 50;

/// How long a lookup that found no lead may serve the create of a deferred creator. A lookup
/// serves at most one create, and never one after a create may have been sent (the claim
/// clears it), so it always finds what Close held before the account reached the connector
/// and what an earlier attempt created; what it cannot see is a lead someone else creates in
/// Close within this window, while the account waits for its turn in the budget. Five
/// minutes covers a burst of a few thousand new accounts at Close's usual limits.
const LOOKUP_FRESH: std::time::Duration = std::time::Duration::from_secs(300);

/// Looks the new lead up (unless `looked_up` says a fresh lookup found none for the same
/// identifier value) and adopts it, or creates it. With `sealing` (the account whose claimed
/// gathering this is), the create first waits for its lead-write slot, then seals the
/// gathering and nests its contacts (`nested`: cleared when an existing lead is adopted, or
/// when Close refuses the create with them): users that joined while it looked the lead up
/// and waited are nested too.
async fn write_new_lead(
    ctx: &Ctx,
    t: &Tenant,
    account: &Map<String, Value>,
    update_body: &Map<String, Value>,
    sealing: Option<&str>,
    nested: &mut Vec<PendingContact>,
    looked_up: &mut Option<(chrono::DateTime<chrono::Utc>, Value)>,
) -> Result<(Value, Action), JobError> {
    let value = identifier_value(t, update_body);
    let fresh = matches!((&*looked_up, &value), (Some((_, v)), Some(now)) if v == now);
    if !fresh {
        *looked_up = None;
        // A lookup whose create would only be deferred is not made now: the tenant's jobs
        // give way at once (see `fairness`).
        ctx.close.check_booked(&t.key, EndpointGroup::LeadWrite)?;
        let at = chrono::Utc::now();
        if let Some(existing) = find_lead(ctx, t, update_body).await? {
            // An existing lead takes no nested contacts: the users' own jobs find or create
            // their contacts in it.
            nested.clear();
            return adopt_lead(ctx, t, existing, update_body).await;
        }
        // Only a search that was made can serve a later create.
        *looked_up = value.map(|v| (at, v));
    }
    let create_body = mapping::lead_body(&t.settings, account, true);
    let Some(account_key) = sealing else {
        return Ok((create_lead(ctx, t, &create_body).await?, Action::Created));
    };
    ctx.close
        .await_slot(&t.key, EndpointGroup::LeadWrite)
        .await
        .map_err(JobError::from)?;
    *nested = ctx
        .store
        .seal_pending_lead(&t.connector.id, account_key)
        .await?;
    // At most MAX_NESTED contacts in one create; the others sync on their own.
    nested.truncate(MAX_NESTED);
    if nested.is_empty() {
        let created = ctx.close.create_lead_in_slot(&t.key, &create_body).await;
        return Ok((written(created, &create_body)?, Action::Created));
    }
    let mut with_contacts = create_body.clone();
    let contacts = nested
        .iter()
        .map(|c| {
            let mut body = c.body.clone();
            body.remove("lead_id");
            Value::Object(body)
        })
        .collect();
    with_contacts.insert("contacts".into(), Value::Array(contacts));
    match ctx.close.create_lead_in_slot(&t.key, &with_contacts).await {
        Ok(lead) => Ok((lead, Action::Created)),
        // Close refused the whole create (nothing was written) because of a contact: the
        // lead alone, and every user's contact is then written by its own job.
        Err(CloseError::BadRequest { .. }) => {
            tracing::warn!(
                contacts = nested.len(),
                "Close refused the new lead with its contacts nested; creating it alone"
            );
            nested.clear();
            Ok((create_lead(ctx, t, &create_body).await?, Action::Created))
        }
        Err(e) => noting_body(Err(e.into()), &with_contacts),
    }
}

/// `POST /lead/` with `body`, kept for the job's dead letter if Close refuses it.
async fn create_lead(ctx: &Ctx, t: &Tenant, body: &Map<String, Value>) -> Result<Value, JobError> {
    written(ctx.close.create_lead(&t.key, body).await, body)
}

/// The answer of a Close write of `body`; the body is kept for the job's dead letter when the
/// write failed.
fn written<T>(r: Result<T, CloseError>, body: &Map<String, Value>) -> Result<T, JobError> {
    noting_body(r.map_err(JobError::from), body)
}

/// The value of the lead's identifier field in `body`, if any.
/// The lead field that identifies an account's lead (`lead_identifier_service`, `url` by
/// default).
fn identifier_field(t: &Tenant) -> &str {
    t.settings
        .lead_identifier_service
        .as_deref()
        .unwrap_or("url")
}

fn identifier_value(t: &Tenant, body: &Map<String, Value>) -> Option<Value> {
    body.get(identifier_field(t))
        .filter(|v| !v.is_null())
        .cloned()
}

/// Looks the new lead of a gathering account up in the background, without holding the job
/// or its place (`lookups::EarlyLookups`): the lookups of a burst of new accounts share
/// searches when they arrive, instead of one search per creator when each one's turn in the
/// budget comes. A lookup that found no lead serves the create of the gathering's next claim
/// (only while nobody has claimed it, so never after a create may have been sent).
pub(crate) fn look_up_while_gathering(
    ctx: &Ctx,
    t: &Tenant,
    account_key: &str,
    body: &Map<String, Value>,
) {
    if let Some(value) = identifier_value(t, body) {
        ctx.early_lookups.start(
            t.key.clone(),
            identifier_field(t).to_owned(),
            value,
            t.connector.id.clone(),
            account_key.to_owned(),
        );
    }
}

/// The lead whose identifier field has this body's value (the oldest when Close holds
/// duplicates), if any.
async fn find_lead(
    ctx: &Ctx,
    t: &Tenant,
    body: &Map<String, Value>,
) -> Result<Option<Value>, JobError> {
    let ident_field = identifier_field(t);
    let Some(value) = body.get(ident_field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let mut found = ctx.lookups.find(&t.key, ident_field, value).await?;
    found.sort_by(|a, b| {
        let d = |l: &Value| {
            l.get("date_created")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        d(a).cmp(&d(b))
    });
    Ok(found.into_iter().next())
}

/// Adopts an existing lead: written only when it differs from the body.
async fn adopt_lead(
    ctx: &Ctx,
    t: &Tenant,
    existing: Value,
    body: &Map<String, Value>,
) -> Result<(Value, Action), JobError> {
    if lead_matches(&existing, body) {
        return Ok((existing, Action::Adopted));
    }
    let id = existing
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let lead = written(ctx.close.update_lead(&t.key, &id, body).await, body)?;
    Ok((lead, Action::Adopted))
}

/// The write-backs and sync states of the contacts Close created nested in lead `lead_id`
/// (its answer lists them in the order sent). A contact whose answer does not match what was
/// sent is left to its user's own job, which finds it by email.
fn nested_contacts(
    t: &Tenant,
    meta: &CloseMetadata,
    lead: &Value,
    lead_id: &str,
    sent: &[PendingContact],
) -> Result<(Vec<FirehoseEntry>, Vec<NestedContact>), JobError> {
    let mut entries = Vec::new();
    let mut states = Vec::new();
    if sent.is_empty() {
        return Ok((entries, states));
    }
    let answered = lead
        .get("contacts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let first_email = |emails: Option<&Value>| {
        emails
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    for (i, pending) in sent.iter().enumerate() {
        // By email when it has one, else by its place in the answer and its name.
        let contact = match first_email(pending.body.get("emails")) {
            Some(email) => answered
                .iter()
                .find(|c| first_email(c.get("emails")).as_deref() == Some(email.as_str())),
            None => answered
                .get(i)
                .filter(|c| c.get("name") == pending.body.get("name")),
        };
        let Some((contact, contact_id)) =
            contact.and_then(|c| c.get("id").and_then(Value::as_str).map(|id| (c, id)))
        else {
            tracing::warn!(user_id = %pending.user_id, lead_id, "a nested contact is not in Close's answer as sent; its user's job will look it up");
            continue;
        };
        let mut body = pending.body.clone();
        body.insert("lead_id".into(), Value::String(lead_id.to_owned()));
        let mut response = contact.clone();
        if let Some(o) = response.as_object_mut() {
            o.insert("lead_id".into(), Value::String(lead_id.to_owned()));
        }
        let traits = mapping::contact_traits(&t.settings, meta, &response);
        entries.push(FirehoseEntry::traits_user(pending.claims.clone(), traits)?);
        states.push(NestedContact {
            job_id: pending.job_id,
            user_id: pending.user_id.clone(),
            state: SyncState {
                close_id: Some(contact_id.to_owned()),
                lead_id: Some(lead_id.to_owned()),
                body_hash: Some(mapping::body_hash(&body)),
                failures: 0,
            },
        });
    }
    Ok((entries, states))
}

/// Whether every field of `body` already has that value on `lead`.
fn lead_matches(lead: &Value, body: &Map<String, Value>) -> bool {
    body.iter().all(|(k, v)| lead.get(k) == Some(v))
}

/// `user:update`: push the user as a contact under its account's lead (creating the lead first
/// when the account has none yet).
pub async fn user(
    ctx: &Ctx,
    connector_id: &str,
    job_id: uuid::Uuid,
    msg: &OutgoingMessage,
) -> Result<Outcome, JobError> {
    let user = object(&msg.message, "user")
        .ok_or_else(|| JobError::Permanent("message has no user object".into()))?;
    let hull_id =
        str_field(user, "id").ok_or_else(|| JobError::Permanent("user has no id".into()))?;
    // The echo of our own write-back: nothing to read, nothing to write.
    if !msg.is_export && mapping::changes_only_closeio(msg.message.get("changes")) {
        return Ok(log_skip(
            EntityKind::User,
            connector_id,
            hull_id,
            &SkipReason::EchoOnly,
        ));
    }
    let t = tenant(ctx, connector_id).await?;
    let account = object(&msg.message, "account").filter(|a| !a.is_empty());
    let user_segments = segment_ids(&msg.message, "segments");
    let account_segments = segment_ids(&msg.message, "account_segments");
    if let Err(reason) = mapping::filter_user(
        &t.settings,
        &user_segments,
        account,
        &account_segments,
        msg.is_export,
    ) {
        return Ok(log_skip(EntityKind::User, connector_id, hull_id, &reason));
    }
    let Some(account) = account else {
        return Ok(log_skip(
            EntityKind::User,
            connector_id,
            hull_id,
            &SkipReason::UserNoAccount,
        ));
    };
    let meta = ctx
        .metadata
        .get(&ctx.store, &ctx.close, &t.connector, ctx.cfg.metadata_ttl)
        .await?;
    // The account's lead and the contact's state in one statement: all an unchanged user reads.
    let key = account_key(account);
    let (contact, lead) = match &key {
        Some(key) => {
            let read = store::FirstRead::user_and_lead(connector_id, hull_id, key);
            let answer = ctx.first_reads.read(read).await?;
            (Some(answer.state), Some(answer.account_lead))
        }
        None => (None, None),
    };
    // Whether the user has a contact already, as that read saw it (unless its lease was held).
    let contact_recorded = contact
        .as_ref()
        .and_then(|c| c.as_ref())
        .map(|c| c.close_id.is_some());
    let lead_id = lead_of(
        ctx,
        &t,
        &meta,
        (account, user),
        job_id,
        lead,
        contact_recorded,
    )
    .await?;
    match sync(
        ctx,
        &t,
        &meta,
        Target::Contact {
            user,
            lead_id: &lead_id,
        },
        contact,
        true,
    )
    .await
    .map(|(o, _)| o)
    {
        // The lead we knew was deleted in Close: forget it, sync the account again (found by
        // lookup or created), then the contact under the lead that exists.
        Err(JobError::Close(e)) if lead_is_gone(&e) => {
            let account_id = account_key(account).unwrap_or_default();
            tracing::warn!(account_id = %account_id, lead_id = %lead_id,
                "the account's lead no longer exists in Close; syncing the account again");
            let client = ctx
                .store
                .pool()
                .get()
                .await
                .map_err(common::store::StoreError::from)?;
            store::forget_close_id(&client, connector_id, EntityKind::Account, &account_id).await?;
            drop(client);
            let mut fresh = account.clone();
            fresh.remove("closeio/id");
            let (_, lead_id) = sync(
                ctx,
                &t,
                &meta,
                Target::Lead { account: &fresh },
                None,
                false,
            )
            .await?;
            sync(
                ctx,
                &t,
                &meta,
                Target::Contact {
                    user,
                    lead_id: &lead_id,
                },
                None,
                true,
            )
            .await
            .map(|(o, _)| o)
        }
        other => other,
    }
}

/// Whether Close refused a contact write because its `lead_id` does not exist.
fn lead_is_gone(e: &CloseError) -> bool {
    match e {
        CloseError::BadRequest { field_errors, .. } => field_errors.get("lead_id").is_some(),
        CloseError::NotFound { message } => message.to_lowercase().contains("lead"),
        _ => false,
    }
}

/// The lead id of an account: from the sync state (`recorded`, if the job read it already),
/// the `closeio/id` attribute, or by syncing the account now. An account without a Hull id is
/// known by its identifier claims (or only by its `closeio/id`). `contact_recorded`: whether
/// the user's sync state holds a contact, if the job read it already. `job_id`: the user's job,
/// recorded with its contact when it joins a gathering.
async fn lead_of(
    ctx: &Ctx,
    t: &Tenant,
    meta: &CloseMetadata,
    (account, user): (&Map<String, Value>, &Map<String, Value>),
    job_id: uuid::Uuid,
    recorded: Option<Option<String>>,
    contact_recorded: Option<bool>,
) -> Result<String, JobError> {
    let key = account_key(account);
    if let Some(key) = &key {
        let recorded = match recorded {
            Some(recorded) => recorded,
            None => {
                state_of(ctx, &t.connector.id, EntityKind::Account, key)
                    .await?
                    .close_id
            }
        };
        if let Some(id) = recorded {
            return Ok(id);
        }
    }
    if let Some(id) = str_field(account, "closeio/id") {
        return Ok(id.to_string());
    }
    let Some(account_id) = key else {
        return Err(JobError::Permanent(
            "the user's account has no id, external_id, domain or closeio/id".into(),
        ));
    };
    // A new lead gathering its contacts: this user's joins them (and waits for the lead) —
    // unless the user has a contact already (under another lead: it is moved, not created).
    let gather = ctx.cfg.new_lead_gather;
    if !gather.is_zero() && !has_contact(ctx, t, user, contact_recorded).await? {
        let cid = t.connector.id.as_str();
        // The user's contact joins the gathering even when this job creates the lead itself
        // (below): it is then nested in that create, not written on its own after it. It
        // joins a claimed gathering too, until its creator seals it just before sending the
        // create (this job then waits for the account's lease, and finds its contact made).
        // When the contact is created nested, the creator's commit also deletes this job's
        // scheduled return: a gathered user's job runs once.
        let pending = pending_contact(t, user, job_id);
        let Some(common::store::Joined {
            gathering: g,
            joined,
        }) = ctx
            .store
            .join_gathering(cid, &account_id, gather, &pending)
            .await?
        else {
            // The lead was recorded a moment ago.
            let state = state_of(ctx, cid, EntityKind::Account, &account_id).await?;
            if let Some(id) = state.close_id {
                return Ok(id);
            }
            return Err(JobError::Later {
                reason: "the account's lead is being recorded".into(),
                after: std::time::Duration::from_secs(1),
            });
        };
        // Wait for the gathering to end, or for the job that will create the lead to come
        // back — unless this job is that one, back for the lead write booked for it. Once
        // it is due and nobody is booked to create it, this job does.
        let wait = if common::closeio::is_booked(EndpointGroup::LeadWrite.as_str()) {
            std::time::Duration::ZERO
        } else {
            crate::gathering::user_wait(&g)
        };
        if joined && !wait.is_zero() {
            return Err(JobError::Deferred {
                after: wait,
                booked: None,
            });
        }
    }
    tracing::info!(account_id = %account_id, "the user's account has no lead yet: creating it first");
    let (_, lead_id) = sync(ctx, t, meta, Target::Lead { account }, None, false).await?;
    Ok(lead_id)
}

/// A user's contact as it joins its account's gathering (its `lead_id` a placeholder until the
/// lead exists), added by job `job_id`.
pub(crate) fn pending_contact(
    t: &Tenant,
    user: &Map<String, Value>,
    job_id: uuid::Uuid,
) -> PendingContact {
    PendingContact {
        user_id: str_field(user, "id").unwrap_or_default().to_owned(),
        body: mapping::contact_body(&t.settings, user, PENDING_LEAD_ID),
        claims: claims_from(user, &["id", "email", "external_id"]),
        job_id: Some(job_id),
    }
}

/// Whether the user has a contact in Close already (in its sync state — `recorded`, if the
/// job read it already — or its `closeio/id` attribute).
async fn has_contact(
    ctx: &Ctx,
    t: &Tenant,
    user: &Map<String, Value>,
    recorded: Option<bool>,
) -> Result<bool, JobError> {
    if str_field(user, "traits_closeio/id").is_some() {
        return Ok(true);
    }
    if let Some(recorded) = recorded {
        return Ok(recorded);
    }
    let Some(user_id) = str_field(user, "id") else {
        return Ok(false);
    };
    let state = state_of(ctx, &t.connector.id, EntityKind::User, user_id).await?;
    Ok(state.close_id.is_some())
}

/// The sync state of an entity (one statement; the connection goes back to the pool at once).
async fn state_of(
    ctx: &Ctx,
    connector_id: &str,
    kind: EntityKind,
    hull_id: &str,
) -> Result<SyncState, JobError> {
    let client = ctx
        .store
        .pool()
        .get()
        .await
        .map_err(common::store::StoreError::from)?;
    Ok(store::load_state(&client, connector_id, kind, hull_id).await?)
}

/// No known contact: look for it by email (or, without email, by name) within its lead.
async fn create_or_adopt_contact(
    ctx: &Ctx,
    t: &Tenant,
    user: &Map<String, Value>,
    body: &Map<String, Value>,
    lead_id: &str,
) -> Result<(Value, Action), JobError> {
    let email = mapping::contact_lookup_email(user, body).map(|e| e.to_lowercase());
    let existing = ctx.close.list_contacts(&t.key, lead_id).await?;
    let found = existing.into_iter().find(|c| match &email {
        Some(email) => c
            .get("emails")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter().any(|e| {
                    e.get("email")
                        .and_then(Value::as_str)
                        .map(str::to_lowercase)
                        .as_deref()
                        == Some(email)
                })
            })
            .unwrap_or(false),
        None => body.get("name").is_some() && c.get("name") == body.get("name"),
    });
    if let Some(c) = found {
        let id = c
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let contact = written(ctx.close.update_contact(&t.key, &id, body).await, body)?;
        return Ok((contact, Action::Adopted));
    }
    let contact = written(ctx.close.create_contact(&t.key, body).await, body)?;
    Ok((contact, Action::Created))
}
