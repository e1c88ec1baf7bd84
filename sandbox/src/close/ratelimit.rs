//! Fixed-window rate limits per (API key, endpoint group) and per (organization, group) at
//! three times the key limit, reported in the `RateLimit` header.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Result of a rate-limit check.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// Limit of the reported window.
    pub limit: u64,
    /// Requests left in the reported window.
    pub remaining: u64,
    /// Seconds until the reported window ends.
    pub reset: f64,
    /// Window length in seconds.
    pub window: f64,
    /// `key` or `org`: which limit is reported.
    pub limit_type: &'static str,
}

impl Decision {
    /// The `RateLimit` header value.
    pub fn header(&self) -> String {
        format!(
            "limit={}, remaining={}, reset={:.3}",
            self.limit, self.remaining, self.reset
        )
    }

    /// `Retry-After`: the reset rounded up to whole seconds.
    pub fn retry_after(&self) -> u64 {
        // Reset is a small non-negative number of seconds.
        self.reset.ceil().max(1.0) as u64
    }

    /// The legacy 429 body (fields nested under `error`).
    pub fn body(&self) -> Value {
        json!({"error": {
            "message": "API call count exceeded for this period",
            "rate_reset": (self.reset * 1000.0).round() / 1000.0,
            "rate_limit": self.limit,
            "rate_window": self.window,
            "rate_limit_type": self.limit_type,
        }})
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u64,
}

impl Window {
    fn roll(&mut self, now: Instant, len: Duration) {
        if now.duration_since(self.start) >= len {
            self.start = now;
            self.count = 0;
        }
    }

    fn reset(&self, now: Instant, len: Duration) -> f64 {
        len.saturating_sub(now.duration_since(self.start))
            .as_secs_f64()
    }
}

/// The limiter; `rps = None` disables it.
#[derive(Debug)]
pub struct RateLimiter {
    rps: Option<f64>,
    window: Duration,
    keys: HashMap<(String, &'static str), Window>,
    orgs: HashMap<(usize, &'static str), Window>,
}

impl RateLimiter {
    /// A limiter with the given per-key rate and window length.
    pub fn new(rps: Option<f64>, window: Duration) -> Self {
        Self {
            rps,
            window,
            keys: HashMap::new(),
            orgs: HashMap::new(),
        }
    }

    /// Changes the per-key rate (clears the windows).
    pub fn set_rps(&mut self, rps: Option<f64>) {
        self.rps = rps.filter(|r| r.is_finite() && *r > 0.0);
        self.keys.clear();
        self.orgs.clear();
    }

    /// Checks and, when allowed, counts one request. `None` when limits are off.
    pub fn check(
        &mut self,
        key: &str,
        org: usize,
        group: &'static str,
        now: Instant,
    ) -> Option<Decision> {
        let rps = self.rps?;
        let len = self.window;
        let key_limit = ((rps * len.as_secs_f64()).round() as u64).max(1);
        let org_limit = key_limit * 3;
        let fresh = Window {
            start: now,
            count: 0,
        };
        let mut kw = *self.keys.entry((key.to_string(), group)).or_insert(fresh);
        let mut ow = *self.orgs.entry((org, group)).or_insert(fresh);
        kw.roll(now, len);
        ow.roll(now, len);
        let denied = if kw.count >= key_limit {
            Some("key")
        } else if ow.count >= org_limit {
            Some("org")
        } else {
            kw.count += 1;
            ow.count += 1;
            None
        };
        self.keys.insert((key.to_string(), group), kw);
        self.orgs.insert((org, group), ow);
        let key_rem = key_limit.saturating_sub(kw.count);
        let org_rem = org_limit.saturating_sub(ow.count);
        let use_org = match denied {
            Some(t) => t == "org",
            None => org_rem < key_rem,
        };
        let (limit, remaining, w) = if use_org {
            (org_limit, org_rem, ow)
        } else {
            (key_limit, key_rem, kw)
        };
        Some(Decision {
            allowed: denied.is_none(),
            limit,
            remaining,
            reset: w.reset(now, len),
            window: len.as_secs_f64(),
            limit_type: if use_org { "org" } else { "key" },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_org_limits() {
        let mut rl = RateLimiter::new(Some(2.0), Duration::from_secs(1));
        let now = Instant::now();
        for _ in 0..2 {
            assert!(rl
                .check("a", 0, "lead-read", now)
                .is_some_and(|d| d.allowed));
        }
        let d = rl.check("a", 0, "lead-read", now);
        assert!(d
            .as_ref()
            .is_some_and(|d| !d.allowed && d.limit_type == "key"));
        assert!(rl
            .check("a", 0, "lead-write", now)
            .is_some_and(|d| d.allowed));
        for k in ["b", "b", "c", "c"] {
            assert!(rl.check(k, 0, "lead-read", now).is_some_and(|d| d.allowed));
        }
        let d = rl.check("d", 0, "lead-read", now);
        assert!(d.is_some_and(|d| !d.allowed && d.limit_type == "org"));
        let later = now + Duration::from_secs(1);
        assert!(rl
            .check("a", 0, "lead-read", later)
            .is_some_and(|d| d.allowed));
    }
}
