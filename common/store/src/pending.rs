//! New leads that gather the contacts of their users before they are created (see
//! `V8__pending_leads.sql`), so that one `POST /lead/` creates a lead with its contacts nested.
//! Every call is one statement or one short transaction: nothing is held across a Close call.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use domain::jobs::EntityKind;

use crate::lease::EntityLease;
use crate::prepared::Prepared;
use crate::{Store, StoreError, SyncState};

/// Where a gathering lead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathering {
    /// How long until it is due (zero when due).
    pub due_in: Duration,
    /// Whether a job has claimed it (it is creating the lead; contacts join until it seals
    /// the gathering, just before it sends the create).
    pub claimed: bool,
    /// How long until the job that will create it comes back (its tenant's budget was
    /// busy), if that is booked and still ahead.
    pub creator_back_in: Option<Duration>,
}

/// A user's contact waiting for its lead.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingContact {
    /// The Hull user id.
    pub user_id: String,
    /// The contact body (its `lead_id` a placeholder until the lead exists).
    pub body: Map<String, Value>,
    /// The user's claims, for the write-back to Hull.
    pub claims: Map<String, Value>,
    /// The job that added it (deferred until the lead exists): when the contact is created
    /// nested, its scheduled return is deleted with the commit (see
    /// [`Store::commit_lead_with_contacts`]).
    pub job_id: Option<Uuid>,
}

/// A contact created nested in its lead, to record with the lead's sync state.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedContact {
    /// The Hull user id.
    pub user_id: String,
    /// Its sync state (contact id, lead id, body hash).
    pub state: SyncState,
    /// The job that added it to the gathering, whose scheduled return the commit deletes.
    pub job_id: Option<Uuid>,
}

/// What a user's job found when it joined its account's gathering lead
/// ([`Store::join_gathering`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Where the gathering stands.
    pub gathering: Gathering,
    /// Whether the contact joined (`false` once the creator has sealed it: the user's contact
    /// is then written on its own).
    pub joined: bool,
}

/// A lookup that found no lead for an account's gathering lead (see
/// [`Store::note_lead_lookups`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeadLookupNote<'a> {
    /// The account (its gathering's key).
    pub account_key: &'a str,
    /// When the search was sent.
    pub at: DateTime<Utc>,
    /// The identifier value searched for.
    pub value: &'a Value,
}

/// What claiming a gathering lead found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// No gathering lead (never started, or already created).
    None,
    /// Not due yet.
    NotDue(Duration),
    /// Claimed, with the identifier value a lookup found no lead for (within `fresh`; see
    /// [`Store::unclaim_pending_lead`]). The contacts to nest are taken when the claimer
    /// seals it ([`Store::seal_pending_lead`]).
    Claimed(Option<(DateTime<Utc>, Value)>),
}

/// The claim of an account's gathering lead ([`Store::claim_pending_lead`]), as a `claim` CTE
/// (parameters: connector, account key, how fresh a lookup must be in seconds) giving
/// `claimed`, `due_in` (seconds), and the lookup that serves the claim (`looked_up_at`,
/// `looked_up_value`). It is claimed when due (or claimed already); a claim takes the lookup
/// recorded for it, if fresh, and clears it.
macro_rules! claim_update {
    () => {
        claim_update!("")
    };
    ($condition:literal) => {
        concat!("WITH claim AS (
           UPDATE pending_leads p SET claimed = (p.due_at <= clock_timestamp()) OR p.claimed,
                  looked_up_at = CASE WHEN p.due_at <= clock_timestamp() OR p.claimed
                                      THEN NULL ELSE p.looked_up_at END,
                  looked_up_value = CASE WHEN p.due_at <= clock_timestamp() OR p.claimed
                                         THEN NULL ELSE p.looked_up_value END
           FROM (SELECT looked_up_at, looked_up_value FROM pending_leads
                 WHERE connector_id = $1 AND account_key = $2 FOR UPDATE) old
           WHERE p.connector_id = $1 AND p.account_key = $2 ", $condition, "
           RETURNING p.claimed,
                     GREATEST(0, EXTRACT(EPOCH FROM p.due_at - clock_timestamp()))::float8 AS due_in,
                     CASE WHEN old.looked_up_at > clock_timestamp() - make_interval(secs => $3)
                          THEN old.looked_up_at END AS looked_up_at,
                     old.looked_up_value)")
    };
}

