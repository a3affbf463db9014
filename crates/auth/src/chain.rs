//! The audit log's hash chain and its signed head.
//!
//! Each audit record is stored as the exact bytes of its JSON with a sequence number and a
//! hash: `hash(n) = SHA-256("renkei-audit-v1" ‖ n as 8 big-endian bytes ‖ hash(n-1) ‖ bytes(n))`,
//! `hash(0)` being 32 zero bytes before the first record (sequence numbers start at 1). The
//! head (the last sequence number and its hash) is signed with an Ed25519 key kept outside
//! the database ([`HeadSigner`]); whoever can write the database but not read that key cannot
//! edit, remove, reorder, insert or truncate records without [`verify`] noticing:
//! - an edited record no longer hashes to its stored hash, or, with the hash rewritten too,
//!   breaks every later link up to the signed head;
//! - a removed or reordered record leaves a gap or a wrong order in the sequence;
//! - removing the last records leaves the log shorter than the signed head says;
//! - rows after the signed head were never signed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use ring::digest::{Context, SHA256};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

const DOMAIN: &[u8] = b"renkei-audit-v1";

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The hash before the first record.
pub const GENESIS: Hash = [0; 32];

/// The last record's sequence number and hash (0 and [`GENESIS`] for an empty log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Its hash.
    #[serde(with = "hex_hash")]
    pub hash: Hash,
}

impl Head {
    /// The head of an empty log.
    pub const EMPTY: Head = Head {
        seq: 0,
        hash: GENESIS,
    };

    /// The head after appending `record` (the record gets sequence number `seq + 1`).
    pub fn append(&self, record: &[u8]) -> Head {
        let seq = self.seq + 1;
        Head {
            seq,
            hash: link_hash(seq, &self.hash, record),
        }
    }
}

/// The hash of record `seq` whose predecessor's hash is `prev`.
pub fn link_hash(seq: u64, prev: &Hash, record: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(DOMAIN);
    ctx.update(&seq.to_be_bytes());
    ctx.update(prev);
    ctx.update(record);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A head with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The head signed.
    pub head: Head,
    /// Which key signed it (the signer's [`HeadSigner::key_id`]).
    pub key_id: String,
    /// Ed25519 signature over [`signed_bytes`] of the head, base64.
    pub signature: String,
}

fn signed_bytes(head: &Head) -> Vec<u8> {
    let mut b = Vec::with_capacity(DOMAIN.len() + 8 + 32 + 5);
    b.extend_from_slice(DOMAIN);
    b.extend_from_slice(b"/head");
    b.extend_from_slice(&head.seq.to_be_bytes());
    b.extend_from_slice(&head.hash);
    b
}

/// A key that cannot be used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// Not an Ed25519 PKCS#8 document.
    #[error("not an Ed25519 PKCS#8 key")]
    Malformed,
    /// The system's random source failed.
    #[error("could not generate a key")]
    Random,
}

/// Signs heads; holds the private key.
#[derive(Debug)]
pub struct HeadSigner {
    key: Ed25519KeyPair,
    key_id: String,
}

impl HeadSigner {
    /// A new random key as a PKCS#8 document (to be written to a file outside the database).
    pub fn generate_pkcs8() -> Result<Vec<u8>, KeyError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| KeyError::Random)
    }

    /// The signer of a PKCS#8 key.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<HeadSigner, KeyError> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| KeyError::Malformed)?;
        let key_id = key_id(key.public_key().as_ref());
        Ok(HeadSigner { key, key_id })
    }

    /// The key's id: the first 16 hex digits of the SHA-256 of its public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public key, for a verifier that must not hold the private one.
    pub fn verifier(&self) -> HeadVerifier {
        HeadVerifier {
            public: self.key.public_key().as_ref().to_vec(),
            key_id: self.key_id.clone(),
        }
    }

    /// Signs `head`.
    pub fn sign(&self, head: Head) -> SignedHead {
        let sig = self.key.sign(&signed_bytes(&head));
        SignedHead {
            head,
            key_id: self.key_id.clone(),
            signature: STANDARD_NO_PAD.encode(sig.as_ref()),
        }
    }
}

