//! The spend spool: spend batches the database could not take, kept on disk until it can.
//! Called from the management runtime's spend writer (a failed write), at shutdown (whatever
//! is still queued when the database is down), and by the database health check, which writes
//! the spool back before it reports the database up again, on this instance or the next one
//! started with the same directory.
//!
//! One JSON file per batch, written to a temporary name, synced and renamed, so a crash leaves
//! either the whole batch or none of it. Each batch has an id that its database write records
//! in `sluice_spend_batches` in the same transaction: a batch whose write committed although
//! its answer was lost, or a file whose write committed but that was not removed yet (a crash
//! in between), is skipped when it is written again, never booked twice.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::spend::{Batch, SpendEntry, SpooledColumns};
use super::store::Kind;

/// A batch as it is stored in the spool.
#[derive(Serialize, Deserialize)]
struct StoredBatch {
    id: String,
    /// `(kind, id, amount)`.
    deltas: Vec<(String, String, f64)>,
    logs: Vec<StoredRow>,
}

/// A spend-log row with every column it will be written with.
#[derive(Serialize, Deserialize)]
struct StoredRow {
    request_id: String,
    call_type: String,
    spend: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    start_time: i64,
    end_time: i64,
    completion_start_time: Option<i64>,
    end_user: Option<String>,
    requester_ip_address: String,
    success: bool,
    #[serde(default)]
    cache_hit: bool,
    #[serde(flatten)]
    owners: SpooledColumns,
}

/// The spool directory.
pub struct SpendSpool {
    dir: PathBuf,
    /// Files in the spool as this process knows them (it is the only writer of its files;
    /// another instance's files found at start-up are counted then).
    files: AtomicUsize,
}

