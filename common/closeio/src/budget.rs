//! The request budget of one (API key, endpoint group), shared by every process that talks to
//! Close with that key.
//!
//! Close limits each endpoint group of each key separately and says how in the `RateLimit`
//! header of every response (`limit`, `remaining`, `reset`). The client turns that into a
//! *spacing*: one request every `window / (limit × UTILISATION)`, where `window` is the longest
//! `reset` seen (a window's length) and `limit` the lowest limit seen lately (the header shows
//! whichever of the key and organization limits is closer). Requests are spaced with GCRA: a
//! budget keeps one "theoretical arrival time" (`tat`) per key and group; a request reserves
//! the slot `max(tat, now)`, moves `tat` one spacing on, and waits until its slot. A 429 (or an
//! exhausted window) moves `tat` past the reset, so every process holds that group.
//!
//! Nothing is held by a process: a reservation is a single statement, so a worker that dies
//! takes nothing with it (at worst the slots it reserved and did not use pass unused), and a
//! worker that joins just reserves the next slot. [`LocalBudget`] keeps the state in memory
//! (one process); the services use a budget in Postgres (`store::budget`) so that all workers
//! share it.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Share of Close's limit the spacing aims at: just under it, so that the arrival jitter of
/// evenly spaced requests (from processes sharing two cores, say) does not push a window over.
pub const UTILISATION: f64 = 0.93;

/// Added to every pause taken from Close's `reset`: the reset is counted from when Close
/// answered, the next request arrives a little later or earlier than planned.
pub const PAUSE_MARGIN: std::time::Duration = std::time::Duration::from_millis(25);

/// Shortest window assumed: a `reset` is the time left in the current window, so the longest
/// one seen only approaches the window's length; a process that has seen only resets from the
/// middle of windows would otherwise pace several times too fast (and, sharing the budget,
/// make every worker do so).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);

/// How long a lower `limit` seen in a header keeps a group's spacing down (the header reports
/// the organization's limit when that is the closer one).
pub const LIMIT_MEMORY: Duration = Duration::from_secs(60);

/// What a reservation got.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    /// A slot is reserved: wait this long, then send.
    Reserved(Duration),
    /// Nothing was reserved: the next free slot is further away than the caller would wait
    /// (see [`deferring`]). `after` is how far; `spacing` the group's current spacing.
    Busy {
        /// How long until the group's next free slot.
        after: Duration,
        /// The group's spacing (one request per `spacing`).
        spacing: Duration,
    },
}

/// How long the current task waits for a slot (see [`deferring`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deferring {
    /// The longest wait for a slot.
    pub max_wait: Duration,
    /// The groups whose slots were booked for this task when it was deferred before: its
    /// requests of those groups are never refused because the group is booked (the booking
    /// is theirs), and wait for their slot up to `booked_max_wait`.
    pub booked_groups: Vec<String>,
    /// The longest wait for a slot of a booked group. A job comes back a little before its
    /// slot; when it finds the slot further away (others took the slots, or Close paused the
    /// group), it is deferred again instead of waiting in a worker's place — a place that
    /// waits for seconds holds up every tenant queued behind it.
    pub booked_max_wait: Duration,
}

impl Deferring {
    /// The longest wait for a request of `group`: `booked_max_wait` for a booked group, and
    /// none for the metadata reads (statuses, custom fields), which every job of the tenant
    /// needs and each process makes once per connector: a job waits for them rather than
    /// being deferred before it could take its place in a new lead's gathering.
    pub fn max_wait_for(&self, group: &str) -> Option<Duration> {
        if group == "meta" {
            None
        } else if self.is_booked(group) {
            Some(self.booked_max_wait)
        } else {
            Some(self.max_wait)
        }
    }

    /// Whether `group` was booked for this task by an earlier deferral.
    pub fn is_booked(&self, group: &str) -> bool {
        self.booked_groups.iter().any(|g| g == group)
    }

    /// Whether a request of `group` gives way at once while the group is known to be booked
    /// for others: new work does; a booked request and a metadata read do not.
    pub fn gives_way(&self, group: &str) -> bool {
        group != "meta" && !self.is_booked(group)
    }
}

tokio::task_local! {
    /// How long the current task waits for a slot (see [`deferring`]).
    static DEFERRING: Deferring;
}

/// Runs `fut` so that a Close request whose slot is more than `limits.max_wait` away (except
/// in `limits.booked_groups`) is not reserved and fails at once with
/// [`crate::CloseError::BudgetBusy`] instead of waiting: the caller (a worker's job) is
/// deferred and frees its place for other tenants' work.
pub async fn deferring<F: std::future::Future>(limits: Deferring, fut: F) -> F::Output {
    DEFERRING.scope(limits, fut).await
}

