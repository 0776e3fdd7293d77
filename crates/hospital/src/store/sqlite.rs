//! The SQLite clinical store: the embedded default behind [`ClinicalStore`].
//!
//! One file, one connection behind a mutex (SQLite has one writer anyway), every call run on
//! tokio's blocking pool so the async callers never block a worker thread.
//!
//! ## Durability
//! The database runs in WAL mode with `synchronous=FULL`: a call that returned `Ok` has been
//! fsynced and survives power loss. Every method that writes more than one row runs in one
//! transaction, so a crash leaves either all of it or none of it.
//!
//! ## Schema
//! Versioned with `PRAGMA user_version`; [`MIGRATIONS`] holds one script per version and
//! [`SqliteStore::open`] applies the missing ones in one transaction. A database written by a
//! newer medkeeper (a higher version than this build knows) is refused rather than guessed at.
//!
//! ```text
//! patients    (id PK, name, birth_date)
//! orders      (id PK, patient, pool_kind 'equipment'|'department', pool_name,
//!              capabilities JSON text, priority, reason, state, assigned,
//!              created_ms, updated_ms)            index (state, created_ms), (patient, created_ms)
//! transitions (id autoincrement PK, order_id → orders, from_state NULL for creation,
//!              to_state, at_ms, actor, unit)       index (order_id)
//! results     (order_id PK → orders, text, at_ms, actor)
//! -- v2
//! tokens      (id PK, hash UNIQUE (hex SHA-256), role, patient, label, created_ms,
//!              revoked_ms NULL while valid)
//! audit       (seq autoincrement PK, at_ms, actor, role, action, patient, order_id,
//!              outcome, detail)                   index (patient, seq), (at_ms)
//! -- v3
//! orders                                          index (updated_ms, id)
//! reconciler  (id PK = 1, checked_until_ms)       one row: the reconciler's watermark
//! -- v4
//! alarm_events (alarm, seq) PK, rule, scope, kind, priority, at_ms, actor, role,
//!              value NULL, note                   index (at_ms)
//! -- v5
//! raw_messages (id autoincrement PK, format, source, received_ms, body)
//! observations (id PK, patient, code, value, effective_ms, received_ms, source,
//!              artefact NULL, raw_id → raw_messages) unique (patient, source, code,
//!              effective_ms)                      index (patient, code, effective_ms)
//! patient_identifiers ((system, value) PK, patient)
//! patient_settings (patient PK, spo2_scale, scale_set_by, scale_set_ms, ward)
//! news2_scores ((patient, at_ms) PK, computed_ms, detail JSON)
//! -- v6
//! tokens      + expires_ms NULL for a token that does not expire
//! -- v7
//! pool_samples ((pool_kind, pool_name, at_ms) PK, units, in_use, unavailable,
//!              <priority>_queued, <priority>_oldest_ms for stat, asap, urgent, routine)
//!                                                 index (at_ms)
//! -- v8
//! tokens      + replaced_by NULL until rotated: the successor's id (a token is rotated once)
//! ```
//!
//! A change and the audit record of the request that made it are written in one transaction
//! (see [`ClinicalStore`]'s "Audit records travel with the change").
//!
//! The SQL is plain enough to run on PostgreSQL, except for what is marked SQLite-only:
//! the pragmas, `INTEGER PRIMARY KEY AUTOINCREMENT` (PostgreSQL: `BIGINT GENERATED ALWAYS AS
//! IDENTITY`) and `BEGIN IMMEDIATE` (PostgreSQL: `BEGIN`; the compare-and-set `UPDATE ...
//! WHERE state = ?` takes the row lock there). Upserts use `INSERT ... ON CONFLICT (..) DO
//! UPDATE`, which both understand.
//!
//! ## Reading back
//! Stored values are parsed with the model's own parsers; anything that does not parse (an
//! unknown state, malformed capabilities JSON, an id that is not one) is
//! [`StoreError::Corrupt`] naming the record, never a panic.
//!
//! ## Cancellation
//! Dropping a call's future does not stop it: the blocking task runs to the end, so a write
//! whose caller went away may still commit — atomically, as a whole or not at all.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::{
    AlarmEvent, AlarmQuery, AuditQuery, AuditRecord, ClinicalStore, ExamResult, News2Record,
    ObservationQuery, POOL_SAMPLES_MAX, Patient, PatientSettings, PoolSample, RawMessage, Revision,
    StoreError, TokenRecord, Waiting, WaitingByPriority,
};
use crate::model::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition};
use crate::news2::SpO2Scale;
use crate::vitals::{Observation, VitalCode};

/// How long a statement waits for another process's lock on the file before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema, one script per version: `MIGRATIONS[i]` takes `user_version` `i` to `i + 1`.
/// Scripts are append-only: a released script is never edited, a change is a new version.
const MIGRATIONS: &[&str] = &[
    // v1
    r#"
    CREATE TABLE patients (
        id          TEXT NOT NULL PRIMARY KEY,
        name        TEXT NOT NULL,
        birth_date  TEXT
    );

    CREATE TABLE orders (
        id            TEXT NOT NULL PRIMARY KEY,
        patient       TEXT NOT NULL,
        pool_kind     TEXT NOT NULL CHECK (pool_kind IN ('equipment', 'department')),
        pool_name     TEXT NOT NULL,
        capabilities  TEXT NOT NULL,
        priority      TEXT NOT NULL,
        reason        TEXT NOT NULL,
        state         TEXT NOT NULL,
        assigned      TEXT,
        created_ms    BIGINT NOT NULL,
        updated_ms    BIGINT NOT NULL
    );
    CREATE INDEX orders_by_state ON orders (state, created_ms);
    CREATE INDEX orders_by_patient ON orders (patient, created_ms);

    -- SQLite-only: PostgreSQL spells the key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY.
    CREATE TABLE transitions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        order_id    TEXT NOT NULL REFERENCES orders (id),
        from_state  TEXT,
        to_state    TEXT NOT NULL,
        at_ms       BIGINT NOT NULL,
        actor       TEXT NOT NULL,
        unit        TEXT
    );
    CREATE INDEX transitions_by_order ON transitions (order_id);

    CREATE TABLE results (
        order_id  TEXT NOT NULL PRIMARY KEY REFERENCES orders (id),
        text      TEXT NOT NULL,
        at_ms     BIGINT NOT NULL,
        actor     TEXT NOT NULL
    );
    "#,
    // v2: API tokens (hashes only) and the audit trail.
    r#"
    CREATE TABLE tokens (
        id          TEXT NOT NULL PRIMARY KEY,
        hash        TEXT NOT NULL UNIQUE,
        role        TEXT NOT NULL,
        patient     TEXT,
        label       TEXT NOT NULL,
        created_ms  BIGINT NOT NULL,
        revoked_ms  BIGINT
    );

    -- SQLite-only: PostgreSQL spells the key BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY.
    -- No foreign keys: the trail outlives (and may name) patients and orders never stored.
    CREATE TABLE audit (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms     BIGINT NOT NULL,
        actor     TEXT NOT NULL,
        role      TEXT NOT NULL,
        action    TEXT NOT NULL,
        patient   TEXT,
        order_id  TEXT,
        outcome   TEXT NOT NULL,
        detail    TEXT NOT NULL
    );
    CREATE INDEX audit_by_patient ON audit (patient, seq);
    CREATE INDEX audit_by_time ON audit (at_ms);
    "#,
    // v3: the reconciler's pass over recently changed orders.
    r#"
    CREATE INDEX orders_by_update ON orders (updated_ms, id);
    CREATE TABLE reconciler (
        id                 INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        checked_until_ms   BIGINT NOT NULL
    );
    "#,
    // v4: alarm history (issue 14). One row per transition, copied from the alarm's node.
    r#"
    CREATE TABLE alarm_events (
        alarm     TEXT NOT NULL,
        seq       INTEGER NOT NULL,
        rule      TEXT NOT NULL,
        scope     TEXT NOT NULL,
        kind      TEXT NOT NULL,
        priority  TEXT NOT NULL,
        at_ms     BIGINT NOT NULL,
        actor     TEXT NOT NULL,
        role      TEXT NOT NULL,
        value     DOUBLE PRECISION,
        note      TEXT NOT NULL,
        PRIMARY KEY (alarm, seq)
    );
    CREATE INDEX alarm_events_by_time ON alarm_events (at_ms);
    "#,
    // v5: vital signs and NEWS2 (issue 15).
    r#"
    -- SQLite-only key spelling, as for audit.
    CREATE TABLE raw_messages (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        format       TEXT NOT NULL,
        source       TEXT NOT NULL,
        received_ms  BIGINT NOT NULL,
        body         TEXT NOT NULL
    );
    CREATE TABLE observations (
        id            TEXT NOT NULL PRIMARY KEY,
        patient       TEXT NOT NULL,
        code          TEXT NOT NULL,
        value         DOUBLE PRECISION NOT NULL,
        effective_ms  BIGINT NOT NULL,
        received_ms   BIGINT NOT NULL,
        source        TEXT NOT NULL,
        artefact      TEXT,
        raw_id        BIGINT NOT NULL REFERENCES raw_messages (id),
        UNIQUE (patient, source, code, effective_ms)
    );
    CREATE INDEX observations_by_patient ON observations (patient, code, effective_ms);
    CREATE INDEX observations_by_time ON observations (patient, effective_ms);
    CREATE TABLE patient_identifiers (
        system   TEXT NOT NULL,
        value    TEXT NOT NULL,
        patient  TEXT NOT NULL,
        PRIMARY KEY (system, value)
    );
    CREATE TABLE patient_settings (
        patient       TEXT NOT NULL PRIMARY KEY,
        spo2_scale    TEXT NOT NULL,
        scale_set_by  TEXT,
        scale_set_ms  BIGINT,
        ward          TEXT
    );
    CREATE TABLE news2_scores (
        patient      TEXT NOT NULL,
        at_ms        BIGINT NOT NULL,
        computed_ms  BIGINT NOT NULL,
        detail       TEXT NOT NULL,
        PRIMARY KEY (patient, at_ms)
    );
    "#,
    // v6: token lifetimes (issue 19). NULL: the token does not expire (every token before).
    r#"
    ALTER TABLE tokens ADD COLUMN expires_ms BIGINT;
    "#,
    // v7: the charts' history (issue 16): each pool's figures once per sampling interval.
    r#"
    CREATE TABLE pool_samples (
        pool_kind         TEXT NOT NULL CHECK (pool_kind IN ('equipment', 'department')),
        pool_name         TEXT NOT NULL,
        at_ms             BIGINT NOT NULL,
        units             BIGINT NOT NULL,
        in_use            BIGINT NOT NULL,
        unavailable       BIGINT NOT NULL,
        stat_queued       BIGINT NOT NULL,
        stat_oldest_ms    BIGINT NOT NULL,
        asap_queued       BIGINT NOT NULL,
        asap_oldest_ms    BIGINT NOT NULL,
        urgent_queued     BIGINT NOT NULL,
        urgent_oldest_ms  BIGINT NOT NULL,
        routine_queued    BIGINT NOT NULL,
        routine_oldest_ms BIGINT NOT NULL,
        PRIMARY KEY (pool_kind, pool_name, at_ms)
    );
    CREATE INDEX pool_samples_by_time ON pool_samples (at_ms);
    "#,
    // v8: a token is rotated once; its successor's id. NULL: not rotated (every token before).
    r#"
    ALTER TABLE tokens ADD COLUMN replaced_by TEXT;
    "#,
];

