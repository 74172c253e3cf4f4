-- Click-to-call requests that passed validation (SPEC 5): the rate rule (one per agent
-- and lead within 3 s) and the link from a later outbound popup or call log to the lead.
CREATE TABLE click_to_calls (
    id              TEXT COLLATE "C" PRIMARY KEY,
    user_id         TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lead_id         TEXT COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    number          TEXT NOT NULL,
    opportunity_id  TEXT COLLATE "C",
    connector_id    TEXT COLLATE "C" NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX click_to_calls_user_lead ON click_to_calls (user_id, lead_id, created_at);
CREATE INDEX click_to_calls_user_number ON click_to_calls (user_id, number, created_at);