/// The current task's limits, if it set some with [`deferring`] (so that work it hands to
/// another task can keep them).
pub fn current() -> Option<Deferring> {
    DEFERRING.try_with(Clone::clone).ok()
}

/// The longest wait the current task accepts for a request of `group`.
pub(crate) fn max_wait_for(group: &str) -> Option<Duration> {
    DEFERRING.try_with(|d| d.max_wait_for(group)).ok().flatten()
}

/// Whether the current task's request of `group` gives way while the group is booked (see
/// [`Deferring::gives_way`]); a task that set no limits waits for its slot.
pub(crate) fn gives_way(group: &str) -> bool {
    DEFERRING.try_with(|d| d.gives_way(group)).unwrap_or(false)
}

/// Whether `group` was booked for the current task by an earlier deferral.
pub fn is_booked(group: &str) -> bool {
    DEFERRING.try_with(|d| d.is_booked(group)).unwrap_or(false)
}

/// Places booked on a deferral lane (see [`Budget::defer`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LanePlaces {
    /// How long from now the first place is.
    pub first: Duration,
    /// How far apart the places are (the group's spacing).
    pub spacing: Duration,
}

impl LanePlaces {
    /// How long from now place `i` (from 0) is.
    pub fn nth(&self, i: u32) -> Duration {
        self.first + self.spacing * i
    }
}

/// A budget failed (its store is unreachable); the request was not sent.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BudgetError(pub String);

/// Where the spacing of each (key, group) lives. `key` is a fingerprint of the API key, never
/// the key itself.
pub trait Budget: Send + Sync + 'static {
    /// Reserves the next slot of `group` for `key` and says how long to wait before sending;
    /// when that would be longer than `max_wait`, reserves nothing and answers
    /// [`Slot::Busy`]. `spacing` and `burst` apply when the pair is new (a later
    /// [`Budget::set_spacing`] wins).
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
        burst: u32,
        max_wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Slot, BudgetError>>;

    /// Books the returns of `places` deferred jobs of `group` for `key`: the first one spacing
    /// after the last deferred job (never before the slots already reserved), the others one
    /// spacing apart after it.
    fn defer<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        places: u32,
    ) -> BoxFuture<'a, Result<LanePlaces, BudgetError>>;

    /// Sets the spacing of `group` for `key` (learned from Close's headers).
    fn set_spacing<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>>;

    /// Holds every request of `group` for `key` until at least `wait` from now.
    fn pause<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>>;
}

/// One GCRA step: the arrival time after a reservation at `now`, and the wait before the
/// reserved slot (`tau` lets up to `burst - 1` extra requests through at once; nothing goes
/// before `paused_until`). Times are in seconds on any common clock.
pub fn reserve_slot(tat: f64, now: f64, spacing: f64, tau: f64, paused_until: f64) -> (f64, f64) {
    let slot = tat.max(now).max(paused_until);
    let wait = (slot - now - tau).max(paused_until - now).max(0.0);
    (slot + spacing, wait)
}

/// [`reserve_slot`] for a caller that waits at most `max_wait` seconds: `None` (and nothing
/// reserved, `tat` unchanged) when the slot is further away.
pub fn try_reserve_slot(
    tat: f64,
    now: f64,
    spacing: f64,
    tau: f64,
    paused_until: f64,
    max_wait: Option<f64>,
) -> Result<(f64, f64), f64> {
    let (next, wait) = reserve_slot(tat, now, spacing, tau, paused_until);
    match max_wait {
        Some(max) if wait > max => Err(wait),
        _ => Ok((next, wait)),
    }
}

/// The spacing for a group whose window lasts `window` and allows `limit` requests, never
/// faster than `ceiling_rps` when one is set.
pub fn spacing_for(window: Duration, limit: u64, ceiling_rps: Option<f64>) -> Duration {
    let per_request = window.as_secs_f64() / (limit.max(1) as f64 * UTILISATION);
    let floor = ceiling_rps
        .filter(|r| r.is_finite() && *r > 0.0)
        .map_or(0.0, |r| 1.0 / r);
    Duration::from_secs_f64(per_request.max(floor))
}

