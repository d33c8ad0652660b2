//! The management database: keys, teams, users, end users and budgets as rows of one table,
//! spend logs, and the change feed, through one sqlx `Any` pool (PostgreSQL when a
//! `database_url` is set, otherwise an embedded SQLite file). Never called on the request path
//! except when a key is not in the cache yet.

use std::time::Duration;

use serde_json::{Map, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row as _};

use std::sync::Arc;

use super::spend::Batch;
use super::sqlite_writer::SqliteSpendWriter;

/// Which engine the pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Kinds of management objects (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Key,
    Team,
    User,
    EndUser,
    Budget,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Key => "key",
            Kind::Team => "team",
            Kind::User => "user",
            Kind::EndUser => "end_user",
            Kind::Budget => "budget",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "key" => Kind::Key,
            "team" => Kind::Team,
            "user" => Kind::User,
            "end_user" => Kind::EndUser,
            "budget" => Kind::Budget,
            _ => return None,
        })
    }
}

/// One stored object.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Object {
    pub id: String,
    pub alias: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub spend: f64,
    pub budget_reset_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Everything else LiteLLM's object carries.
    pub data: Map<String, Value>,
}

/// A request's row in `sluice_spend_logs`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SpendLog {
    pub request_id: String,
    pub call_type: String,
    pub api_key: String,
    pub spend: f64,
    pub total_tokens: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub start_time: i64,
    pub end_time: i64,
    pub completion_start_time: Option<i64>,
    pub model: String,
    pub model_id: String,
    pub model_group: String,
    pub custom_llm_provider: String,
    pub api_base: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub end_user: Option<String>,
    pub metadata: String,
    pub cache_hit: String,
    pub request_tags: String,
    pub requester_ip_address: String,
    pub status: String,
}

/// Filters of `/spend/logs`.
#[derive(Debug, Default)]
pub struct SpendQuery {
    pub request_id: Option<String>,
    pub api_key: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    pub limit: i64,
}

/// Filters of the list endpoints.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub alias: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an object with this {0} already exists")]
    Conflict(&'static str),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Sqlite(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// The nullable text filters of [`Store::list`].
const TEXT_2_TO_4: &[(u8, &str)] = &[(2, "text"), (3, "text"), (4, "text")];

const OBJECT_COLUMNS: &str =
    "id, alias, user_id, team_id, spend, budget_reset_at, created_at, updated_at, data";

/// Adds to an owner's spend: `$1` delta, `$2` kind, `$3` id. (Shared with the SQLite spend
/// writer: SQLite numbers `$N` parameters in order of appearance, so they appear in order.)
pub(super) const ADD_SPEND_SQL: &str =
    "UPDATE sluice_objects SET spend = spend + $1 WHERE kind = $2 AND id = $3";

/// As LiteLLM, an end user (the request's `user`) is created by its first spend, so
/// `/customer/info` and `/customer/list` show what every caller spent: `$1` kind, `$2` id,
/// `$3` delta, `$4` now.
pub(super) const UPSERT_END_USER_SQL: &str = "INSERT INTO sluice_objects (kind, id, spend, created_at, updated_at, data) \
     VALUES ($1, $2, $3, $4, $4, '{\"blocked\":false}') \
     ON CONFLICT (kind, id) DO UPDATE SET spend = sluice_objects.spend + excluded.spend";

/// The columns of a spend-log insert, in the order both writers bind them.
/// Records a spend batch as written; no row when it was written before.
pub(super) const RECORD_BATCH_SQL: &str =
    "INSERT INTO sluice_spend_batches (id, applied_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";

pub(super) const SPEND_LOG_COLUMNS: &str = "request_id, call_type, api_key, spend, total_tokens, prompt_tokens, completion_tokens, start_time, end_time, completion_start_time, model, model_id, model_group, custom_llm_provider, api_base, user_id, team_id, end_user, metadata, cache_hit, request_tags, requester_ip_address, status";

/// The pool and what it talks to.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
    /// Spend batches of a SQLite file store go through rusqlite (see `sqlite_writer`).
    spend_writer: Option<Arc<SqliteSpendWriter>>,
}

