-- The exchange's own state, each row the JSON the exchange layer wrote (the store keeps it and
-- nothing more). Keys are compared bytewise, so that a key prefix is a key range.
-- exchange_node: the hub's node registrations, by node id.
CREATE TABLE exchange_node (
    id      TEXT PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL  -- ms since the epoch
);
-- exchange_holding: the record locator's "what and when", by node|patient|type.
CREATE TABLE exchange_holding (
    id      TEXT PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL
);
-- exchange_alias: a node's resource that the hub keeps under another id (a directory entry
-- de-duplicated by business identifier), by node|type|id.
CREATE TABLE exchange_alias (
    id      TEXT PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL
);
-- exchange_dispatch: the sender's queue of directed messages, by message id (apart from the
-- change feed's outbox: these are deliveries to other nodes, with attempts and receipts).
CREATE TABLE exchange_dispatch (
    id      TEXT PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL
);
