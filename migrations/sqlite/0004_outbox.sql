-- The durable outbox (SPEC 4): outbound webhooks written in the transaction that
-- accepts them, delivered by a worker that claims items with locked_until.
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,
    connector_id     TEXT NOT NULL,
    kind             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    next_attempt_at  INTEGER NOT NULL,
    locked_until     INTEGER,
    age_from         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    delivered_at     INTEGER,
    request          TEXT NOT NULL
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_at);
CREATE INDEX outbox_connector ON outbox (connector_id, status);
CREATE INDEX outbox_created ON outbox (created_at DESC, id DESC);