/// The columns of `observations`, in the order [`read_observation`] expects them.
const OBSERVATION_COLUMNS: &str =
    "id, patient, code, value, effective_ms, received_ms, source, artefact";

fn read_observation(r: &rusqlite::Row<'_>) -> Result<Observation, StoreError> {
    let id: String = r.get(0).map_err(backend)?;
    let patient: String = r.get(1).map_err(backend)?;
    let code: String = r.get(2).map_err(backend)?;
    Ok(Observation {
        patient: patient
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("observation {id}: patient {patient:?}")))?,
        code: VitalCode::parse(&code)
            .ok_or_else(|| StoreError::Corrupt(format!("observation {id}: code {code:?}")))?,
        value: r.get(3).map_err(backend)?,
        effective_ms: r.get(4).map_err(backend)?,
        received_ms: r.get(5).map_err(backend)?,
        source: r.get(6).map_err(backend)?,
        artefact: r.get(7).map_err(backend)?,
        id,
    })
}

/// The columns of `alarm_events`, in the order [`read_alarm_event`] expects them.
const ALARM_COLUMNS: &str =
    "alarm, seq, rule, scope, kind, priority, at_ms, actor, role, value, note";

fn read_alarm_event(r: &rusqlite::Row<'_>) -> Result<AlarmEvent, StoreError> {
    let kind: String = r.get(4).map_err(backend)?;
    let priority: String = r.get(5).map_err(backend)?;
    let alarm: String = r.get(0).map_err(backend)?;
    Ok(AlarmEvent {
        seq: r.get(1).map_err(backend)?,
        rule: r.get(2).map_err(backend)?,
        scope: r.get(3).map_err(backend)?,
        kind: kind.parse()?,
        priority: priority
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("alarm {alarm}: priority {priority:?}")))?,
        at_ms: r.get(6).map_err(backend)?,
        actor: r.get(7).map_err(backend)?,
        role: r.get(8).map_err(backend)?,
        value: r.get(9).map_err(backend)?,
        note: r.get(10).map_err(backend)?,
        alarm,
    })
}

/// The columns of `orders`, in the order [`RawOrder::read`] expects them.
const ORDER_COLUMNS: &str = "id, patient, pool_kind, pool_name, capabilities, priority, reason, \
                             state, assigned, created_ms, updated_ms";

/// The columns of `tokens`, in the order [`read_token`] expects them.
const TOKEN_COLUMNS: &str =
    "id, hash, role, patient, label, created_ms, revoked_ms, expires_ms, replaced_by";

/// The columns of `audit`, in the order [`read_audit`] expects them.
const AUDIT_COLUMNS: &str = "seq, at_ms, actor, role, action, patient, order_id, outcome, detail";

/// The columns of `pool_samples`, in the order [`read_pool_sample`] expects them.
const POOL_SAMPLE_COLUMNS: &str = "pool_kind, pool_name, at_ms, units, in_use, unavailable, \
     stat_queued, stat_oldest_ms, asap_queued, asap_oldest_ms, urgent_queued, urgent_oldest_ms, \
     routine_queued, routine_oldest_ms";

fn read_pool_sample(r: &rusqlite::Row<'_>) -> Result<PoolSample, StoreError> {
    let kind: String = r.get(0).map_err(backend)?;
    let name: String = r.get(1).map_err(backend)?;
    let at_ms: i64 = r.get(2).map_err(backend)?;
    let pool = match kind.as_str() {
        "equipment" => Pool::Equipment(name),
        "department" => Pool::Department(name),
        other => {
            return Err(StoreError::Corrupt(format!(
                "pool sample at {at_ms}: pool kind {other:?}"
            )));
        }
    };
    let waiting = |i: usize| -> Result<Waiting, StoreError> {
        Ok(Waiting {
            queued: r.get(i).map_err(backend)?,
            oldest_wait_ms: r.get(i + 1).map_err(backend)?,
        })
    };
    Ok(PoolSample {
        at_ms,
        pool,
        units: r.get(3).map_err(backend)?,
        in_use: r.get(4).map_err(backend)?,
        unavailable: r.get(5).map_err(backend)?,
        waiting: WaitingByPriority {
            stat: waiting(6)?,
            asap: waiting(8)?,
            urgent: waiting(10)?,
            routine: waiting(12)?,
        },
    })
}

/// The SQLite clinical store. Cheap to clone: clones share one connection.
///
/// ```no_run
/// # async fn example() -> Result<(), medkeeper_hospital::store::StoreError> {
/// use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
/// let store = SqliteStore::open("/var/lib/medkeeper/clinical.db")?;
/// let id = "p-1".parse().unwrap();
/// assert!(store.patient(&id).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: Option<PathBuf>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file and the schema if needed and migrating
    /// an older schema to this build's.
    ///
    /// # Notable errors
    /// `Backend` if the file cannot be opened, or if its schema is newer than this build.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let conn = Connection::open(path)
            .map_err(|e| StoreError::Backend(format!("cannot open {}: {e}", path.display())))?;
        Self::setup(conn, Some(path.to_path_buf()))
    }

    /// A fresh private in-memory database, gone when the last clone is dropped. For tests.
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::setup(conn, None)
    }

    /// The database file, or `None` for an in-memory store.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn setup(mut conn: Connection, path: Option<PathBuf>) -> Result<SqliteStore, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT).map_err(backend)?;
        // WAL is a property of the file (it sticks); the others are per connection.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(backend)?;
        if path.is_some() && !mode.eq_ignore_ascii_case("wal") {
            // Still durable with synchronous=FULL (rollback journal), only slower to read
            // while writing; worth a warning, not a refusal.
            tracing::warn!(journal_mode = %mode, "clinical store: WAL not available");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Runs `f` on the connection on tokio's blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().map_err(|_| {
                StoreError::Backend("connection unusable: an earlier call panicked".into())
            })?;
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

/// Brings the schema to the newest version, in one immediate transaction (so two processes
/// opening one file at once do not both migrate).
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(backend)?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(StoreError::Backend(format!(
            "clinical store schema version {version} is newer than this medkeeper's ({known})"
        )));
    }
    if version == known {
        return Ok(());
    }
    for script in &MIGRATIONS[version as usize..] {
        tx.execute_batch(script).map_err(backend)?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(backend)?;
    tx.commit().map_err(backend)
}

