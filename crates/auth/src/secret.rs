//! Opaque secrets the authorization server hands out (sign-in request ids, authorization
//! codes, refresh tokens): 32 random bytes from the system's source, base64url; and the digest
//! under which a secret is stored, so that the database never holds one that could be used.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use ring::rand::{SecureRandom, SystemRandom};

/// A new random secret: 256 bits, base64url without padding (43 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    // The system's random source failing is a broken machine; nothing sensible can go on.
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random source failed");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The key a secret is stored under: its SHA-256, base64url.
pub fn stored_id(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, secret.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_stored_by_digest() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(stored_id(&a), stored_id(&a));
        assert_ne!(stored_id(&a), a);
    }
}
