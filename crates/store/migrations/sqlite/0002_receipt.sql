-- Idempotency receipts: one row per processed inbound message (HL7 v2 over MLLP, SS-MIX2
-- files), keyed by the sender's idempotency key, committed in the same transaction as the
-- resources the message wrote. A re-sent message finds its receipt and gets `reply` back.
CREATE TABLE receipt (
    key         TEXT    PRIMARY KEY,
    fingerprint INTEGER NOT NULL, -- content hash: the same key with other content is a conflict
    code        TEXT    NOT NULL, -- outcome code (MSA-1 for HL7)
    reply       BLOB    NOT NULL, -- the reply sent, replayed byte for byte
    deferred    BLOB,             -- a reply still to be delivered (HL7 enhanced-mode application ACK)
    created     INTEGER NOT NULL  -- µs since the epoch
);
