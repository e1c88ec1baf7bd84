//! The Close request budgets shared by every worker (`close_budgets`; see `closeio::budget`
//! for the model). Each call is one statement in autocommit: no transaction or connection is
//! held while a request waits for its slot or talks to Close.

use std::time::Duration;

use crate::prepared::Prepared;
use crate::{Store, StoreError};

/// What a reservation got, on Postgres's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reservation {
    /// A slot is reserved.
    Reserved {
        /// When the request may be sent (µs since the Unix epoch).
        slot_us: i64,
        /// How long to wait for it from now (bursts allowed for).
        wait: Duration,
    },
    /// Nothing was reserved: the next free slot is further away than the caller would wait.
    Busy {
        /// How long until that slot.
        after: Duration,
        /// The group's spacing.
        spacing: Duration,
    },
}

impl Reservation {
    /// The wait of a reserved slot (`None` when busy).
    pub fn wait(&self) -> Option<Duration> {
        match self {
            Reservation::Reserved { wait, .. } => Some(*wait),
            Reservation::Busy { .. } => None,
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl Store {
    /// Reserves the next slot of (`key_fp`, `group`); `spacing` and `burst` apply when the
    /// pair is new. With `max_wait`, a slot further away than that is not reserved (the row is
    /// left as it is) and the answer is [`Reservation::Busy`].
    pub async fn budget_reserve(
        &self,
        key_fp: &str,
        group: &str,
        spacing: Duration,
        burst: u32,
        max_wait: Option<Duration>,
    ) -> Result<Reservation, StoreError> {
        let c = self.pool.get().await?;
        let burst = i32::try_from(burst.max(1)).unwrap_or(i32::MAX);
        let max_wait_us: Option<i64> = max_wait.map(micros);
        // The wait of the slot a reservation would get, as in `closeio::budget::reserve_slot`:
        // `GREATEST(tat, now, paused_until) - now - spacing × (burst - 1)`, and never before
        // the end of a pause.
        let row = c
            .query_opt_p(
                "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, burst, tat, requests)
                 VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $3::bigint / 1e6), 1)
                 ON CONFLICT (key_fp, grp) DO UPDATE
                   SET tat = GREATEST(b.tat, clock_timestamp(), b.paused_until)
                             + make_interval(secs => b.spacing_us / 1e6),
                       requests = b.requests + 1
                   WHERE $5::bigint IS NULL
                      OR GREATEST(b.tat - make_interval(secs => b.spacing_us * (b.burst - 1) / 1e6),
                                  b.paused_until) <= clock_timestamp() + make_interval(secs => $5::bigint / 1e6)
                 RETURNING (EXTRACT(EPOCH FROM tat) * 1e6)::bigint - spacing_us AS slot_us,
                           GREATEST(0,
                                    (EXTRACT(EPOCH FROM tat - clock_timestamp()) * 1e6)::bigint
                                        - spacing_us * burst,
                                    CASE WHEN paused_until = '-infinity' THEN 0
                                         ELSE (EXTRACT(EPOCH FROM paused_until - clock_timestamp()) * 1e6)::bigint
                                    END) AS wait_us",
                &[&key_fp, &group, &micros(spacing), &burst, &max_wait_us],
            )
            .await?;
        if let Some(row) = row {
            let wait_us: i64 = row.get("wait_us");
            return Ok(Reservation::Reserved {
                slot_us: row.get("slot_us"),
                wait: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            });
        }
        // Booked too far ahead: say how far, reserve nothing.
        let row = c
            .query_one_p(
                "SELECT GREATEST(0,
                                 (EXTRACT(EPOCH FROM tat - clock_timestamp()) * 1e6)::bigint
                                     - spacing_us * (burst - 1),
                                 CASE WHEN paused_until = '-infinity' THEN 0
                                      ELSE (EXTRACT(EPOCH FROM paused_until - clock_timestamp()) * 1e6)::bigint
                                 END) AS wait_us,
                        spacing_us
                 FROM close_budgets WHERE key_fp = $1 AND grp = $2",
                &[&key_fp, &group],
            )
            .await?;
        let us =
            |name: &str| Duration::from_micros(u64::try_from(row.get::<_, i64>(name)).unwrap_or(0));
        Ok(Reservation::Busy {
            after: us("wait_us"),
            spacing: us("spacing_us"),
        })
    }

