-- Tokens the authorization server keeps track of beyond their signature: revoked access
-- tokens (until they expire) and refresh tokens. One row per token id (`jti`, or the hash of
-- a refresh token), its body the JSON the `auth` layer wrote.
CREATE TABLE auth_token (
    id      TEXT   PRIMARY KEY,
    body    TEXT   NOT NULL,
    updated BIGINT NOT NULL  -- ms since the epoch
);
