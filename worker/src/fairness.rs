//! Fairness across tenants. Each connector has its own Close key and so its own budget; a job
//! whose tenant has no budget right now must not sit in one of the worker's places while
//! another tenant's work waits behind it in the queue.
//!
//! Every outgoing job runs under [`common::closeio::deferring`]: a request whose slot in the
//! key's shared budget is more than `WORKER_DEFER_AFTER_SECS` away reserves nothing and fails
//! at once with `BudgetBusy`. The job is then *deferred*: recorded in `retries` for later with
//! the same attempt number, and acknowledged. This [`Gate`] remembers, per connector, until
//! when its budget is booked, so the tenant's next jobs are deferred before they touch Postgres
//! or Close, and spreads the deferred jobs one spacing apart from that moment on, so that they
//! come back about as fast as the budget can serve them rather than all at once.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// What this process knows of one connector's busy budget.
#[derive(Debug, Clone)]
struct Busy {
    /// Fingerprint of the connector's Close key.
    key_fp: String,
    /// The endpoint group found busy.
    group: &'static str,
    /// Until when its slots (and the returns of the jobs deferred so far) are booked.
    until: Instant,
}

/// Per connector: until when its Close budget is booked (as far as this process saw).
#[derive(Debug, Default)]
pub struct Gate {
    busy: Mutex<HashMap<String, Busy>>,
}

impl Gate {
    /// An empty gate.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// When `connector`'s budget is known to be booked for longer than `max_wait`: the key
    /// fingerprint and group to book the deferred job's return on. `None`: run the job.
    pub fn check(&self, connector: &str, max_wait: Duration) -> Option<(String, &'static str)> {
        let now = Instant::now();
        let mut busy = self.busy.lock();
        let b = busy.get(connector)?;
        if b.until <= now + max_wait {
            busy.remove(connector);
            return None;
        }
        Some((b.key_fp.clone(), b.group))
    }

    /// Records that `connector`'s budget (`key_fp`, `group`) is booked for `after` from now
    /// (a busy answer, or the return of a job just deferred). Never shortens what is known.
    pub fn busy(&self, connector: &str, key_fp: &str, group: &'static str, after: Duration) {
        let until = Instant::now() + after;
        let mut busy = self.busy.lock();
        match busy.get_mut(connector) {
            Some(b) if b.until >= until => {}
            _ => {
                busy.insert(
                    connector.to_owned(),
                    Busy {
                        key_fp: key_fp.to_owned(),
                        group,
                        until,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_busy_tenant_is_deferred_while_others_run() {
        let gate = Gate::new();
        let max_wait = Duration::from_secs(2);
        assert_eq!(gate.check("a", max_wait), None, "nothing known: run");
        gate.busy("a", "fp_a", "lead-write", Duration::from_secs(10));
        assert_eq!(
            gate.check("a", max_wait),
            Some(("fp_a".to_owned(), "lead-write"))
        );
        // Another tenant is not held.
        assert_eq!(gate.check("b", max_wait), None);
        // A shorter answer does not shorten it; a longer one extends it.
        gate.busy("a", "fp_a", "search", Duration::from_secs(3));
        tokio::time::advance(Duration::from_millis(7_000)).await;
        assert!(gate.check("a", max_wait).is_some());
        gate.busy("a", "fp_a", "search", Duration::from_secs(10));
        tokio::time::advance(Duration::from_millis(7_000)).await;
        assert_eq!(
            gate.check("a", max_wait),
            Some(("fp_a".to_owned(), "search"))
        );
        // Once the budget is within reach again, jobs run (and the entry is forgotten).
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(gate.check("a", max_wait), None);
        assert_eq!(gate.check("a", Duration::ZERO), None, "forgotten");
    }
}
