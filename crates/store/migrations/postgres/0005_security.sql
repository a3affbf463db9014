-- Security: the audit log, and the registered clients and users. See docs/storage.md,
-- "Audit log" and "Clients and users".

-- The audit log: append-only, hash-chained, its head signed with a key kept outside the
-- database.

-- One row per audit record (an IHE BALP AuditEvent): `record` holds the exact bytes hashed,
-- `hash` = SHA-256("renkei-audit-v1" ‖ seq ‖ previous hash ‖ record). Sequence numbers start at
-- 1 and have no gaps (they are assigned under the lock of the head row, not by a sequence).
-- `recorded` (ms since the epoch) and `agent` are copies of what the record says, for searching.
CREATE TABLE audit_log (
    seq        BIGINT PRIMARY KEY,
    recorded   BIGINT NOT NULL,
    request_id TEXT   NOT NULL,
    agent      TEXT   COLLATE "C",
    record     BYTEA  NOT NULL,
    hash       BYTEA  NOT NULL
);
CREATE INDEX audit_log_recorded ON audit_log (recorded);
CREATE INDEX audit_log_agent ON audit_log (agent, seq);

-- The patients (kind 1) and the other resources (kind 2) each record names, for searching.
CREATE TABLE audit_ref (
    kind   BIGINT   NOT NULL,
    target TEXT     COLLATE "C" NOT NULL,
    seq    BIGINT   NOT NULL,
    PRIMARY KEY (kind, target, seq)
);

-- The signed head: the last record's sequence number and the signature (JSON of
-- auth::chain::SignedHead). One row; appending locks it, which orders appends.
CREATE TABLE audit_head (
    one    SMALLINT PRIMARY KEY CHECK (one = 1),
    seq    BIGINT   NOT NULL,
    signed TEXT     NOT NULL
);

-- Records are never changed or removed by the node; this refuses it to anyone who does not
-- first drop it (and `renkei audit verify` finds whoever does).
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

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