impl SpendSpool {
    /// Opens (creating) the directory and counts the batches waiting in it.
    pub fn open(dir: &Path) -> std::io::Result<SpendSpool> {
        std::fs::create_dir_all(dir)?;
        let spool = SpendSpool {
            dir: dir.to_path_buf(),
            files: AtomicUsize::new(0),
        };
        let waiting = spool.waiting()?.len();
        spool.files.store(waiting, Ordering::Relaxed);
        Ok(spool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether batches are waiting to be written.
    pub fn has_waiting(&self) -> bool {
        self.files.load(Ordering::Relaxed) > 0
    }

    /// Stores a batch durably (synced to disk before this returns).
    pub fn save(&self, batch: &Batch, master_key_hash: &str) -> std::io::Result<()> {
        let id = batch
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string());
        let stored = StoredBatch {
            id: id.clone(),
            deltas: batch
                .deltas
                .iter()
                .map(|(k, id, d)| (k.as_str().to_string(), id.clone(), *d))
                .collect(),
            logs: batch
                .logs
                .iter()
                .map(|l| stored_row(l, master_key_hash))
                .collect(),
        };
        let json = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        // Named by the id (UUIDv7: time-ordered), so files read back oldest first.
        let path = self.dir.join(format!("{id}.json"));
        let partial = self.dir.join(format!(".{id}.partial"));
        {
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&partial, &path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(&self.dir)?.sync_all()?;
        self.files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The waiting batches' files, oldest first.
    pub fn waiting(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Reads one waiting batch back (with its id set).
    pub fn load(path: &Path) -> std::io::Result<Batch> {
        let bytes = std::fs::read(path)?;
        let stored: StoredBatch = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        Ok(Batch {
            id: Some(stored.id),
            deltas: stored
                .deltas
                .into_iter()
                .filter_map(|(k, id, d)| Some((Kind::parse(&k)?, id, d)))
                .collect(),
            logs: stored.logs.into_iter().map(entry_of).collect(),
        })
    }

    /// Drops a batch that was written.
    pub fn remove(&self, path: &Path) {
        match std::fs::remove_file(path) {
            Ok(()) => {
                let _ = self
                    .files
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
            }
            // Another instance sharing the directory wrote and removed it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::error!(
                "a written spend batch could not be removed from the spool ({}): {e}; it will be skipped when read again",
                path.display()
            ),
        }
    }

    /// Counts the waiting files again (after a replay, which may have met files another
    /// instance added).
    pub fn recount(&self) {
        if let Ok(files) = self.waiting() {
            self.files.store(files.len(), Ordering::Relaxed);
        }
    }
}

fn stored_row(l: &SpendEntry, master_key_hash: &str) -> StoredRow {
    let deployment = l.deployment_columns().map(str::to_string);
    StoredRow {
        request_id: l.request_id.clone(),
        call_type: l.call_type.to_string(),
        spend: l.spend,
        prompt_tokens: l.prompt_tokens,
        completion_tokens: l.completion_tokens,
        total_tokens: l.total_tokens,
        start_time: l.start_time,
        end_time: l.end_time,
        completion_start_time: l.completion_start_time,
        end_user: l.end_user.clone(),
        requester_ip_address: l.requester_ip_address.clone(),
        success: l.success,
        cache_hit: l.cache_hit,
        owners: SpooledColumns {
            api_key: l.api_key(master_key_hash).to_string(),
            user_id: l.user_id().map(str::to_string),
            team_id: l.team_id().map(str::to_string),
            metadata: l.metadata().to_string(),
            deployment,
        },
    }
}

/// The call types Sluice writes (`Endpoint::call_type`); a row is stored with its own text.
fn call_type_of(text: &str) -> &'static str {
    match text {
        "anthropic_messages" => "anthropic_messages",
        "atext_completion" => "atext_completion",
        "aembedding" => "aembedding",
        "aresponses" => "aresponses",
        "aget_responses" => "aget_responses",
        "alist_input_items" => "alist_input_items",
        "aimage_generation" => "aimage_generation",
        "aspeech" => "aspeech",
        "atranscription" => "atranscription",
        "amoderation" => "amoderation",
        "arerank" => "arerank",
        "" => "",
        _ => "acompletion",
    }
}

fn entry_of(r: StoredRow) -> SpendEntry {
    SpendEntry {
        request_id: r.request_id,
        call_type: call_type_of(&r.call_type),
        key: None,
        deployment: None,
        spend: r.spend,
        prompt_tokens: r.prompt_tokens,
        completion_tokens: r.completion_tokens,
        total_tokens: r.total_tokens,
        start_time: r.start_time,
        end_time: r.end_time,
        completion_start_time: r.completion_start_time,
        end_user: r.end_user,
        requester_ip_address: r.requester_ip_address,
        success: r.success,
        cache_hit: r.cache_hit,
        routed_metadata: None,
        spooled: Some(Box::new(r.owners)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        std::env::temp_dir().join(format!(
            "sluice-spool-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ))
    }

    /// A batch comes back from the spool with every column it was stored with, the master
    /// key's hash for master-key rows, and an id; removing it empties the spool.
    #[test]
    fn a_spooled_batch_reads_back_whole() {
        let dir = scratch();
        let spool = SpendSpool::open(&dir).unwrap();
        assert!(!spool.has_waiting());
        let batch = Batch {
            id: None,
            deltas: vec![
                (Kind::Key, "k1".into(), 0.25),
                (Kind::EndUser, "u".into(), 1.5),
            ],
            logs: vec![SpendEntry {
                request_id: "r1".into(),
                call_type: "aembedding",
                spend: 0.25,
                prompt_tokens: 3,
                completion_tokens: 0,
                total_tokens: 3,
                start_time: 10,
                end_time: 20,
                completion_start_time: Some(15),
                end_user: Some("u".into()),
                requester_ip_address: "10.0.0.1".into(),
                success: true,
                cache_hit: true,
                ..SpendEntry::default()
            }],
        };
        spool.save(&batch, "master-hash").unwrap();
        spool.save(&Batch::default(), "master-hash").unwrap();
        assert!(spool.has_waiting());
        let files = spool.waiting().unwrap();
        assert_eq!(files.len(), 2);
        // Opened again (the next process): it counts what waits.
        assert!(SpendSpool::open(&dir).unwrap().has_waiting());
        let back = SpendSpool::load(&files[0]).unwrap();
        assert!(back.id.as_deref().is_some_and(|id| id.len() == 32));
        assert_eq!(back.deltas, batch.deltas);
        let row = &back.logs[0];
        assert_eq!(row.request_id, "r1");
        assert_eq!(row.call_type, "aembedding");
        assert!(row.cache_hit);
        assert_eq!(row.api_key("other"), "master-hash");
        assert_eq!(row.end_user.as_deref(), Some("u"));
        assert_eq!(row.completion_start_time, Some(15));
        assert_eq!(row.metadata(), "{}");
        assert_eq!(row.deployment_columns(), [""; 5]);
        for f in &files {
            spool.remove(f);
        }
        assert!(!spool.has_waiting());
        assert!(spool.waiting().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }
}
