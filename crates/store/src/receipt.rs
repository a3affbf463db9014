//! Idempotency receipts: what the store keeps about a processed inbound message so that a
//! re-sent message is answered the same way and writes nothing twice.
//!
//! A [`Receipt`] is opaque to the store (it knows no HL7): a unique key chosen by the caller,
//! a content fingerprint, an outcome code and the reply bytes. [`crate::Store::commit_keyed`]
//! writes each [`KeyedWrite`]'s receipt and resources in one database transaction, so a reply
//! is only ever sent for data that is durable, and the unique key makes two concurrent commits
//! of one message converge on one (the loser gets [`crate::StoreError::DuplicateKey`]).

use crate::model::WriteEntry;

/// The stored answer to one processed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The sender's idempotency key (unique).
    pub key: String,
    /// A hash of the message content: the same key with another fingerprint is a different
    /// message reusing a key.
    pub fingerprint: i64,
    /// The outcome code (MSA-1 for HL7 v2).
    pub code: String,
    /// The reply sent, replayed byte for byte on a re-send.
    pub reply: Vec<u8>,
    /// A reply still to be delivered later (HL7 enhanced-mode application ACK).
    pub deferred: Option<Vec<u8>>,
}

/// One message's writes and its receipt: committed together or not at all.
#[derive(Debug, Clone)]
pub struct KeyedWrite {
    pub receipt: Receipt,
    /// Writes in FHIR processing order (as for [`crate::Store::transaction`]).
    pub entries: Vec<WriteEntry>,
}
