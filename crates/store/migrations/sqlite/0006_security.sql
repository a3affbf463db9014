-- Security: the audit log, and the registered clients and users. See docs/storage.md,
-- "Audit log" and "Clients and users".

-- The audit log: append-only, hash-chained, its head signed with a key kept outside the
-- database.

-- One row per audit record (an IHE BALP AuditEvent): `record` holds the exact bytes hashed,
-- `hash` = SHA-256("renkei-audit-v1" ‖ seq ‖ previous hash ‖ record). Sequence numbers start at
-- 1 and have no gaps. `recorded` (ms since the epoch) and `agent` are copies of what the record
-- says, for searching.
CREATE TABLE audit_log (
    seq        INTEGER PRIMARY KEY,
    recorded   INTEGER NOT NULL,
    request_id TEXT    NOT NULL,
    agent      TEXT,
    record     BLOB    NOT NULL,
    hash       BLOB    NOT NULL
);
CREATE INDEX audit_log_recorded ON audit_log (recorded);
CREATE INDEX audit_log_agent ON audit_log (agent, seq);

-- The patients (kind 1) and the other resources (kind 2) each record names, for searching.
CREATE TABLE audit_ref (
    kind   INTEGER NOT NULL,
    target TEXT    NOT NULL,
    seq    INTEGER NOT NULL,
    PRIMARY KEY (kind, target, seq)
) WITHOUT ROWID;

-- The signed head: the last record's sequence number and hash, and the signature (JSON of
-- auth::chain::SignedHead). One row.
CREATE TABLE audit_head (
    one    INTEGER PRIMARY KEY CHECK (one = 1),
    seq    INTEGER NOT NULL,
    signed TEXT    NOT NULL
);

-- Records are never changed or removed by the node; these refuse it to anyone who does not
-- first drop them (and `renkei audit verify` finds whoever does).
CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

-- Who may ask for tokens: registered clients and the users of the built-in login, each the
-- JSON of auth::registry::Client / User (a user's password only as its argon2id hash).
CREATE TABLE auth_client (
    id      TEXT   PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL  -- ms since the epoch
);
CREATE TABLE auth_user (
    name    TEXT   PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL
);
