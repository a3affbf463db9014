-- Index tables become WITHOUT ROWID tables clustered by (rid, n), n numbering a version's
-- index rows. Before, each row went into three B-trees: the rowid table, the value index and
-- the rid index. Now it goes into two: the table itself (keyed by rid, so it also serves the
-- delete-by-rid of an update) and the value index, whose entries carry (rid, n), so that a
-- lookup by value answers rid without visiting the table. See docs/storage.md.

CREATE TABLE idx_string_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    value_norm TEXT NOT NULL, value_exact TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_string_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, value_norm, value_exact
    FROM idx_string;
DROP TABLE idx_string;
ALTER TABLE idx_string_new RENAME TO idx_string;
CREATE INDEX idx_string_value ON idx_string (res_type, param, value_norm);

CREATE TABLE idx_token_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    system TEXT NOT NULL, code TEXT NOT NULL, display TEXT,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_token_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, system, code, display
    FROM idx_token;
DROP TABLE idx_token;
ALTER TABLE idx_token_new RENAME TO idx_token;
CREATE INDEX idx_token_value ON idx_token (res_type, param, code, system);

CREATE TABLE idx_reference_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    target_type TEXT, target_id TEXT, url TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_reference_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, target_type, target_id, url
    FROM idx_reference;
DROP TABLE idx_reference;
ALTER TABLE idx_reference_new RENAME TO idx_reference;
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type, param, res_type);

CREATE TABLE idx_date_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_date_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, lo, hi
    FROM idx_date;
DROP TABLE idx_date;
ALTER TABLE idx_date_new RENAME TO idx_date;
CREATE INDEX idx_date_value ON idx_date (res_type, param, lo, hi);

CREATE TABLE idx_number_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_number_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, value, lo, hi
    FROM idx_number;
DROP TABLE idx_number;
ALTER TABLE idx_number_new RENAME TO idx_number;
CREATE INDEX idx_number_value ON idx_number (res_type, param, value);

CREATE TABLE idx_quantity_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    system TEXT NOT NULL, code TEXT NOT NULL, unit TEXT NOT NULL,
    value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_quantity_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, system, code, unit, value, lo, hi
    FROM idx_quantity;
DROP TABLE idx_quantity;
ALTER TABLE idx_quantity_new RENAME TO idx_quantity;
CREATE INDEX idx_quantity_value ON idx_quantity (res_type, param, code, value);

CREATE TABLE idx_uri_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type TEXT NOT NULL, param TEXT NOT NULL, grp INTEGER,
    uri TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_uri_new
    SELECT rid, row_number() OVER (PARTITION BY rid ORDER BY rowid), res_type, param, grp, uri
    FROM idx_uri;
DROP TABLE idx_uri;
ALTER TABLE idx_uri_new RENAME TO idx_uri;
CREATE INDEX idx_uri_value ON idx_uri (res_type, param, uri);
