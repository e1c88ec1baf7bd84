//! The Close request budgets shared by every worker (`close_budgets`; see `closeio::budget`
//! for the model). Each call is one statement in autocommit: no transaction or connection is
//! held while a request waits for its slot or talks to Close.

use std::time::Duration;

use crate::prepared::Prepared;
use crate::{Store, StoreError};

/// A reserved slot, on Postgres's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    /// When the request may be sent (µs since the Unix epoch).
    pub slot_us: i64,
    /// How long to wait for it from now (bursts allowed for).
    pub wait: Duration,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl Store {
    /// Reserves the next slot of (`key_fp`, `group`); `spacing` and `burst` apply when the
    /// pair is new.
    pub async fn budget_reserve(
        &self,
        key_fp: &str,
        group: &str,
        spacing: Duration,
        burst: u32,
    ) -> Result<Reservation, StoreError> {
        let c = self.pool.get().await?;
        let burst = i32::try_from(burst.max(1)).unwrap_or(i32::MAX);
        let row = c
            .query_one_p(
                "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, burst, tat)
                 VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $3::bigint / 1e6))
                 ON CONFLICT (key_fp, grp) DO UPDATE
                   SET tat = GREATEST(b.tat, clock_timestamp(), b.paused_until)
                             + make_interval(secs => b.spacing_us / 1e6)
                 RETURNING (EXTRACT(EPOCH FROM tat) * 1e6)::bigint - spacing_us AS slot_us,
                           GREATEST(0,
                                    (EXTRACT(EPOCH FROM tat - clock_timestamp()) * 1e6)::bigint
                                        - spacing_us * burst,
                                    CASE WHEN paused_until = '-infinity' THEN 0
                                         ELSE (EXTRACT(EPOCH FROM paused_until - clock_timestamp()) * 1e6)::bigint
                                    END) AS wait_us",
                &[&key_fp, &group, &micros(spacing), &burst],
            )
            .await?;
        let wait_us: i64 = row.get("wait_us");
        Ok(Reservation {
            slot_us: row.get("slot_us"),
            wait: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
        })
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
            "INSERT INTO close_budgets AS b (key_fp, grp, spacing_us, tat, paused_until)
             VALUES ($1, $2, 100000, clock_timestamp(),
                     clock_timestamp() + make_interval(secs => $3::bigint / 1e6))
             ON CONFLICT (key_fp, grp) DO UPDATE
               SET paused_until = GREATEST(b.paused_until,
                                           clock_timestamp() + make_interval(secs => $3::bigint / 1e6))",
            &[&key_fp, &group, &micros(wait)],
        )
        .await?;
        Ok(())
    }
}