/// What this process has learned about one group of one key.
#[derive(Debug, Clone, Copy)]
struct Learned {
    /// Longest `reset` seen: the window's length.
    window: Duration,
    /// Lowest `limit` seen since `limit_since`.
    limit: u64,
    limit_since: Instant,
    /// The spacing last written to the budget.
    written: Duration,
}

/// Turns `RateLimit` headers into spacings, and writes a spacing to the budget only when it
/// changed by more than 2 % (so most responses cost no budget write).
#[derive(Debug, Default)]
pub(crate) struct Learner {
    groups: Mutex<HashMap<(String, &'static str), Learned>>,
}

impl Learner {
    /// Records a header's `limit` and `reset`; returns the new spacing when it should be
    /// written.
    pub(crate) fn observe(
        &self,
        key: &str,
        group: &'static str,
        limit: u64,
        reset: Duration,
        ceiling_rps: Option<f64>,
    ) -> Option<Duration> {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        let entry = groups
            .entry((key.to_owned(), group))
            .or_insert_with(|| Learned {
                window: reset,
                limit,
                limit_since: now,
                written: Duration::ZERO,
            });
        entry.window = entry.window.max(reset);
        if limit < entry.limit || now.duration_since(entry.limit_since) > LIMIT_MEMORY {
            entry.limit = limit;
            entry.limit_since = now;
        }
        let spacing = spacing_for(entry.window.max(MIN_WINDOW), entry.limit, ceiling_rps);
        let written = entry.written.as_secs_f64();
        if written == 0.0 || (spacing.as_secs_f64() - written).abs() > written * 0.02 {
            entry.written = spacing;
            Some(spacing)
        } else {
            None
        }
    }
}

/// The state of one (key, group) in a [`LocalBudget`].
#[derive(Debug, Clone, Copy)]
struct LocalState {
    tat: f64,
    defer_tat: f64,
    spacing: Duration,
    burst: u32,
    paused_until: f64,
}

impl LocalState {
    fn new(now: f64, spacing: Duration, burst: u32) -> LocalState {
        LocalState {
            tat: now,
            defer_tat: f64::NEG_INFINITY,
            spacing,
            burst,
            paused_until: f64::NEG_INFINITY,
        }
    }
}

/// A budget kept in this process's memory (a single process, or a test).
#[derive(Debug, Default)]
pub struct LocalBudget {
    /// (key, group) → its state, times in seconds since `epoch`.
    state: Mutex<HashMap<(String, &'static str), LocalState>>,
    epoch: std::sync::OnceLock<Instant>,
}

impl LocalBudget {
    /// An empty budget.
    pub fn new() -> LocalBudget {
        LocalBudget::default()
    }

    fn now(&self) -> f64 {
        self.epoch.get_or_init(Instant::now).elapsed().as_secs_f64()
    }
}

impl Budget for LocalBudget {
    fn reserve<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
        burst: u32,
        max_wait: Option<Duration>,
    ) -> BoxFuture<'a, Result<Slot, BudgetError>> {
        let now = self.now();
        let mut state = self.state.lock();
        let entry = state
            .entry((key.to_owned(), group))
            .or_insert_with(|| LocalState::new(now, spacing, burst));
        let spacing = entry.spacing.as_secs_f64();
        let tau = spacing * f64::from(entry.burst.saturating_sub(1));
        let slot = match try_reserve_slot(
            entry.tat,
            now,
            spacing,
            tau,
            entry.paused_until,
            max_wait.map(|d| d.as_secs_f64()),
        ) {
            Ok((tat, wait)) => {
                entry.tat = tat;
                Slot::Reserved(Duration::from_secs_f64(wait))
            }
            Err(wait) => Slot::Busy {
                after: Duration::from_secs_f64(wait),
                spacing: entry.spacing,
            },
        };
        Box::pin(std::future::ready(Ok(slot)))
    }

