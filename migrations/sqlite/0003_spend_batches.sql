-- Spooled spend batches already written (src/management/spool.rs): a batch read back from the
-- spool is recorded here in the transaction that writes it, so replaying it again (the process
-- stopped between the commit and removing the file) books nothing twice.
CREATE TABLE IF NOT EXISTS sluice_spend_batches (
    id TEXT PRIMARY KEY,
    applied_at BIGINT NOT NULL
);
