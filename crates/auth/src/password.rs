//! Passwords of the built-in login: argon2id hashes in PHC string form
//! (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`), each with its own random salt. The
//! password itself is never stored, logged or returned.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use thiserror::Error;

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;

/// A password or hash that cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PasswordError {
    /// Shorter than [`MIN_LENGTH`] characters.
    #[error("a password needs at least {MIN_LENGTH} characters")]
    TooShort,
    /// The stored hash is not a PHC string argon2 reads.
    #[error("the stored password hash is unreadable")]
    BadHash,
}

/// Hashes a new password.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    if password.chars().count() < MIN_LENGTH {
        return Err(PasswordError::TooShort);
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::BadHash)
}

/// Whether `password` matches the stored `phc` hash.
pub fn verify(password: &str, phc: &str) -> Result<bool, PasswordError> {
    let parsed = PasswordHash::new(phc).map_err(|_| PasswordError::BadHash)?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_own_hash_only() {
        let h = hash("correct horse battery").expect("hash");
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert_eq!(verify("correct horse battery", &h), Ok(true));
        assert_eq!(verify("correct horse battery!", &h), Ok(false));
        // Same password, another salt.
        assert_ne!(hash("correct horse battery").expect("hash"), h);
        assert_eq!(hash("short"), Err(PasswordError::TooShort));
        assert_eq!(verify("x", "not a hash"), Err(PasswordError::BadHash));
    }
}