impl Store {
    /// Connects (lazily: a database that is down at start-up is retried on use).
    pub fn connect(url: &str, pool_size: u32, timeout: Duration) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            anyhow::bail!("database_url must be a postgres:// or sqlite: URL");
        };
        let options = AnyPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(timeout)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Concurrent readers beside the batch writer; wait instead of failing
                        // when another connection holds the write lock.
                        sqlx::query("PRAGMA journal_mode=WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout=10000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            });
        let pool = options.connect_lazy(url)?;
        let spend_writer = match backend {
            Backend::Sqlite => SqliteSpendWriter::for_url(url).map(Arc::new),
            Backend::Postgres => None,
        };
        Ok(Store {
            pool,
            backend,
            spend_writer,
        })
    }

    /// Applies the migrations in `migrations/<engine>/`.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.backend {
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn get(&self, kind: Kind, id: &str) -> Result<Option<Object>> {
        let sql =
            format!("SELECT {OBJECT_COLUMNS} FROM sluice_objects WHERE kind = $1 AND id = $2");
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| object_of(&r)).transpose()
    }

    pub async fn get_by_alias(&self, kind: Kind, alias: &str) -> Result<Option<Object>> {
        let sql =
            format!("SELECT {OBJECT_COLUMNS} FROM sluice_objects WHERE kind = $1 AND alias = $2");
        let row = sqlx::query(&sql)
            .bind(kind.as_str())
            .bind(alias)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| object_of(&r)).transpose()
    }

    /// Inserts a new object; `Conflict` when its id or alias is taken (the unique indexes
    /// decide, atomically).
    pub async fn insert(&self, kind: Kind, o: &Object) -> Result<()> {
        let data = Value::Object(o.data.clone()).to_string();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sluice_objects (kind, id, alias, user_id, team_id, spend, budget_reset_at, created_at, updated_at, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(kind.as_str())
        .bind(&o.id)
        .bind(&o.alias)
        .bind(&o.user_id)
        .bind(&o.team_id)
        .bind(o.spend)
        .bind(o.budget_reset_at)
        .bind(o.created_at)
        .bind(o.updated_at)
        .bind(data)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict("id or alias"));
            }
            Err(e) => return Err(e.into()),
        }
        record_change(&mut tx, kind, &o.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Rewrites an object's columns and data (spend too when `with_spend`).
    pub async fn update(&self, kind: Kind, o: &Object, with_spend: bool) -> Result<()> {
        let data = Value::Object(o.data.clone()).to_string();
        let mut tx = self.pool.begin().await?;
        let sql = if with_spend {
            "UPDATE sluice_objects SET alias = $3, user_id = $4, team_id = $5, budget_reset_at = $6, updated_at = $7, data = $8, spend = $9 WHERE kind = $1 AND id = $2"
        } else {
            "UPDATE sluice_objects SET alias = $3, user_id = $4, team_id = $5, budget_reset_at = $6, updated_at = $7, data = $8 WHERE kind = $1 AND id = $2"
        };
        let mut q = sqlx::query(sql)
            .bind(kind.as_str())
            .bind(&o.id)
            .bind(&o.alias)
            .bind(&o.user_id)
            .bind(&o.team_id)
            .bind(o.budget_reset_at)
            .bind(o.updated_at)
            .bind(data);
        if with_spend {
            q = q.bind(o.spend);
        }
        match q.execute(&mut *tx).await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict("alias"));
            }
            Err(e) => return Err(e.into()),
        }
        record_change(&mut tx, kind, &o.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves an object to a new id (a regenerated key), keeping its spend, in one transaction.
    pub async fn rekey(&self, kind: Kind, old_id: &str, o: &Object) -> Result<()> {
        let data = Value::Object(o.data.clone()).to_string();
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE sluice_objects SET id = $3, updated_at = $4, data = $5, budget_reset_at = $6 WHERE kind = $1 AND id = $2",
        )
        .bind(kind.as_str())
        .bind(old_id)
        .bind(&o.id)
        .bind(o.updated_at)
        .bind(data)
        .bind(o.budget_reset_at)
        .execute(&mut *tx)
        .await;
        match moved {
            Ok(done) if done.rows_affected() == 1 => {}
            Ok(_) => return Err(StoreError::Corrupt("the key disappeared".into())),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Conflict("id"));
            }
            Err(e) => return Err(e.into()),
        }
        record_change(&mut tx, kind, old_id).await?;
        record_change(&mut tx, kind, &o.id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes objects; returns the ids that existed.
    pub async fn delete(&self, kind: Kind, ids: &[String]) -> Result<Vec<String>> {
        let mut deleted = Vec::new();
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let done = sqlx::query("DELETE FROM sluice_objects WHERE kind = $1 AND id = $2")
                .bind(kind.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() > 0 {
                record_change(&mut tx, kind, id).await?;
                deleted.push(id.clone());
            }
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Objects of a kind, newest first, with the total count before paging.
    pub async fn list(&self, kind: Kind, q: &ListQuery) -> Result<(Vec<Object>, i64)> {
        let filter = "kind = $1 AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR team_id = $3) AND ($4 IS NULL OR alias = $4)";
        let (user, team, alias) = (q.user_id.clone(), q.team_id.clone(), q.alias.clone());
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM sluice_objects WHERE {}",
            self.typed(filter, TEXT_2_TO_4)
        ))
        .bind(kind.as_str())
        .bind(user.clone())
        .bind(team.clone())
        .bind(alias.clone())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(&format!(
            "SELECT {OBJECT_COLUMNS} FROM sluice_objects WHERE {} ORDER BY created_at DESC, id LIMIT $5 OFFSET $6",
            self.typed(filter, TEXT_2_TO_4)
        ))
        .bind(kind.as_str())
        .bind(user)
        .bind(team)
        .bind(alias)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?;
        let objects = rows.iter().map(object_of).collect::<Result<Vec<_>>>()?;
        Ok((objects, total))
    }

    /// PostgreSQL cannot infer the type of a parameter that is only compared with NULL: cast
    /// each `$n IS NULL` of `params` to its type there.
    fn typed(&self, sql: &str, params: &[(u8, &str)]) -> String {
        let mut sql = sql.to_string();
        if self.backend == Backend::Postgres {
            for (n, ty) in params {
                sql = sql.replace(&format!("${n} IS NULL"), &format!("${n}::{ty} IS NULL"));
            }
        }
        sql
    }

    /// Sets an object's spend (admin reset) without touching the rest.
    pub async fn set_spend(&self, kind: Kind, id: &str, spend: f64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE sluice_objects SET spend = $3 WHERE kind = $1 AND id = $2")
            .bind(kind.as_str())
            .bind(id)
            .bind(spend)
            .execute(&mut *tx)
            .await?;
        record_change(&mut tx, kind, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes one batch: spend increments and spend-log rows, in one transaction.
    pub async fn write_spend(&self, batch: Arc<Batch>, master_key_hash: &str) -> Result<()> {
        if let Some(writer) = &self.spend_writer {
            return writer
                .write(batch, master_key_hash, crate::clock::now_ms())
                .await
                .map_err(StoreError::Sqlite);
        }
        let (deltas, logs) = (&batch.deltas, &batch.logs);
        // Rows are updated in one order on every instance, so two instances' batches cannot
        // deadlock on each other's row locks.
        let mut ordered: Vec<&(Kind, String, f64)> = deltas.iter().collect();
        ordered.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        let mut tx = self.pool.begin().await?;
        let now = crate::clock::now_ms();
        if let Some(batch_id) = &batch.id {
            let first = sqlx::query(RECORD_BATCH_SQL)
                .bind(batch_id.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if first.rows_affected() == 0 {
                // Written before (a replay interrupted after its commit).
                return Ok(());
            }
        }
        for (kind, id, delta) in ordered {
            if *kind == Kind::EndUser {
                sqlx::query(UPSERT_END_USER_SQL)
                    .bind(kind.as_str())
                    .bind(id.as_str())
                    .bind(*delta)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(ADD_SPEND_SQL)
                    .bind(*delta)
                    .bind(kind.as_str())
                    .bind(id.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // 200 rows per INSERT. On SQLite the placeholders are anonymous `?`: sqlx asks SQLite
        // for every parameter's name, a linear search through the statement's named
        // parameters, which made `$N` placeholders cost quadratically in the row count.
        let rows_per_insert = 200;
        let anonymous = self.backend == Backend::Sqlite;
        for chunk in logs.chunks(rows_per_insert) {
            let mut sql = format!("INSERT INTO sluice_spend_logs ({SPEND_LOG_COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..23 {
                    if c > 0 {
                        sql.push(',');
                    }
                    if anonymous {
                        sql.push('?');
                    } else {
                        sql.push_str(&format!("${}", i * 23 + c + 1));
                    }
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for l in chunk {
                let [model, model_id, model_group, provider, api_base] = l.deployment_columns();
                let api_key = l.api_key(master_key_hash);
                q = q
                    .bind(l.request_id.as_str())
                    .bind(l.call_type)
                    .bind(api_key)
                    .bind(l.spend)
                    .bind(l.total_tokens as i64)
                    .bind(l.prompt_tokens as i64)
                    .bind(l.completion_tokens as i64)
                    .bind(l.start_time)
                    .bind(l.end_time)
                    .bind(l.completion_start_time)
                    .bind(model)
                    .bind(model_id)
                    .bind(model_group)
                    .bind(provider)
                    .bind(api_base)
                    .bind(l.user_id())
                    .bind(l.team_id())
                    .bind(l.end_user.as_deref())
                    .bind(l.metadata())
                    .bind(l.cache_hit_text())
                    .bind("[]")
                    .bind(l.requester_ip_address.as_str())
                    .bind(l.status());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn spend_logs(&self, q: &SpendQuery) -> Result<Vec<SpendLog>> {
        let filter = "($1 IS NULL OR request_id = $1) AND ($2 IS NULL OR api_key = $2) AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR team_id = $4) AND ($5 IS NULL OR start_time >= $5) AND ($6 IS NULL OR start_time < $6)";
        let filter = self.typed(
            filter,
            &[
                (1, "text"),
                (2, "text"),
                (3, "text"),
                (4, "text"),
                (5, "bigint"),
                (6, "bigint"),
            ],
        );
        let rows = sqlx::query(&format!(
            "SELECT * FROM sluice_spend_logs WHERE {filter} ORDER BY start_time DESC LIMIT $7"
        ))
        .bind(q.request_id.clone())
        .bind(q.api_key.clone())
        .bind(q.user_id.clone())
        .bind(q.team_id.clone())
        .bind(q.start_ms)
        .bind(q.end_ms)
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(spend_log_of).collect()
    }

    /// Spend per day (Unix days), key, user and model, for `/spend/logs` with a date range.
    pub async fn spend_by_day(
        &self,
        q: &SpendQuery,
    ) -> Result<Vec<(i64, String, Option<String>, String, f64)>> {
        let filter = "($1 IS NULL OR api_key = $1) AND ($2 IS NULL OR user_id = $2) AND ($3 IS NULL OR team_id = $3) AND start_time >= $4 AND start_time < $5";
        let filter = self.typed(filter, &[(1, "text"), (2, "text"), (3, "text")]);
        let rows = sqlx::query(&format!(
            "SELECT start_time / 86400000 AS day, api_key, user_id, model, SUM(spend) AS spend \
             FROM sluice_spend_logs WHERE {filter} GROUP BY start_time / 86400000, api_key, user_id, model \
             ORDER BY day"
        ))
        .bind(q.api_key.clone())
        .bind(q.user_id.clone())
        .bind(q.team_id.clone())
        .bind(q.start_ms.unwrap_or(0))
        .bind(q.end_ms.unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("day")?,
                    r.try_get("api_key")?,
                    r.try_get("user_id")?,
                    r.try_get("model")?,
                    r.try_get("spend")?,
                ))
            })
            .collect()
    }

    /// Total spend of the spend-log rows started at or after `since_ms`.
    pub async fn total_spend(&self, since_ms: i64) -> Result<f64> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(spend), 0.0) AS s FROM sluice_spend_logs WHERE start_time >= $1",
        )
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<f64, _>("s")?)
    }

    /// Spend per day, group and model group between two times: `(day (Unix days), group,
    /// model, spend, tokens)`. `group_by` is `team`, `customer` or `api_key`.
    pub async fn spend_report(
        &self,
        start_ms: i64,
        end_ms: i64,
        group_by: &str,
    ) -> Result<Vec<(i64, String, String, f64, i64)>> {
        let column = match group_by {
            "customer" => "end_user",
            "api_key" => "api_key",
            _ => "team_id",
        };
        let sql = format!(
            "SELECT start_time / 86400000 AS day, COALESCE({column}, '') AS grp, model_group AS model, \
             SUM(spend) AS spend, CAST(SUM(total_tokens) AS BIGINT) AS tokens \
             FROM sluice_spend_logs WHERE start_time >= $1 AND start_time < $2 \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        );
        let rows = sqlx::query(&sql)
            .bind(start_ms)
            .bind(end_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("day")?,
                    r.try_get("grp")?,
                    r.try_get("model")?,
                    r.try_get("spend")?,
                    r.try_get("tokens")?,
                ))
            })
            .collect()
    }

    /// The change feed after `seq`: `(seq, kind, id)`.
    pub async fn changes_since(
        &self,
        seq: i64,
        not_before_ms: i64,
    ) -> Result<Vec<(i64, String, String)>> {
        let rows = sqlx::query(
            "SELECT seq, kind, id FROM sluice_changes WHERE seq > $1 AND at >= $2 ORDER BY seq LIMIT 10000",
        )
        .bind(seq)
        .bind(not_before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, r.try_get("kind")?, r.try_get("id")?)))
            .collect()
    }

    /// The newest change numbers of a key, of its team and of its user, in one statement (one
    /// snapshot). Read before the objects themselves, each numbers what its object reflects at
    /// least: changes to one object commit in their numbering order (each takes the object's row
    /// first), so a read after this one sees every change of that object up to its number.
    /// (Across objects there is no such order, hence one number per object.)
    pub async fn key_versions(&self, token: &str) -> Result<[i64; 3]> {
        let row = sqlx::query(
            "SELECT \
             COALESCE((SELECT MAX(seq) FROM sluice_changes WHERE kind = 'key' AND id = $1), 0) AS k, \
             COALESCE((SELECT MAX(seq) FROM sluice_changes WHERE kind = 'team' AND id = \
                (SELECT team_id FROM sluice_objects WHERE kind = 'key' AND id = $1)), 0) AS t, \
             COALESCE((SELECT MAX(seq) FROM sluice_changes WHERE kind = 'user' AND id = \
                (SELECT user_id FROM sluice_objects WHERE kind = 'key' AND id = $1)), 0) AS u",
        )
        .bind(token)
        .fetch_one(&self.pool)
        .await?;
        Ok([
            row.try_get::<i64, _>("k")?,
            row.try_get::<i64, _>("t")?,
            row.try_get::<i64, _>("u")?,
        ])
    }

    /// Drops change-feed rows older than `before_ms` (every instance has read them).
    pub async fn prune_changes(&self, before_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM sluice_changes WHERE at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Drops the record of spend batches written before `before_ms` (a batch is only ever
    /// written again from a spool file, within days).
    pub async fn prune_spend_batches(&self, before_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM sluice_spend_batches WHERE applied_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps a Responses API answer (replacing one of the same id).
    pub async fn insert_response(&self, r: &super::stored_responses::StoredResponse) -> Result<()> {
        let record = serde_json::to_string(r).unwrap_or_default();
        sqlx::query(
            "INSERT INTO sluice_responses (id, owner, created_at, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET owner = excluded.owner, created_at = excluded.created_at, record = excluded.record",
        )
        .bind(&r.id)
        .bind(&r.owner)
        .bind(r.created_at_ms)
        .bind(record)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_response(
        &self,
        id: &str,
    ) -> Result<Option<super::stored_responses::StoredResponse>> {
        let row = sqlx::query("SELECT record FROM sluice_responses WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .and_then(|r| r.try_get::<String, _>("record").ok())
            .and_then(|record| serde_json::from_str(&record).ok()))
    }

    /// Whether a response was deleted.
    pub async fn delete_response(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM sluice_responses WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn prune_responses(&self, before_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM sluice_responses WHERE created_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest change number (where a new instance starts following the feed).
    pub async fn last_change(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS s FROM sluice_changes")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("s")?)
    }

    /// Objects whose budget window has ended.
    pub async fn due_resets(&self, now_ms: i64) -> Result<Vec<(Kind, Object)>> {
        let rows = sqlx::query(&format!(
            "SELECT kind, {OBJECT_COLUMNS} FROM sluice_objects WHERE budget_reset_at IS NOT NULL AND budget_reset_at <= $1 LIMIT 1000"
        ))
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in &rows {
            let kind: String = r.try_get("kind")?;
            if let Some(kind) = Kind::parse(&kind) {
                out.push((kind, object_of(r)?));
            }
        }
        Ok(out)
    }

    /// Zeroes spend and moves the window on, unless another instance already did.
    pub async fn reset_budget(&self, kind: Kind, id: &str, old: i64, next: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE sluice_objects SET spend = 0, budget_reset_at = $4 WHERE kind = $1 AND id = $2 AND budget_reset_at = $3",
        )
        .bind(kind.as_str())
        .bind(id)
        .bind(old)
        .bind(next)
        .execute(&mut *tx)
        .await?;
        let reset = done.rows_affected() > 0;
        if reset {
            record_change(&mut tx, kind, id).await?;
        }
        tx.commit().await?;
        Ok(reset)
    }
}

async fn record_change(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    kind: Kind,
    id: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO sluice_changes (kind, id, at) VALUES ($1, $2, $3)")
        .bind(kind.as_str())
        .bind(id)
        .bind(crate::clock::now_ms())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn object_of(r: &AnyRow) -> Result<Object> {
    let data: String = r.try_get("data")?;
    let data = match serde_json::from_str(&data) {
        Ok(Value::Object(m)) => m,
        _ => return Err(StoreError::Corrupt("data is not a JSON object".into())),
    };
    Ok(Object {
        id: r.try_get("id")?,
        alias: r.try_get("alias")?,
        user_id: r.try_get("user_id")?,
        team_id: r.try_get("team_id")?,
        spend: r.try_get("spend")?,
        budget_reset_at: r.try_get("budget_reset_at")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        data,
    })
}

fn spend_log_of(r: &AnyRow) -> Result<SpendLog> {
    Ok(SpendLog {
        request_id: r.try_get("request_id")?,
        call_type: r.try_get("call_type")?,
        api_key: r.try_get("api_key")?,
        spend: r.try_get("spend")?,
        total_tokens: r.try_get("total_tokens")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
        start_time: r.try_get("start_time")?,
        end_time: r.try_get("end_time")?,
        completion_start_time: r.try_get("completion_start_time")?,
        model: r.try_get("model")?,
        model_id: r.try_get("model_id")?,
        model_group: r.try_get("model_group")?,
        custom_llm_provider: r.try_get("custom_llm_provider")?,
        api_base: r.try_get("api_base")?,
        user_id: r.try_get("user_id")?,
        team_id: r.try_get("team_id")?,
        end_user: r.try_get("end_user")?,
        metadata: r.try_get("metadata")?,
        cache_hit: r.try_get("cache_hit")?,
        request_tags: r.try_get("request_tags")?,
        requester_ip_address: r.try_get("requester_ip_address")?,
        status: r.try_get("status")?,
    })
}
