//! The first pass of a new account (Hull holds no Close id for it). With
//! `NEW_LEAD_GATHER_SECS`, its lead first gathers the contacts of its users, and the job is
//! deferred until then, or until the tenant's budget can serve the create. That takes no lease
//! and no sync-state read: a gathering exists only while the account has no lead.
//!
//! A new user's contact joins its account's gathering, and its job waits for the lead
//! ([`user_wait`]).
//!
//! A job alone takes [`defer_while_gathering`] (a user, `outgoing::lead_of`). The new
//! accounts and users of a bundle take [`defer_bundle`] together: one statement starts the
//! accounts' gatherings, one books their places on the lead writes' deferral lane, one notes
//! the creators' returns, one joins the users' contacts to their gatherings and one records
//! every deferral, where each job alone takes three to five. A backlog of new entities then
//! passes through the queue fast, and the other tenants' jobs queued behind it wait that much
//! less.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use common::closeio::{Deferring, EndpointGroup};
use common::jobs::{Envelope, Job};
use common::mapping::{self, account_key};
use common::store::{Gathering, PendingContact};

use crate::fairness::{booked_max_wait, RETURN_EARLY};
use crate::outgoing::{look_up_while_gathering, object, pending_contact, segment_ids, str_field};
use crate::tenant::{tenant, Tenant};
use crate::{Ctx, JobError};

/// When a job deferred while its lead gathers comes back, given how long until the gathering
/// is due and its place on the lead writes' deferral lane: never before the gathering's end,
/// and [`RETURN_EARLY`] before its place. Also whether the place is *booked*: beyond the
/// gathering's end, so that the job comes back for its create's slot (with a free budget it
/// comes back at the gathering's end like any job).
pub fn lane_return(due_in: Duration, place_in: Duration) -> (Duration, bool) {
    let after = place_in.saturating_sub(RETURN_EARLY).max(due_in);
    (after, after > due_in)
}

/// A new account whose lead is gathering its contacts is deferred first thing, without a
/// lease or a sync-state read. The create's place on the lead writes' deferral lane is booked
/// now, so that in a burst the job — and the users that wait for it — come back once, when
/// the budget can serve the create, instead of at the gathering's end and then again for the
/// budget. A job that comes back at the gathering's end while its process knows the lead
/// writes to be booked takes its place on the lane the same way. Returns the deferral, or
/// `None` to sync.
pub async fn defer_while_gathering(
    ctx: &Ctx,
    t: &Tenant,
    account: &Map<String, Value>,
    account_key: &str,
) -> Result<Option<JobError>, JobError> {
    let gather = ctx.cfg.new_lead_gather;
    let lead_write = EndpointGroup::LeadWrite.as_str();
    // A job that comes back for its booked create goes straight to it.
    if gather.is_zero()
        || str_field(account, "closeio/id").is_some()
        || common::closeio::is_booked(lead_write)
    {
        return Ok(None);
    }
    let cid = t.connector.id.as_str();
    let Some(g) = ctx.store.gather_lead(cid, account_key, gather).await? else {
        return Ok(None);
    };
    if g.due_in.is_zero() {
        // The gathering is over. While this process knows the tenant's lead writes to be
        // booked, the create would only be refused: its place on their deferral lane is
        // booked at once, before a lease or a claim is taken.
        if g.claimed
            || g.creator_back_in.is_some()
            || ctx
                .close
                .check_booked(&t.key, EndpointGroup::LeadWrite)
                .is_ok()
        {
            return Ok(None);
        }
    } else {
        let body = mapping::lead_body(&t.settings, account, false);
        look_up_while_gathering(ctx, t, account_key, &body);
    }
    if let Some(back_in) = g.creator_back_in {
        // Another job of the account is booked to create the lead.
        return Ok(Some(JobError::Deferred {
            after: g.due_in.max(back_in),
            booked: None,
        }));
    }
    // The create's place among the tenant's deferred lead writes: at the gathering's end
    // when the budget can serve it then, later in a burst (each new lead of the burst takes
    // the next place, so they come back spread at the rate the budget serves them).
    let place_in = ctx.close.defer(&t.key.fingerprint(), lead_write).await?;
    let (after, booked) = lane_return(g.due_in, place_in);
    if after.is_zero() {
        // The gathering is over and the lane is free after all: create now.
        return Ok(None);
    }
    if booked {
        ctx.store.note_creator_back(cid, account_key, after).await?;
    }
    Ok(Some(JobError::Deferred {
        after,
        booked: booked.then_some(lead_write),
    }))
}

