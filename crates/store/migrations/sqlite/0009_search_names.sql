-- The index tables name a row's resource type and search parameter by a number
-- (`search_name.id`) instead of by text. Each value-index entry led with both names
-- ('Patient', 'address-postalcode': about 20 of its 40 bytes); a one-byte number in their
-- place makes the value indexes a third smaller, so that an import's random inserts into them
-- split, log and checkpoint fewer pages. Names are numbered as they are first written and never
-- renumbered. PostgreSQL keeps the names as text. See docs/storage.md.

CREATE TABLE search_name (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO search_name (name)
    SELECT res_type FROM idx_string UNION SELECT param FROM idx_string
UNION
    SELECT res_type FROM idx_token UNION SELECT param FROM idx_token
UNION
    SELECT res_type FROM idx_reference UNION SELECT param FROM idx_reference
UNION
    SELECT res_type FROM idx_date UNION SELECT param FROM idx_date
UNION
    SELECT res_type FROM idx_number UNION SELECT param FROM idx_number
UNION
    SELECT res_type FROM idx_quantity UNION SELECT param FROM idx_quantity
UNION
    SELECT res_type FROM idx_uri UNION SELECT param FROM idx_uri
    ORDER BY 1;

CREATE TABLE idx_string_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    value_norm TEXT NOT NULL, value_exact TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_string_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.value_norm, x.value_exact
    FROM idx_string x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_string;
ALTER TABLE idx_string_new RENAME TO idx_string;
CREATE INDEX idx_string_value ON idx_string (res_type, param, value_norm);

CREATE TABLE idx_token_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    system TEXT NOT NULL, code TEXT NOT NULL, display TEXT,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_token_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.system, x.code, x.display
    FROM idx_token x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_token;
ALTER TABLE idx_token_new RENAME TO idx_token;
CREATE INDEX idx_token_value ON idx_token (res_type, param, code, system);

CREATE TABLE idx_reference_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    target_type TEXT, target_id TEXT, url TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_reference_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.target_type, x.target_id, x.url
    FROM idx_reference x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_reference;
ALTER TABLE idx_reference_new RENAME TO idx_reference;
CREATE INDEX idx_reference_target ON idx_reference (target_id, target_type, param, res_type);

CREATE TABLE idx_date_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_date_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.lo, x.hi
    FROM idx_date x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_date;
ALTER TABLE idx_date_new RENAME TO idx_date;
CREATE INDEX idx_date_value ON idx_date (res_type, param, lo, hi);

CREATE TABLE idx_number_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_number_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.value, x.lo, x.hi
    FROM idx_number x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_number;
ALTER TABLE idx_number_new RENAME TO idx_number;
CREATE INDEX idx_number_value ON idx_number (res_type, param, value);

CREATE TABLE idx_quantity_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    system TEXT NOT NULL, code TEXT NOT NULL, unit TEXT NOT NULL,
    value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_quantity_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.system, x.code, x.unit, x.value, x.lo, x.hi
    FROM idx_quantity x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_quantity;
ALTER TABLE idx_quantity_new RENAME TO idx_quantity;
CREATE INDEX idx_quantity_value ON idx_quantity (res_type, param, code, value);

CREATE TABLE idx_uri_new (
    rid INTEGER NOT NULL, n INTEGER NOT NULL, res_type INTEGER NOT NULL, param INTEGER NOT NULL, grp INTEGER,
    uri TEXT NOT NULL,
    PRIMARY KEY (rid, n)
) WITHOUT ROWID;
INSERT INTO idx_uri_new
    SELECT x.rid, x.n, t.id, p.id, x.grp, x.uri
    FROM idx_uri x JOIN search_name t ON t.name = x.res_type JOIN search_name p ON p.name = x.param
    ORDER BY x.rid, x.n;
DROP TABLE idx_uri;
ALTER TABLE idx_uri_new RENAME TO idx_uri;
CREATE INDEX idx_uri_value ON idx_uri (res_type, param, uri);
