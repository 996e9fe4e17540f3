//! Engine addresses and the range syntax (`10.0.0.[10:200]:2375`).

use std::fmt;

use crate::error::DiscoveryError;

/// Upper bound on how many addresses one range may expand to, so a typo such
/// as `[1:99999999]` fails clearly instead of exhausting memory.
const MAX_RANGE_LEN: u64 = 65_536;
/// Upper bound on the length of one address or pattern: a host name has at
/// most 253 characters, and every address a range expands to is a copy of
/// the pattern, so a huge pattern would multiply into gigabytes.
const MAX_PATTERN_LEN: usize = 512;
/// Upper bound on how many addresses one list or file may stand for: each
/// range is bounded, but many ranges in one list would still multiply.
pub(crate) const MAX_ENTRIES: usize = 65_536;

/// One engine address as discovery reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entry {
    /// Host name or IP address, without brackets; never empty.
    pub host: String,
    /// TCP port of the engine's API.
    pub port: u16,
}

impl Entry {
    /// Parses `host:port` (IPv6 hosts in brackets: `[::1]:2375`).
    pub fn parse(text: &str) -> Result<Entry, DiscoveryError> {
        let invalid =
            |reason: &str| DiscoveryError::InvalidEntry { entry: text.to_string(), reason: reason.to_string() };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| invalid("missing ']'"))?;
            let port = after.strip_prefix(':').ok_or_else(|| invalid("missing port"))?;
            (host, port)
        } else {
            text.rsplit_once(':').ok_or_else(|| invalid("missing port"))?
        };
        if host.is_empty() {
            return Err(invalid("missing host"));
        }
        // A bracket left in the host would be read back as the start of an
        // IPv6 literal (`[[a]:1` would print as `[a:1`, which does not parse).
        if host.contains(['[', ']']) {
            return Err(invalid("brackets only enclose an IPv6 address"));
        }
        if host.contains(':') && !text.starts_with('[') {
            return Err(invalid("too many colons in address"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid("port must be a number from 1 to 65535"))?;
        Ok(Entry { host: host.to_string(), port })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Expands one `[a:b]` numeric range (inclusive) in `pattern` into every
/// address it stands for; a pattern without a range is returned as is.
pub fn expand_ranges(pattern: &str) -> Result<Vec<String>, DiscoveryError> {
    let invalid = |reason: String| DiscoveryError::InvalidEntry { entry: pattern.to_string(), reason };
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!("longer than {MAX_PATTERN_LEN} characters")));
    }
    let Some(open) = pattern.find('[') else {
        return Ok(vec![pattern.to_string()]);
    };
    let Some(close_rel) = pattern[open..].find(']') else {
        return Err(invalid("missing ']'".into()));
    };
    let close = open + close_rel;
    let inner = &pattern[open + 1..close];
    let Some((start, end)) = inner.split_once(':') else {
        // `[::1]:2375` style IPv6 literal, not a range.
        return Ok(vec![pattern.to_string()]);
    };
    let (Ok(start), Ok(end)) = (start.parse::<u64>(), end.parse::<u64>()) else {
        if inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Ok(vec![pattern.to_string()]);
        }
        return Err(invalid(format!("range [{inner}] must be [start:end] with numbers")));
    };
    if start > end {
        return Err(invalid(format!("range [{inner}] ends before it starts")));
    }
    if end - start >= MAX_RANGE_LEN {
        return Err(invalid(format!("range [{inner}] has more than {MAX_RANGE_LEN} addresses")));
    }
    let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
    Ok((start..=end).map(|n| format!("{prefix}{n}{suffix}")).collect())
}

/// Parses a comma-separated list of addresses, each possibly with a range.
pub fn parse_entries(list: &str) -> Result<Vec<Entry>, DiscoveryError> {
    let mut entries = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        extend_bounded(&mut entries, parse_pattern(item)?)?;
    }
    Ok(entries)
}

/// Appends `more` to `entries` unless that makes more than [`MAX_ENTRIES`].
pub(crate) fn extend_bounded(entries: &mut Vec<Entry>, more: Vec<Entry>) -> Result<(), DiscoveryError> {
    if entries.len().saturating_add(more.len()) > MAX_ENTRIES {
        return Err(DiscoveryError::TooManyEntries { limit: MAX_ENTRIES });
    }
    entries.extend(more);
    Ok(())
}

