-- A key lookup reads the newest change of the key, its team and its user (the version of the
-- entry it shares through Redis): one index probe per object.
CREATE INDEX IF NOT EXISTS sluice_changes_object ON sluice_changes (kind, id);