/// A database error: a value of the wrong type is corruption, anything else the backend's.
fn backend(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => StoreError::Corrupt(e.to_string()),
        e => StoreError::Backend(e.to_string()),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// Parses a stored value with the model's parser; failure names the record.
fn parse<T: std::str::FromStr>(record: &str, what: &str, s: &str) -> Result<T, StoreError>
where
    T::Err: fmt::Display,
{
    s.parse()
        .map_err(|e| StoreError::Corrupt(format!("{record}: {what} {s:?}: {e}")))
}

fn pool_columns(pool: &Pool) -> (&'static str, &str) {
    match pool {
        Pool::Equipment(k) => ("equipment", k),
        Pool::Department(d) => ("department", d),
    }
}

/// An `orders` row as stored, before parsing.
struct RawOrder {
    id: String,
    patient: String,
    pool_kind: String,
    pool_name: String,
    capabilities: String,
    priority: String,
    reason: String,
    state: String,
    assigned: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

impl RawOrder {
    fn read(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawOrder> {
        Ok(RawOrder {
            id: r.get(0)?,
            patient: r.get(1)?,
            pool_kind: r.get(2)?,
            pool_name: r.get(3)?,
            capabilities: r.get(4)?,
            priority: r.get(5)?,
            reason: r.get(6)?,
            state: r.get(7)?,
            assigned: r.get(8)?,
            created_ms: r.get(9)?,
            updated_ms: r.get(10)?,
        })
    }

    fn parse(self) -> Result<Order, StoreError> {
        let rec = format!("order {:?}", self.id);
        let pool = match self.pool_kind.as_str() {
            "equipment" => Pool::Equipment(self.pool_name),
            "department" => Pool::Department(self.pool_name),
            other => {
                return Err(StoreError::Corrupt(format!("{rec}: pool kind {other:?}")));
            }
        };
        let capabilities = serde_json::from_str(&self.capabilities).map_err(|e| {
            StoreError::Corrupt(format!("{rec}: capabilities {:?}: {e}", self.capabilities))
        })?;
        Ok(Order {
            id: parse(&rec, "id", &self.id)?,
            patient: parse(&rec, "patient", &self.patient)?,
            pool,
            capabilities,
            priority: parse(&rec, "priority", &self.priority)?,
            reason: self.reason,
            state: parse(&rec, "state", &self.state)?,
            assigned: self.assigned,
            created_ms: self.created_ms,
            updated_ms: self.updated_ms,
        })
    }
}

fn read_token(r: &rusqlite::Row<'_>) -> Result<TokenRecord, StoreError> {
    let id: String = r.get(0).map_err(backend)?;
    let patient: Option<String> = r.get(3).map_err(backend)?;
    let rec = format!("token {id:?}");
    Ok(TokenRecord {
        hash: r.get(1).map_err(backend)?,
        role: r.get(2).map_err(backend)?,
        patient: patient.map(|p| parse(&rec, "patient", &p)).transpose()?,
        label: r.get(4).map_err(backend)?,
        created_ms: r.get(5).map_err(backend)?,
        revoked_ms: r.get(6).map_err(backend)?,
        expires_ms: r.get(7).map_err(backend)?,
        replaced_by: r.get(8).map_err(backend)?,
        id,
    })
}

/// Inserts a token; a taken id or hash is `Exists`.
fn insert_token_in(conn: &Connection, t: &TokenRecord) -> Result<(), StoreError> {
    conn.execute(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ),
        params![
            t.id,
            t.hash,
            t.role,
            t.patient.as_ref().map(|p| p.as_str()),
            t.label,
            t.created_ms,
            t.revoked_ms,
            t.expires_ms,
            t.replaced_by,
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            // Which of the two is taken is not said: the hash is a secret's.
            StoreError::Exists(format!("token {} (id or hash taken)", t.id))
        } else {
            backend(e)
        }
    })?;
    Ok(())
}

fn read_audit(r: &rusqlite::Row<'_>) -> Result<AuditRecord, StoreError> {
    let seq: i64 = r.get(0).map_err(backend)?;
    let patient: Option<String> = r.get(5).map_err(backend)?;
    let order: Option<String> = r.get(6).map_err(backend)?;
    let rec = format!("audit record {seq}");
    Ok(AuditRecord {
        seq,
        at_ms: r.get(1).map_err(backend)?,
        actor: r.get(2).map_err(backend)?,
        role: r.get(3).map_err(backend)?,
        action: r.get(4).map_err(backend)?,
        patient: patient.map(|p| parse(&rec, "patient", &p)).transpose()?,
        order: order.map(|o| parse(&rec, "order", &o)).transpose()?,
        outcome: r.get(7).map_err(backend)?,
        detail: r.get(8).map_err(backend)?,
    })
}

/// Appends `record` to the audit trail on `conn` (a connection or an open transaction) and
/// returns its sequence number.
fn insert_audit(conn: &Connection, a: &AuditRecord) -> Result<i64, StoreError> {
    // RETURNING: SQLite 3.35+ and PostgreSQL alike.
    conn.query_row(
        "INSERT INTO audit (at_ms, actor, role, action, patient, order_id, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         RETURNING seq",
        params![
            a.at_ms,
            a.actor,
            a.role,
            a.action,
            a.patient.as_ref().map(|p| p.as_str()),
            a.order.as_ref().map(|o| o.as_str()),
            a.outcome,
            a.detail,
        ],
        |r| r.get(0),
    )
    .map_err(backend)
}

/// Appends a change's audit record, if it has one, inside the change's transaction.
fn append_audit_in(
    tx: &rusqlite::Transaction<'_>,
    a: Option<&AuditRecord>,
) -> Result<(), StoreError> {
    if let Some(a) = a {
        insert_audit(tx, a)?;
    }
    Ok(())
}

/// Runs `sql` and reads every row with `read`.
fn query_rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    read: impl Fn(&rusqlite::Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let mut rows = stmt.query(params).map_err(backend)?;
    let mut out = Vec::new();
    while let Some(r) = rows.next().map_err(backend)? {
        out.push(read(r)?);
    }
    Ok(out)
}

fn query_orders(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Order>, StoreError> {
    let mut stmt = conn.prepare(sql).map_err(backend)?;
    let raws = stmt
        .query_map(params, RawOrder::read)
        .map_err(backend)?
        .collect::<rusqlite::Result<Vec<_>>>()
        .map_err(backend)?;
    raws.into_iter().map(RawOrder::parse).collect()
}

#[async_trait]
impl ClinicalStore for SqliteStore {
    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError> {
        let p = patient.clone();
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO patients (id, name, birth_date) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                                                birth_date = excluded.birth_date",
                params![p.id.as_str(), p.name, p.birth_date],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn insert_patient(
        &self,
        patient: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let p = patient.clone();
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO patients (id, name, birth_date) VALUES (?1, ?2, ?3)",
                params![p.id.as_str(), p.name, p.birth_date],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists(format!("patient {}", p.id))
                } else {
                    backend(e)
                }
            })?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        let id = id.clone();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT name, birth_date FROM patients WHERE id = ?1",
                    [id.as_str()],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .optional()
                .map_err(backend)?;
            Ok(row.map(|(name, birth_date)| Patient {
                id,
                name,
                birth_date,
            }))
        })
        .await
    }

    async fn insert_order(
        &self,
        order: &Order,
        actor: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let o = order.clone();
        let actor = actor.to_string();
        let audit = audit.cloned();
        self.run(move |conn| {
            let capabilities = serde_json::to_string(&o.capabilities)
                .map_err(|e| StoreError::Backend(format!("capabilities: {e}")))?;
            let (pool_kind, pool_name) = pool_columns(&o.pool);
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                &format!(
                    "INSERT INTO orders ({ORDER_COLUMNS})
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    o.id.as_str(),
                    o.patient.as_str(),
                    pool_kind,
                    pool_name,
                    capabilities,
                    o.priority.code(),
                    o.reason,
                    o.state.code(),
                    o.assigned,
                    o.created_ms,
                    o.updated_ms,
                ],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists(format!("order {}", o.id))
                } else {
                    backend(e)
                }
            })?;
            tx.execute(
                "INSERT INTO transitions (order_id, from_state, to_state, at_ms, actor, unit)
                 VALUES (?1, NULL, ?2, ?3, ?4, ?5)",
                params![
                    o.id.as_str(),
                    o.state.code(),
                    o.created_ms,
                    actor,
                    o.assigned
                ],
            )
            .map_err(backend)?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let id = id.clone();
        self.run(move |conn| {
            let raw = conn
                .query_row(
                    &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?1"),
                    [id.as_str()],
                    RawOrder::read,
                )
                .optional()
                .map_err(backend)?;
            raw.map(RawOrder::parse).transpose()
        })
        .await
    }

    async fn transition(
        &self,
        t: &Transition,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        // A creation (`from: None`) is never a move: no stored order is in "no state".
        let Some(from) = t.from else {
            return Ok(false);
        };
        let t = t.clone();
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let changed = tx
                .execute(
                    "UPDATE orders
                     SET state = ?1, updated_ms = ?2, assigned = COALESCE(?3, assigned)
                     WHERE id = ?4 AND state = ?5",
                    params![t.to.code(), t.at_ms, t.unit, t.order.as_str(), from.code()],
                )
                .map_err(backend)?;
            if changed != 1 {
                // Dropping the transaction rolls it back; nothing was written anyway.
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO transitions (order_id, from_state, to_state, at_ms, actor, unit)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.order.as_str(),
                    from.code(),
                    t.to.code(),
                    t.at_ms,
                    t.actor,
                    t.unit
                ],
            )
            .map_err(backend)?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let id = id.clone();
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let changed = tx
                .execute(
                    "UPDATE orders SET priority = ?1, updated_ms = ?4 WHERE id = ?2 AND state = ?3",
                    params![
                        priority.code(),
                        id.as_str(),
                        OrderState::Queued.code(),
                        at_ms
                    ],
                )
                .map_err(backend)?;
            if changed != 1 {
                return Ok(false);
            }
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.run(move |conn| {
            let (after_ms, after_id) = match &after {
                Some((ms, id)) => (*ms, id.as_str().to_string()),
                None => (i64::MIN, String::new()),
            };
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders
                 WHERE updated_ms >= ?1 AND updated_ms < ?2
                   AND (updated_ms > ?3 OR (updated_ms = ?3 AND id > ?4))
                 ORDER BY updated_ms, id LIMIT ?5"
            );
            query_orders(
                conn,
                &sql,
                params![since_ms, before_ms, after_ms, after_id, limit],
            )
        })
        .await
    }

    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        self.run(move |conn| {
            conn.query_row(
                "SELECT checked_until_ms FROM reconciler WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(backend)
        })
        .await
    }

    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        self.run(move |conn| {
            // GREATEST on PostgreSQL; SQLite's two-argument MAX is the same scalar function.
            conn.execute(
                "INSERT INTO reconciler (id, checked_until_ms) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE
                 SET checked_until_ms = MAX(reconciler.checked_until_ms, excluded.checked_until_ms)",
                [ms],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        let id = id.clone();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT order_id, from_state, to_state, at_ms, actor, unit
                     FROM transitions WHERE order_id = ?1 ORDER BY id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([id.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, Option<String>>(5)?,
                    ))
                })
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            rows.into_iter()
                .map(|(at_ms, order, from, to, actor, unit)| {
                    let rec = format!("transition of order {order:?}");
                    Ok(Transition {
                        order: parse(&rec, "order id", &order)?,
                        from: from.map(|f| parse(&rec, "from state", &f)).transpose()?,
                        to: parse(&rec, "to state", &to)?,
                        at_ms,
                        actor,
                        unit,
                    })
                })
                .collect()
        })
        .await
    }

    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let codes: Vec<&'static str> = states.iter().map(|s| s.code()).collect();
        self.run(move |conn| {
            let marks = vec!["?"; codes.len()].join(", ");
            // Ties on created_ms break by id: deterministic on every backend (no rowid).
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE state IN ({marks})
                 ORDER BY created_ms, id"
            );
            query_orders(conn, &sql, params_from_iter(codes))
        })
        .await
    }

    async fn order_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        self.run(|conn| {
            // Answered from the `orders_by_state` index.
            let mut stmt = conn
                .prepare("SELECT state, COUNT(*) FROM orders GROUP BY state")
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(backend)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(backend)?;
            let mut counts: Vec<(OrderState, u64)> =
                OrderState::ALL.iter().map(|s| (*s, 0)).collect();
            for (state, n) in rows {
                let state: OrderState = parse("orders", "state", &state)?;
                if let Some(c) = counts.iter_mut().find(|(s, _)| *s == state) {
                    c.1 = n.max(0) as u64;
                }
            }
            Ok(counts)
        })
        .await
    }

    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError> {
        let patient = patient.clone();
        self.run(move |conn| {
            let sql = format!(
                "SELECT {ORDER_COLUMNS} FROM orders WHERE patient = ?1 ORDER BY created_ms, id"
            );
            query_orders(conn, &sql, [patient.as_str()])
        })
        .await
    }

    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError> {
        let r = result.clone();
        self.run(move |conn| {
            conn.execute(
                // A reported order's result is never replaced (a late or racing report must
                // not change what the patient was told): only a draft, stored before the
                // transition to reported.
                "INSERT INTO results (order_id, text, at_ms, actor) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (order_id) DO UPDATE SET text = excluded.text,
                                                      at_ms = excluded.at_ms,
                                                      actor = excluded.actor
                 WHERE (SELECT state FROM orders WHERE id = excluded.order_id) <> 'reported'",
                params![r.order.as_str(), r.text, r.at_ms, r.actor],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        let id = id.clone();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT text, at_ms, actor FROM results WHERE order_id = ?1",
                    [id.as_str()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, i64>(1)?,
                            r.get::<_, String>(2)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            Ok(row.map(|(text, at_ms, actor)| ExamResult {
                order: id,
                text,
                at_ms,
                actor,
            }))
        })
        .await
    }

    async fn insert_token(
        &self,
        token: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let t = token.clone();
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            insert_token_in(&tx, &t)?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let id = id.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1");
            Ok(query_rows(conn, &sql, [id], read_token)?.pop())
        })
        .await
    }

    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let old = old.to_string();
        let new = new.clone();
        let audit = audit.to_vec();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            // Only a token in use: not revoked, not expired when its successor is issued, not
            // rotated before (the write lock BEGIN IMMEDIATE takes orders racing rotations).
            let changed = tx
                .execute(
                    "UPDATE tokens SET expires_ms = CASE
                         WHEN expires_ms IS NOT NULL AND expires_ms < ?1 THEN expires_ms
                         ELSE ?1 END,
                         replaced_by = ?4
                     WHERE id = ?2 AND revoked_ms IS NULL AND replaced_by IS NULL
                       AND (expires_ms IS NULL OR expires_ms > ?3)",
                    params![old_expires_ms, old, new.created_ms, new.id],
                )
                .map_err(backend)?;
            if changed != 1 {
                return Ok(false);
            }
            insert_token_in(&tx, &new)?;
            for a in &audit {
                insert_audit(&tx, a)?;
            }
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let hash = hash.to_string();
        self.run(move |conn| {
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1");
            Ok(query_rows(conn, &sql, [hash], read_token)?.pop())
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.run(move |conn| {
            // Ties on created_ms break by id: deterministic on every backend (no rowid).
            let sql = format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id");
            query_rows(conn, &sql, [], read_token)
        })
        .await
    }

    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let changed = tx
                .execute(
                    "UPDATE tokens SET revoked_ms = ?1 WHERE id = ?2 AND revoked_ms IS NULL",
                    params![at_ms, id],
                )
                .map_err(backend)?;
            if changed != 1 {
                return Ok(false);
            }
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(true)
        })
        .await
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        let a = record.clone();
        self.run(move |conn| insert_audit(conn, &a)).await
    }

    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let q = query.clone();
        self.run(move |conn| {
            let mut conds = Vec::new();
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut bind = |cond: &str, v: rusqlite::types::Value| {
                args.push(v);
                conds.push(cond.replace('?', &format!("?{}", args.len())));
            };
            if let Some(p) = &q.patient {
                bind("patient = ?", p.as_str().to_string().into());
            }
            if let Some(a) = &q.actor {
                bind("actor = ?", a.clone().into());
            }
            if let Some(t) = q.since_ms {
                bind("at_ms >= ?", t.into());
            }
            if let Some(s) = q.after_seq {
                bind("seq > ?", s.into());
            }
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let limit = q.effective_limit();
            // Paging forward: the first `limit` after `after_seq`. Otherwise the most recent
            // `limit`, taken newest first and put back in ascending order.
            let sql = if q.after_seq.is_some() {
                format!("SELECT {AUDIT_COLUMNS} FROM audit {filter} ORDER BY seq LIMIT {limit}")
            } else {
                format!(
                    "SELECT {AUDIT_COLUMNS} FROM (
                         SELECT {AUDIT_COLUMNS} FROM audit {filter} ORDER BY seq DESC LIMIT {limit}
                     ) AS recent ORDER BY seq"
                )
            };
            query_rows(conn, &sql, params_from_iter(args), read_audit)
        })
        .await
    }

    async fn record_alarm_events(&self, events: &[AlarmEvent]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let events = events.to_vec();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let mut new = 0;
            for e in &events {
                let inserted = tx
                    .execute(
                        "INSERT INTO alarm_events (alarm, seq, rule, scope, kind, priority, at_ms,
                                                   actor, role, value, note)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                         ON CONFLICT (alarm, seq) DO NOTHING",
                        params![
                            e.alarm,
                            e.seq,
                            e.rule,
                            e.scope,
                            e.kind.as_str(),
                            e.priority.as_str(),
                            e.at_ms,
                            e.actor,
                            e.role,
                            e.value,
                            e.note,
                        ],
                    )
                    .map_err(backend)?;
                if inserted == 0 && !e.note.is_empty() {
                    // Staff's note arrives with their own copy; the evaluator's copy of the same
                    // event may have come first, without it.
                    tx.execute(
                        "UPDATE alarm_events SET note = ?3 WHERE alarm = ?1 AND seq = ?2
                                                               AND note = ''",
                        params![e.alarm, e.seq, e.note],
                    )
                    .map_err(backend)?;
                }
                if inserted == 1 {
                    new += 1;
                    insert_audit(
                        &tx,
                        &AuditRecord {
                            seq: 0,
                            at_ms: e.at_ms,
                            actor: e.actor.clone(),
                            role: e.role.clone(),
                            action: format!("alarm.{}", e.kind.as_str()),
                            patient: None,
                            order: None,
                            outcome: "ok".into(),
                            detail: e.alarm.clone(),
                        },
                    )?;
                }
            }
            tx.commit().map_err(backend)?;
            Ok(new)
        })
        .await
    }

    async fn alarm_events(&self, query: &AlarmQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        let q = query.clone();
        self.run(move |conn| {
            let limit = i64::from(q.effective_limit());
            let since = q.since_ms.unwrap_or(i64::MIN);
            match &q.alarm {
                Some(alarm) => query_rows(
                    conn,
                    &format!(
                        "SELECT {ALARM_COLUMNS} FROM alarm_events
                         WHERE alarm = ?1 AND at_ms >= ?2 ORDER BY seq LIMIT ?3"
                    ),
                    params![alarm, since, limit],
                    read_alarm_event,
                ),
                None => query_rows(
                    conn,
                    &format!(
                        "SELECT {ALARM_COLUMNS} FROM alarm_events
                         WHERE at_ms >= ?1 ORDER BY at_ms DESC, alarm DESC, seq DESC LIMIT ?2"
                    ),
                    params![since, limit],
                    read_alarm_event,
                ),
            }
        })
        .await
    }

    async fn write_observations(
        &self,
        observations: &[(Observation, Revision)],
        raw: &RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<Observation>, StoreError> {
        let obs = observations.to_vec();
        let raw = raw.clone();
        let audit = audit.cloned();
        self.run(move |conn| {
            // Dropped without a commit on any error: nothing of the call is stored.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let raw_id: i64 = tx
                .query_row(
                    "INSERT INTO raw_messages (format, source, received_ms, body)
                     VALUES (?1, ?2, ?3, ?4) RETURNING id",
                    params![raw.format, raw.source, raw.received_ms, raw.body],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            let mut stored = Vec::with_capacity(obs.len());
            for (n, (o, revision)) in obs.into_iter().enumerate() {
                let id = format!("v-{}", uuid::Uuid::new_v4().simple());
                let inserted = tx
                    .execute(
                        "INSERT INTO observations (id, patient, code, value, effective_ms,
                                                   received_ms, source, artefact, raw_id)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                         ON CONFLICT (patient, source, code, effective_ms) DO NOTHING",
                        params![
                            id,
                            o.patient.as_str(),
                            o.code.as_str(),
                            o.value,
                            o.effective_ms,
                            o.received_ms,
                            o.source,
                            o.artefact,
                            raw_id
                        ],
                    )
                    .map_err(backend)?
                    == 1;
                let key = params![
                    o.patient.as_str(),
                    o.source,
                    o.code.as_str(),
                    o.effective_ms
                ];
                let select = format!(
                    "SELECT {OBSERVATION_COLUMNS} FROM observations
                     WHERE patient = ?1 AND source = ?2 AND code = ?3 AND effective_ms = ?4"
                );
                let row = tx
                    .query_row(&select, key, |r| Ok(read_observation(r)))
                    .map_err(backend)??;
                if inserted || row.value == o.value {
                    stored.push(row);
                    continue;
                }
                if revision == Revision::Original {
                    return Err(StoreError::Exists(Revision::conflict(n + 1, &row, o.value)));
                }
                tx.execute(
                    "UPDATE observations SET value = ?5, artefact = ?6, received_ms = ?7,
                                             raw_id = ?8
                     WHERE patient = ?1 AND source = ?2 AND code = ?3 AND effective_ms = ?4",
                    params![
                        o.patient.as_str(),
                        o.source,
                        o.code.as_str(),
                        o.effective_ms,
                        o.value,
                        o.artefact,
                        o.received_ms,
                        raw_id
                    ],
                )
                .map_err(backend)?;
                let row = tx
                    .query_row(&select, key, |r| Ok(read_observation(r)))
                    .map_err(backend)??;
                stored.push(row);
            }
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)?;
            Ok(stored)
        })
        .await
    }

    async fn observations(&self, query: &ObservationQuery) -> Result<Vec<Observation>, StoreError> {
        let q = query.clone();
        self.run(move |conn| {
            let mut conds = Vec::new();
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut bind = |cond: &str, v: rusqlite::types::Value| {
                args.push(v);
                conds.push(cond.replace('?', &format!("?{}", args.len())));
            };
            if let Some(p) = &q.patient {
                bind("patient = ?", p.as_str().to_string().into());
            }
            if let Some(s) = q.since_ms {
                bind("effective_ms >= ?", s.into());
            }
            if let Some(u) = q.until_ms {
                bind("effective_ms <= ?", u.into());
            }
            let codes: Vec<String> = q
                .codes
                .iter()
                .map(|c| format!("'{}'", c.as_str()))
                .collect();
            if !codes.is_empty() {
                // The names are this build's own constants, not input.
                conds.push(format!("code IN ({})", codes.join(", ")));
            }
            let limit = i64::from(q.limit.unwrap_or(1_000).min(10_000));
            let filter = if conds.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conds.join(" AND "))
            };
            let sql = format!(
                "SELECT * FROM (SELECT {OBSERVATION_COLUMNS} FROM observations {filter}
                                ORDER BY effective_ms DESC, id DESC LIMIT {limit})
                 ORDER BY effective_ms, id"
            );
            query_rows(conn, &sql, params_from_iter(args), read_observation)
        })
        .await
    }

    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        let (system, value) = (system.to_string(), value.to_string());
        self.run(move |conn| {
            let p: Option<String> = conn
                .query_row(
                    "SELECT patient FROM patient_identifiers WHERE system = ?1 AND value = ?2",
                    params![system, value],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            p.map(|p| {
                p.parse()
                    .map_err(|_| StoreError::Corrupt(format!("identifier {system}|{value}: {p:?}")))
            })
            .transpose()
        })
        .await
    }

    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let (patient, system, value) = (patient.clone(), system.to_string(), value.to_string());
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let existing: Option<String> = tx
                .query_row(
                    "SELECT patient FROM patient_identifiers WHERE system = ?1 AND value = ?2",
                    params![system, value],
                    |r| r.get(0),
                )
                .optional()
                .map_err(backend)?;
            match existing {
                Some(p) if p == patient.as_str() => return Ok(()),
                Some(_) => {
                    return Err(StoreError::Exists(format!(
                        "identifier {system}|{value} belongs to another patient"
                    )));
                }
                None => {}
            }
            tx.execute(
                "INSERT INTO patient_identifiers (system, value, patient) VALUES (?1, ?2, ?3)",
                params![system, value, patient.as_str()],
            )
            .map_err(backend)?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn patient_settings(&self, patient: &PatientId) -> Result<PatientSettings, StoreError> {
        let patient = patient.clone();
        self.run(move |conn| {
            let row = conn
                .query_row(
                    "SELECT spo2_scale, scale_set_by, scale_set_ms, ward FROM patient_settings
                     WHERE patient = ?1",
                    [patient.as_str()],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            let Some((scale, by, at, ward)) = row else {
                return Ok(PatientSettings::default());
            };
            let spo2_scale = match scale.as_str() {
                "scale1" => SpO2Scale::Scale1,
                "scale2" => SpO2Scale::Scale2,
                other => {
                    return Err(StoreError::Corrupt(format!(
                        "patient {patient}: SpO2 scale {other:?}"
                    )));
                }
            };
            Ok(PatientSettings {
                spo2_scale,
                scale_set_by: by,
                scale_set_ms: at,
                ward,
            })
        })
        .await
    }

    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        settings: &PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let (patient, s) = (patient.clone(), settings.clone());
        let audit = audit.cloned();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let scale = match s.spo2_scale {
                SpO2Scale::Scale1 => "scale1",
                SpO2Scale::Scale2 => "scale2",
            };
            tx.execute(
                "INSERT INTO patient_settings (patient, spo2_scale, scale_set_by, scale_set_ms, ward)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (patient) DO UPDATE SET spo2_scale = excluded.spo2_scale,
                     scale_set_by = excluded.scale_set_by, scale_set_ms = excluded.scale_set_ms,
                     ward = excluded.ward",
                params![patient.as_str(), scale, s.scale_set_by, s.scale_set_ms, s.ward],
            )
            .map_err(backend)?;
            append_audit_in(&tx, audit.as_ref())?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn insert_news2(&self, record: &News2Record) -> Result<bool, StoreError> {
        let r = record.clone();
        let detail = serde_json::to_string(&r)
            .map_err(|e| StoreError::Backend(format!("cannot encode a NEWS2 score: {e}")))?;
        self.run(move |conn| {
            let n = conn
                .execute(
                    "INSERT INTO news2_scores (patient, at_ms, computed_ms, detail)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (patient, at_ms) DO UPDATE
                         SET computed_ms = excluded.computed_ms, detail = excluded.detail
                         WHERE news2_scores.detail <> excluded.detail",
                    params![
                        r.news2.patient.as_str(),
                        r.news2.at_ms,
                        r.computed_ms,
                        detail
                    ],
                )
                .map_err(backend)?;
            Ok(n == 1)
        })
        .await
    }

    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<News2Record>, StoreError> {
        let patient = patient.clone();
        self.run(move |conn| {
            query_rows(
                conn,
                "SELECT detail FROM (SELECT at_ms, detail FROM news2_scores
                                     WHERE patient = ?1 AND at_ms >= ?2
                                     ORDER BY at_ms DESC LIMIT ?3)
                 ORDER BY at_ms",
                params![patient.as_str(), since_ms, i64::from(limit.min(10_000))],
                |r| {
                    let d: String = r.get(0).map_err(backend)?;
                    serde_json::from_str(&d)
                        .map_err(|e| StoreError::Corrupt(format!("a NEWS2 score: {e}")))
                },
            )
        })
        .await
    }

    async fn insert_pool_samples(&self, samples: &[PoolSample]) -> Result<usize, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let samples = samples.to_vec();
        self.run(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let mut new = 0;
            for x in &samples {
                let (kind, name) = pool_columns(&x.pool);
                let w = &x.waiting;
                new += tx
                    .execute(
                        &format!(
                            "INSERT INTO pool_samples ({POOL_SAMPLE_COLUMNS})
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)
                             ON CONFLICT (pool_kind, pool_name, at_ms) DO NOTHING"
                        ),
                        params![
                            kind,
                            name,
                            x.at_ms,
                            x.units,
                            x.in_use,
                            x.unavailable,
                            w.stat.queued,
                            w.stat.oldest_wait_ms,
                            w.asap.queued,
                            w.asap.oldest_wait_ms,
                            w.urgent.queued,
                            w.urgent.oldest_wait_ms,
                            w.routine.queued,
                            w.routine.oldest_wait_ms,
                        ],
                    )
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(new)
        })
        .await
    }

    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&Pool>,
    ) -> Result<Vec<PoolSample>, StoreError> {
        let pool = pool.map(|p| {
            let (k, n) = pool_columns(p);
            (k.to_string(), n.to_string())
        });
        self.run(move |conn| {
            let (kind, name) = pool.unzip();
            query_rows(
                conn,
                &format!(
                    "SELECT {POOL_SAMPLE_COLUMNS} FROM (
                         SELECT * FROM pool_samples
                         WHERE at_ms >= ?1 AND at_ms < ?2
                           AND (?3 IS NULL OR (pool_kind = ?3 AND pool_name = ?4))
                         ORDER BY at_ms DESC, pool_kind DESC, pool_name DESC LIMIT ?5)
                     ORDER BY at_ms, pool_kind, pool_name"
                ),
                params![since_ms, until_ms, kind, name, i64::from(POOL_SAMPLES_MAX)],
                read_pool_sample,
            )
        })
        .await
    }

    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.run(move |conn| {
            let n = conn
                .execute(
                    "DELETE FROM pool_samples WHERE at_ms < ?1",
                    params![before_ms],
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(s: &str) -> OrderId {
        s.parse().unwrap()
    }

    fn pid(s: &str) -> PatientId {
        s.parse().unwrap()
    }

    fn order(id: &str, patient: &str, created_ms: i64) -> Order {
        Order {
            id: oid(id),
            patient: pid(patient),
            pool: Pool::Equipment("MRI".into()),
            capabilities: vec!["contrast".into(), "3T".into()],
            priority: Priority::Urgent,
            reason: "suspected stroke; \"quotes\" and ünïcode".into(),
            state: OrderState::Queued,
            assigned: None,
            created_ms,
            updated_ms: created_ms,
        }
    }

    fn step(
        id: &str,
        from: OrderState,
        to: OrderState,
        at_ms: i64,
        unit: Option<&str>,
    ) -> Transition {
        Transition {
            order: oid(id),
            from: Some(from),
            to,
            at_ms,
            actor: "dispatcher:a".into(),
            unit: unit.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn order_round_trip_keeps_every_field() {
        let store = SqliteStore::in_memory().unwrap();
        assert_eq!(store.path(), None);
        let mut o = order("o-1", "p-1", 1_000);
        o.pool = Pool::Department("cardiology".into());
        o.priority = Priority::Stat;
        o.state = OrderState::Called;
        o.assigned = Some("dr-who".into());
        o.updated_ms = 1_500;
        store.insert_order(&o, "nurse:jo", None).await.unwrap();
        assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
        assert_eq!(
            store.transitions(&o.id).await.unwrap(),
            vec![Transition {
                order: o.id.clone(),
                from: None,
                to: OrderState::Called,
                at_ms: 1_000,
                actor: "nurse:jo".into(),
                unit: Some("dr-who".into()),
            }]
        );
        let mut bare = order("o-2", "p-1", 2_000);
        bare.capabilities.clear();
        store.insert_order(&bare, "nurse:jo", None).await.unwrap();
        assert_eq!(store.order(&bare.id).await.unwrap(), Some(bare));
        assert_eq!(store.order(&oid("o-none")).await.unwrap(), None);
        assert!(store.transitions(&oid("o-none")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn duplicate_order_is_exists_and_changes_nothing() {
        let store = SqliteStore::in_memory().unwrap();
        let o = order("o-1", "p-1", 1_000);
        store.insert_order(&o, "a", None).await.unwrap();
        let mut again = o.clone();
        again.reason = "other".into();
        assert_eq!(
            store.insert_order(&again, "b", None).await,
            Err(StoreError::Exists("order o-1".into()))
        );
        assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
        assert_eq!(store.transitions(&o.id).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn transition_is_compare_and_set() {
        use OrderState::*;
        let store = SqliteStore::in_memory().unwrap();
        let o = order("o-1", "p-1", 1_000);
        store.insert_order(&o, "a", None).await.unwrap();

        // Right from-state: moves, records, assigns.
        let call = step("o-1", Queued, Called, 2_000, Some("MRI-1"));
        assert!(store.transition(&call, None).await.unwrap());
        let now = store.order(&o.id).await.unwrap().unwrap();
        assert_eq!(now.state, Called);
        assert_eq!(now.assigned.as_deref(), Some("MRI-1"));
        assert_eq!(now.updated_ms, 2_000);
        assert_eq!(now.created_ms, 1_000);

        // Wrong from-state: false, nothing recorded, nothing changed.
        let stale = step("o-1", Queued, Cancelled, 3_000, Some("MRI-2"));
        assert!(!store.transition(&stale, None).await.unwrap());
        assert_eq!(store.order(&o.id).await.unwrap().unwrap(), now);
        // Unknown order and a "creation" are never moves.
        assert!(
            !store
                .transition(&step("o-x", Queued, Called, 1, None), None)
                .await
                .unwrap()
        );
        let creation = Transition {
            from: None,
            ..call.clone()
        };
        assert!(!store.transition(&creation, None).await.unwrap());

        // unit None keeps the assignment.
        let start = step("o-1", Called, InProgress, 4_000, None);
        assert!(store.transition(&start, None).await.unwrap());
        let now = store.order(&o.id).await.unwrap().unwrap();
        assert_eq!(
            (now.state, now.assigned.as_deref()),
            (InProgress, Some("MRI-1"))
        );

        let history = store.transitions(&o.id).await.unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[0].from, None);
        assert_eq!(history[1], call);
        assert_eq!(history[2], start);
    }

    #[tokio::test]
    async fn set_priority_only_while_queued() {
        let store = SqliteStore::in_memory().unwrap();
        let o = order("o-1", "p-1", 1_000);
        store.insert_order(&o, "a", None).await.unwrap();
        assert!(
            store
                .set_priority(&o.id, Priority::Stat, 1_500, None)
                .await
                .unwrap()
        );
        let now = store.order(&o.id).await.unwrap().unwrap();
        assert_eq!(now.priority, Priority::Stat);
        // A changed order, for the reconciler's pass over changed orders.
        assert_eq!(now.updated_ms, 1_500);
        assert_eq!(store.transitions(&o.id).await.unwrap().len(), 1);

        let call = step(
            "o-1",
            OrderState::Queued,
            OrderState::Called,
            2_000,
            Some("MRI-1"),
        );
        assert!(store.transition(&call, None).await.unwrap());
        assert!(
            !store
                .set_priority(&o.id, Priority::Routine, 1, None)
                .await
                .unwrap()
        );
        assert_eq!(
            store.order(&o.id).await.unwrap().unwrap().priority,
            Priority::Stat
        );
        assert!(
            !store
                .set_priority(&oid("o-x"), Priority::Routine, 1, None)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn orders_in_and_orders_of_are_oldest_first() {
        use OrderState::*;
        let store = SqliteStore::in_memory().unwrap();
        // Inserted out of age order; o-b and o-c share a millisecond (ties break by id).
        for (id, patient, at) in [
            ("o-d", "p-2", 40),
            ("o-c", "p-1", 20),
            ("o-a", "p-1", 10),
            ("o-b", "p-1", 20),
        ] {
            store
                .insert_order(&order(id, patient, at), "a", None)
                .await
                .unwrap();
        }
        assert!(
            store
                .transition(&step("o-b", Queued, Called, 50, Some("MRI-1")), None)
                .await
                .unwrap()
        );
        assert!(
            store
                .transition(&step("o-a", Queued, Cancelled, 60, None), None)
                .await
                .unwrap()
        );

        let ids = |v: Vec<Order>| v.into_iter().map(|o| o.id.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(store.orders_in(&[Queued]).await.unwrap()),
            ["o-c", "o-d"]
        );
        assert_eq!(
            ids(store.orders_in(&[Called, Queued]).await.unwrap()),
            ["o-b", "o-c", "o-d"]
        );
        assert_eq!(
            ids(store.orders_in(&OrderState::ALL).await.unwrap()),
            ["o-a", "o-b", "o-c", "o-d"]
        );
        assert!(store.orders_in(&[]).await.unwrap().is_empty());
        assert!(store.orders_in(&[Reported]).await.unwrap().is_empty());
        assert_eq!(
            ids(store.orders_of(&pid("p-1")).await.unwrap()),
            ["o-a", "o-b", "o-c"]
        );
        assert_eq!(ids(store.orders_of(&pid("p-2")).await.unwrap()), ["o-d"]);
        assert!(store.orders_of(&pid("p-3")).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn results_put_get_replace() {
        let store = SqliteStore::in_memory().unwrap();
        let o = order("o-1", "p-1", 1_000);
        store.insert_order(&o, "a", None).await.unwrap();
        assert_eq!(store.result(&o.id).await.unwrap(), None);
        let first = ExamResult {
            order: o.id.clone(),
            text: "no acute findings".into(),
            at_ms: 5_000,
            actor: "dr-a".into(),
        };
        store.put_result(&first).await.unwrap();
        assert_eq!(store.result(&o.id).await.unwrap(), Some(first));
        let amended = ExamResult {
            order: o.id.clone(),
            text: "addendum: small infarct".into(),
            at_ms: 6_000,
            actor: "dr-b".into(),
        };
        store.put_result(&amended).await.unwrap();
        assert_eq!(store.result(&o.id).await.unwrap(), Some(amended.clone()));
        // Once reported, a late or racing report leaves what the patient was told.
        for (from, to) in [
            (OrderState::Queued, OrderState::Called),
            (OrderState::Called, OrderState::InProgress),
            (OrderState::InProgress, OrderState::Completed),
            (OrderState::Completed, OrderState::Reported),
        ] {
            assert!(
                store
                    .transition(&step("o-1", from, to, 7_000, None), None)
                    .await
                    .unwrap()
            );
        }
        let late = ExamResult {
            text: "a late report".into(),
            ..amended.clone()
        };
        store.put_result(&late).await.unwrap();
        assert_eq!(store.result(&o.id).await.unwrap(), Some(amended));
    }

    #[tokio::test]
    async fn result_for_unknown_order_is_refused() {
        let store = SqliteStore::in_memory().unwrap();
        let r = ExamResult {
            order: oid("o-none"),
            text: "x".into(),
            at_ms: 1,
            actor: "dr-a".into(),
        };
        assert!(matches!(
            store.put_result(&r).await,
            Err(StoreError::Backend(_))
        ));
        assert_eq!(store.result(&r.order).await.unwrap(), None);
    }

    #[tokio::test]
    async fn patients_insert_refuses_a_taken_id() {
        let s = SqliteStore::in_memory().unwrap();
        let p = Patient {
            id: pid("p-1"),
            name: "Ann".into(),
            birth_date: None,
        };
        s.insert_patient(&p, None).await.unwrap();
        let other = Patient {
            name: "Bob".into(),
            ..p.clone()
        };
        assert!(matches!(
            s.insert_patient(&other, None).await,
            Err(StoreError::Exists(_))
        ));
        assert_eq!(s.patient(&pid("p-1")).await.unwrap(), Some(p));
    }

    #[tokio::test]
    async fn patients_upsert() {
        let store = SqliteStore::in_memory().unwrap();
        let id = pid("p-1");
        assert_eq!(store.patient(&id).await.unwrap(), None);
        let mut p = Patient {
            id: id.clone(),
            name: "Ada Lovelace".into(),
            birth_date: None,
        };
        store.upsert_patient(&p).await.unwrap();
        assert_eq!(store.patient(&id).await.unwrap(), Some(p.clone()));
        p.name = "Ada King".into();
        p.birth_date = Some("1815-12-10".into());
        store.upsert_patient(&p).await.unwrap();
        assert_eq!(store.patient(&id).await.unwrap(), Some(p.clone()));
        p.birth_date = None;
        store.upsert_patient(&p).await.unwrap();
        assert_eq!(store.patient(&id).await.unwrap(), Some(p));
    }

    #[tokio::test]
    async fn file_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinical.db");
        let o = order("o-1", "p-1", 1_000);
        let call = step(
            "o-1",
            OrderState::Queued,
            OrderState::Called,
            2_000,
            Some("CT-1"),
        );
        let p = Patient {
            id: pid("p-1"),
            name: "Grace".into(),
            birth_date: Some("1906-12-09".into()),
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            assert_eq!(store.path(), Some(path.as_path()));
            store.upsert_patient(&p).await.unwrap();
            store.insert_order(&o, "a", None).await.unwrap();
            assert!(store.transition(&call, None).await.unwrap());
        }
        let store = SqliteStore::open(&path).unwrap();
        let now = store.order(&o.id).await.unwrap().unwrap();
        assert_eq!(
            (now.state, now.assigned.as_deref()),
            (OrderState::Called, Some("CT-1"))
        );
        assert_eq!(store.transitions(&o.id).await.unwrap().len(), 2);
        assert_eq!(store.patient(&p.id).await.unwrap(), Some(p));
        let conn = store.conn.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "synchronous=FULL");
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
    }

    #[tokio::test]
    async fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinical.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(
            matches!(SqliteStore::open(&path), Err(StoreError::Backend(m)) if m.contains("99"))
        );
    }

    #[tokio::test]
    async fn corrupt_values_are_reported_as_corrupt() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .insert_order(&order("o-1", "p-1", 1), "a", None)
            .await
            .unwrap();
        store
            .insert_order(&order("o-2", "p-1", 2), "a", None)
            .await
            .unwrap();
        {
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "UPDATE orders SET state = 'teleported' WHERE id = 'o-1'",
                [],
            )
            .unwrap();
            conn.execute(
                "UPDATE orders SET capabilities = '{oops' WHERE id = 'o-2'",
                [],
            )
            .unwrap();
            conn.execute(
                "UPDATE transitions SET to_state = 'lost' WHERE order_id = 'o-2'",
                [],
            )
            .unwrap();
        }
        let corrupt = |r: Result<_, StoreError>, needle: &str| match r {
            Err(StoreError::Corrupt(m)) => assert!(m.contains(needle), "{m}"),
            other => panic!("expected Corrupt mentioning {needle}, got {other:?}"),
        };
        corrupt(store.order(&oid("o-1")).await.map(|_| ()), "teleported");
        corrupt(store.orders_of(&pid("p-1")).await.map(|_| ()), "teleported");
        corrupt(store.order(&oid("o-2")).await.map(|_| ()), "capabilities");
        corrupt(store.transitions(&oid("o-2")).await.map(|_| ()), "lost");
        // A value of the wrong type is corruption too.
        {
            let conn = store.conn.lock().unwrap();
            conn.execute(
                "UPDATE orders SET state = 'queued', created_ms = 'soon' WHERE id = 'o-1'",
                [],
            )
            .unwrap();
        }
        assert!(matches!(
            store.order(&oid("o-1")).await,
            Err(StoreError::Corrupt(_))
        ));
        // The rest of the store still works.
        assert!(store.transitions(&oid("o-1")).await.unwrap().len() == 1);
    }

    #[tokio::test]
    async fn poisoned_connection_is_a_backend_error() {
        let store = SqliteStore::in_memory().unwrap();
        let conn = Arc::clone(&store.conn);
        let _ = std::thread::spawn(move || {
            let _guard = conn.lock().unwrap();
            panic!("poison the connection (expected in this test)");
        })
        .join();
        assert!(matches!(
            store.order(&oid("o-1")).await,
            Err(StoreError::Backend(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_compare_and_set_has_one_winner() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .insert_order(&order("o-1", "p-1", 1), "a", None)
            .await
            .unwrap();
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let unit = format!("MRI-{i}");
                    let t = step(
                        "o-1",
                        OrderState::Queued,
                        OrderState::Called,
                        10 + i,
                        Some(&unit),
                    );
                    (unit, store.transition(&t, None).await.unwrap())
                })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            let (unit, won) = t.await.unwrap();
            if won {
                winners.push(unit);
            }
        }
        assert_eq!(winners.len(), 1, "{winners:?}");
        let now = store.order(&oid("o-1")).await.unwrap().unwrap();
        assert_eq!(now.assigned.as_ref(), Some(&winners[0]));
        let history = store.transitions(&oid("o-1")).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].unit.as_ref(), Some(&winners[0]));
    }

    fn token(id: &str, hash: &str, created_ms: i64) -> TokenRecord {
        TokenRecord {
            id: id.into(),
            hash: hash.into(),
            role: "doctor".into(),
            patient: None,
            label: "Dr. Quinn's laptop".into(),
            created_ms,
            revoked_ms: None,
            expires_ms: None,
            replaced_by: None,
        }
    }

    fn audit_rec(at_ms: i64, actor: &str, patient: Option<&str>) -> AuditRecord {
        AuditRecord {
            seq: -7, // ignored
            at_ms,
            actor: actor.into(),
            role: "nurse".into(),
            action: "patient.read".into(),
            patient: patient.map(pid),
            order: None,
            outcome: "ok".into(),
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn token_round_trip_keeps_every_field() {
        let store = SqliteStore::in_memory().unwrap();
        let mut t = token("t-00000001", &"ab".repeat(32), 1_000);
        t.role = "patient".into();
        t.patient = Some(pid("p-1"));
        t.revoked_ms = Some(2_000);
        store.insert_token(&t, None).await.unwrap();
        let plain = token("t-00000002", &"cd".repeat(32), 500);
        store.insert_token(&plain, None).await.unwrap();
        assert_eq!(
            store.token_by_hash(&t.hash).await.unwrap(),
            Some(t.clone()),
            "revoked tokens are found too"
        );
        assert_eq!(
            store.token_by_hash(&plain.hash).await.unwrap(),
            Some(plain.clone())
        );
        assert_eq!(store.token_by_hash("ef").await.unwrap(), None);
        // Oldest first.
        assert_eq!(store.tokens().await.unwrap(), vec![plain, t]);
    }

    #[tokio::test]
    async fn duplicate_token_id_or_hash_is_exists_and_changes_nothing() {
        let store = SqliteStore::in_memory().unwrap();
        let t = token("t-00000001", "aa", 1_000);
        store.insert_token(&t, None).await.unwrap();
        let same_hash = token("t-00000002", "aa", 2_000);
        assert!(matches!(
            store.insert_token(&same_hash, None).await,
            Err(StoreError::Exists(m)) if m.contains("t-00000002")
        ));
        let same_id = token("t-00000001", "bb", 3_000);
        assert!(matches!(
            store.insert_token(&same_id, None).await,
            Err(StoreError::Exists(_))
        ));
        assert_eq!(store.tokens().await.unwrap(), vec![t]);
        assert_eq!(store.token_by_hash("bb").await.unwrap(), None);
    }

    #[tokio::test]
    async fn revoke_token_once() {
        let store = SqliteStore::in_memory().unwrap();
        let t = token("t-00000001", "aa", 1_000);
        store.insert_token(&t, None).await.unwrap();
        assert!(store.revoke_token("t-00000001", 5_000, None).await.unwrap());
        // Already revoked: false, and the first revocation time stands.
        assert!(!store.revoke_token("t-00000001", 6_000, None).await.unwrap());
        assert!(!store.revoke_token("t-unknown", 6_000, None).await.unwrap());
        let now = store.token_by_hash("aa").await.unwrap().unwrap();
        assert_eq!(now.revoked_ms, Some(5_000));
        assert_eq!(
            now,
            TokenRecord {
                revoked_ms: Some(5_000),
                ..t
            }
        );
    }

    #[tokio::test]
    async fn audit_append_assigns_increasing_seq_and_round_trips() {
        let store = SqliteStore::in_memory().unwrap();
        let mut full = audit_rec(1_000, "t-00000001", Some("p-1"));
        full.order = Some(oid("o-1"));
        full.action = "order.create".into();
        full.outcome = "not_found".into();
        full.detail = "\"quotes\" and ünïcode".into();
        let s1 = store.append_audit(&full).await.unwrap();
        let s2 = store
            .append_audit(&audit_rec(900, "cli", None))
            .await
            .unwrap();
        assert!(s2 > s1, "{s1} then {s2}");
        let all = store.audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(
            all,
            vec![
                AuditRecord { seq: s1, ..full },
                AuditRecord {
                    seq: s2,
                    ..audit_rec(900, "cli", None)
                },
            ],
            "ascending seq, not time"
        );
    }

    #[tokio::test]
    async fn audit_filters_limit_and_paging() {
        let store = SqliteStore::in_memory().unwrap();
        // 10 records: even ones about p-1 by t-a, odd ones about p-2 by t-b; at_ms = 100 * i.
        let mut seqs = Vec::new();
        for i in 0..10 {
            let (actor, patient) = if i % 2 == 0 {
                ("t-a", "p-1")
            } else {
                ("t-b", "p-2")
            };
            seqs.push(
                store
                    .append_audit(&audit_rec(100 * i, actor, Some(patient)))
                    .await
                    .unwrap(),
            );
        }
        let at = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.at_ms).collect::<Vec<_>>();
        let q = |f: fn(&mut AuditQuery)| {
            let mut q = AuditQuery::default();
            f(&mut q);
            q
        };
        assert_eq!(
            at(store
                .audit(&q(|q| q.patient = Some(pid("p-1"))))
                .await
                .unwrap()),
            [0, 200, 400, 600, 800]
        );
        assert_eq!(
            at(store
                .audit(&q(|q| q.actor = Some("t-b".into())))
                .await
                .unwrap()),
            [100, 300, 500, 700, 900]
        );
        assert_eq!(
            at(store.audit(&q(|q| q.since_ms = Some(700))).await.unwrap()),
            [700, 800, 900]
        );
        // Filters combine.
        assert_eq!(
            at(store
                .audit(&q(|q| {
                    q.patient = Some(pid("p-2"));
                    q.since_ms = Some(400);
                    q.actor = Some("t-b".into());
                }))
                .await
                .unwrap()),
            [500, 700, 900]
        );
        assert!(
            store
                .audit(&q(|q| {
                    q.patient = Some(pid("p-1"));
                    q.actor = Some("t-b".into());
                }))
                .await
                .unwrap()
                .is_empty()
        );
        // A limit without after_seq: the most recent ones, still ascending.
        assert_eq!(
            at(store.audit(&q(|q| q.limit = Some(3))).await.unwrap()),
            [700, 800, 900]
        );
        assert_eq!(
            at(store
                .audit(&q(|q| {
                    q.limit = Some(2);
                    q.patient = Some(pid("p-1"));
                }))
                .await
                .unwrap()),
            [600, 800]
        );
        // Paging forward from after_seq: the first ones after it.
        let mut page = AuditQuery {
            after_seq: Some(seqs[2]),
            limit: Some(3),
            ..AuditQuery::default()
        };
        assert_eq!(at(store.audit(&page).await.unwrap()), [300, 400, 500]);
        page.after_seq = Some(seqs[5]);
        let rest = store.audit(&page).await.unwrap();
        assert_eq!(at(rest.clone()), [600, 700, 800]);
        page.after_seq = Some(rest[2].seq);
        assert_eq!(at(store.audit(&page).await.unwrap()), [900]);
        page.after_seq = Some(seqs[9]);
        assert!(store.audit(&page).await.unwrap().is_empty());
        // Limit 0 is 0; the default is 100; the cap is 10 000.
        assert!(
            store
                .audit(&q(|q| q.limit = Some(0)))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(AuditQuery::default().effective_limit(), 100);
        assert_eq!(q(|q| q.limit = Some(u32::MAX)).effective_limit(), 10_000);
    }

    #[tokio::test]
    async fn audit_default_limit_is_the_most_recent_hundred() {
        let store = SqliteStore::in_memory().unwrap();
        for i in 0..120 {
            store
                .append_audit(&audit_rec(i, "system", None))
                .await
                .unwrap();
        }
        let got = store.audit(&AuditQuery::default()).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!((got[0].at_ms, got[99].at_ms), (20, 119));
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    }

    /// Issue 12: a change and its audit record are one transaction — the record is stored
    /// exactly when the change is, never for a change refused.
    #[tokio::test]
    async fn a_change_carries_its_audit_record_only_if_made() {
        let store = SqliteStore::in_memory().unwrap();
        let rec = |action: &str| AuditRecord {
            action: action.into(),
            outcome: "ok".into(),
            ..audit_rec(5, "t-1", Some("p-1"))
        };
        let o = order("o-1", "p-1", 1);
        store
            .insert_order(&o, "a", Some(&rec("order.create")))
            .await
            .unwrap();
        assert!(matches!(
            store.insert_order(&o, "a", Some(&rec("order.again"))).await,
            Err(StoreError::Exists(_))
        ));
        let call = step(
            "o-1",
            OrderState::Queued,
            OrderState::Called,
            2,
            Some("MRI-1"),
        );
        assert!(
            store
                .transition(&call, Some(&rec("order.call")))
                .await
                .unwrap()
        );
        assert!(
            !store
                .transition(&call, Some(&rec("order.call.lost")))
                .await
                .unwrap()
        );
        assert!(
            !store
                .set_priority(&oid("o-1"), Priority::Stat, 1, Some(&rec("order.priority")))
                .await
                .unwrap(),
            "not queued: no change, no record"
        );
        let patient = Patient {
            id: pid("p-1"),
            name: "A".into(),
            birth_date: None,
        };
        store
            .insert_patient(&patient, Some(&rec("patient.create")))
            .await
            .unwrap();
        assert!(
            store
                .insert_patient(&patient, Some(&rec("patient.again")))
                .await
                .is_err()
        );
        store
            .insert_token(&token("t-9", "h9", 1), Some(&rec("token.create")))
            .await
            .unwrap();
        assert!(
            store
                .revoke_token("t-9", 3, Some(&rec("token.revoke")))
                .await
                .unwrap()
        );
        assert!(
            !store
                .revoke_token("t-9", 4, Some(&rec("token.revoke.again")))
                .await
                .unwrap()
        );
        let actions: Vec<String> = store
            .audit(&AuditQuery::default())
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.action)
            .collect();
        assert_eq!(
            actions,
            [
                "order.create",
                "order.call",
                "patient.create",
                "token.create",
                "token.revoke"
            ]
        );
    }

    /// The reconciler's pass: orders by (updated_ms, id) in [since, before), paged, and a
    /// watermark that never moves back.
    #[tokio::test]
    async fn orders_updated_pages_in_order_and_the_watermark_only_rises() {
        let store = SqliteStore::in_memory().unwrap();
        for (id, at) in [
            ("o-c", 20),
            ("o-a", 10),
            ("o-b", 10),
            ("o-d", 30),
            ("o-e", 5),
        ] {
            store
                .insert_order(&order(id, "p-1", at), "a", None)
                .await
                .unwrap();
        }
        let page = |since, after, limit| {
            let store = &store;
            async move {
                store
                    .orders_updated(since, 30, after, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|o| o.id.to_string())
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(page(10, None, 10).await, ["o-a", "o-b", "o-c"]);
        assert_eq!(page(10, None, 1).await, ["o-a"]);
        assert_eq!(page(10, Some((10, oid("o-a"))), 1).await, ["o-b"]);
        assert_eq!(page(10, Some((10, oid("o-b"))), 5).await, ["o-c"]);
        assert_eq!(store.reconciled_until().await.unwrap(), None);
        store.set_reconciled_until(50).await.unwrap();
        store.set_reconciled_until(40).await.unwrap();
        assert_eq!(store.reconciled_until().await.unwrap(), Some(50));
        store.set_reconciled_until(60).await.unwrap();
        assert_eq!(store.reconciled_until().await.unwrap(), Some(60));
    }

    #[tokio::test]
    async fn a_v1_database_is_migrated_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinical.db");
        // A database as a v1 build left it.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO patients (id, name, birth_date) VALUES ('p-1', 'Ada', NULL)",
                [],
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        let version: i64 = store
            .conn
            .lock()
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(
            store.patient(&pid("p-1")).await.unwrap().unwrap().name,
            "Ada"
        );
        let t = token("t-00000001", "aa", 1);
        store.insert_token(&t, None).await.unwrap();
        assert_eq!(store.token_by_hash("aa").await.unwrap(), Some(t));
        let seq = store
            .append_audit(&audit_rec(1, "cli", Some("p-1")))
            .await
            .unwrap();
        assert_eq!(
            store.audit(&AuditQuery::default()).await.unwrap()[0].seq,
            seq
        );
        // Opening again migrates nothing more.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.tokens().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn corrupt_token_and_audit_values_are_reported_as_corrupt() {
        let store = SqliteStore::in_memory().unwrap();
        store
            .insert_token(&token("t-1", "aa", 1), None)
            .await
            .unwrap();
        store
            .append_audit(&audit_rec(1, "cli", Some("p-1")))
            .await
            .unwrap();
        {
            let conn = store.conn.lock().unwrap();
            conn.execute("UPDATE tokens SET patient = 'a/b'", [])
                .unwrap();
            conn.execute("UPDATE audit SET order_id = 'x/y'", [])
                .unwrap();
        }
        assert!(matches!(
            store.token_by_hash("aa").await,
            Err(StoreError::Corrupt(m)) if m.contains("t-1")
        ));
        assert!(matches!(
            store.audit(&AuditQuery::default()).await,
            Err(StoreError::Corrupt(m)) if m.contains("order")
        ));
    }
}