    fn defer<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        places: u32,
    ) -> BoxFuture<'a, Result<LanePlaces, BudgetError>> {
        let now = self.now();
        let mut state = self.state.lock();
        let lane = state
            .get_mut(&(key.to_owned(), group))
            .map_or(LanePlaces::default(), |e| {
                let at = e.defer_tat.max(e.tat).max(e.paused_until).max(now);
                e.defer_tat = at + e.spacing.as_secs_f64() * f64::from(places.max(1));
                LanePlaces {
                    first: Duration::from_secs_f64(at - now),
                    spacing: e.spacing,
                }
            });
        Box::pin(std::future::ready(Ok(lane)))
    }

    fn set_spacing<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        spacing: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>> {
        let now = self.now();
        let mut state = self.state.lock();
        let entry = state
            .entry((key.to_owned(), group))
            .or_insert_with(|| LocalState::new(now, spacing, 1));
        entry.spacing = spacing;
        Box::pin(std::future::ready(Ok(())))
    }

    fn pause<'a>(
        &'a self,
        key: &'a str,
        group: &'static str,
        wait: Duration,
    ) -> BoxFuture<'a, Result<(), BudgetError>> {
        let now = self.now();
        let mut state = self.state.lock();
        let until = now + wait.as_secs_f64();
        let entry = state
            .entry((key.to_owned(), group))
            .or_insert_with(|| LocalState::new(now, Duration::from_millis(100), 1));
        entry.paused_until = entry.paused_until.max(until);
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Whatever the number of callers, their arrival times and their order, the slots handed
    /// out are at least one spacing apart (bursts aside): the summed rate never exceeds the
    /// budget. Checked over many random schedules.
    #[test]
    fn the_summed_rate_of_any_callers_never_exceeds_the_spacing() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let spacing: f64 = rng.gen_range(0.001..0.5);
            let callers = rng.gen_range(1..16);
            let mut arrivals: Vec<(f64, usize)> = (0..rng.gen_range(1..200))
                .map(|_| (rng.gen_range(0.0..20.0), rng.gen_range(0..callers)))
                .collect();
            arrivals.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut tat = 0.0;
            let mut slots = Vec::new();
            for (now, _caller) in arrivals {
                let (next, wait) = reserve_slot(tat, now, spacing, 0.0, f64::NEG_INFINITY);
                assert!(wait >= 0.0);
                slots.push(now + wait);
                tat = next;
            }
            for pair in slots.windows(2) {
                assert!(
                    pair[1] - pair[0] >= spacing - 1e-9,
                    "slots {pair:?} closer than {spacing}"
                );
            }
        }
    }

    #[test]
    fn a_burst_lets_that_many_through_at_once_then_spaces() {
        let spacing = 0.1;
        let tau = spacing * 2.0; // burst of 3
        let mut tat = 0.0;
        let waits: Vec<f64> = (0..5)
            .map(|_| {
                let (next, wait) = reserve_slot(tat, 0.0, spacing, tau, f64::NEG_INFINITY);
                tat = next;
                wait
            })
            .collect();
        assert_eq!(&waits[..3], &[0.0, 0.0, 0.0]);
        assert!((waits[3] - 0.1).abs() < 1e-9 && (waits[4] - 0.2).abs() < 1e-9);
    }

    #[test]
    fn spacing_follows_the_window_and_the_lowest_recent_limit() {
        assert_eq!(
            spacing_for(Duration::from_secs(1), 10, None),
            Duration::from_secs_f64(1.0 / (10.0 * UTILISATION))
        );
        // A ceiling only ever slows down.
        assert_eq!(
            spacing_for(Duration::from_secs(1), 10, Some(2.0)),
            Duration::from_millis(500)
        );
        assert_eq!(
            spacing_for(Duration::from_secs(1), 10, Some(1000.0)),
            Duration::from_secs_f64(1.0 / (10.0 * UTILISATION))
        );
        let l = Learner::default();
        // A reset from the middle of a window does not make the window look short.
        let first = l
            .observe("k", "search", 10, Duration::from_millis(300), None)
            .expect("first");
        assert_eq!(first, Duration::from_secs_f64(1.0 / (10.0 * UTILISATION)));
        // A longer reset is a longer window: slower. The organization's (higher) limit does not
        // speed it up.
        let longer = l
            .observe("k", "search", 10, Duration::from_secs(2), None)
            .expect("changed");
        assert_eq!(longer, Duration::from_secs_f64(2.0 / (10.0 * UTILISATION)));
        assert_eq!(
            l.observe("k", "search", 30, Duration::from_millis(500), None),
            None
        );
        // Other groups are learned separately.
        assert!(l
            .observe("k", "lead-write", 20, Duration::from_secs(1), None)
            .is_some());
    }

    #[test]
    fn a_pause_holds_even_a_burst() {
        // A burst of 100 would let the next request through at once; a pause still holds it.
        let (_, wait) = reserve_slot(0.0, 1.0, 0.1, 9.9, 1.5);
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        let (tat, _) = reserve_slot(0.0, 1.0, 0.1, 0.0, 1.5);
        assert!(
            (tat - 1.6).abs() < 1e-9,
            "the first slot after the pause is at its end"
        );
    }

    #[tokio::test]
    async fn a_pause_holds_every_later_reservation() {
        let b = LocalBudget::new();
        let spacing = Duration::from_millis(10);
        assert_eq!(
            b.reserve("k", "search", spacing, 1, None).await.unwrap(),
            Slot::Reserved(Duration::ZERO)
        );
        b.pause("k", "search", Duration::from_secs(2))
            .await
            .unwrap();
        let Slot::Reserved(wait) = b.reserve("k", "search", spacing, 1, None).await.unwrap() else {
            panic!("no max wait: always reserved");
        };
        assert!(wait > Duration::from_millis(1900), "{wait:?}");
        // Another group of the same key is not held.
        assert!(matches!(
            b.reserve("k", "lead-write", spacing, 1, None).await.unwrap(),
            Slot::Reserved(w) if w < Duration::from_millis(5)
        ));
    }

    /// A caller that will not wait long reserves nothing when the group is booked further
    /// ahead: the slots of the callers that do wait are not moved.
    #[tokio::test]
    async fn a_busy_group_reserves_nothing_for_a_caller_that_will_not_wait() {
        let b = LocalBudget::new();
        let spacing = Duration::from_millis(100);
        for _ in 0..30 {
            b.reserve("k", "search", spacing, 1, None).await.unwrap();
        }
        // 30 slots booked: the next is about 3 s away.
        let busy = b
            .reserve("k", "search", spacing, 1, Some(Duration::from_secs(1)))
            .await
            .unwrap();
        let Slot::Busy { after, spacing: s } = busy else {
            panic!("expected busy, got {busy:?}");
        };
        assert!(after > Duration::from_millis(2800), "{after:?}");
        assert_eq!(s, spacing);
        // Nothing was reserved: the next waiting caller gets the slot right after the 30th.
        let Slot::Reserved(wait) = b.reserve("k", "search", spacing, 1, None).await.unwrap() else {
            panic!("no max wait: always reserved");
        };
        assert!(wait < Duration::from_millis(3050), "{wait:?}");
        // Deferred callers are booked one spacing apart after the reserved slots.
        let d1 = b.defer("k", "search", 1).await.unwrap().first;
        let lane = b.defer("k", "search", 3).await.unwrap();
        let d2 = lane.first;
        // Three places one spacing apart: the next caller's place comes after the third.
        assert_eq!(lane.nth(2) - lane.nth(1), spacing);
        let d3 = b.defer("k", "search", 1).await.unwrap().first;
        assert!(
            (d3.as_secs_f64() - lane.nth(2).as_secs_f64() - 0.1).abs() < 0.01,
            "{lane:?} {d3:?}"
        );
        assert!(d1 > Duration::from_millis(3000), "{d1:?}");
        assert!(
            (d2.as_secs_f64() - d1.as_secs_f64() - 0.1).abs() < 0.01,
            "{d1:?} {d2:?}"
        );
        // Another key is free.
        assert!(matches!(
            b.reserve("other", "search", spacing, 1, Some(Duration::from_secs(1)))
                .await
                .unwrap(),
            Slot::Reserved(_)
        ));
    }

    #[test]
    fn metadata_reads_are_waited_for_and_booked_groups_up_to_their_bound() {
        let limits = Deferring {
            max_wait: Duration::from_millis(500),
            booked_groups: vec!["lead-write".into()],
            booked_max_wait: Duration::from_millis(1500),
        };
        assert_eq!(
            limits.max_wait_for("search"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            limits.max_wait_for("lead-write"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(limits.max_wait_for("meta"), None);
        assert!(limits.gives_way("search"));
        assert!(!limits.gives_way("lead-write"), "its booking is its own");
        assert!(!limits.gives_way("meta"));
    }

    /// Property: callers that will not wait never move the slots of those that do, and get
    /// `Busy` exactly when their wait would exceed their limit.
    #[test]
    fn try_reserve_never_books_beyond_the_limit() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..500 {
            let spacing: f64 = rng.gen_range(0.001..0.5);
            let max: f64 = rng.gen_range(0.0..2.0);
            let mut tat = 0.0;
            let mut now = 0.0;
            for _ in 0..200 {
                now += rng.gen_range(0.0..0.05);
                let limit = rng.gen_bool(0.5).then_some(max);
                match try_reserve_slot(tat, now, spacing, 0.0, f64::NEG_INFINITY, limit) {
                    Ok((next, wait)) => {
                        assert!(limit.is_none_or(|m| wait <= m));
                        tat = next;
                    }
                    Err(wait) => assert!(wait > max && tat - now > max),
                }
            }
        }
    }
}