    /// Where the next deferred job of (`key_fp`, `group`) should come back: one spacing after
    /// the previous deferred job, and never before the booked slots or a pause end. Returns
    /// how long from now.
    ///
    /// A group that has not been used yet has no spacing learned from Close: its lane starts
    /// with the fastest spacing learned for the key's other groups (a burst of new leads is
    /// spread from its first deferral instead of all coming back at once). A guess that is
    /// too fast only brings jobs back early, to be deferred again at the spacing the first
    /// answers teach; with nothing learned for the key at all, nothing is booked.
    pub async fn budget_defer(&self, key_fp: &str, group: &str) -> Result<Duration, StoreError> {
        Ok(self.budget_defer_places(key_fp, group, 1).await?.0)
    }

    /// Books `places` consecutive places on the deferral lane of (`key_fp`, `group`) in one
    /// statement. Returns how long from now the first one is, and the spacing between them.
    pub async fn budget_defer_places(
        &self,
        key_fp: &str,
        group: &str,
        places: u32,
    ) -> Result<(Duration, Duration), StoreError> {
        let c = self.pool.get().await?;
        let places = i64::from(places.max(1));
        let row = c
            .query_opt_p(
                "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, burst, tat, defer_tat)
                 SELECT $1, $2, min(spacing_us), 1, clock_timestamp(),
                        clock_timestamp() + make_interval(secs => $3::bigint * min(spacing_us) / 1e6)
                 FROM close_budgets WHERE key_fp = $1
                 HAVING count(*) > 0
                 ON CONFLICT (key_fp, grp) DO UPDATE
                   SET defer_tat = GREATEST(b.defer_tat, b.tat, b.paused_until, clock_timestamp())
                                   + make_interval(secs => $3::bigint * b.spacing_us / 1e6)
                 RETURNING GREATEST(0, (EXTRACT(EPOCH FROM defer_tat - clock_timestamp()) * 1e6)::bigint
                                       - $3::bigint * spacing_us) AS wait_us, spacing_us",
                &[&key_fp, &group, &places],
            )
            .await?;
        let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
        Ok(row.map_or((Duration::ZERO, Duration::ZERO), |r| {
            (micros(r.get("wait_us")), micros(r.get("spacing_us")))
        }))
    }

    /// Sets the spacing of (`key_fp`, `group`) (learned from Close's headers).
    pub async fn budget_set_spacing(
        &self,
        key_fp: &str,
        group: &str,
        spacing: Duration,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, tat)
             VALUES ($1, $2, $3, clock_timestamp())
             ON CONFLICT (key_fp, grp) DO UPDATE SET spacing_us = $3, updated_at = now()
             WHERE b.spacing_us <> $3",
            &[&key_fp, &group, &micros(spacing)],
        )
        .await?;
        Ok(())
    }

    /// Holds every request of (`key_fp`, `group`), in every process, until `wait` from now.
    pub async fn budget_pause(
        &self,
        key_fp: &str,
        group: &str,
        wait: Duration,
    ) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute_p(
            "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, tat, paused_until, rate_limited, last_rate_limited_at)
             VALUES ($1, $2, 100000, clock_timestamp(),
                     clock_timestamp() + make_interval(secs => $3::bigint / 1e6), 1, now())
             ON CONFLICT (key_fp, grp) DO UPDATE
               SET paused_until = GREATEST(b.paused_until,
                                           clock_timestamp() + make_interval(secs => $3::bigint / 1e6)),
                   rate_limited = b.rate_limited + 1, last_rate_limited_at = now()",
            &[&key_fp, &group, &micros(wait)],
        )
        .await?;
        Ok(())
    }
}
