//! Each connector's allowance of the main outgoing queue. A connector that sends more than
//! `INGEST_TENANT_RATE` entities per second (after a burst of `INGEST_TENANT_BURST`) has the
//! rest of its entities published to the bulk queue: workers consume both queues side by side,
//! so one tenant's backlog of thousands of entities never stands in front of another tenant's
//! single update. Per ingest process; with several, each gives every connector the allowance.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota};

use common::jobs::Envelope;

/// Connectors above this many are forgotten when idle, so the map stays small.
const RETAIN_ABOVE: usize = 10_000;

/// The allowances of every connector.
pub struct TenantAllowance {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl TenantAllowance {
    /// `rate` entities per second after a burst of `burst`; a rate of 0 puts every entity in
    /// the main queue.
    pub fn new(rate: u32, burst: u32) -> TenantAllowance {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        TenantAllowance { limiter }
    }

    /// Marks the jobs of `connector_id` beyond its allowance as bulk (those after the first
    /// that does not fit: a notification is split once, its first part in the main queue).
    /// Returns how many were marked.
    pub fn mark(&self, connector_id: &str, jobs: &mut [Envelope]) -> usize {
        let Some(limiter) = &self.limiter else {
            return 0;
        };
        let key = connector_id.to_owned();
        let fits = jobs
            .iter()
            .take_while(|_| limiter.check_key(&key).is_ok())
            .count();
        for env in &mut jobs[fits..] {
            env.bulk = true;
        }
        if limiter.len() > RETAIN_ABOVE {
            limiter.retain_recent();
        }
        jobs.len() - fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::jobs::{Job, QueueKind};

    fn jobs(n: usize) -> Vec<Envelope> {
        (0..n)
            .map(|i| {
                Envelope::new(
                    "c",
                    Job::RefreshLead {
                        lead_id: format!("lead_{i}"),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_burst_beyond_the_allowance_goes_to_bulk_and_other_connectors_keep_theirs() {
        let a = TenantAllowance::new(1, 5);
        let mut burst = jobs(8);
        assert_eq!(a.mark("big", &mut burst), 3);
        assert!(burst[..5].iter().all(|e| !e.bulk));
        assert!(burst[5..].iter().all(|e| e.bulk));
        // Another connector's update is not affected by the burst.
        let mut one = jobs(1);
        assert_eq!(a.mark("small", &mut one), 0);
        assert!(!one[0].bulk);
        // The busy connector's next entity waits in bulk too.
        let mut next = jobs(1);
        assert_eq!(a.mark("big", &mut next), 1);
    }

    #[test]
    fn a_rate_of_zero_keeps_everything_in_the_main_queue() {
        let a = TenantAllowance::new(0, 1);
        let mut many = jobs(1000);
        assert_eq!(a.mark("c", &mut many), 0);
        assert!(many.iter().all(|e| !e.bulk));
    }

    #[test]
    fn a_bulk_outgoing_job_is_routed_to_bulk_until_it_is_booked() {
        let msg = common::jobs::OutgoingMessage {
            notification_id: "n".into(),
            is_export: false,
            message: serde_json::json!({}),
        };
        let mut env = Envelope::new("c", Job::OutgoingAccount(msg));
        assert_eq!(env.queue(), QueueKind::Outgoing);
        env.bulk = true;
        assert_eq!(env.queue(), QueueKind::Bulk);
        // Back for its booked Close slot: in the main queue, not behind the burst.
        env.booked_groups.push("lead-write".into());
        assert_eq!(env.queue(), QueueKind::Outgoing);
        // Incoming work has its own queue whatever the mark.
        let mut incoming = Envelope::new(
            "c",
            Job::RefreshLead {
                lead_id: "l".into(),
            },
        );
        incoming.bulk = true;
        assert_eq!(incoming.queue(), QueueKind::Incoming);
    }
}
