//! Recovery codes: ten single-use codes a user keeps for the day they lose their factor.
//! Shown once, stored only as keyed hashes
//! ([`RefreshKey::recovery_code_hash`](crate::refresh_token::RefreshKey::recovery_code_hash)).
//!
//! A code is ten characters of Crockford's base32 (50 bits), shown as `xxxxx-xxxxx`. What
//! a user types is forgiven: case, spaces and dashes do not matter, and the letters that
//! look like digits (`o`, `i`, `l`) read as those digits.

use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};

use crate::refresh_token::RefreshKey;

/// How many codes a set has.
pub const CODES_PER_SET: usize = 10;
/// Characters per code, without the dash.
const CODE_CHARS: usize = 10;
/// Crockford's base32 alphabet, lower case: no `i`, `l`, `o`, `u`.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new set: the codes to show, and what to store for each.
///
/// # Panics
///
/// When the operating system's random source fails, which leaves nothing safe to do.
pub fn generate(key: &RefreshKey) -> (Vec<String>, Vec<Vec<u8>>) {
    let random = SystemRandom::new();
    (0..CODES_PER_SET)
        .map(|_| {
            let mut bytes = [0u8; CODE_CHARS];
            random
                .fill(&mut bytes)
                .expect("the system random source works");
            // 256 is a multiple of 32: taking each byte mod 32 is unbiased.
            let chars: String = bytes
                .iter()
                .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
                .collect();
            let shown = format!("{}-{}", &chars[..5], &chars[5..]);
            let stored = key.recovery_code_hash(chars.as_bytes());
            (shown, stored)
        })
        .unzip()
}

/// What to look up for the code a user typed, or `None` when it cannot be a code.
pub fn stored_hash(key: &RefreshKey, typed: &str) -> Option<Vec<u8>> {
    let normalised = normalise(typed)?;
    Some(key.recovery_code_hash(normalised.as_bytes()))
}

fn normalise(typed: &str) -> Option<String> {
    if typed.len() > 64 {
        return None;
    }
    let mut code = String::with_capacity(CODE_CHARS);
    for c in typed.chars() {
        let c = match c.to_ascii_lowercase() {
            ' ' | '-' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        code.push(c);
    }
    (code.len() == CODE_CHARS).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_their_typed_forms_hash_alike() {
        let key = RefreshKey::from_secret(&[3; 32]);
        let (shown, stored) = generate(&key);
        assert_eq!(shown.len(), CODES_PER_SET);
        let mut unique = shown.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), CODES_PER_SET);
        for (code, hash) in shown.iter().zip(&stored) {
            assert_eq!(code.len(), 11);
            assert_eq!(stored_hash(&key, code).as_ref(), Some(hash));
            let sloppy = format!(" {} ", code.to_uppercase().replace('-', " "));
            assert_eq!(stored_hash(&key, &sloppy).as_ref(), Some(hash));
        }
        assert_eq!(
            stored_hash(&key, "0o1il-22222"),
            stored_hash(&key, "00111-22222")
        );
        assert_eq!(stored_hash(&key, "short"), None);
        assert_eq!(stored_hash(&key, "ûûûûû-ûûûûû"), None);
        assert_eq!(stored_hash(&key, &"a".repeat(100)), None);
        let other = RefreshKey::from_secret(&[4; 32]);
        assert_ne!(stored_hash(&other, &shown[0]).as_ref(), Some(&stored[0]));
    }
}
