//! Timestamps: Close's two output formats and a tolerant parser.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch, the simulator's internal time unit.
pub type Micros = i64;

/// Current wall-clock time in microseconds.
pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

fn to_datetime(micros: Micros) -> DateTime<Utc> {
    Utc.timestamp_micros(micros)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Object timestamp format: `2024-01-01T12:00:00.123000+00:00`.
pub fn format_object(micros: Micros) -> String {
    to_datetime(micros)
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

/// Event timestamp format (no offset): `2024-01-01T12:00:00.123000`.
pub fn format_event(micros: Micros) -> String {
    to_datetime(micros)
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

/// A bare date: `2024-01-01`.
pub fn format_date(micros: Micros) -> String {
    to_datetime(micros).format("%Y-%m-%d").to_string()
}

/// Parses the date and datetime forms clients send (RFC 3339, naive ISO datetimes with or
/// without seconds and fraction, bare dates). Naive values are taken as UTC.
pub fn parse(text: &str) -> Option<Micros> {
    let text = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_micros());
    }
    for format in ["%Y-%m-%dT%H:%M%:z", "%Y-%m-%d %H:%M:%S%.f%:z"] {
        if let Ok(dt) = DateTime::parse_from_str(text, format) {
            return Some(dt.timestamp_micros());
        }
    }
    let naive = text.strip_suffix('Z').unwrap_or(text);
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(naive, format) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    NaiveDate::parse_from_str(naive, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_round_trip() {
        let t = parse("2024-01-01T12:00:00.123000+00:00").unwrap_or_default();
        assert_eq!(format_object(t), "2024-01-01T12:00:00.123000+00:00");
        assert_eq!(format_event(t), "2024-01-01T12:00:00.123000");
        assert_eq!(parse("2024-01-01T12:00"), parse("2024-01-01T12:00:00Z"));
        assert_eq!(parse("2024-01-01"), parse("2024-01-01T00:00:00.000000"));
        assert!(parse("yesterday").is_none());
    }
}