/// How long after a gathering is due a user waiting for it comes back: time for the lead's
/// creation to be committed.
pub const GATHER_MARGIN: Duration = Duration::from_millis(500);

/// How long after its lead's creator is booked to come back a user waiting for it comes back.
/// The creator comes back `fairness::RETURN_EARLY` before its slot, creates the lead in it and
/// commits; the commit deletes the users' scheduled returns, so a user that comes back only
/// after that costs nothing more. One that came back at the same moment as the creator would
/// find the lead being created and wait for it in a worker's place; one whose creator was
/// deferred again meanwhile comes back and waits for it again.
pub const CREATOR_MARGIN: Duration = Duration::from_secs(3);

/// How long a user whose contact joined a gathering waits for its lead: until the gathering
/// ends, or until the job that will create the lead is back (`g.creator_back_in`). Zero: the
/// lead is due and nobody is booked to create it, so this job does.
pub fn user_wait(g: &Gathering) -> Duration {
    match g.creator_back_in {
        Some(back_in) => (g.due_in + GATHER_MARGIN).max(back_in + CREATOR_MARGIN),
        None if g.due_in.is_zero() => Duration::ZERO,
        None => g.due_in + GATHER_MARGIN,
    }
}

/// Takes the first pass of a bundle's new accounts and users together (see the module's doc)
/// and returns the jobs left to run one by one: every other job, and those that would decide
/// differently alone — filtered out, sent twice in the bundle, a gathering due already (they
/// decide with the lease and the budget in view), a lead or contact known — or of a connector
/// with a single one. When a statement fails (Postgres is down, say), every job of the
/// connector runs alone, and meets the failure there.
pub async fn defer_bundle(ctx: &Ctx, envs: Vec<Envelope>) -> Vec<Envelope> {
    if ctx.cfg.new_lead_gather.is_zero() || envs.len() < 2 {
        return envs;
    }
    let mut alone = Vec::with_capacity(envs.len());
    let mut by_connector: Vec<(String, Vec<Envelope>)> = Vec::new();
    for env in envs {
        if !may_pass_together(&env) {
            alone.push(env);
            continue;
        }
        match by_connector
            .iter_mut()
            .find(|(cid, _)| *cid == env.connector_id)
        {
            Some((_, group)) => group.push(env),
            None => by_connector.push((env.connector_id.clone(), vec![env])),
        }
    }
    for (cid, group) in by_connector {
        if group.len() < 2 {
            alone.extend(group);
            continue;
        }
        // The limits every outgoing job runs under (see `fairness::fairly`): the metadata
        // read, if the connector's is stale, waits for its slot no longer than a job would.
        let limits = Deferring {
            max_wait: ctx.cfg.defer_after,
            booked_groups: Vec::new(),
            booked_max_wait: booked_max_wait(ctx.cfg.defer_after),
        };
        let deferred = common::closeio::deferring(limits, defer_together(ctx, &cid, &group)).await;
        let deferred = match deferred {
            Ok(deferred) => deferred,
            Err(e) => {
                tracing::debug!(connector = %cid, error = %e, "the bundle's new entities take their first pass one by one");
                vec![false; group.len()]
            }
        };
        for (job, count) in deferred_counts(&group, &deferred) {
            metrics::counter!("worker_jobs_total", "job" => job, "outcome" => "deferred")
                .increment(count);
            tracing::debug!(connector = %cid, job, jobs = count, "new entities deferred together while their leads gather");
        }
        alone.extend(
            group
                .into_iter()
                .zip(deferred)
                .filter(|(_, deferred)| !deferred)
                .map(|(env, _)| env),
        );
    }
    alone
}

/// How many jobs of each kind were deferred.
fn deferred_counts(group: &[Envelope], deferred: &[bool]) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for (env, _) in group.iter().zip(deferred).filter(|(_, d)| **d) {
        let name = env.job.name();
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
}

