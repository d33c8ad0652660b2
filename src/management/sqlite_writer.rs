//! The embedded SQLite store's spend writer (off the request path: the management runtime's
//! batch writer hands it a batch every `proxy_batch_write_at`).
//!
//! One rusqlite connection beside sqlx's pool, with the spend increments and a prepared
//! single-row spend-log insert in one immediate transaction. A spend-log row per request is
//! the store's hottest write; binding each value once, straight from the queued entry, costs
//! about half of what the generic `Any` driver did. It runs on a thread of its own at a low
//! priority (nice 10), so on a core shared with the proxy it fills the gaps between requests instead of
//! taking the core from them in bursts.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::spend::{Batch, SpendEntry};
use super::store::{ADD_SPEND_SQL, Kind, RECORD_BATCH_SQL, SPEND_LOG_COLUMNS, UPSERT_END_USER_SQL};

/// One batch for the writer thread, and where its result goes.
struct Job {
    batch: Arc<Batch>,
    master_key_hash: String,
    now_ms: i64,
    done: tokio::sync::oneshot::Sender<rusqlite::Result<()>>,
}

pub struct SqliteSpendWriter {
    path: PathBuf,
    /// The writer thread's queue; started with the first batch.
    jobs: parking_lot::Mutex<Option<mpsc::Sender<Job>>>,
}

/// Spend-log rows per `INSERT` statement. One statement per row paid SQLite's per-statement
/// work (cursors opened and closed, the program halted and reset) for every request; with 32
/// rows to a statement the writer runs 21.5k instructions per row instead of 26.9k (callgrind,
/// load benchmark's requests).
const ROWS_PER_INSERT: usize = 32;

/// Parameters bound per row (`request_tags` is a constant of Sluice's rows).
const PARAMS_PER_ROW: usize = 22;

/// An insert of `rows` spend-log rows; a row whose request id is in the table already is
/// skipped (a batch written again after an error).
///
/// `OR IGNORE` rather than `ON CONFLICT (request_id) DO NOTHING`: the two skip the same rows
/// here (every `NOT NULL` column is bound from a Rust value that cannot be null, so the only
/// constraint a row can break is the key), but a statement that may abort halfway makes SQLite
/// copy each page it first touches to a statement journal, a temporary file: 0.7 `pwrite`s per
/// row more (strace, load benchmark at c64) and 3% more instructions.
fn insert_log_sql(rows: usize) -> String {
    let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?, ?)";
    format!(
        "INSERT OR IGNORE INTO sluice_spend_logs ({SPEND_LOG_COLUMNS}) VALUES {}",
        vec![one; rows].join(", ")
    )
}

impl SqliteSpendWriter {
    /// For a `sqlite:` URL naming a file (`sqlite://path?mode=rwc`, `sqlite:path`); `None` for
    /// in-memory databases, which only sqlx's own connection can see.
    pub fn for_url(url: &str) -> Option<SqliteSpendWriter> {
        let rest = url.strip_prefix("sqlite:")?;
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let path = rest.split('?').next().unwrap_or_default();
        if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
            return None;
        }
        Some(SqliteSpendWriter {
            path: PathBuf::from(path),
            jobs: parking_lot::Mutex::new(None),
        })
    }

    /// Writes one batch in one transaction on the writer thread.
    pub async fn write(
        &self,
        batch: Arc<Batch>,
        master_key_hash: &str,
        now_ms: i64,
    ) -> Result<(), String> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job = Job {
            batch,
            master_key_hash: master_key_hash.to_string(),
            now_ms,
            done,
        };
        let stopped = || {
            // Started again by the next batch (this one is put back by the caller).
            *self.jobs.lock() = None;
            "the spend writer thread stopped".to_string()
        };
        if self.queue()?.send(job).is_err() {
            return Err(stopped());
        }
        match result.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(stopped()),
        }
    }

    fn queue(&self) -> Result<mpsc::Sender<Job>, String> {
        let mut jobs = self.jobs.lock();
        if let Some(tx) = jobs.as_ref() {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let path = self.path.clone();
        std::thread::Builder::new()
            .name("sluice-spend-writer".into())
            .spawn(move || run(path, rx))
            .map_err(|e| format!("cannot start the spend writer thread: {e}"))?;
        *jobs = Some(tx.clone());
        Ok(tx)
    }
}

