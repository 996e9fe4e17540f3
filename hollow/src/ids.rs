//! Docker-shaped identifiers: 256-bit object IDs in hex and engine IDs in
//! the `XXXX:XXXX:…` form, random or derived from a seed.

use std::fmt;

/// A 256-bit object ID (container, network, endpoint, image), printed as
/// 64 lowercase hex digits like Docker's. Kept as bytes: half the size of
/// its text, and rendered only when a JSON answer needs it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id([u8; 32]);

impl Id {
    /// A fresh random ID.
    pub fn random() -> Id {
        Id(rand::random())
    }

    /// An ID derived from `parts`: the same parts always give the same ID,
    /// so IDs that a real engine would keep (an engine's built-in networks,
    /// a container's endpoint on a network) need not be stored.
    pub fn derived(parts: &[&[u8]]) -> Id {
        let mut state = 0xcbf2_9ce4_8422_2325u64;
        for part in parts {
            for &b in *part {
                state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
            }
            // A separator, so ("ab", "c") and ("a", "bc") differ.
            state = (state ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            state = splitmix64(state);
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        Id(bytes)
    }

    /// The raw bytes (to derive further IDs from this one).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 hex digits.
    pub fn hex(&self) -> String {
        self.to_string()
    }

    /// The first 12 hex digits, as `docker ps` and hostnames show an ID.
    pub fn short(&self) -> String {
        let mut hex = self.hex();
        hex.truncate(12);
        hex
    }

    /// True when `prefix` (lowercase hex, as Docker prints IDs) starts this
    /// ID. Compared digit by digit: lookups run on every request, and
    /// rendering each candidate's hex would allocate.
    pub fn has_prefix(&self, prefix: &str) -> bool {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        !prefix.is_empty()
            && prefix.len() <= 64
            && prefix.bytes().enumerate().all(|(i, digit)| {
                let byte = self.0[i / 2];
                let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0xf };
                DIGITS[usize::from(nibble)] == digit
            })
    }

    /// True when `text` is exactly this ID's 64 hex digits.
    pub fn is(&self, text: &str) -> bool {
        text.len() == 64 && self.has_prefix(text)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// SplitMix64: spreads a counter or hash over all 64 bits.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An engine ID as dockerd prints it (from its key): 12 groups of 4
/// base-32 characters separated by colons.
pub fn engine_id(seed: &Id) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = seed.bytes().iter().flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1));
    let mut id = String::with_capacity(59);
    for group in 0..12 {
        if group > 0 {
            id.push(':');
        }
        for _ in 0..4 {
            let value = (0..5).fold(0usize, |v, _| (v << 1) | usize::from(bits.next().unwrap_or(0)));
            id.push(char::from(ALPHABET[value]));
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_docker_does() {
        let id = Id::random();
        assert_eq!(id.hex().len(), 64);
        assert!(id.hex().bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        assert_eq!(id.short(), id.hex()[..12]);
        assert!(id.has_prefix(&id.hex()[..5]));
        assert!(id.is(&id.hex()));
        assert!(!id.is(&id.hex()[..63]));
        assert!(!id.has_prefix(""));
        let other = Id::derived(&[b"other"]);
        assert!(!other.has_prefix(&id.hex()[..12]));
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = Id::derived(&[b"engine", b"1"]);
        assert_eq!(a, Id::derived(&[b"engine", b"1"]));
        assert_ne!(a, Id::derived(&[b"engine", b"2"]));
        assert_ne!(Id::derived(&[b"ab", b"c"]), Id::derived(&[b"a", b"bc"]));
    }

    #[test]
    fn engine_ids_look_like_dockerds() {
        let id = engine_id(&Id::derived(&[b"x"]));
        assert_eq!(id.len(), 59);
        assert_eq!(id.split(':').count(), 12);
        assert!(id
            .split(':')
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))));
    }
}
