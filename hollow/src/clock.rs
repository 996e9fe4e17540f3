//! Time as the Engine API writes it: nanoseconds since the epoch, Go's
//! RFC 3339 forms, `docker ps`'s human durations and the `since`/`until`
//! timestamps of `/events`.

use std::time::{SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Now, in nanoseconds since the epoch.
pub fn now_nanos() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Go's zero time, which Docker prints for "never" (`FinishedAt` of a
/// container that never stopped).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Year, month, day of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `YYYY-MM-DDThh:mm:ss` in UTC.
fn date_time(secs: i64) -> String {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let in_day = secs.rem_euclid(86_400);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}", in_day / 3600, in_day % 3600 / 60, in_day % 60)
}

/// Go's `RFC3339Nano` in UTC: fraction without trailing zeros, none when
/// whole; 0 (never) is Go's zero time.
pub fn rfc3339_nano(nanos: i64) -> String {
    if nanos == 0 {
        return ZERO_TIME.to_string();
    }
    let fraction = nanos.rem_euclid(NANOS_PER_SEC);
    let mut text = date_time(nanos.div_euclid(NANOS_PER_SEC));
    if fraction != 0 {
        let digits = format!("{fraction:09}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text.push('Z');
    text
}

/// Go's `RFC3339` in UTC, whole seconds (a volume's `CreatedAt`).
pub fn rfc3339_seconds(nanos: i64) -> String {
    format!("{}Z", date_time(nanos.div_euclid(NANOS_PER_SEC)))
}

/// Whole seconds since the epoch (`Created` of list entries, `time` of events).
pub fn seconds(nanos: i64) -> i64 {
    nanos.div_euclid(NANOS_PER_SEC)
}

/// Docker's `units.HumanDuration`, as `docker ps` statuses use it (`Up 5
/// minutes`, `Exited (0) 2 hours ago`).
pub fn human_duration(nanos: i64) -> String {
    let secs = nanos.max(0) / NANOS_PER_SEC;
    let minutes = secs / 60;
    // Go rounds hours to the nearest from here on.
    let hours = (nanos.max(0) as f64 / 3.6e12 + 0.5) as i64;
    match () {
        _ if secs < 1 => "Less than a second".to_string(),
        _ if secs == 1 => "1 second".to_string(),
        _ if secs < 60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".to_string(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_string(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// A `since`/`until` of `/events`: `seconds[.nanoseconds]` since the epoch,
/// as the Docker CLI and the manager send it. `None` for anything else.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let (secs, fraction) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = secs.parse().ok()?;
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = if fraction.is_empty() { 0 } else { format!("{fraction:0<9}").parse().ok()? };
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_as_go_does() {
        assert_eq!(rfc3339_nano(1_796_228_517_598_657_652), "2026-12-02T16:21:57.598657652Z");
        assert_eq!(rfc3339_nano(1_796_228_517_500_000_000), "2026-12-02T16:21:57.5Z");
        assert_eq!(rfc3339_nano(1_796_228_517_000_000_000), "2026-12-02T16:21:57Z");
        assert_eq!(rfc3339_nano(0), ZERO_TIME);
        assert_eq!(rfc3339_seconds(1_796_228_506_999_000_000), "2026-12-02T16:21:46Z");
        assert_eq!(rfc3339_seconds(951_782_400 * NANOS_PER_SEC), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn human_durations_match_dockers() {
        let s = NANOS_PER_SEC;
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(s), "1 second");
        assert_eq!(human_duration(59 * s), "59 seconds");
        assert_eq!(human_duration(90 * s), "About a minute");
        assert_eq!(human_duration(59 * 60 * s), "59 minutes");
        assert_eq!(human_duration(3600 * s), "About an hour");
        assert_eq!(human_duration(5 * 3600 * s), "5 hours");
        assert_eq!(human_duration(3 * 86_400 * s), "3 days");
        assert_eq!(human_duration(20 * 86_400 * s), "2 weeks");
        assert_eq!(human_duration(100 * 86_400 * s), "3 months");
        assert_eq!(human_duration(800 * 86_400 * s), "2 years");
    }

    #[test]
    fn parses_event_timestamps() {
        assert_eq!(parse_timestamp("1732240000.000000001"), Some(1_732_240_000_000_000_001));
        assert_eq!(parse_timestamp("1732240000.5"), Some(1_732_240_000_500_000_000));
        assert_eq!(parse_timestamp("1732240000"), Some(1_732_240_000_000_000_000));
        assert_eq!(parse_timestamp("-1.999999999"), Some(-1_000_000_000 + 999_999_999));
        assert_eq!(parse_timestamp("soon"), None);
        assert_eq!(parse_timestamp("1.1234567890"), None);
        assert_eq!(parse_timestamp("99999999999999999999"), None);
    }
}
