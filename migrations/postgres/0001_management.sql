-- Keys, teams, users, end users and budgets, one row per object: the columns Sluice queries on,
-- and the rest of LiteLLM's object (whatever the admin API was given) as JSON text in `data`.
-- Spend is a column of its own so batched increments are `spend = spend + $delta`.
CREATE TABLE IF NOT EXISTS sluice_objects (
    kind            TEXT NOT NULL,
    id              TEXT NOT NULL,
    alias           TEXT,
    user_id         TEXT,
    team_id         TEXT,
    spend           DOUBLE PRECISION NOT NULL DEFAULT 0,
    budget_reset_at BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    data            TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS sluice_objects_alias ON sluice_objects (kind, alias);
CREATE INDEX IF NOT EXISTS sluice_objects_team ON sluice_objects (kind, team_id);
CREATE INDEX IF NOT EXISTS sluice_objects_user ON sluice_objects (kind, user_id);
CREATE INDEX IF NOT EXISTS sluice_objects_reset ON sluice_objects (budget_reset_at);

-- One row per request (LiteLLM_SpendLogs' columns; times in Unix milliseconds).
CREATE TABLE IF NOT EXISTS sluice_spend_logs (
    request_id            TEXT PRIMARY KEY,
    call_type             TEXT NOT NULL,
    api_key               TEXT NOT NULL,
    spend                 DOUBLE PRECISION NOT NULL,
    total_tokens          BIGINT NOT NULL,
    prompt_tokens         BIGINT NOT NULL,
    completion_tokens     BIGINT NOT NULL,
    start_time            BIGINT NOT NULL,
    end_time              BIGINT NOT NULL,
    completion_start_time BIGINT,
    model                 TEXT NOT NULL,
    model_id              TEXT NOT NULL,
    model_group           TEXT NOT NULL,
    custom_llm_provider   TEXT NOT NULL,
    api_base              TEXT NOT NULL,
    user_id               TEXT,
    team_id               TEXT,
    end_user              TEXT,
    metadata              TEXT NOT NULL,
    cache_hit             TEXT NOT NULL,
    request_tags          TEXT NOT NULL,
    requester_ip_address  TEXT NOT NULL,
    status                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sluice_spend_logs_start ON sluice_spend_logs (start_time);
CREATE INDEX IF NOT EXISTS sluice_spend_logs_key ON sluice_spend_logs (api_key);

-- Every write to sluice_objects appends here; each instance polls it and drops what it cached,
-- so an update, block or delete takes effect everywhere within the poll interval.
CREATE TABLE IF NOT EXISTS sluice_changes (
    seq  BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    at   BIGINT NOT NULL
);