fn key_id(public: &[u8]) -> String {
    let d = ring::digest::digest(&SHA256, public);
    hex(&d.as_ref()[..8])
}

/// Checks head signatures; holds a public key.
#[derive(Debug, Clone)]
pub struct HeadVerifier {
    public: Vec<u8>,
    key_id: String,
}

impl HeadVerifier {
    /// A verifier of a raw 32-byte Ed25519 public key.
    pub fn from_public_key(public: &[u8]) -> HeadVerifier {
        HeadVerifier {
            public: public.to_vec(),
            key_id: key_id(public),
        }
    }

    /// Whether `signed` was signed by this key.
    pub fn check(&self, signed: &SignedHead) -> bool {
        let Ok(sig) = STANDARD_NO_PAD.decode(signed.signature.trim_end_matches('=')) else {
            return false;
        };
        signed.key_id == self.key_id
            && UnparsedPublicKey::new(&ED25519, &self.public)
                .verify(&signed_bytes(&signed.head), &sig)
                .is_ok()
    }
}

/// One stored record, as [`verify`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its sequence number.
    pub seq: u64,
    /// The exact bytes that were hashed.
    pub record: Vec<u8>,
    /// The hash stored beside it.
    pub hash: Hash,
}

/// Why a log does not verify.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ChainError {
    /// The signed head's signature is not the key's.
    #[error("the signed head's signature does not verify with this key")]
    BadSignature,
    /// A sequence number is missing or out of order.
    #[error("record {found} follows record {previous}: records are missing or reordered")]
    Gap {
        /// The sequence number before.
        previous: u64,
        /// The sequence number found.
        found: u64,
    },
    /// A record does not hash to what the chain says.
    #[error(
        "record {seq} was changed: its hash does not follow from its content and its predecessor"
    )]
    Edited {
        /// The first record whose hash fails.
        seq: u64,
    },
    /// The log ends before the signed head.
    #[error(
        "the log ends at record {last} but the signed head is record {signed}: records were removed from the end"
    )]
    Truncated {
        /// The last record found.
        last: u64,
        /// The signed head's sequence number.
        signed: u64,
    },
    /// The record at the signed head's position is not the one signed.
    #[error("record {seq} is not the record the signed head names")]
    HeadMismatch {
        /// The signed head's sequence number.
        seq: u64,
    },
    /// Records after the signed head.
    #[error("records {from} to {to} come after the signed head and were never signed")]
    Unsigned {
        /// First unsigned sequence number.
        from: u64,
        /// Last.
        to: u64,
    },
}

/// Checks a log record by record, in sequence order, against its signed head: for logs too
/// long to hold in memory ([`verify`] checks a whole one).
#[derive(Debug)]
pub struct ChainVerifier {
    signed: Head,
    head: Head,
    signed_seen: bool,
}

impl ChainVerifier {
    /// Starts a check against `signed`, refusing it at once when `verifier` did not sign it.
    pub fn new(signed: &SignedHead, verifier: &HeadVerifier) -> Result<ChainVerifier, ChainError> {
        if !verifier.check(signed) {
            return Err(ChainError::BadSignature);
        }
        Ok(ChainVerifier {
            signed: signed.head,
            head: Head::EMPTY,
            signed_seen: signed.head.seq == 0,
        })
    }

    /// Checks the next record.
    pub fn push(&mut self, r: &StoredRecord) -> Result<(), ChainError> {
        if r.seq != self.head.seq + 1 {
            return Err(ChainError::Gap {
                previous: self.head.seq,
                found: r.seq,
            });
        }
        let next = self.head.append(&r.record);
        if next.hash != r.hash {
            return Err(ChainError::Edited { seq: r.seq });
        }
        self.head = next;
        if next.seq == self.signed.seq {
            if next.hash != self.signed.hash {
                return Err(ChainError::HeadMismatch { seq: next.seq });
            }
            self.signed_seen = true;
        }
        Ok(())
    }

    /// The last record checked (0 before the first).
    pub fn last(&self) -> u64 {
        self.head.seq
    }

