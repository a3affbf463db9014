-- Renkei store schema, PostgreSQL. See docs/storage.md.
-- Times are microseconds since the Unix epoch (UTC). Resource bodies are JSON text as written.

-- One row per logical resource: the pointer to its current version.
CREATE TABLE resource (
    rid          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- surrogate key used by the index tables
    res_type     TEXT    NOT NULL,
    res_id       TEXT    NOT NULL,
    version      BIGINT NOT NULL,           -- current version id
    seq          BIGINT NOT NULL,           -- resource_version.seq of the current version
    last_updated BIGINT NOT NULL,
    deleted      BOOLEAN NOT NULL,           -- current version is a deletion
    UNIQUE (res_type, res_id)
);
CREATE INDEX resource_type_updated ON resource (res_type, last_updated);

-- Every version of every resource (history). Never updated, never deleted.
CREATE TABLE resource_version (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- global, allocation order (see docs/storage.md)
    rid          BIGINT NOT NULL,
    res_type     TEXT    NOT NULL,
    res_id       TEXT    NOT NULL,
    version      BIGINT NOT NULL,
    last_updated BIGINT NOT NULL,
    method       TEXT    NOT NULL,           -- POST | PUT | DELETE
    body         TEXT,                       -- NULL for a deletion
    UNIQUE (rid, version)
);
CREATE INDEX resource_version_type_seq ON resource_version (res_type, seq);

-- Search indexes of the current version of each resource, one table per parameter type.
-- grp correlates the components of one composite value (NULL otherwise).
-- Searched text is collated "C" (code-point order) so that prefix searches are index ranges
-- whatever the database's default collation.
CREATE TABLE idx_string (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    value_norm TEXT COLLATE "C" NOT NULL, value_exact TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_string_value ON idx_string (res_type, param, value_norm);
CREATE INDEX idx_string_rid ON idx_string (rid);

CREATE TABLE idx_token (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    system TEXT COLLATE "C" NOT NULL, code TEXT COLLATE "C" NOT NULL, display TEXT
);
CREATE INDEX idx_token_value ON idx_token (res_type, param, code, system);
CREATE INDEX idx_token_rid ON idx_token (rid);

CREATE TABLE idx_reference (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    target_type TEXT, target_id TEXT, url TEXT NOT NULL
);
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type, param, res_type);
CREATE INDEX idx_reference_rid ON idx_reference (rid);

CREATE TABLE idx_date (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    lo BIGINT NOT NULL, hi BIGINT NOT NULL     -- [lo, hi) in microseconds
);
CREATE INDEX idx_date_value ON idx_date (res_type, param, lo, hi);
CREATE INDEX idx_date_rid ON idx_date (rid);

CREATE TABLE idx_number (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    value DOUBLE PRECISION NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_number_value ON idx_number (res_type, param, value);
CREATE INDEX idx_number_rid ON idx_number (rid);

CREATE TABLE idx_quantity (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    system TEXT NOT NULL, code TEXT NOT NULL, unit TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL, lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL
);
CREATE INDEX idx_quantity_value ON idx_quantity (res_type, param, code, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE idx_uri (
    rid BIGINT NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp BIGINT,
    uri TEXT COLLATE "C" NOT NULL
);
CREATE INDEX idx_uri_value ON idx_uri (res_type, param, uri);
CREATE INDEX idx_uri_rid ON idx_uri (rid);

-- Change feed (transactional outbox): one row per written version, in the same transaction.
CREATE TABLE outbox (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- allocation order, see docs/storage.md
    version_seq BIGINT NOT NULL,
    res_type    TEXT    NOT NULL,
    res_id      TEXT    NOT NULL,
    version     BIGINT NOT NULL,
    method      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL
);
