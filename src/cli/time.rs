//! Times on the command line, by `jiff`: RFC 3339 (`2024-05-01T12:00:00Z`, offsets and
//! fractions accepted) or Unix seconds in; RFC 3339 UTC (the KMS commands' JSON) or a plain
//! UTC date (`status`) out. No clock and no local time zone.

use jiff::Timestamp;

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (Unix seconds if out of range).
pub fn format_rfc3339(secs: i64) -> String {
    format_with(secs, "%Y-%m-%dT%H:%M:%SZ")
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (Unix seconds if out of range).
pub fn format_utc(secs: i64) -> String {
    format_with(secs, "%Y-%m-%d %H:%M:%S UTC")
}

fn format_with(secs: i64, format: &str) -> String {
    match Timestamp::from_second(secs) {
        Ok(t) => t.strftime(format).to_string(),
        Err(_) => format!("{secs} (Unix seconds)"),
    }
}

/// Unix seconds (`1714564800`) or an RFC 3339 date-time with an offset
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.5+02:00`); fractions of a second are
/// dropped.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        return Some(secs);
    }
    // Seconds are required, as RFC 3339 requires them.
    let b = text.as_bytes();
    if b.len() < 20 || b.get(16) != Some(&b':') {
        return None;
    }
    text.parse::<Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_714_564_800), "2024-05-01T12:00:00Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_utc(i64::MAX), format!("{} (Unix seconds)", i64::MAX));
    }

    #[test]
    fn parses_unix_and_rfc3339_with_offsets_and_fractions() {
        assert_eq!(parse_time("1714564800"), Some(1_714_564_800));
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Some(1_714_564_800));
        assert_eq!(parse_time("2024-05-01t12:00:00.999z"), Some(1_714_564_800));
        assert_eq!(parse_time("2024-05-01T14:30:00+02:30"), Some(1_714_564_800));
        assert_eq!(parse_time("2024-05-01T09:00:00-03:00"), Some(1_714_564_800));
        assert_eq!(parse_time("2000-02-29T00:00:00Z"), Some(951_782_400));
    }

    #[test]
    fn refuses_malformed_times() {
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00Z",
            "2024-13-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:00+2:00",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00Zjunk",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn round_trips_over_centuries() {
        for secs in (-5_000_000_000i64..5_000_000_000).step_by(86_399 * 997) {
            assert_eq!(parse_time(&format_rfc3339(secs)), Some(secs));
        }
    }
}
