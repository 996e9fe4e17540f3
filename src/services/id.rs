//! Object IDs in swarm mode's form: 25 lowercase base-36 characters, a
//! random 128-bit number written out (36^25 > 2^128, so every number fits).

use rand::Rng;

/// Length of every service, task and node ID.
pub const ID_LEN: usize = 25;

const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A new random ID from `rng` (the caller's, so tests can seed it).
pub fn new_id(rng: &mut impl Rng) -> String {
    let mut n: u128 = rng.gen();
    let mut out = [b'0'; ID_LEN];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// True for a text of the ID form (used to tell IDs from names).
pub fn is_id(text: &str) -> bool {
    text.len() == ID_LEN && text.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ids_have_swarm_modes_form_and_differ() {
        let mut rng = StdRng::seed_from_u64(7);
        let (a, b) = (new_id(&mut rng), new_id(&mut rng));
        assert!(is_id(&a) && is_id(&b), "{a} {b}");
        assert_ne!(a, b);
        assert!(is_id("9mnpnzenvg8p8tdbtq4wvbkcz"));
        assert!(!is_id("web") && !is_id("9MNPNZENVG8P8TDBTQ4WVBKCZ"));
    }
}
