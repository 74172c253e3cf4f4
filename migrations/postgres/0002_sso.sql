-- One-time single sign-on keys (SPEC 2.4): kept as SHA-256 hashes, valid 60 s, used once.
CREATE TABLE sso_keys (
    key_hash    TEXT PRIMARY KEY,
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX sso_keys_expires ON sso_keys (expires_at);
