-- Change-feed consumers, the writing transaction of each change, and the compartments of each
-- change. See docs/storage.md, "Change feed".

-- The id of the transaction that wrote each row (the top-level one, also inside a savepoint).
-- Consumers read rows in (xid, seq) order, only those of transactions older than the oldest
-- one still in progress, which is what makes the feed skip-free on PostgreSQL. Rows written
-- before this migration get 0, which sorts before every real transaction id.
ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE outbox ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX outbox_xid_seq ON outbox (xid, seq);

-- The Patient compartments each written version is in (the Patient itself; for other types the
-- Patients its compartment parameters name; for a deletion, those of the version it deleted),
-- one row per (version, Patient). `version_seq` is resource_version.seq, which the version's
-- outbox row carries. Rows written before this migration are filled in by the store (the
-- current version of each live resource, and every version of a Patient); older versions
-- of other types have none.
CREATE TABLE change_compartment (
    version_seq BIGINT NOT NULL,
    patient     TEXT   COLLATE "C" NOT NULL,
    PRIMARY KEY (version_seq, patient)
);
CREATE INDEX change_compartment_patient ON change_compartment (patient, version_seq);

-- One row per named consumer of the change feed: the position after the last change it has
-- handled (opaque text, store::FeedPosition), saved only after its handler succeeded.
CREATE TABLE feed_consumer (
    name     TEXT   PRIMARY KEY,
    position TEXT   NOT NULL,
    updated  BIGINT NOT NULL  -- µs since the epoch
);
