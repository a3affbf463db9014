//! PKCE (RFC 7636) for the authorization-code grant, `S256` only: the client sends
//! `BASE64URL(SHA-256(verifier))` with the authorization request and the verifier with the
//! token request; the plain method is refused, as SMART App Launch 2.0 requires.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest::{SHA256, digest};
use thiserror::Error;

/// The one method accepted.
pub const S256: &str = "S256";

/// A PKCE parameter that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PkceError {
    /// `code_challenge_method` other than `S256`.
    #[error("code_challenge_method must be S256")]
    Method,
    /// A verifier of the wrong length or alphabet (43–128 of `A-Z a-z 0-9 - . _ ~`).
    #[error("code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~")]
    Verifier,
    /// A challenge that is not 43 base64url characters.
    #[error("code_challenge must be the 43-character base64url SHA-256 of the verifier")]
    Challenge,
    /// The verifier does not hash to the challenge.
    #[error("code_verifier does not match the code_challenge")]
    Mismatch,
}

/// Checks an authorization request's challenge and method.
pub fn check_challenge(challenge: &str, method: &str) -> Result<(), PkceError> {
    if method != S256 {
        return Err(PkceError::Method);
    }
    let ok = challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PkceError::Challenge)
    }
}

/// The S256 challenge of `verifier`.
pub fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes()).as_ref())
}

/// Checks a token request's verifier against the challenge stored with the code.
pub fn verify(verifier: &str, challenge: &str) -> Result<(), PkceError> {
    let ok = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if !ok {
        return Err(PkceError::Verifier);
    }
    // The challenge is no secret (the client sent it in the open), so a plain comparison.
    if challenge_of(verifier) == challenge {
        Ok(())
    } else {
        Err(PkceError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_7636_example() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(
            challenge_of(verifier),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_eq!(
            verify(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
            Ok(())
        );
        assert_eq!(
            verify(verifier, "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cN"),
            Err(PkceError::Mismatch)
        );
    }

    #[test]
    fn plain_and_malformed_parameters_are_refused() {
        assert_eq!(
            check_challenge("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "plain"),
            Err(PkceError::Method)
        );
        assert_eq!(check_challenge("short", S256), Err(PkceError::Challenge));
        assert_eq!(verify("too-short", "x"), Err(PkceError::Verifier));
        assert_eq!(verify(&"é".repeat(30), "x"), Err(PkceError::Verifier));
    }
}
