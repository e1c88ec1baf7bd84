//! Backpressure: the flow control ingest answers Hull with follows the depth of the outgoing
//! queue and how long publishing takes, so a burst from Hull cannot grow the broker without
//! bound.
//!
//! - depth below `FLOW_CONTROL_HIGH_WATER` and publishing fast: `next` with the configured
//!   `FLOW_CONTROL_SIZE` / `FLOW_CONTROL_IN_MS`;
//! - depth between the high-water mark and `FLOW_CONTROL_HARD_LIMIT`, or the last publish
//!   slower than [`SLOW_PUBLISH`]: `next` with the size shrinking linearly towards 1 and
//!   `in = FLOW_CONTROL_BUSY_IN_MS`;
//! - depth at or above the hard limit: the notification is refused with `retry` (503) and
//!   nothing is enqueued.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use common::hull::FlowControl;
use common::jobs::QueueKind;
use common::queue::Queue;

use crate::IngestConfig;

/// A publish slower than this counts as a loaded broker.
pub const SLOW_PUBLISH: Duration = Duration::from_secs(1);

/// What ingest should do with a notification, given the broker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pressure {
    /// Accept and answer with this flow control.
    Accept(FlowControl),
    /// Refuse (nothing enqueued) and answer with this flow control.
    Refuse(FlowControl),
}

/// The limits, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `FLOW_CONTROL_SIZE`.
    pub size: u32,
    /// `FLOW_CONTROL_IN_MS`.
    pub in_ms: u64,
    /// `FLOW_CONTROL_HIGH_WATER`.
    pub high_water: u32,
    /// `FLOW_CONTROL_HARD_LIMIT`.
    pub hard_limit: u32,
    /// `FLOW_CONTROL_BUSY_IN_MS`.
    pub busy_in_ms: u64,
}

impl Limits {
    /// From ingest's configuration.
    pub fn from_config(cfg: &IngestConfig) -> Limits {
        Limits {
            size: cfg.flow_control_size,
            in_ms: cfg.flow_control_in_ms,
            high_water: cfg.flow_control_high_water,
            hard_limit: cfg.flow_control_hard_limit,
            busy_in_ms: cfg.flow_control_busy_in_ms,
        }
    }
}

/// The decision for a queue `depth` (unknown: `None`) and whether publishing is slow.
pub fn decide(limits: &Limits, depth: Option<u32>, slow_publish: bool) -> Pressure {
    let depth = depth.unwrap_or(0);
    if depth >= limits.hard_limit {
        return Pressure::Refuse(
            FlowControl::retry(limits.size.min(10), limits.busy_in_ms.max(1000)).with_in_time(10),
        );
    }
    if depth < limits.high_water && !slow_publish {
        return Pressure::Accept(FlowControl::next(limits.size, limits.in_ms));
    }
    // Shrink the size linearly from the configured size at the high-water mark to 1 at the
    // hard limit.
    let span = u64::from(limits.hard_limit.saturating_sub(limits.high_water)).max(1);
    let over = u64::from(depth.saturating_sub(limits.high_water)).min(span);
    let size = (u64::from(limits.size) * (span - over) / span).max(1);
    let size = if slow_publish {
        size.min(u64::from(limits.size / 2).max(1))
    } else {
        size
    };
    Pressure::Accept(FlowControl::next(
        size as u32,
        limits.busy_in_ms.max(limits.in_ms),
    ))
}

/// The outgoing queue's depth, read from the broker at most once per TTL, and the duration of
/// the last publish.
pub struct Gauge {
    queue: Queue,
    ttl: Duration,
    depth: tokio::sync::Mutex<Option<(Instant, Option<u32>)>>,
    last_publish: Mutex<Duration>,
}

impl Gauge {
    /// A gauge over `queue`'s outgoing queue.
    pub fn new(queue: Queue, ttl: Duration) -> Gauge {
        Gauge {
            queue,
            ttl,
            depth: tokio::sync::Mutex::new(None),
            last_publish: Mutex::new(Duration::ZERO),
        }
    }

    /// The current depth in jobs (`None` when the broker cannot tell): the queue's messages
    /// times the jobs a message of this process carries on average (a notification's jobs
    /// travel in bundles, see `jobs::bundle_messages`).
    pub async fn depth(&self) -> Option<u32> {
        let mut cached = self.depth.lock().await;
        if let Some((at, depth)) = *cached {
            if at.elapsed() < self.ttl {
                return depth;
            }
        }
        let name = self.queue.topology().queue(QueueKind::Outgoing);
        let per_message = self.queue.jobs_per_message();
        let depth = self
            .queue
            .depth(&name)
            .await
            .ok()
            .map(|messages| (f64::from(messages) * per_message).round() as u32);
        if let Some(d) = depth {
            metrics::gauge!("ingest_outgoing_queue_depth").set(f64::from(d));
        }
        *cached = Some((Instant::now(), depth));
        depth
    }

    /// Records how long a publish took.
    pub fn record_publish(&self, took: Duration) {
        *self.last_publish.lock() = took;
    }

    /// Whether the last publish was slow.
    pub fn publish_is_slow(&self) -> bool {
        *self.last_publish.lock() >= SLOW_PUBLISH
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::hull::FlowControlType;

    const L: Limits = Limits {
        size: 100,
        in_ms: 1,
        high_water: 1000,
        hard_limit: 2000,
        busy_in_ms: 5000,
    };

    /// depth, slow publish, accepted, type, size, in.
    type Case = (Option<u32>, bool, bool, FlowControlType, u32, u64);

    #[test]
    fn decisions() {
        let cases: &[Case] = &[
            // depth, slow publish, accepted, type, size, in
            (None, false, true, FlowControlType::Next, 100, 1),
            (Some(0), false, true, FlowControlType::Next, 100, 1),
            (Some(999), false, true, FlowControlType::Next, 100, 1),
            (Some(1000), false, true, FlowControlType::Next, 100, 5000),
            (Some(1500), false, true, FlowControlType::Next, 50, 5000),
            (Some(1999), false, true, FlowControlType::Next, 1, 5000),
            (Some(2000), false, false, FlowControlType::Retry, 10, 5000),
            (Some(50_000), false, false, FlowControlType::Retry, 10, 5000),
            (Some(0), true, true, FlowControlType::Next, 50, 5000),
        ];
        for &(depth, slow, accepted, type_, size, in_ms) in cases {
            let (ok, fc) = match decide(&L, depth, slow) {
                Pressure::Accept(fc) => (true, fc),
                Pressure::Refuse(fc) => (false, fc),
            };
            assert_eq!(ok, accepted, "{depth:?} {slow}");
            assert_eq!(fc.type_, type_, "{depth:?} {slow}");
            assert_eq!(fc.size, Some(size), "{depth:?} {slow}");
            assert_eq!(fc.in_ms, Some(in_ms), "{depth:?} {slow}");
        }
    }
}