/// The writer thread's priority on thread-priority's 0-99 scale: 22 is nice 10 on Linux. A
/// thread at nice 10 against one at nice 0 gets about a tenth of a saturated core: enough to
/// keep up with a row per request (about 3.5 µs each) at any rate the proxy thread can serve,
/// while it yields to requests otherwise. (At nice 19 it got 1.5% and fell behind under full
/// load.)
const WRITER_PRIORITY: u8 = 22;

/// The writer thread: low priority, one connection (reopened after an error).
fn run(path: PathBuf, jobs: mpsc::Receiver<Job>) {
    let low = thread_priority::ThreadPriorityValue::try_from(WRITER_PRIORITY)
        .map_err(|e| format!("{e:?}"))
        .and_then(|v| {
            thread_priority::set_current_thread_priority(
                thread_priority::ThreadPriority::Crossplatform(v),
            )
            .map_err(|e| format!("{e:?}"))
        });
    if let Err(e) = low {
        tracing::debug!("spend writer keeps its priority: {e}");
    }
    let mut conn: Option<Connection> = None;
    for job in jobs {
        let result = (|| {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => conn.insert(open(&path)?),
            };
            write_batch(
                c,
                job.batch.id.as_deref(),
                &job.batch.deltas,
                &job.batch.logs,
                &job.master_key_hash,
                job.now_ms,
            )
        })();
        if result.is_err() {
            conn = None;
        }
        let _ = job.done.send(result);
    }
}

fn open(path: &std::path::Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The admin API writes through sqlx meanwhile: wait for its lock, as sqlx's pool does.
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(conn)
}

fn write_batch(
    conn: &mut Connection,
    batch_id: Option<&str>,
    deltas: &[(Kind, String, f64)],
    logs: &[SpendEntry],
    master_key_hash: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(id) = batch_id
        && tx.execute(RECORD_BATCH_SQL, params![id, now_ms])? == 0
    {
        // Written before (a write whose answer was lost, spooled and read back).
        return tx.commit();
    }
    {
        let mut add = tx.prepare_cached(ADD_SPEND_SQL)?;
        let mut upsert = tx.prepare_cached(UPSERT_END_USER_SQL)?;
        for (kind, id, delta) in deltas {
            if *kind == Kind::EndUser {
                upsert.execute(params![kind.as_str(), id, delta, now_ms])?;
            } else {
                add.execute(params![delta, kind.as_str(), id])?;
            }
        }
        let mut chunks = logs.chunks_exact(ROWS_PER_INSERT);
        if chunks.len() > 0 {
            let mut insert = tx.prepare_cached(&insert_log_sql(ROWS_PER_INSERT))?;
            for chunk in &mut chunks {
                for (i, l) in chunk.iter().enumerate() {
                    bind_log(&mut insert, i * PARAMS_PER_ROW, l, master_key_hash)?;
                }
                insert.raw_execute()?;
            }
        }
        let mut insert = tx.prepare_cached(&insert_log_sql(1))?;
        for l in chunks.remainder() {
            bind_log(&mut insert, 0, l, master_key_hash)?;
            insert.raw_execute()?;
        }
    }
    tx.commit()
}