    /// Ends the check: the log must end exactly at the signed head. Returns the number of
    /// records checked.
    pub fn finish(self) -> Result<u64, ChainError> {
        if !self.signed_seen {
            return Err(ChainError::Truncated {
                last: self.head.seq,
                signed: self.signed.seq,
            });
        }
        if self.head.seq > self.signed.seq {
            return Err(ChainError::Unsigned {
                from: self.signed.seq + 1,
                to: self.head.seq,
            });
        }
        Ok(self.head.seq)
    }
}

/// Checks a whole log, records in sequence order, against its signed head; returns the number
/// of records checked.
pub fn verify(
    records: impl IntoIterator<Item = StoredRecord>,
    signed: &SignedHead,
    verifier: &HeadVerifier,
) -> Result<u64, ChainError> {
    let mut v = ChainVerifier::new(signed, verifier)?;
    for r in records {
        v.push(&r)?;
    }
    v.finish()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits.
pub fn parse_hash(s: &str) -> Option<Hash> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &super::Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<super::Hash, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_hash(&s).ok_or_else(|| serde::de::Error::custom("a hash is 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64) -> (Vec<StoredRecord>, Head) {
        let mut head = Head::EMPTY;
        let mut out = Vec::new();
        for i in 1..=n {
            let record = format!("{{\"resourceType\":\"AuditEvent\",\"n\":{i}}}").into_bytes();
            head = head.append(&record);
            out.push(StoredRecord {
                seq: head.seq,
                record,
                hash: head.hash,
            });
        }
        (out, head)
    }

    fn signer() -> HeadSigner {
        HeadSigner::from_pkcs8(&HeadSigner::generate_pkcs8().expect("key")).expect("signer")
    }

    #[test]
    fn an_untouched_log_verifies() {
        let s = signer();
        let (records, head) = log(5);
        assert_eq!(verify(records, &s.sign(head), &s.verifier()), Ok(5));
        assert_eq!(
            verify(Vec::new(), &s.sign(Head::EMPTY), &s.verifier()),
            Ok(0)
        );
    }

    #[test]
    fn every_kind_of_tampering_is_found() {
        let s = signer();
        let (records, head) = log(5);
        let signed = s.sign(head);
        let v = s.verifier();

        let mut edited = records.clone();
        edited[2].record = b"{\"resourceType\":\"AuditEvent\",\"n\":99}".to_vec();
        assert_eq!(
            verify(edited.clone(), &signed, &v),
            Err(ChainError::Edited { seq: 3 })
        );
        // Rewriting the edited record's hash too breaks the next link.
        edited[2].hash = link_hash(3, &records[1].hash, &edited[2].record);
        assert_eq!(
            verify(edited, &signed, &v),
            Err(ChainError::Edited { seq: 4 })
        );

        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(
            verify(removed, &signed, &v),
            Err(ChainError::Gap {
                previous: 1,
                found: 3
            })
        );

        let mut reordered = records.clone();
        reordered.swap(1, 2);
        assert!(matches!(
            verify(reordered, &signed, &v),
            Err(ChainError::Gap { .. })
        ));

        let mut truncated = records.clone();
        truncated.pop();
        assert_eq!(
            verify(truncated, &signed, &v),
            Err(ChainError::Truncated { last: 4, signed: 5 })
        );

        let (longer, _) = log(6);
        assert_eq!(
            verify(longer, &signed, &v),
            Err(ChainError::Unsigned { from: 6, to: 6 })
        );
    }

    #[test]
    fn a_forged_or_foreign_signature_is_refused() {
        let s = signer();
        let (records, head) = log(3);
        let mut forged = s.sign(head);
        forged.head.seq = 2;
        assert_eq!(
            verify(records.clone(), &forged, &s.verifier()),
            Err(ChainError::BadSignature)
        );
        let other = signer();
        assert_eq!(
            verify(records, &other.sign(head), &s.verifier()),
            Err(ChainError::BadSignature)
        );
    }

    #[test]
    fn a_signed_head_survives_json() {
        let s = signer();
        let (_, head) = log(2);
        let signed = s.sign(head);
        let text = serde_json::to_string(&signed).expect("json");
        let back: SignedHead = serde_json::from_str(&text).expect("parse");
        assert!(s.verifier().check(&back));
        assert_eq!(parse_hash(&hex(&head.hash)), Some(head.hash));
        assert_eq!(parse_hash("zz"), None);
    }
}