/// The claim in the columns of `row` from `at` on (claimed, due in, lookup time and value),
/// [`Claim::None`] without a row.
fn claim(row: Option<&tokio_postgres::Row>, at: usize) -> Claim {
    match row {
        None => Claim::None,
        Some(r) if !r.get::<_, bool>(at) => {
            Claim::NotDue(Duration::from_secs_f64(r.get::<_, f64>(at + 1).max(0.0)))
        }
        Some(r) => Claim::Claimed(
            r.get::<_, Option<DateTime<Utc>>>(at + 2)
                .zip(r.get::<_, Option<Value>>(at + 3)),
        ),
    }
}

/// A gathering from the first columns of `row`: seconds until due, claimed, seconds until
/// its creator is back.
fn gathering(row: &tokio_postgres::Row) -> Gathering {
    Gathering {
        due_in: Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0)),
        claimed: row.get(1),
        creator_back_in: row
            .get::<_, Option<f64>>(2)
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64),
    }
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Store {
    /// Starts gathering for the account's new lead (due in `gather`), or reads where the
    /// existing gathering stands; `None` when the account has a lead already (recorded in its
    /// sync state), so a job that read the state a moment too early starts nothing.
    pub async fn gather_lead(
        &self,
        connector_id: &str,
        account_key: &str,
        gather: Duration,
    ) -> Result<Option<Gathering>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                // The no-op update returns the row another job inserted first (a plain
                // DO NOTHING would return nothing, and the row may be newer than this
                // statement's snapshot).
                "INSERT INTO pending_leads (connector_id, account_key, due_at)
                 SELECT $1, $2, clock_timestamp() + make_interval(secs => $3)
                 WHERE NOT EXISTS (SELECT 1 FROM sync_state
                                   WHERE connector_id = $1 AND kind = 'account' AND hull_id = $2
                                     AND close_id IS NOT NULL)
                 ON CONFLICT (connector_id, account_key) DO UPDATE SET due_at = pending_leads.due_at
                 RETURNING GREATEST(0, EXTRACT(EPOCH FROM due_at - clock_timestamp()))::float8, claimed,
                           EXTRACT(EPOCH FROM retry_at - clock_timestamp())::float8",
                &[&connector_id, &account_key, &gather.as_secs_f64()],
            )
            .await?;
        Ok(row.as_ref().map(gathering))
    }

    /// [`Store::gather_lead`] for several accounts of one connector in one statement (the
    /// first pass of a bundle's new accounts). Each key at most once; an account whose lead is
    /// known has no entry.
    pub async fn gather_leads(
        &self,
        connector_id: &str,
        account_keys: &[&str],
        gather: Duration,
    ) -> Result<HashMap<String, Gathering>, StoreError> {
        if account_keys.is_empty() {
            return Ok(HashMap::new());
        }
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                // DISTINCT: one command cannot update a row twice.
                "INSERT INTO pending_leads (connector_id, account_key, due_at)
                 SELECT $1, k, clock_timestamp() + make_interval(secs => $3)
                 FROM (SELECT DISTINCT unnest($2::text[]) AS k) keys
                 WHERE NOT EXISTS (SELECT 1 FROM sync_state
                                   WHERE connector_id = $1 AND kind = 'account' AND hull_id = k
                                     AND close_id IS NOT NULL)
                 ON CONFLICT (connector_id, account_key) DO UPDATE SET due_at = pending_leads.due_at
                 RETURNING GREATEST(0, EXTRACT(EPOCH FROM due_at - clock_timestamp()))::float8, claimed,
                           EXTRACT(EPOCH FROM retry_at - clock_timestamp())::float8, account_key",
                &[&connector_id, &account_keys, &gather.as_secs_f64()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, String>(3), gathering(r)))
            .collect())
    }

    /// [`Store::note_creator_back`] for several accounts of one connector in one statement.
    pub async fn note_creators_back(
        &self,
        connector_id: &str,
        backs: &[(&str, Duration)],
    ) -> Result<(), StoreError> {
        if backs.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = backs.iter().map(|(k, _)| *k).collect();
        let secs: Vec<f64> = backs.iter().map(|(_, d)| d.as_secs_f64()).collect();
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE pending_leads p SET retry_at = clock_timestamp() + make_interval(secs => b.secs)
             FROM (SELECT DISTINCT ON (k) k, secs FROM unnest($2::text[], $3::float8[]) AS u(k, secs)
                   ORDER BY k, secs DESC) b
             WHERE p.connector_id = $1 AND p.account_key = b.k AND NOT p.claimed",
            &[&connector_id, &keys, &secs],
        )
        .await?;
        Ok(())
    }

    /// Records that the job that will create the account's lead comes back in `back_in` (its
    /// place on the budget's deferral lane was booked while the lead gathers): users that
    /// join wait for it rather than try to create the lead at the gathering's end.
    pub async fn note_creator_back(
        &self,
        connector_id: &str,
        account_key: &str,
        back_in: Duration,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE pending_leads SET retry_at = clock_timestamp() + make_interval(secs => $3)
             WHERE connector_id = $1 AND account_key = $2 AND NOT claimed",
            &[&connector_id, &account_key, &back_in.as_secs_f64()],
        )
        .await?;
        Ok(())
    }

    /// Gives a claim up because the creating job was deferred (its tenant's budget was busy):
    /// users may join again, and wait until `back_in` when the creator comes back. With
    /// `looked_up` (when, and the identifier value searched), the lookup the creator made then
    /// (it found no lead) serves the create of whoever claims next for the same value, if
    /// still fresh.
    pub async fn unclaim_pending_lead(
        &self,
        connector_id: &str,
        account_key: &str,
        back_in: Duration,
        looked_up: Option<&(DateTime<Utc>, Value)>,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE pending_leads SET claimed = false, sealed = false,
                    retry_at = clock_timestamp() + make_interval(secs => $3),
                    looked_up_at = $4, looked_up_value = $5
             WHERE connector_id = $1 AND account_key = $2",
            &[
                &connector_id,
                &account_key,
                &back_in.as_secs_f64(),
                &looked_up.map(|(at, _)| *at),
                &looked_up.map(|(_, v)| v),
            ],
        )
        .await?;
        Ok(())
    }

    /// Records lookups that found no lead, each for the next claim of its account's gathering
    /// lead (see [`Store::claim_pending_lead`]), in one statement. Only while nobody has
    /// claimed a gathering: a claimed lead may have been created by a job that then died, and
    /// its next claimer must look again. A newer recorded lookup is kept.
    pub async fn note_lead_lookups(
        &self,
        connector_id: &str,
        notes: &[LeadLookupNote<'_>],
    ) -> Result<(), StoreError> {
        if notes.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = notes.iter().map(|n| n.account_key).collect();
        let ats: Vec<DateTime<Utc>> = notes.iter().map(|n| n.at).collect();
        let values: Vec<&Value> = notes.iter().map(|n| n.value).collect();
        let c = self.pool.get().await?;
        c.execute_p(
            "UPDATE pending_leads p SET looked_up_at = n.at, looked_up_value = n.value
             FROM unnest($2::text[], $3::timestamptz[], $4::jsonb[]) AS n(account_key, at, value)
             WHERE p.connector_id = $1 AND p.account_key = n.account_key AND NOT p.claimed
               AND (p.looked_up_at IS NULL OR p.looked_up_at < n.at)",
            &[&connector_id, &keys, &ats, &values],
        )
        .await?;
        Ok(())
    }

    /// A user's contact joins the account's gathering lead, in one statement: starts the
    /// gathering (due in `gather`) unless one exists, and adds (or replaces) the contact unless
    /// the gathering is sealed. `None` when the account has a lead already (recorded in its
    /// sync state). The upsert locks the gathering's row until the statement ends, so a seal
    /// waits for a join in progress and sees its contact, and a join that waited for a seal
    /// sees it sealed.
    pub async fn join_gathering(
        &self,
        connector_id: &str,
        account_key: &str,
        gather: Duration,
        contact: &PendingContact,
    ) -> Result<Option<Joined>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                "WITH g AS (
                   INSERT INTO pending_leads (connector_id, account_key, due_at)
                   SELECT $1, $2, clock_timestamp() + make_interval(secs => $3)
                   WHERE NOT EXISTS (SELECT 1 FROM sync_state
                                     WHERE connector_id = $1 AND kind = 'account' AND hull_id = $2
                                       AND close_id IS NOT NULL)
                   ON CONFLICT (connector_id, account_key) DO UPDATE SET due_at = pending_leads.due_at
                   RETURNING due_at, claimed, retry_at, sealed),
                 joined AS (
                   INSERT INTO pending_contacts (connector_id, account_key, user_id, body, claims, job_id)
                   SELECT $1, $2, $4, $5, $6, $7 FROM g WHERE NOT g.sealed
                   ON CONFLICT (connector_id, account_key, user_id)
                     DO UPDATE SET body = EXCLUDED.body, claims = EXCLUDED.claims, job_id = EXCLUDED.job_id
                   RETURNING 1)
                 SELECT GREATEST(0, EXTRACT(EPOCH FROM due_at - clock_timestamp()))::float8, claimed,
                        EXTRACT(EPOCH FROM retry_at - clock_timestamp())::float8,
                        EXISTS (SELECT 1 FROM joined)
                 FROM g",
                &[
                    &connector_id,
                    &account_key,
                    &gather.as_secs_f64(),
                    &contact.user_id,
                    &Value::Object(contact.body.clone()),
                    &Value::Object(contact.claims.clone()),
                    &contact.job_id,
                ],
            )
            .await?;
        Ok(row.map(|row| Joined {
            gathering: gathering(&row),
            joined: row.get(3),
        }))
    }

    /// [`Store::join_gathering`] for several users of one connector in one statement (the
    /// first pass of a bundle's new users): `(account key, contact)` each, each user once.
    /// A user whose account's lead is known, or whose contact is recorded, joins nothing and
    /// has no entry; the others have theirs, by user id.
    pub async fn join_gatherings(
        &self,
        connector_id: &str,
        gather: Duration,
        contacts: &[(&str, &PendingContact)],
    ) -> Result<HashMap<String, Joined>, StoreError> {
        if contacts.is_empty() {
            return Ok(HashMap::new());
        }
        let keys: Vec<&str> = contacts.iter().map(|(k, _)| *k).collect();
        let users: Vec<&str> = contacts.iter().map(|(_, c)| c.user_id.as_str()).collect();
        let bodies: Vec<Value> = contacts
            .iter()
            .map(|(_, c)| Value::Object(c.body.clone()))
            .collect();
        let claims: Vec<Value> = contacts
            .iter()
            .map(|(_, c)| Value::Object(c.claims.clone()))
            .collect();
        let jobs: Vec<Option<Uuid>> = contacts.iter().map(|(_, c)| c.job_id).collect();
        let c = self.pool.get().await?;
        let rows = c
            .query_p(
                "WITH fresh AS (
                   SELECT r.* FROM unnest($3::text[], $4::text[], $5::jsonb[], $6::jsonb[], $7::uuid[])
                                   AS r(account_key, user_id, body, claims, job_id)
                   WHERE NOT EXISTS (SELECT 1 FROM sync_state
                                     WHERE connector_id = $1 AND kind = 'account'
                                       AND hull_id = r.account_key AND close_id IS NOT NULL)
                     AND NOT EXISTS (SELECT 1 FROM sync_state
                                     WHERE connector_id = $1 AND kind = 'user'
                                       AND hull_id = r.user_id AND close_id IS NOT NULL)),
                 g AS (
                   INSERT INTO pending_leads (connector_id, account_key, due_at)
                   SELECT $1, k, clock_timestamp() + make_interval(secs => $2)
                   FROM (SELECT DISTINCT account_key AS k FROM fresh) keys
                   ON CONFLICT (connector_id, account_key) DO UPDATE SET due_at = pending_leads.due_at
                   RETURNING account_key, due_at, claimed, retry_at, sealed),
                 joined AS (
                   INSERT INTO pending_contacts (connector_id, account_key, user_id, body, claims, job_id)
                   SELECT $1, fresh.account_key, fresh.user_id, fresh.body, fresh.claims, fresh.job_id
                   FROM fresh JOIN g USING (account_key) WHERE NOT g.sealed
                   ON CONFLICT (connector_id, account_key, user_id)
                     DO UPDATE SET body = EXCLUDED.body, claims = EXCLUDED.claims, job_id = EXCLUDED.job_id
                   RETURNING user_id)
                 SELECT GREATEST(0, EXTRACT(EPOCH FROM g.due_at - clock_timestamp()))::float8, g.claimed,
                        EXTRACT(EPOCH FROM g.retry_at - clock_timestamp())::float8,
                        EXISTS (SELECT 1 FROM joined WHERE joined.user_id = fresh.user_id),
                        fresh.user_id
                 FROM fresh JOIN g USING (account_key)",
                &[
                    &connector_id,
                    &gather.as_secs_f64(),
                    &keys,
                    &users,
                    &bodies,
                    &claims,
                    &jobs,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get::<_, String>(4),
                    Joined {
                        gathering: gathering(row),
                        joined: row.get(3),
                    },
                )
            })
            .collect())
    }

    /// Claims the account's gathering lead when it is due (the caller holds the account's
    /// lease); contacts still join until [`Store::seal_pending_lead`]. A claim left by a job
    /// that died is taken over by the next holder of the lease.
    pub async fn claim_pending_lead(
        &self,
        connector_id: &str,
        account_key: &str,
        fresh: Duration,
    ) -> Result<Claim, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt_p(
                concat!(claim_update!(), " SELECT * FROM claim"),
                &[&connector_id, &account_key, &fresh.as_secs_f64()],
            )
            .await?;
        Ok(claim(row.as_ref(), 0))
    }

    /// What the holder of an account's lease reads before it creates the account's lead, in
    /// one statement: the account's sync state, and [`Store::claim_pending_lead`]'s claim. The
    /// statement's snapshot is taken after the lease was claimed, so the state is the last one
    /// committed. A gathering exists only while the account has no lead, so an account whose
    /// state turns out to have one claims nothing.
    pub async fn state_and_claim_pending_lead(
        &self,
        connector_id: &str,
        account_key: &str,
        fresh: Duration,
    ) -> Result<(SyncState, Claim), StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one_p(
                concat!(
                    claim_update!(),
                    " SELECT c.claimed, c.due_in, c.looked_up_at, c.looked_up_value,
                             s.close_id, s.lead_id, s.body_hash, s.failures
                      FROM (SELECT 1) AS one
                      LEFT JOIN claim c ON true
                      LEFT JOIN sync_state s ON s.connector_id = $1 AND s.kind = 'account' AND s.hull_id = $2"
                ),
                &[&connector_id, &account_key, &fresh.as_secs_f64()],
            )
            .await?;
        let state = SyncState {
            close_id: row.get(4),
            lead_id: row.get(5),
            body_hash: row.get(6),
            failures: row.get::<_, Option<i32>>(7).unwrap_or_default(),
        };
        let claim = if row.get::<_, Option<bool>>(0).is_some() {
            claim(Some(&row), 0)
        } else {
            Claim::None
        };
        Ok((state, claim))
    }

    /// Claims the lease of an entity for `ttl` and, once it is claimed, reads its sync state
    /// and — with `pending_lead` (`Some(fresh)`, an account) — claims its gathering lead as
    /// [`Store::state_and_claim_pending_lead`] does: `None` while another job holds the lease.
    ///
    /// One round trip for two statements: they are pipelined on one connection, and the
    /// second acts only if the first claimed the lease (it looks for the lease row with the
    /// fence this session drew last, `currval`). Each statement is its own transaction and
    /// the second starts after the first committed, so its snapshot — as with two round
    /// trips — sees every write made before the lease was claimed.
    pub async fn claim_entity_reading(
        &self,
        connector_id: &str,
        kind: EntityKind,
        hull_id: &str,
        ttl: Duration,
        pending_lead: Option<Duration>,
    ) -> Result<Option<(EntityLease, SyncState, Option<Claim>)>, StoreError> {
        const READ_STATE: &str = "SELECT s.close_id, s.lead_id, s.body_hash, s.failures
             FROM entity_leases l
             LEFT JOIN sync_state s
               ON s.connector_id = l.connector_id AND s.kind = l.kind AND s.hull_id = l.hull_id
             WHERE l.connector_id = $1 AND l.kind = $2 AND l.hull_id = $3
               AND l.fence = currval('entity_lease_fence')";
        const READ_STATE_AND_CLAIM: &str = concat!(
            claim_update!(
                "AND EXISTS (SELECT 1 FROM entity_leases WHERE connector_id = $1
                   AND kind = 'account' AND hull_id = $2 AND fence = currval('entity_lease_fence'))"
            ),
            " SELECT c.claimed, c.due_in, c.looked_up_at, c.looked_up_value,
                     s.close_id, s.lead_id, s.body_hash, s.failures
              FROM entity_leases l
              LEFT JOIN claim c ON true
              LEFT JOIN sync_state s ON s.connector_id = $1 AND s.kind = 'account' AND s.hull_id = $2
              WHERE l.connector_id = $1 AND l.kind = 'account' AND l.hull_id = $2
                AND l.fence = currval('entity_lease_fence')"
        );
        let c = self.pool.get().await?;
        let claim_sql = crate::lease::CLAIM_ENTITY;
        let read_sql = if pending_lead.is_some() {
            READ_STATE_AND_CLAIM
        } else {
            READ_STATE
        };
        // Both prepared first (cached after the first use), so that the two requests go out
        // in order, back to back.
        let (claim_st, read_st) = (
            c.prepare_cached(claim_sql).await?,
            c.prepare_cached(read_sql).await?,
        );
        let secs = ttl.as_secs_f64();
        let claim_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&connector_id, &kind.as_str(), &hull_id, &secs];
        let fresh = pending_lead.map(|d| d.as_secs_f64()).unwrap_or_default();
        let kind_str = kind.as_str();
        let read_params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = if pending_lead.is_some()
        {
            vec![&connector_id, &hull_id, &fresh]
        } else {
            vec![&connector_id, &kind_str, &hull_id]
        };
        let (claimed, read) = futures::future::join(
            c.query_opt(&claim_st, &claim_params),
            c.query_opt(&read_st, &read_params),
        )
        .await;
        let Some(fence) = claimed?.map(|r| r.get::<_, i64>(0)) else {
            return Ok(None);
        };
        let lease = EntityLease {
            connector_id: connector_id.to_owned(),
            kind,
            hull_id: hull_id.to_owned(),
            fence,
        };
        let Some(row) = read? else {
            // Not expected (the lease was claimed just before): read the way two round trips
            // would.
            drop(c);
            return Ok(Some(match pending_lead {
                Some(fresh) => {
                    let (state, claim) = self
                        .state_and_claim_pending_lead(connector_id, hull_id, fresh)
                        .await?;
                    (lease, state, Some(claim))
                }
                None => {
                    let c = self.pool.get().await?;
                    let state = crate::load_state(&c, connector_id, kind, hull_id).await?;
                    (lease, state, None)
                }
            }));
        };
        let at = if pending_lead.is_some() { 4 } else { 0 };
        let state = SyncState {
            close_id: row.get(at),
            lead_id: row.get(at + 1),
            body_hash: row.get(at + 2),
            failures: row.get::<_, Option<i32>>(at + 3).unwrap_or_default(),
        };
        let claim = pending_lead.map(|_| {
            if row.get::<_, Option<bool>>(0).is_some() {
                claim(Some(&row), 0)
            } else {
                Claim::None
            }
        });
        Ok(Some((lease, state, claim)))
    }

    /// Seals the account's gathering lead (the caller claimed it and holds the account's
    /// lease, and is about to send the create): no contact can join after this. Returns the
    /// contacts to nest, in the order to send them; none when there is no gathering.
    ///
    /// Two statements, no transaction: a user joining holds the gathering's row until its
    /// statement commits, so the seal waits for it; the contacts are then read by a statement
    /// of their own, whose snapshot is taken after the seal and so holds every contact that
    /// joined before it (one statement would read them with a snapshot from before the wait).
    /// Nothing joins a sealed gathering. The two go out pipelined, in one round trip: the
    /// server runs the read after the seal committed.
    pub async fn seal_pending_lead(
        &self,
        connector_id: &str,
        account_key: &str,
    ) -> Result<Vec<PendingContact>, StoreError> {
        let c = self.pool.get().await?;
        let seal = c
            .prepare_cached(
                "UPDATE pending_leads SET sealed = true WHERE connector_id = $1 AND account_key = $2",
            )
            .await?;
        let read = c.prepare_cached(PENDING_CONTACTS).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&connector_id, &account_key];
        let (sealed, contacts) =
            futures::future::join(c.execute(&seal, &params), c.query(&read, &params)).await;
        if sealed? == 0 {
            return Ok(Vec::new());
        }
        Ok(contacts?.iter().map(pending_contact).collect())
    }

    /// [`Store::commit_entity`] for a lead created with nested contacts, in one statement:
    /// gives the account's lease up (fenced) and records the lead's sync state, records the
    /// sync state of each nested contact's user (never over a contact the user already has:
    /// it moved meanwhile, say, and that state is newer than this gathering), ends the
    /// gathering, and deletes the scheduled returns of the jobs whose contacts were recorded
    /// (their work is done) and `retry_row`, the committing job's own row (see
    /// [`Store::commit_entity_finishing`]). Nothing changes when the lease was lost. Returns
    /// how many users' jobs were finished so.
    pub async fn commit_lead_with_contacts(
        &self,
        lease: &EntityLease,
        state: &SyncState,
        nested: &[NestedContact],
        retry_row: Option<Uuid>,
    ) -> Result<u64, StoreError> {
        let users: Vec<&str> = nested.iter().map(|n| n.user_id.as_str()).collect();
        let close_ids: Vec<Option<&str>> =
            nested.iter().map(|n| n.state.close_id.as_deref()).collect();
        let lead_ids: Vec<Option<&str>> =
            nested.iter().map(|n| n.state.lead_id.as_deref()).collect();
        let hashes: Vec<Option<&str>> = nested
            .iter()
            .map(|n| n.state.body_hash.as_deref())
            .collect();
        let jobs: Vec<Option<Uuid>> = nested.iter().map(|n| n.job_id).collect();
        let c = self.pool.get().await?;
        let row = c
            .query_one_p(
                concat!(
                    fenced_commit!(),
                    ",
                 n AS (
                   SELECT * FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::uuid[])
                     AS n(user_id, close_id, lead_id, body_hash, job_id)),
                 contacts AS (
                   INSERT INTO sync_state (connector_id, kind, hull_id, close_id, lead_id, body_hash, last_success_at, failures)
                   SELECT $1, 'user', n.user_id, n.close_id, n.lead_id, n.body_hash, now(), 0
                   FROM n WHERE EXISTS (SELECT 1 FROM held)
                   ON CONFLICT (connector_id, kind, hull_id) DO UPDATE SET close_id = EXCLUDED.close_id,
                     lead_id = EXCLUDED.lead_id, body_hash = EXCLUDED.body_hash, last_success_at = now(),
                     failures = 0, last_error = NULL, next_retry_at = NULL, updated_at = now()
                   WHERE sync_state.close_id IS NULL
                   RETURNING hull_id),
                 ended AS (
                   DELETE FROM pending_leads
                   WHERE connector_id = $1 AND account_key = $3 AND EXISTS (SELECT 1 FROM held)
                   RETURNING 1),
                 finished AS (
                   DELETE FROM retries r USING n, contacts c
                   WHERE c.hull_id = n.user_id AND r.id = n.job_id AND r.state = 'scheduled'
                   RETURNING 1),
                 own AS (
                   DELETE FROM retries WHERE id = $13 AND EXISTS (SELECT 1 FROM held))
                 SELECT (SELECT count(*) FROM committed), (SELECT count(*) FROM finished),
                        (SELECT count(*) FROM ended)"
                ),
                &[
                    &lease.connector_id,
                    &lease.kind.as_str(),
                    &lease.hull_id,
                    &lease.fence,
                    &state.close_id,
                    &state.lead_id,
                    &state.body_hash,
                    &users,
                    &close_ids,
                    &lead_ids,
                    &hashes,
                    &jobs,
                    &retry_row,
                ],
            )
            .await?;
        if row.get::<_, i64>(0) != 1 {
            return Err(StoreError::LeaseLost {
                entity: format!("{}/{}", lease.kind.as_str(), lease.hull_id),
            });
        }
        Ok(u64::try_from(row.get::<_, i64>(1)).unwrap_or(0))
    }
}

/// The contacts gathered for an account's lead (connector, account key), in the order to
/// send them.
const PENDING_CONTACTS: &str = "SELECT user_id, body, claims, job_id FROM pending_contacts
     WHERE connector_id = $1 AND account_key = $2 ORDER BY user_id";

fn pending_contact(r: &tokio_postgres::Row) -> PendingContact {
    PendingContact {
        user_id: r.get(0),
        body: object(r.get(1)),
        claims: object(r.get(2)),
        job_id: r.get(3),
    }
}
