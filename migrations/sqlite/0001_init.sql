-- utc-gateway schema (SQLite). Times are INTEGER milliseconds since the Unix epoch;
-- ids are lowercase hyphenated UUID text; JSON columns are TEXT.

CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE connectors (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    kind        TEXT NOT NULL,
    access_key  TEXT NOT NULL UNIQUE,
    secret_key  TEXT NOT NULL,
    settings    TEXT NOT NULL,
    is_default  INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
-- at most one default connector
CREATE UNIQUE INDEX connectors_default ON connectors (is_default) WHERE is_default = 1;

CREATE TABLE virtual_numbers (
    id            TEXT PRIMARY KEY,
    connector_id  TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    number        TEXT NOT NULL UNIQUE,
    tag           TEXT,
    created_at    INTEGER NOT NULL
);
CREATE INDEX virtual_numbers_connector ON virtual_numbers (connector_id, created_at);

CREATE TABLE teams (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE team_connectors (
    team_id       TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    connector_id  TEXT NOT NULL REFERENCES connectors (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, connector_id)
);
CREATE INDEX team_connectors_connector ON team_connectors (connector_id);

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    email               TEXT NOT NULL,
    email_lower         TEXT NOT NULL UNIQUE,
    group_ids           TEXT NOT NULL DEFAULT '[]',
    role                TEXT NOT NULL,
    active              INTEGER NOT NULL DEFAULT 1,
    provider_agent_ids  TEXT NOT NULL DEFAULT '{}',
    seq                 INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
);

-- each number or extension is held by at most one user
CREATE TABLE user_numbers (
    number    TEXT PRIMARY KEY,
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    position  INTEGER NOT NULL
);
CREATE INDEX user_numbers_user ON user_numbers (user_id, position);

CREATE TABLE team_members (
    team_id  TEXT NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user ON team_members (user_id);

CREATE TABLE leads (
    id                 TEXT PRIMARY KEY,
    first_name         TEXT,
    last_name          TEXT,
    email              TEXT,
    phone              TEXT,
    mobile             TEXT,
    secondary_numbers  TEXT NOT NULL DEFAULT '[]',
    owner_id           TEXT REFERENCES users (id) ON DELETE SET NULL,
    source             TEXT,
    origin             TEXT,
    stage              TEXT,
    fields             TEXT NOT NULL DEFAULT '{}',
    external_id        TEXT UNIQUE,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
CREATE INDEX leads_created ON leads (created_at DESC, id DESC);
CREATE INDEX leads_first_name ON leads (first_name COLLATE NOCASE);
CREATE INDEX leads_last_name ON leads (last_name COLLATE NOCASE);
CREATE INDEX leads_email ON leads (email COLLATE NOCASE);

-- every number of every lead (phone, mobile, secondary), E.164
CREATE TABLE lead_numbers (
    number   TEXT NOT NULL,
    lead_id  TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    PRIMARY KEY (number, lead_id)
);
CREATE INDEX lead_numbers_lead ON lead_numbers (lead_id);

CREATE TABLE opportunities (
    id          TEXT PRIMARY KEY,
    lead_id     TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    owner_id    TEXT REFERENCES users (id) ON DELETE SET NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX opportunities_lead ON opportunities (lead_id, updated_at DESC);

CREATE TABLE activities (
    id               TEXT PRIMARY KEY,
    kind             TEXT NOT NULL,
    lead_id          TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    opportunity_id   TEXT,
    user_id          TEXT,
    connector_id     TEXT,
    call_session_id  TEXT,
    status           TEXT,
    started_at       INTEGER,
    ended_at         INTEGER,
    duration_secs    INTEGER,
    recording_url    TEXT,
    notes            TEXT,
    data             TEXT NOT NULL DEFAULT '{}',
    created_at       INTEGER NOT NULL
);
CREATE INDEX activities_lead ON activities (lead_id, created_at DESC, id DESC);
CREATE INDEX activities_created ON activities (created_at DESC, id DESC);
-- one call activity per connector + call session
CREATE UNIQUE INDEX activities_call_session ON activities (connector_id, call_session_id)
    WHERE kind IN ('inbound_call', 'outbound_call') AND call_session_id IS NOT NULL;

CREATE TABLE popups (
    id               TEXT PRIMARY KEY,
    connector_id     TEXT NOT NULL,
    call_session_id  TEXT NOT NULL,
    user_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lead_id          TEXT NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    candidate_ids    TEXT NOT NULL DEFAULT '[]',
    new_lead         INTEGER NOT NULL DEFAULT 0,
    opportunity_id   TEXT,
    direction        TEXT NOT NULL,
    lead_number      TEXT,
    agent_number     TEXT,
    virtual_number   TEXT,
    tag              TEXT,
    state            TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (connector_id, call_session_id, user_id)
);
CREATE INDEX popups_user_state ON popups (user_id, state, created_at);
CREATE INDEX popups_state_created ON popups (state, created_at);

-- events sent to a user's sockets, kept for replay (SPEC 3)
CREATE TABLE events (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    popup_id    TEXT,
    payload     TEXT,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX events_created ON events (created_at);

CREATE TABLE telephony_logs (
    id               TEXT PRIMARY KEY,
    at               INTEGER NOT NULL,
    connector_id     TEXT,
    endpoint         TEXT NOT NULL,
    http_status      INTEGER NOT NULL,
    outcome          TEXT NOT NULL,
    error_code       TEXT,
    error_message    TEXT,
    call_session_id  TEXT,
    latency_us       INTEGER NOT NULL,
    request          TEXT NOT NULL
);
CREATE INDEX telephony_logs_at ON telephony_logs (at DESC, id DESC);
