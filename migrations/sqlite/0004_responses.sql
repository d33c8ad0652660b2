-- Responses API answers kept for previous_response_id and GET/DELETE /v1/responses/{id}
-- (src/management/stored_responses.rs): the whole record as JSON, its owner (hashed key) and
-- creation time for pruning after the retention period.
CREATE TABLE IF NOT EXISTS sluice_responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sluice_responses_created_at ON sluice_responses (created_at);
