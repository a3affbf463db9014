-- Change-feed consumers and the compartments of each change. See docs/storage.md, "Change feed".

-- The Patient compartments each written version is in (the Patient itself; for other types the
-- Patients its compartment parameters name; for a deletion, those of the version it deleted),
-- one row per (version, Patient). `version_seq` is resource_version.seq, which the version's
-- outbox row carries. Rows written before this migration are filled in by the store (the
-- current version of each live resource, and every version of a Patient); older versions
-- of other types have none.
CREATE TABLE change_compartment (
    version_seq INTEGER NOT NULL,
    patient     TEXT    NOT NULL,
    PRIMARY KEY (version_seq, patient)
) WITHOUT ROWID;
CREATE INDEX change_compartment_patient ON change_compartment (patient, version_seq);

-- One row per named consumer of the change feed: the position after the last change it has
-- handled (opaque text, store::FeedPosition), saved only after its handler succeeded.
CREATE TABLE feed_consumer (
    name     TEXT    PRIMARY KEY,
    position TEXT    NOT NULL,
    updated  INTEGER NOT NULL  -- µs since the epoch
);