/// Whether a job may take its first pass with its bundle (what can be told without the
/// tenant): an account or user update (not Hull's echo of our own write-back) of an account
/// whose lead Hull does not know — for a user, one without a contact in Close — and that was
/// not booked a create's slot by an earlier deferral.
fn may_pass_together(env: &Envelope) -> bool {
    let lead_write = EndpointGroup::LeadWrite.as_str();
    if env.booked_groups.iter().any(|g| g == lead_write) {
        return false;
    }
    let (Job::OutgoingAccount(m) | Job::OutgoingUser(m)) = &env.job else {
        return false;
    };
    if !m.is_export && mapping::changes_only_closeio(m.message.get("changes")) {
        return false;
    }
    let Some(account) = object(&m.message, "account") else {
        return false;
    };
    if str_field(account, "closeio/id").is_some() || account_key(account).is_none() {
        return false;
    }
    match &env.job {
        Job::OutgoingUser(_) => object(&m.message, "user").is_some_and(|u| {
            str_field(u, "id").is_some() && str_field(u, "traits_closeio/id").is_none()
        }),
        _ => true,
    }
}

/// The first pass of one connector's new accounts and users of a bundle: which of `group`
/// were deferred (their deferral recorded). The others run alone.
async fn defer_together(ctx: &Ctx, cid: &str, group: &[Envelope]) -> Result<Vec<bool>, JobError> {
    let t = tenant(ctx, cid).await?;
    ctx.metadata
        .get(&ctx.store, &ctx.close, &t.connector, ctx.cfg.metadata_ttl)
        .await?;
    // The entities the connector syncs, each once: a second job of the same entity runs
    // alone, after the first one's deferral is recorded.
    let mut seen = HashSet::new();
    let mut accounts: Vec<(usize, &Map<String, Value>, String)> = Vec::new();
    let mut users: Vec<(usize, String, PendingContact)> = Vec::new();
    for (i, env) in group.iter().enumerate() {
        let (Job::OutgoingAccount(m) | Job::OutgoingUser(m)) = &env.job else {
            continue;
        };
        let Some(account) = object(&m.message, "account") else {
            continue;
        };
        let Some(key) = account_key(account) else {
            continue;
        };
        let account_segments = segment_ids(&m.message, "account_segments");
        match &env.job {
            Job::OutgoingAccount(_) => {
                if mapping::filter_account(&t.settings, account, &account_segments, m.is_export)
                    .is_ok()
                    && seen.insert(format!("account:{key}"))
                {
                    accounts.push((i, account, key));
                }
            }
            _ => {
                let Some(user) = object(&m.message, "user") else {
                    continue;
                };
                let user_segments = segment_ids(&m.message, "segments");
                let user_id = str_field(user, "id").unwrap_or_default();
                if mapping::filter_user(
                    &t.settings,
                    &user_segments,
                    Some(account),
                    &account_segments,
                    m.is_export,
                )
                .is_ok()
                    && seen.insert(format!("user:{user_id}"))
                {
                    users.push((i, key, pending_contact(&t, user, env.id)));
                }
            }
        }
    }
    // (job, when it comes back, whether a create's place on the lane is booked for it)
    let mut returns = defer_accounts(ctx, &t, &accounts).await?;
    let joining: Vec<(&str, &PendingContact)> =
        users.iter().map(|(_, key, c)| (key.as_str(), c)).collect();
    let joined = ctx
        .store
        .join_gatherings(cid, ctx.cfg.new_lead_gather, &joining)
        .await?;
    for (i, _, contact) in &users {
        let Some(j) = joined.get(&contact.user_id).filter(|j| j.joined) else {
            continue;
        };
        let wait = user_wait(&j.gathering);
        if !wait.is_zero() {
            returns.push((*i, wait, false));
        }
    }
    let lead_write = EndpointGroup::LeadWrite.as_str();
    let now = Utc::now();
    let records: Vec<(Envelope, DateTime<Utc>, String)> = returns
        .iter()
        .map(|(i, after, booked)| {
            let deferral = JobError::Deferred {
                after: *after,
                booked: booked.then_some(lead_write),
            };
            let at = now
                + chrono::Duration::from_std(*after).unwrap_or_else(|_| chrono::Duration::hours(1));
            let next = crate::deferred_envelope(&group[*i], booked.then_some(lead_write));
            (next, at, deferral.to_string())
        })
        .collect();
    ctx.store.defer_all(&records).await?;
    let mut deferred = vec![false; group.len()];
    for (i, ..) in returns {
        deferred[i] = true;
    }
    Ok(deferred)
}

