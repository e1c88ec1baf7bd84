//! Close rate-limit handling: parsing of the `RateLimit` family of headers and legacy 429
//! bodies (the request budget they feed is in `budget`).

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// Wait used on a 429 that carries no usable reset information.
pub const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(2);

/// Upper bound on any wait taken from the server, so a corrupt value cannot stall a key forever.
pub const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(15 * 60);

/// The parsed `RateLimit: limit=100, remaining=50, reset=5` header (IETF draft form).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitHeader {
    /// `limit`, when present.
    pub limit: Option<u64>,
    /// `remaining`, when present.
    pub remaining: Option<u64>,
    /// `reset` in seconds (may be fractional), when present.
    pub reset: Option<Duration>,
}

/// Parses the `RateLimit` header value. Accepts `,` or `;` separators, any order, decimals in
/// `reset`. Returns `None` when no known parameter is present.
pub fn parse_rate_limit_header(value: &str) -> Option<RateLimitHeader> {
    let mut parsed = RateLimitHeader {
        limit: None,
        remaining: None,
        reset: None,
    };
    for part in value.split([',', ';']) {
        let Some((name, val)) = part.split_once('=') else {
            continue;
        };
        let val = val.trim().trim_matches('"');
        match name.trim().to_ascii_lowercase().as_str() {
            "limit" => parsed.limit = parse_count(val),
            "remaining" => parsed.remaining = parse_count(val),
            "reset" => parsed.reset = parse_seconds(val),
            _ => {}
        }
    }
    (parsed.limit.is_some() || parsed.remaining.is_some() || parsed.reset.is_some())
        .then_some(parsed)
}

