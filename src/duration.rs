//! Go-style durations (`20s`, `1m30s`, `500ms`, `-10s`), as the original's flags take them.

use std::time::Duration;

/// A Go `time.Duration`: signed nanoseconds. Flags keep the sign so that a
/// negative value reaches the validation that names the flag, as in the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration {
    nanos: i64,
}

/// A text that is not a Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (examples: 500ms, 20s, 1m30s)")]
pub struct InvalidDuration {
    text: String,
    reason: &'static str,
}

const NANOS_PER_UNIT: [(&str, u64); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000), // U+00B5 micro sign
    ("μs", 1_000), // U+03BC Greek small letter mu
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// The largest magnitude a Go duration holds (that of `i64::MIN`).
const MAX_MAGNITUDE: u64 = 1 << 63;

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration { nanos: 0 };

    /// Parses what Go's `time.ParseDuration` accepts: an optional sign, then
    /// one or more decimal numbers each with a unit (`ns`, `us`, `µs`, `ms`,
    /// `s`, `m`, `h`); a bare `0` needs none.
    pub fn parse(text: &str) -> Result<GoDuration, InvalidDuration> {
        let invalid = |reason| InvalidDuration { text: text.to_string(), reason };
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if unsigned == "0" {
            return Ok(GoDuration::ZERO);
        }
        if unsigned.is_empty() {
            return Err(invalid("empty"));
        }
        let mut magnitude: u64 = 0;
        let mut rest = unsigned;
        while !rest.is_empty() {
            let (whole, whole_digits, after_whole) = leading_int(rest).ok_or_else(|| invalid("out of range"))?;
            let (fraction, fraction_scale, fraction_digits, after_fraction) = match after_whole.strip_prefix('.') {
                Some(after_dot) => leading_fraction(after_dot),
                None => (0, 1, 0, after_whole),
            };
            if whole_digits == 0 && fraction_digits == 0 {
                return Err(invalid("expected a number"));
            }
            let unit_len =
                after_fraction.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(after_fraction.len());
            if unit_len == 0 {
                return Err(invalid("missing unit"));
            }
            let unit = &after_fraction[..unit_len];
            let per_unit = NANOS_PER_UNIT
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, nanos)| *nanos)
                .ok_or_else(|| invalid("unknown unit"))?;
            let mut term =
                whole.checked_mul(per_unit).filter(|v| *v <= MAX_MAGNITUDE).ok_or_else(|| invalid("out of range"))?;
            if fraction > 0 {
                // As Go does: the fraction in floating point, which is exact enough below a nanosecond.
                term = term
                    .checked_add((fraction as f64 * (per_unit as f64 / fraction_scale as f64)) as u64)
                    .filter(|v| *v <= MAX_MAGNITUDE)
                    .ok_or_else(|| invalid("out of range"))?;
            }
            magnitude =
                magnitude.checked_add(term).filter(|v| *v <= MAX_MAGNITUDE).ok_or_else(|| invalid("out of range"))?;
            rest = &after_fraction[unit_len..];
        }
        let nanos = if negative { 0i64.checked_sub_unsigned(magnitude) } else { i64::try_from(magnitude).ok() };
        nanos.map(|nanos| GoDuration { nanos }).ok_or_else(|| invalid("out of range"))
    }

    /// The duration, unless it is negative.
    pub fn to_std(self) -> Option<Duration> {
        u64::try_from(self.nanos).ok().map(Duration::from_nanos)
    }
}

/// The digits at the start of `text`: their value, how many there were, and what follows.
/// `None` when the value does not fit a duration.
fn leading_int(text: &str) -> Option<(u64, usize, &str)> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let mut value: u64 = 0;
    for digit in text[..digits].bytes() {
        value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0')).filter(|v| *v <= MAX_MAGNITUDE)?;
    }
    Some((value, digits, &text[digits..]))
}

/// The digits after a decimal point: their value and scale (digits that no
/// longer fit are dropped, they are below a nanosecond), how many there were,
/// and what follows.
fn leading_fraction(text: &str) -> (u64, u64, usize, &str) {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (mut value, mut scale) = (0u64, 1u64);
    for digit in text[..digits].bytes() {
        match value.checked_mul(10).and_then(|v| v.checked_add(u64::from(digit - b'0'))).zip(scale.checked_mul(10)) {
            Some((next_value, next_scale)) => (value, scale) = (next_value, next_scale),
            None => break,
        }
    }
    (value, scale, digits, &text[digits..])
}

/// Formats a duration the way Go prints it (`1m30s`, `500ms`, `20s`).
pub fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_secs(1) {
        let ms = d.as_secs_f64() * 1e3;
        if ms >= 1.0 {
            return format!("{}ms", trim_float(ms));
        }
        return format!("{}µs", trim_float(d.as_secs_f64() * 1e6));
    }
    let secs = d.as_secs();
    let (h, m) = (secs / 3600, (secs % 3600) / 60);
    let s = d.as_secs_f64() - (h * 3600 + m * 60) as f64;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_float(s)));
    out
}