/// The accounts' part of [`defer_together`]: their gatherings started (or found), their
/// creates' places booked on the lane, and the returns of the creators booked beyond their
/// gathering noted (users that join wait for them). Returns each deferred job (by its index in
/// the bundle) with when it comes back and whether its place is booked.
async fn defer_accounts(
    ctx: &Ctx,
    t: &Tenant,
    accounts: &[(usize, &Map<String, Value>, String)],
) -> Result<Vec<(usize, Duration, bool)>, JobError> {
    let cid = t.connector.id.as_str();
    let keys: Vec<&str> = accounts.iter().map(|(_, _, key)| key.as_str()).collect();
    let gatherings = ctx
        .store
        .gather_leads(cid, &keys, ctx.cfg.new_lead_gather)
        .await?;
    let mut returns: Vec<(usize, Duration, bool)> = Vec::new();
    let mut on_lane: Vec<(usize, Duration, &str)> = Vec::new();
    for (i, account, key) in accounts {
        // Due already, or the lead is known: the job runs alone.
        let Some(g) = gatherings.get(key).filter(|g| !g.due_in.is_zero()) else {
            continue;
        };
        let body = mapping::lead_body(&t.settings, account, false);
        look_up_while_gathering(ctx, t, key, &body);
        match g.creator_back_in {
            // Another job of the account is booked to create the lead.
            Some(back_in) => returns.push((*i, g.due_in.max(back_in), false)),
            None => on_lane.push((*i, g.due_in, key.as_str())),
        }
    }
    if on_lane.is_empty() {
        return Ok(returns);
    }
    let places = u32::try_from(on_lane.len()).unwrap_or(u32::MAX);
    let lane = ctx
        .close
        .defer_places(
            &t.key.fingerprint(),
            EndpointGroup::LeadWrite.as_str(),
            places,
        )
        .await?;
    let mut backs: Vec<(&str, Duration)> = Vec::new();
    for (n, (i, due_in, key)) in (0u32..).zip(on_lane) {
        let (after, booked) = lane_return(due_in, lane.nth(n));
        if booked {
            backs.push((key, after));
        }
        returns.push((i, after, booked));
    }
    ctx.store.note_creators_back(cid, &backs).await?;
    Ok(returns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_waits_for_the_gathering_end_or_for_the_creators_return() {
        let s = Duration::from_secs_f64;
        let g = |due_in: f64, creator_back_in: Option<f64>| Gathering {
            due_in: s(due_in),
            claimed: false,
            creator_back_in: creator_back_in.map(s),
        };
        // (gathering, wait)
        let cases = [
            // Until the gathering ends, and a margin for the lead's commit.
            (g(4.0, None), s(4.5)),
            // Due, and nobody booked to create the lead: this job creates it.
            (g(0.0, None), s(0.0)),
            // A creator booked: until it is back and has had time to create and commit.
            (g(4.0, Some(10.0)), s(13.0)),
            (g(0.0, Some(1.0)), s(4.0)),
            // A creator back before the gathering ends: the gathering's end.
            (g(6.0, Some(2.0)), s(6.5)),
        ];
        for (gathering, wait) in cases {
            assert_eq!(user_wait(&gathering), wait, "{gathering:?}");
        }
    }

    #[test]
    fn a_job_comes_back_at_the_gathering_end_or_for_its_place_on_the_lane() {
        let s = Duration::from_secs_f64;
        // (due in, place in) → (comes back after, booked)
        let cases = [
            // A free budget: back when the gathering ends, nothing booked.
            (s(5.0), s(0.0), s(5.0), false),
            (s(5.0), s(5.4), s(5.0), false),
            // A place beyond the gathering: back a little before it, booked.
            (s(5.0), s(9.0), s(8.5), true),
            // The gathering is over and the lane free: now.
            (s(0.0), s(0.3), s(0.0), false),
            (s(0.0), s(2.0), s(1.5), true),
        ];
        for (due_in, place_in, after, booked) in cases {
            assert_eq!(
                lane_return(due_in, place_in),
                (after, booked),
                "due in {due_in:?}, place in {place_in:?}"
            );
        }
    }
}
