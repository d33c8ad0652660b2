//! The spend writer: the background task that writes queued spend to the database in batches
//! every `proxy_batch_write_at`, keeps a batch the database refused (retried, then spooled to
//! disk), and writes what is pending at exit. Off the request path: `logging` only queues.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Management;
use super::spend::Batch;
use super::spool::SpendSpool;

impl Management {
    pub(super) async fn write_spend_forever(self: Arc<Self>) {
        let every = self.settings.batch_write_interval;
        // A write that has not finished in this time is given up and its batch spooled (its
        // id makes it count once if it committed after all).
        let patience = self.settings.connect_timeout + Duration::from_secs(10);
        loop {
            // Every proxy_batch_write_at, or sooner when many rows are queued (a busy gateway
            // then writes smaller batches instead of holding seconds of rows in memory).
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.spend.full.notified() => {}
            }
            if self.db_up() {
                self.write_spool(patience).await;
            }
            self.flush_spend(patience).await;
        }
    }

    /// Writes what the queue holds, waiting at most `patience`. A batch the database does not
    /// take (it is down, the write failed or took too long) goes to the spool; without one it
    /// is put back in the queue for the next attempt.
    pub async fn flush_spend(&self, patience: Duration) -> bool {
        let _one_writer = self.writing.lock().await;
        let mut all_written = true;
        // Batches held in memory (no spool), each with its own id, then the queue.
        for batch in self.spend.take_held() {
            all_written &= self.write_batch(batch, patience).await;
        }
        let batch = self.spend.take();
        if batch.is_empty() {
            return all_written;
        }
        self.write_batch(batch, patience).await && all_written
    }

    /// Writes one batch, waiting at most `patience`; on failure it is kept (see `keep`).
    async fn write_batch(&self, batch: Batch, patience: Duration) -> bool {
        if !self.db_up() {
            self.keep(batch, "the database is unreachable");
            return false;
        }
        let batch = Arc::new(batch);
        // Visible to a shutdown that cannot wait for this write (see `flush_blocking`).
        *self.writing_batch.lock() = Some(batch.clone());
        let write = self.store.write_spend(batch.clone(), &self.master_key_hash);
        let result = tokio::time::timeout(patience, write).await;
        *self.writing_batch.lock() = None;
        let failure = match result {
            Ok(Ok(())) => return true,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {patience:?}"),
        };
        self.keep(
            Arc::try_unwrap(batch).unwrap_or_else(|b| (*b).clone()),
            &failure,
        );
        false
    }

    /// Keeps a batch the database did not take: in the spool, else in memory, whole.
    fn keep(&self, batch: Batch, why: &str) {
        let rows = batch.logs.len();
        let Some(spool) = &self.spool else {
            tracing::warn!(rows, "writing spend failed, will retry: {why}");
            self.spend.hold(batch);
            return;
        };
        match spool.save(&batch, &self.master_key_hash) {
            Ok(()) => tracing::warn!(
                rows,
                "writing spend failed ({why}); the batch is kept in {} until the database is back",
                spool.dir().display()
            ),
            Err(e) => {
                tracing::error!(
                    rows,
                    "writing spend failed ({why}) and the spend spool {} cannot take it ({e}); kept in memory",
                    spool.dir().display()
                );
                self.spend.hold(batch);
            }
        }
    }

    /// At exit, without waiting for the writer: the batch a write may be stuck on (a
    /// database that stopped answering) and everything queued go to the spool. The stuck
    /// batch's id keeps it from counting twice should that write have committed.
    fn spool_everything(&self, why: &str) {
        let stuck = self.writing_batch.lock().take();
        if let Some(batch) = stuck {
            self.keep((*batch).clone(), why);
        }
        for held in self.spend.take_held() {
            self.keep(held, why);
        }
        let queued = self.spend.take();
        if !queued.is_empty() {
            self.keep(queued, why);
        }
    }

    /// Writes the spooled batches to the database, oldest first; stops at the first that
    /// fails (the rest wait for the next try).
    /// Whether the spool is empty afterwards. Bounded by `patience` (waiting for the writer
    /// included): a database that accepts connections but does not answer cannot hold the
    /// health check or the writer for longer.
    pub(super) async fn write_spool(&self, patience: Duration) -> bool {
        match tokio::time::timeout(patience, self.write_spool_unbounded()).await {
            Ok(done) => done,
            Err(_) => {
                tracing::warn!(
                    "writing spooled spend took more than {patience:?}; will retry (a batch written meanwhile counts once)"
                );
                false
            }
        }
    }

    async fn write_spool_unbounded(&self) -> bool {
        let Some(spool) = &self.spool else {
            return true;
        };
        if !spool.has_waiting() {
            return true;
        }
        let _one_writer = self.writing.lock().await;
        let files = match spool.waiting() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("cannot read the spend spool {}: {e}", spool.dir().display());
                return false;
            }
        };
        let mut failed = false;
        let (mut batches, mut rows) = (0, 0);
        for file in files {
            let batch = match SpendSpool::load(&file) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(
                        "a spooled spend batch cannot be read ({}): {e}; left in place",
                        file.display()
                    );
                    failed = true;
                    continue;
                }
            };
            let n = batch.logs.len();
            match self
                .store
                .write_spend(Arc::new(batch), &self.master_key_hash)
                .await
            {
                Ok(()) => {
                    spool.remove(&file);
                    batches += 1;
                    rows += n;
                }
                Err(e) => {
                    tracing::warn!("writing spooled spend failed, will retry: {e}");
                    failed = true;
                    break;
                }
            }
        }
        spool.recount();
        if batches > 0 {
            tracing::info!(batches, rows, "spooled spend written to the database");
        }
        !failed && !spool.has_waiting()
    }

    /// Writes pending spend before the process exits (SIGTERM), waiting up to `timeout`; what
    /// the database does not take by then is spooled.
    pub fn flush_blocking(self: &Arc<Self>, timeout: Duration) {
        let me = self.clone();
        let written = self.runtime.block_on(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            // Settles in Redis first (bounded), then one write of everything queued.
            let _ = tokio::time::timeout_at(deadline, async {
                while me.pending_settles.load(Ordering::SeqCst) > 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
            if !me.db_up() {
                me.spool_everything("the database is unreachable");
                return false;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let patience = left.max(Duration::from_millis(500));
            match tokio::time::timeout(patience, me.flush_spend(patience)).await {
                Ok(written) => written,
                Err(_) => {
                    me.spool_everything("the database did not answer before exiting");
                    false
                }
            }
        });
        if !written {
            match &self.spool {
                Some(spool) => tracing::warn!(
                    "spend could not be written before exiting; it is kept in {} and written by the next start once the database is reachable",
                    spool.dir().display()
                ),
                None => tracing::error!(
                    "spend could not be written before exiting: the database is unreachable"
                ),
            }
        }
    }
}