fn trim_float(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(text: &str) -> i64 {
        GoDuration::parse(text).unwrap_or_else(|e| panic!("{e}")).nanos
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(nanos("20s"), 20_000_000_000);
        assert_eq!(nanos("1m30s"), 90_000_000_000);
        assert_eq!(nanos("500ms"), 500_000_000);
        assert_eq!(nanos("1.5s"), 1_500_000_000);
        assert_eq!(nanos(".5s"), 500_000_000);
        assert_eq!(nanos("5.s"), 5_000_000_000);
        assert_eq!(nanos("1h"), 3_600_000_000_000);
        assert_eq!(nanos("2h45m1.5µs"), 9_900_000_001_500);
        assert_eq!(nanos("3μs"), 3_000);
        assert_eq!(nanos("0"), 0);
        assert_eq!(nanos("+0"), 0);
        assert_eq!(nanos("+20s"), 20_000_000_000);
        assert_eq!(nanos("1.0000000000000000001s"), 1_000_000_000);
    }

    #[test]
    fn keeps_the_sign() {
        assert_eq!(nanos("-10s"), -10_000_000_000);
        assert_eq!(nanos("-0"), 0);
        assert_eq!(nanos("-0s"), 0);
        assert_eq!(nanos("-1m30s"), -90_000_000_000);
        assert_eq!(GoDuration::parse("-10s").map(GoDuration::to_std), Ok(None));
        assert!(GoDuration::parse("-10s").unwrap() < GoDuration::ZERO);
    }

    #[test]
    fn holds_what_go_holds_and_no_more() {
        assert_eq!(nanos("9223372036854775807ns"), i64::MAX);
        assert_eq!(nanos("-9223372036854775808ns"), i64::MIN);
        for too_long in ["9223372036854775808ns", "-9223372036854775809ns", "2562048h", "1e9999h"] {
            assert!(GoDuration::parse(too_long).is_err(), "{too_long:?} should be out of range");
        }
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "-", "+", "20", "s", "1x", "1m30", "..s", ".s", "1..5s", "1 s", " 1s", "-s"] {
            assert!(GoDuration::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let missing = GoDuration::parse("10").unwrap_err().to_string();
        assert_eq!(missing, "invalid duration \"10\": missing unit (examples: 500ms, 20s, 1m30s)");
    }

    #[test]
    fn converts_to_std() {
        assert_eq!(GoDuration::parse("1m30s").ok().and_then(GoDuration::to_std), Some(Duration::from_secs(90)));
        assert_eq!(GoDuration::ZERO.to_std(), Some(Duration::ZERO));
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_secs(60)), "1m0s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
        assert_eq!(format(Duration::from_secs(20)), "20s");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No text panics the parser.
        #[test]
        fn parse_any_text(text in any::<String>()) {
            let _ = GoDuration::parse(&text);
        }

        /// Text made of a duration's own characters, huge numbers included.
        #[test]
        fn parse_duration_like_text(text in "[-+]?([0-9]{0,22}(\\.[0-9]{0,22})?(ns|us|µs|μs|ms|s|m|h|x|)){0,4}") {
            if let Ok(d) = GoDuration::parse(&text) {
                // A positive duration converts, a negative one does not.
                prop_assert_eq!(d.to_std().is_some(), d >= GoDuration::ZERO);
            }
        }

        /// Go's units agree with each other and with nanoseconds.
        #[test]
        fn units_agree(n in 0u64..1_000_000) {
            let nanos = |text: String| GoDuration::parse(&text).ok().map(|d| d.nanos);
            let n = n as i64;
            prop_assert_eq!(nanos(format!("{n}h")), nanos(format!("{}m", n * 60)));
            prop_assert_eq!(nanos(format!("{n}s")), nanos(format!("{}ms", n * 1000)));
            prop_assert_eq!(nanos(format!("{n}us")), nanos(format!("{}ns", n * 1000)));
            prop_assert_eq!(nanos(format!("-{n}s")), nanos(format!("{n}s")).map(|v| -v));
        }

        /// What `format` prints parses back to the same duration, for the
        /// precision it prints: microseconds below a second (nanoseconds
        /// below a millisecond), milliseconds above.
        #[test]
        fn format_round_trips(nanos in prop_oneof![0u64..1_000_000, 0u64..100_000_000_000, 0u64..=i64::MAX as u64]) {
            let d = Duration::from_nanos(nanos);
            let d = if d >= Duration::from_secs(1) {
                Duration::from_millis(d.as_millis() as u64)
            } else if d >= Duration::from_millis(1) {
                Duration::from_micros(d.as_micros() as u64)
            } else {
                d
            };
            let text = format(d);
            prop_assert_eq!(GoDuration::parse(&text).ok().and_then(GoDuration::to_std), Some(d), "{}", text);
        }

        /// Any `Duration` formats without panicking, however long.
        #[test]
        fn format_any_duration(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let _ = format(Duration::new(secs, nanos));
        }
    }
}