/// Parses one address, possibly with a range, into every address it stands for.
pub(crate) fn parse_pattern(pattern: &str) -> Result<Vec<Entry>, DiscoveryError> {
    expand_ranges(pattern)?.iter().map(|address| Entry::parse(address)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port() {
        let e = Entry::parse("10.0.0.1:2375").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("10.0.0.1", 2375));
        assert_eq!(e.to_string(), "10.0.0.1:2375");
        let v6 = Entry::parse("[::1]:2375").unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:2375");
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in ["10.0.0.1", ":2375", "h:0", "h:99999", "h:x", "a:b:c"] {
            assert!(Entry::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn expands_ranges() {
        let list = parse_entries("10.0.0.[10:12]:2375,h:1").unwrap();
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.10:2375", "10.0.0.11:2375", "10.0.0.12:2375", "h:1"]);
        assert_eq!(expand_ranges("h:[1:2]").unwrap(), ["h:1", "h:2"]);
    }

    #[test]
    fn rejects_bad_ranges() {
        assert!(expand_ranges("10.0.0.[12:10]:1").is_err());
        assert!(expand_ranges("10.0.0.[1:x]:1").is_err());
        assert!(expand_ranges("10.0.0.[1:1]0000000").is_ok());
        assert!(expand_ranges("10.[0:99999999].0.1:1").is_err());
        assert!(expand_ranges("10.0.0.[1:2:1").is_err());
    }

    #[test]
    fn bounds_what_a_list_expands_to() {
        // One range per item is bounded, and so is a list of many of them.
        let many: Vec<String> = (0..3).map(|i| format!("h{i}.[1:30000]:1")).collect();
        assert_eq!(parse_entries(&many.join(",")), Err(DiscoveryError::TooManyEntries { limit: MAX_ENTRIES }));
        assert!(expand_ranges("h.[0:4294967295]:1").is_err());
        assert!(expand_ranges("h.[0:18446744073709551615]:1").is_err());
        // A huge pattern is refused before it is copied once per address.
        let long = format!("{}.[1:60000]:1", "a".repeat(100_000));
        assert!(expand_ranges(&long).unwrap_err().to_string().contains("longer than"));
    }

    #[test]
    fn brackets_only_enclose_ipv6_addresses() {
        for bad in ["[[a]:1", "a[b:1", "a]b:1", "h[ab]:1"] {
            assert!(Entry::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    /// Text made of the characters addresses and ranges are written with.
    const ADDRESS_LIKE: &str = "[a-z0-9.:\\[\\]%, -]{0,40}";

    proptest! {
        /// No text panics the parsers; what parses prints back to itself.
        #[test]
        fn entry_parse_round_trips(text in ADDRESS_LIKE) {
            if let Ok(entry) = Entry::parse(&text) {
                prop_assert!(!entry.host.is_empty() && entry.port != 0);
                prop_assert_eq!(Entry::parse(&entry.to_string()), Ok(entry));
            }
        }

        #[test]
        fn entry_parse_any_text(text in any::<String>()) {
            let _ = Entry::parse(&text);
        }

        #[test]
        fn lists_never_panic(text in ADDRESS_LIKE, any_text in ".{0,40}") {
            for list in [&text, &any_text] {
                if let Ok(entries) = parse_entries(list) {
                    prop_assert!(entries.len() <= MAX_ENTRIES);
                }
                let _ = expand_ranges(list);
            }
        }

        /// Ranges with any numbers, including ones far beyond what can be
        /// listed, are expanded or refused at once.
        #[test]
        fn huge_ranges_are_refused(start in any::<u64>(), end in any::<u64>()) {
            match expand_ranges(&format!("10.0.[{start}:{end}].1:2375")) {
                Ok(list) => {
                    prop_assert!(start <= end && end - start < MAX_RANGE_LEN);
                    prop_assert_eq!(list.len() as u64, end - start + 1);
                }
                Err(_) => prop_assert!(start > end || end - start >= MAX_RANGE_LEN),
            }
        }

        /// A small range stands for one address per number, in order.
        #[test]
        fn small_ranges_expand_to_each_number(
            prefix in "[a-z]{1,8}\\.",
            start in 0u64..300,
            len in 0u64..40,
            port in 1u16..,
        ) {
            let end = start + len;
            let entries = parse_entries(&format!("{prefix}[{start}:{end}]:{port}")).unwrap();
            prop_assert_eq!(entries.len() as u64, len + 1);
            for (entry, n) in entries.iter().zip(start..) {
                prop_assert_eq!(&entry.host, &format!("{prefix}{n}"));
                prop_assert_eq!(entry.port, port);
            }
        }
    }
}
