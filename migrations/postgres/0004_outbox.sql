-- The durable outbox (SPEC 4): outbound webhooks written in the transaction that
-- accepts them, delivered by workers (on any node) that claim items with locked_until.
CREATE TABLE outbox (
    id               TEXT COLLATE "C" PRIMARY KEY,
    connector_id     TEXT COLLATE "C" NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT,
    age_from         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    request          TEXT NOT NULL,
    -- the request's timeout_ms (SQLite reads it with json_extract): the claim adds it to
    -- locked_until without parsing the request text
    timeout_ms       BIGINT NOT NULL DEFAULT 5000
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_connector ON outbox (connector_id, status);
CREATE INDEX outbox_created ON outbox (created_at DESC, id DESC);
