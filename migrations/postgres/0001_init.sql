-- utc-gateway schema (PostgreSQL). The same tables, keys and indexes as
-- migrations/sqlite: times are BIGINT milliseconds since the Unix epoch; ids are
-- lowercase hyphenated UUID text, COLLATE "C" so that they sort (and page) byte by
-- byte as on SQLite whatever the database's collation; JSON columns are TEXT (the JSON
-- text as written, so a row reads back exactly as on SQLite); flags are BOOLEAN.

-- ASCII-only case folding: what SQLite's NOCASE collation and LIKE do, so lookups and
-- prefix searches match the same rows on both stores.
CREATE FUNCTION utc_ascii_lower(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT translate(t, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') $$;

-- RFC 7396 JSON merge patch: what SQLite's json_patch does (merging call-log data).
CREATE FUNCTION utc_json_patch(target jsonb, patch jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE
    AS $$
DECLARE
    k text;
    v jsonb;
    merged jsonb;
BEGIN
    IF patch IS NULL OR jsonb_typeof(patch) <> 'object' THEN
        RETURN patch;
    END IF;
    merged := CASE WHEN jsonb_typeof(target) = 'object' THEN target ELSE '{}'::jsonb END;
    FOR k, v IN SELECT * FROM jsonb_each(patch) LOOP
        IF jsonb_typeof(v) = 'null' THEN
            merged := merged - k;
        ELSE
            merged := merged || jsonb_build_object(k, utc_json_patch(merged -> k, v));
        END IF;
    END LOOP;
    RETURN merged;
END
$$;

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE connectors (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    access_key  TEXT NOT NULL UNIQUE,
    secret_key  TEXT NOT NULL,
    settings    TEXT NOT NULL,
    is_default  BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- insertion order (SQLite's rowid): the tie-break of "oldest first"
    ord         BIGINT GENERATED ALWAYS AS IDENTITY
);
-- at most one default connector
CREATE UNIQUE INDEX connectors_default ON connectors (is_default) WHERE is_default;

CREATE TABLE virtual_numbers (
    id            TEXT COLLATE "C" PRIMARY KEY,
    connector_id  TEXT COLLATE "C" NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    number        TEXT NOT NULL UNIQUE,
    tag           TEXT,
    created_at    BIGINT NOT NULL,
    ord           BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX virtual_numbers_connector ON virtual_numbers (connector_id, created_at);

CREATE TABLE teams (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE team_connectors (
    team_id       TEXT COLLATE "C" NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    connector_id  TEXT COLLATE "C" NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, connector_id)
);
CREATE INDEX team_connectors_connector ON team_connectors (connector_id);

CREATE TABLE users (
    id                  TEXT COLLATE "C" PRIMARY KEY,
    name                TEXT NOT NULL,
    email               TEXT NOT NULL,
    email_lower         TEXT NOT NULL UNIQUE,
    group_ids           TEXT NOT NULL DEFAULT '[]',
    role                TEXT NOT NULL,
    active              BOOLEAN NOT NULL DEFAULT TRUE,
    provider_agent_ids  TEXT NOT NULL DEFAULT '{}',
    seq                 BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL
);

-- each number or extension is held by at most one user
CREATE TABLE user_numbers (
    number    TEXT PRIMARY KEY,
    user_id   TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position  BIGINT NOT NULL
);
CREATE INDEX user_numbers_user ON user_numbers (user_id, position);

CREATE TABLE team_members (
    team_id  TEXT COLLATE "C" NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id  TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE leads (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    first_name         TEXT,
    last_name          TEXT,
    email              TEXT,
    phone              TEXT,
    mobile             TEXT,
    secondary_numbers  TEXT NOT NULL DEFAULT '[]',
    owner_id           TEXT COLLATE "C" REFERENCES users (id) ON DELETE SET NULL,
    source             TEXT,
    origin             TEXT,
    stage              TEXT,
    fields             TEXT NOT NULL DEFAULT '{}',
    external_id        TEXT COLLATE "C" UNIQUE,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);
CREATE INDEX leads_created ON leads (created_at DESC, id DESC);
-- text_pattern_ops: usable for equality and for LIKE 'prefix%'
CREATE INDEX leads_first_name ON leads (utc_ascii_lower(first_name) text_pattern_ops);
CREATE INDEX leads_last_name ON leads (utc_ascii_lower(last_name) text_pattern_ops);
CREATE INDEX leads_email ON leads (utc_ascii_lower(email) text_pattern_ops);

-- every number of every lead (phone, mobile, secondary), E.164
CREATE TABLE lead_numbers (
    number   TEXT NOT NULL,
    lead_id  TEXT COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    PRIMARY KEY (number, lead_id)
);
CREATE INDEX lead_numbers_lead ON lead_numbers (lead_id);

CREATE TABLE opportunities (
    id          TEXT COLLATE "C" PRIMARY KEY,
    lead_id     TEXT COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    owner_id    TEXT COLLATE "C" REFERENCES users (id) ON DELETE SET NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX opportunities_lead ON opportunities (lead_id, updated_at DESC);

CREATE TABLE activities (
    id               TEXT COLLATE "C" PRIMARY KEY,
    kind             TEXT NOT NULL,
    lead_id          TEXT COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    opportunity_id   TEXT COLLATE "C",
    user_id          TEXT COLLATE "C",
    connector_id     TEXT COLLATE "C",
    call_session_id  TEXT COLLATE "C",
    status           TEXT,
    started_at       BIGINT,
    ended_at         BIGINT,
    duration_secs    BIGINT,
    recording_url    TEXT,
    notes            TEXT,
    data             TEXT NOT NULL DEFAULT '{}',
    created_at       BIGINT NOT NULL
);
CREATE INDEX activities_lead ON activities (lead_id, created_at DESC, id DESC);
CREATE INDEX activities_created ON activities (created_at DESC, id DESC);
-- one call activity per connector + call session
CREATE UNIQUE INDEX activities_call_session ON activities (connector_id, call_session_id)
    WHERE kind IN ('inbound_call', 'outbound_call') AND call_session_id IS NOT NULL;

CREATE TABLE popups (
    id               TEXT COLLATE "C" PRIMARY KEY,
    connector_id     TEXT COLLATE "C" NOT NULL,
    call_session_id  TEXT COLLATE "C" NOT NULL,
    user_id          TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lead_id          TEXT COLLATE "C" NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    candidate_ids    TEXT NOT NULL DEFAULT '[]',
    new_lead         BOOLEAN NOT NULL DEFAULT FALSE,
    opportunity_id   TEXT COLLATE "C",
    direction        TEXT NOT NULL,
    lead_number      TEXT,
    agent_number     TEXT,
    virtual_number   TEXT,
    tag              TEXT,
    state            TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE (connector_id, call_session_id, user_id)
);
CREATE INDEX popups_user_state ON popups (user_id, state, created_at);
CREATE INDEX popups_state_created ON popups (state, created_at);

-- events sent to a user's sockets, kept for replay (SPEC 3)
CREATE TABLE events (
    user_id     TEXT COLLATE "C" NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    popup_id    TEXT COLLATE "C",
    payload     TEXT,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE telephony_logs (
    id               TEXT COLLATE "C" PRIMARY KEY,
    at               BIGINT NOT NULL,
    connector_id     TEXT COLLATE "C",
    endpoint         TEXT NOT NULL,
    http_status      BIGINT NOT NULL,
    outcome          TEXT NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    call_session_id  TEXT COLLATE "C",
    latency_us       BIGINT NOT NULL,
    request          TEXT NOT NULL
);
CREATE INDEX telephony_logs_at ON telephony_logs (at DESC, id DESC);
