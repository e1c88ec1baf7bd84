//! Tolerant parsing of the date formats Close uses.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Parses a Close timestamp in any of the shapes Close returns:
/// `2013-02-01T00:54:51.331000+00:00` (fraction and offset), `2022-11-12T18:00:00+00:00`,
/// `2019-01-15T12:48:23.395000` (no offset: taken as UTC), `2024-01-01T10:00:00Z`,
/// `2024-01-01 10:00:00` (space separator) and a bare date `2019-01-15` (midnight UTC).
/// Returns `None` for anything else.
pub fn parse_close_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|naive| naive.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, micros: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .single()
            .expect("valid")
            + chrono::Duration::microseconds(i64::from(micros))
    }

    #[test]
    fn parses_every_close_shape() {
        assert_eq!(
            parse_close_datetime("2013-02-01T00:54:51.331000+00:00"),
            Some(utc(2013, 2, 1, 0, 54, 51, 331_000))
        );
        assert_eq!(
            parse_close_datetime("2022-11-12T18:00:00+00:00"),
            Some(utc(2022, 11, 12, 18, 0, 0, 0))
        );
        assert_eq!(
            parse_close_datetime("2022-11-12T20:00:00+02:00"),
            Some(utc(2022, 11, 12, 18, 0, 0, 0))
        );
        assert_eq!(
            parse_close_datetime("2019-01-15T12:48:23.395000"),
            Some(utc(2019, 1, 15, 12, 48, 23, 395_000))
        );
        assert_eq!(
            parse_close_datetime("2019-01-15T12:48:23"),
            Some(utc(2019, 1, 15, 12, 48, 23, 0))
        );
        assert_eq!(
            parse_close_datetime("2024-01-01T10:00:00Z"),
            Some(utc(2024, 1, 1, 10, 0, 0, 0))
        );
        assert_eq!(
            parse_close_datetime("2019-01-15"),
            Some(utc(2019, 1, 15, 0, 0, 0, 0))
        );
        assert_eq!(parse_close_datetime("not a date"), None);
        assert_eq!(parse_close_datetime(""), None);
        assert_eq!(parse_close_datetime("2019-13-45"), None);
    }
}