fn parse_count(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

/// Parses a non-negative number of seconds (integer or decimal), clamped to
/// [`MAX_RATE_LIMIT_WAIT`]. Never panics on hostile input.
pub fn parse_seconds(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().parse().ok()?;
    seconds_to_duration(secs)
}

fn seconds_to_duration(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    let capped = secs.min(MAX_RATE_LIMIT_WAIT.as_secs_f64());
    Duration::try_from_secs_f64(capped).ok()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// How long to wait after a 429, in the order the Close docs recommend: `RateLimit` `reset`
/// (decimal), then `Retry-After`, then the deprecated `X-Rate-Limit-Reset`, then the legacy body
/// (`error.rate_reset` or top-level `rate_reset`, number or string), else
/// [`DEFAULT_RATE_LIMIT_WAIT`].
pub fn rate_limit_wait(headers: &HeaderMap, body: Option<&Value>) -> Duration {
    header_str(headers, "ratelimit")
        .and_then(parse_rate_limit_header)
        .and_then(|h| h.reset)
        .or_else(|| header_str(headers, "ratelimit-reset").and_then(parse_seconds))
        .or_else(|| header_str(headers, "retry-after").and_then(parse_seconds))
        .or_else(|| header_str(headers, "x-rate-limit-reset").and_then(parse_seconds))
        .or_else(|| body.and_then(body_rate_reset))
        .unwrap_or(DEFAULT_RATE_LIMIT_WAIT)
}

/// `rate_reset` from a legacy 429 body, nested under `error` or at the top level.
fn body_rate_reset(body: &Value) -> Option<Duration> {
    let candidate = body
        .get("error")
        .and_then(|e| e.get("rate_reset"))
        .or_else(|| body.get("rate_reset"))?;
    match candidate {
        Value::Number(n) => n.as_f64().and_then(seconds_to_duration),
        Value::String(s) => parse_seconds(s),
        _ => None,
    }
}

/// When a successful response says the window is exhausted (`remaining=0`), how long to hold
/// the next request for the key. Reads `RateLimit`, then the deprecated `X-Rate-Limit-*` pair.
pub fn proactive_wait(headers: &HeaderMap) -> Option<Duration> {
    if let Some(h) = header_str(headers, "ratelimit").and_then(parse_rate_limit_header) {
        if h.remaining == Some(0) {
            return Some(h.reset.unwrap_or(Duration::from_secs(1)));
        }
        return None;
    }
    let remaining = header_str(headers, "x-rate-limit-remaining").and_then(parse_count)?;
    if remaining == 0 {
        Some(
            header_str(headers, "x-rate-limit-reset")
                .and_then(parse_seconds)
                .unwrap_or(Duration::from_secs(1)),
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("test header"));
        }
        h
    }

    #[test]
    fn rate_limit_header_with_decimal_reset() {
        let h = parse_rate_limit_header("limit=100, remaining=0, reset=0.25").expect("parsed");
        assert_eq!(h.limit, Some(100));
        assert_eq!(h.remaining, Some(0));
        assert_eq!(h.reset, Some(Duration::from_millis(250)));
        let h = parse_rate_limit_header("reset=5;limit=10").expect("parsed");
        assert_eq!(h.reset, Some(Duration::from_secs(5)));
        assert_eq!(parse_rate_limit_header("garbage"), None);
        assert_eq!(parse_seconds("-1"), None);
        assert_eq!(parse_seconds("NaN"), None);
        assert_eq!(parse_seconds("1e300"), Some(MAX_RATE_LIMIT_WAIT));
    }

    #[test]
    fn wait_prefers_ratelimit_then_retry_after_then_legacy() {
        let all = headers(&[
            ("ratelimit", "limit=1, remaining=0, reset=0.25"),
            ("retry-after", "1"),
            ("x-rate-limit-reset", "7"),
        ]);
        assert_eq!(rate_limit_wait(&all, None), Duration::from_millis(250));
        let integer = headers(&[("ratelimit", "limit=1, remaining=0, reset=3")]);
        assert_eq!(rate_limit_wait(&integer, None), Duration::from_secs(3));
        let retry_after = headers(&[("retry-after", "4"), ("x-rate-limit-reset", "7")]);
        assert_eq!(rate_limit_wait(&retry_after, None), Duration::from_secs(4));
        let legacy = headers(&[("x-rate-limit-reset", "0.595956")]);
        assert_eq!(
            rate_limit_wait(&legacy, None),
            Duration::from_secs_f64(0.595956)
        );
    }

    #[test]
    fn wait_from_legacy_bodies() {
        let none = HeaderMap::new();
        let nested = json!({"error": {"message": "API call count exceeded", "rate_reset": 1.5}});
        assert_eq!(
            rate_limit_wait(&none, Some(&nested)),
            Duration::from_millis(1500)
        );
        let flat_string = json!({"message": "API call count exceeded", "rate_reset": "0.595956"});
        assert_eq!(
            rate_limit_wait(&none, Some(&flat_string)),
            Duration::from_secs_f64(0.595956)
        );
        let flat_number = json!({"rate_reset": 3});
        assert_eq!(
            rate_limit_wait(&none, Some(&flat_number)),
            Duration::from_secs(3)
        );
        assert_eq!(
            rate_limit_wait(&none, Some(&json!({}))),
            DEFAULT_RATE_LIMIT_WAIT
        );
        assert_eq!(rate_limit_wait(&none, None), DEFAULT_RATE_LIMIT_WAIT);
    }

    #[test]
    fn proactive_wait_only_when_exhausted() {
        let h = headers(&[("ratelimit", "limit=10, remaining=0, reset=1.5")]);
        assert_eq!(proactive_wait(&h), Some(Duration::from_millis(1500)));
        let h = headers(&[("ratelimit", "limit=10, remaining=3, reset=1.5")]);
        assert_eq!(proactive_wait(&h), None);
        let h = headers(&[
            ("x-rate-limit-remaining", "0"),
            ("x-rate-limit-reset", "0.5"),
        ]);
        assert_eq!(proactive_wait(&h), Some(Duration::from_millis(500)));
        assert_eq!(proactive_wait(&HeaderMap::new()), None);
    }
}