/// Binds one row's parameters after the first `offset`.
fn bind_log(
    insert: &mut rusqlite::CachedStatement<'_>,
    offset: usize,
    l: &SpendEntry,
    master_key_hash: &str,
) -> rusqlite::Result<()> {
    let [model, model_id, model_group, provider, api_base] = l.deployment_columns();
    let api_key = l.api_key(master_key_hash);
    let values: [&dyn rusqlite::ToSql; PARAMS_PER_ROW] = [
        &l.request_id,
        &l.call_type,
        &api_key,
        &l.spend,
        &(l.total_tokens as i64),
        &(l.prompt_tokens as i64),
        &(l.completion_tokens as i64),
        &l.start_time,
        &l.end_time,
        &l.completion_start_time,
        &model,
        &model_id,
        &model_group,
        &provider,
        &api_base,
        &l.user_id(),
        &l.team_id(),
        &l.end_user,
        &l.metadata(),
        &l.cache_hit_text(),
        &l.requester_ip_address,
        &l.status(),
    ];
    for (i, v) in values.into_iter().enumerate() {
        insert.raw_bind_parameter(offset + i + 1, v)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_only() {
        assert_eq!(
            SqliteSpendWriter::for_url("sqlite:///tmp/a.db?mode=rwc").map(|w| w.path),
            Some(PathBuf::from("/tmp/a.db"))
        );
        assert_eq!(
            SqliteSpendWriter::for_url("sqlite://sluice.db?mode=rwc").map(|w| w.path),
            Some(PathBuf::from("sluice.db"))
        );
        assert_eq!(
            SqliteSpendWriter::for_url("sqlite:data/s.db").map(|w| w.path),
            Some(PathBuf::from("data/s.db"))
        );
        assert!(SqliteSpendWriter::for_url("sqlite::memory:").is_none());
        assert!(SqliteSpendWriter::for_url("sqlite://x.db?mode=memory").is_none());
        assert!(SqliteSpendWriter::for_url("postgres://h/db").is_none());
    }

    fn entry(i: usize) -> SpendEntry {
        SpendEntry {
            request_id: format!("req-{i}"),
            call_type: "acompletion",
            key: None,
            deployment: None,
            spend: i as f64 / 1000.0,
            prompt_tokens: i as u64,
            completion_tokens: 1,
            total_tokens: i as u64 + 1,
            start_time: 1_000 + i as i64,
            end_time: 2_000 + i as i64,
            completion_start_time: i.is_multiple_of(2).then_some(1_500),
            end_user: i.is_multiple_of(3).then(|| format!("user-{i}")),
            requester_ip_address: "127.0.0.1".into(),
            success: !i.is_multiple_of(5),
            cache_hit: i.is_multiple_of(7),
            routed_metadata: None,
            spooled: None,
        }
    }

    /// Batches are written in statements of `ROWS_PER_INSERT` rows and one-row statements for
    /// the rest: every row lands once with its own values, a repeated request id adds nothing.
    #[test]
    fn batches_of_every_size_write_each_row_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(include_str!("../../migrations/sqlite/0001_management.sql"))
            .unwrap();
        let n = 2 * ROWS_PER_INSERT + 5;
        let mut logs: Vec<SpendEntry> = (0..n).map(entry).collect();
        // A client's reused call id within the batch (in a multi-row statement) and across
        // batches: one row each, the first one's.
        let mut again = entry(7);
        again.spend = 99.0;
        logs.insert(20, again);
        write_batch(&mut conn, None, &[], &logs, "master-hash", 0).unwrap();
        let mut again = entry(n - 1);
        again.spend = 99.0;
        write_batch(&mut conn, None, &[], &[again, entry(n)], "master-hash", 0).unwrap();

        type Row = (
            String,
            f64,
            i64,
            Option<i64>,
            Option<String>,
            String,
            String,
        );
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT request_id, spend, prompt_tokens, completion_start_time, end_user, \
                 api_key, status || '/' || cache_hit FROM sluice_spend_logs ORDER BY start_time",
            )
            .unwrap()
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows.len(), n + 1);
        for (i, row) in rows.iter().enumerate() {
            let e = entry(i);
            assert_eq!(row.0, e.request_id);
            assert_eq!(row.1, e.spend, "{}", row.0);
            assert_eq!(row.2, i as i64);
            assert_eq!(row.3, e.completion_start_time);
            assert_eq!(row.4, e.end_user);
            assert_eq!(row.5, "master-hash");
            assert_eq!(row.6, format!("{}/{}", e.status(), e.cache_hit_text()));
        }
    }
}
