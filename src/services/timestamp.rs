//! Instants as the swarm-mode API writes them: RFC 3339 in UTC with up to
//! nine fraction digits, trailing zeros dropped (Go's `RFC3339Nano`).
//!
//! The planner compares instants and adds delays; it never reads a clock, so
//! instants are plain numbers here and `now` is always an argument.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

/// An instant, in nanoseconds since the Unix epoch. `i128` so that Go's zero
/// time (`0001-01-01T00:00:00Z`, which Docker prints for unset instants)
/// fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i128);

/// A text that is not an RFC 3339 instant.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid timestamp {text:?}: expected RFC 3339 such as 2016-06-07T21:07:31.171892745Z")]
pub struct InvalidTimestamp {
    text: String,
}

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        Timestamp(nanos)
    }

    /// The system clock now. For the API and the reconciler, which stamp
    /// what they store; the planner is handed its `now` instead.
    pub fn now() -> Timestamp {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Timestamp(i128::try_from(nanos).unwrap_or(i128::MAX))
    }

    pub fn unix_nanos(self) -> i128 {
        self.0
    }

    /// How long after `earlier` this is; zero when it is not after.
    pub fn since(self, earlier: Timestamp) -> Duration {
        let nanos = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
    pub fn parse(text: &str) -> Result<Timestamp, InvalidTimestamp> {
        parse_rfc3339(text).ok_or_else(|| InvalidTimestamp { text: text.to_string() })
    }
}

fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let s = text.get(range)?;
        s.bytes().all(|c| c.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = fraction[..digits].parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => UtcOffset::UTC,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = rest[1..].split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
            UtcOffset::from_hms(sign * h, sign * m, 0).ok()?
        }
    };
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let clock =
        Time::from_hms_nano(u8::try_from(hour).ok()?, u8::try_from(minute).ok()?, u8::try_from(second).ok()?, nanos)
            .ok()?;
    Some(Timestamp(PrimitiveDateTime::new(date, clock).assume_offset(offset).unix_timestamp_nanos()))
}

/// A duration in nanoseconds as `i128` (any `Duration` fits).
fn duration_nanos(d: Duration) -> i128 {
    i128::try_from(d.as_nanos()).unwrap_or(i128::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;

    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;

    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_nanos(d)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(self.0) else {
            // Outside years -9999..=9999: no API client sends or expects it.
            return f.write_str("0001-01-01T00:00:00Z");
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )?;
        let nanos = t.nanosecond();
        if nanos != 0 {
            let fraction = format!("{nanos:09}");
            write!(f, ".{}", fraction.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Timestamp::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_docker_instants() {
        for text in ["2016-06-07T21:07:31.171892745Z", "2017-08-09T07:09:37.6321Z", "2016-08-18T10:44:24Z"] {
            assert_eq!(Timestamp::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Timestamp::parse("1970-01-01T00:00:01.5Z").unwrap().unix_nanos(), 1_500_000_000);
    }

    #[test]
    fn go_zero_time_fits() {
        let zero = Timestamp::parse("0001-01-01T00:00:00Z").unwrap();
        assert!(zero < Timestamp::EPOCH);
        assert_eq!(zero.to_string(), "0001-01-01T00:00:00Z");
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let t = Timestamp::parse("2020-01-01T02:00:00+02:00").unwrap();
        assert_eq!(t.to_string(), "2020-01-01T00:00:00Z");
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for text in [
            "",
            "2020-01-01",
            "2020-01-01 00:00:00Z",
            "2020-13-01T00:00:00Z",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00",
        ] {
            assert!(Timestamp::parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn arithmetic_saturates_at_zero_duration() {
        let t = Timestamp::from_unix_nanos(10);
        assert_eq!((t + Duration::from_nanos(5)).since(t), Duration::from_nanos(5));
        assert_eq!(t.since(t + Duration::from_nanos(5)), Duration::ZERO);
        assert_eq!(t - Duration::from_nanos(15), Timestamp::from_unix_nanos(-5));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any text, and text shaped like an instant, parses or is an error.
        #[test]
        fn parse_never_panics(
            shaped in "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9é]{2}(\\.[0-9]{0,11})?(Z|z|[-+][0-9]{1,3}:[0-9]{1,3}|é|)",
            any_text in any::<String>(),
        ) {
            for text in [&shaped, &any_text] {
                if let Ok(t) = Timestamp::parse(text) {
                    let _ = t.to_string();
                }
            }
        }

        /// An instant prints in UTC and parses back to itself.
        #[test]
        fn instants_round_trip(
            year in 1i32..=9999,
            month in 1u8..=12,
            day in 1u8..=28,
            (hour, minute, second) in (0u8..24, 0u8..60, 0u8..60),
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000],
            offset in prop_oneof![Just("Z".to_string()), (0u8..14, 0u8..60).prop_map(|(h, m)| format!("+{h:02}:{m:02}"))],
        ) {
            let text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{nanos:09}{offset}");
            let t = Timestamp::parse(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
            // Near year 1 an offset moves the instant before it, which prints as Go's zero time.
            if t >= Timestamp::parse("0001-01-01T00:00:00Z").map_err(|e| TestCaseError::fail(e.to_string()))? {
                prop_assert_eq!(Timestamp::parse(&t.to_string()), Ok(t), "{}", text);
            }
        }
    }
}
