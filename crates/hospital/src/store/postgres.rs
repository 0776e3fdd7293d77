//! The PostgreSQL clinical store: [`ClinicalStore`] for several medkeeper instances on several
//! machines sharing one database (issue 17).
//!
//! The same contract as [`SqliteStore`](super::SqliteStore), method for method; the store
//! conformance suite (`crates/hospital/tests/store_conformance.rs`) runs every case on both.
//!
//! ## Connections
//! `tokio-postgres` (TLS over rustls: see below) behind a small pool of its own: at most
//! [`PostgresOptions::pool_size`] connections, opened on demand, each with its connection task
//! on the tokio runtime. A connection that closed (the server restarted, the network broke) is
//! dropped when it is next taken and a new one is opened, so a store recovers by itself once
//! PostgreSQL is back; meanwhile every call fails with [`StoreError::Unavailable`] (the HTTP
//! API's 503 with `Retry-After`). Opening a connection gives up after [`PostgresOptions::connect_timeout`]; waiting for
//! a free one after [`PostgresOptions::acquire_timeout`].
//!
//! ## Atomicity and races
//! Every method that writes more than one row runs in one transaction (`READ COMMITTED`).
//! A transition is `UPDATE orders ... WHERE id = $ AND state = $from`: of two instances racing
//! on one order, the second waits on the first's row lock, re-reads the committed row and
//! finds it no longer in `from` — exactly one wins. Inserts that the contract makes idempotent
//! use `ON CONFLICT DO NOTHING` (which waits for a racing insert of the same key to commit);
//! inserts that must refuse a taken key report the unique violation as
//! [`StoreError::Exists`], the transaction rolled back.
//!
//! ## The audit trail
//! Append-only twice over: no method updates or deletes it, and a trigger refuses `UPDATE`
//! and `DELETE` on `audit` (a retention job run by a DBA disables it for its own
//! transaction). Sequence numbers come from an identity column, which hands numbers out at
//! insert, not at commit; so that the trail is visible in `seq` order (a reader paging
//! forward with `after_seq` never skips a record committed late with a smaller number), every
//! transaction takes the transaction-level advisory lock [`AUDIT_LOCK`] just before its first
//! audit insert, and after it writes nothing else but audit records (alarm events: before its
//! first insert), so the lock is held only for the end of the transaction and its commit.
//!
//! ## Schema
//! [`MIGRATIONS`] mirrors SQLite's scripts version for version in PostgreSQL's dialect
//! (`BIGINT GENERATED ALWAYS AS IDENTITY` keys, `BIGINT` times, `DOUBLE PRECISION` values),
//! plus the audit trigger. The version is kept in `medkeeper_schema`. [`PostgresStore::connect`]
//! applies what is missing in one transaction under the advisory lock [`MIGRATE_LOCK`], so
//! several instances starting at once migrate once; a schema newer than this build is refused.
//! Migrations are forward-only: a release never edits a released script.
//!
//! ## TLS
//! libpq's `sslmode` (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`) with `sslrootcert`, `sslcert` and `sslkey` in the URL, over rustls; the
//! [`tls`] module has the table of what each mode checks and where it differs from libpq.
//! `require` alone encrypts but does not check whom it talks to: across any network an
//! attacker could reach, use `verify-full` (docs/deploy.md).
//!
//! ## Cancellation
//! Dropping a call's future mid-transaction rolls the transaction back (the driver sends
//! `ROLLBACK` when a transaction is dropped); a call dropped while `COMMIT` is in flight may
//! or may not have committed, atomically either way.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Client, Config, Row, Transaction};

mod tls;

use super::{
    AlarmEvent, AlarmQuery, AuditQuery, AuditRecord, ClinicalStore, ExamResult, News2Record,
    ObservationQuery, POOL_SAMPLES_MAX, Patient, PatientSettings, PoolSample, RawMessage, Revision,
    StoreError, TokenRecord, Waiting, WaitingByPriority,
};
use crate::model::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition};
use crate::news2::SpO2Scale;
use crate::vitals::{Observation, VitalCode};

/// The advisory lock (transaction level) under which the schema is migrated.
pub const MIGRATE_LOCK: i64 = 0x6d6b_5f6d_6967_7261; // "mk_migra"

/// The advisory lock (transaction level) every transaction takes before its first audit
/// insert, so that audit records commit in `seq` order (see the module docs).
pub const AUDIT_LOCK: i64 = 0x6d6b_5f61_7564_6974; // "mk_audit"

/// The schema, one script per version: `MIGRATIONS[i]` takes version `i` to `i + 1`, as
/// SQLite's scripts do. Append-only: a released script is never edited.
pub const MIGRATIONS: &[&str] = &[
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

    CREATE TABLE transitions (
        id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    // v2: API tokens (hashes only) and the audit trail, append-only.
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

    -- No foreign keys: the trail outlives (and may name) patients and orders never stored.
    CREATE TABLE audit (
        seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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

    CREATE FUNCTION medkeeper_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'the audit trail is append-only (% refused)', TG_OP;
    END
    $$;
    CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION medkeeper_audit_append_only();
    "#,
    // v3: the reconciler's pass over recently changed orders.
    r#"
    CREATE INDEX orders_by_update ON orders (updated_ms, id);
    CREATE TABLE reconciler (
        id                 INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
        checked_until_ms   BIGINT NOT NULL
    );
    "#,
    // v4: alarm history (issue 14).
    r#"
    CREATE TABLE alarm_events (
        alarm     TEXT NOT NULL,
        seq       BIGINT NOT NULL,
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
    CREATE TABLE raw_messages (
        id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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

/// The tables, in an order that satisfies their foreign keys (for copying and counting:
/// `medkeeper store migrate`).
pub const TABLES: &[&str] = &[
    "patients",
    "orders",
    "transitions",
    "results",
    "tokens",
    "audit",
    "reconciler",
    "alarm_events",
    "raw_messages",
    "observations",
    "patient_identifiers",
    "patient_settings",
    "news2_scores",
    "pool_samples",
];

const ORDER_COLUMNS: &str = "id, patient, pool_kind, pool_name, capabilities, priority, reason, \
                             state, assigned, created_ms, updated_ms";
const TOKEN_COLUMNS: &str =
    "id, hash, role, patient, label, created_ms, revoked_ms, expires_ms, replaced_by";
const AUDIT_COLUMNS: &str = "seq, at_ms, actor, role, action, patient, order_id, outcome, detail";
const ALARM_COLUMNS: &str =
    "alarm, seq, rule, scope, kind, priority, at_ms, actor, role, value, note";
const OBSERVATION_COLUMNS: &str =
    "id, patient, code, value, effective_ms, received_ms, source, artefact";
const POOL_SAMPLE_COLUMNS: &str = "pool_kind, pool_name, at_ms, units, in_use, unavailable, \
     stat_queued, stat_oldest_ms, asap_queued, asap_oldest_ms, urgent_queued, urgent_oldest_ms, \
     routine_queued, routine_oldest_ms";

/// How a [`PostgresStore`] connects.
#[derive(Clone)]
pub struct PostgresOptions {
    /// The password, if the URL has none (from the environment or a file; never a flag).
    pub password: Option<String>,
    /// At most this many connections. Default 8.
    pub pool_size: usize,
    /// Opening a connection gives up after this long. Default 5 s.
    pub connect_timeout: Duration,
    /// Waiting for a free connection gives up after this long. Default 10 s.
    pub acquire_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            password: None,
            pool_size: 8,
            connect_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

/// The PostgreSQL clinical store. Cheap to clone: clones share one pool.
///
/// ```no_run
/// # async fn example() -> Result<(), medkeeper_hospital::store::StoreError> {
/// use medkeeper_hospital::store::{ClinicalStore, PostgresOptions, PostgresStore};
/// let options = PostgresOptions {
///     password: std::env::var("PGPASSWORD").ok(),
///     ..PostgresOptions::default()
/// };
/// let store = PostgresStore::connect("postgres://medkeeper@10.0.0.5:5432/medkeeper", options)
///     .await?;
/// let id = "p-1".parse().unwrap();
/// assert!(store.patient(&id).await?.is_none());
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: std::sync::Arc<ConnectionPool>,
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.pool.target)
            .finish_non_exhaustive()
    }
}

/// Connections opened on demand, at most `slots` in use, idle ones kept for the next call.
struct ConnectionPool {
    config: Config,
    /// `sslmode` and the certificates: how each connection is made.
    tls: tls::PgTls,
    /// `host:port/db`, for messages (never the password).
    target: String,
    idle: Mutex<Vec<Client>>,
    slots: Semaphore,
    acquire_timeout: Duration,
}

/// A connection taken from the pool; back to it on drop unless it closed.
struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a ConnectionPool,
    _slot: SemaphorePermit<'a>,
}

impl Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("taken only on drop")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("taken only on drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take()
            && !c.is_closed()
            && let Ok(mut idle) = self.pool.idle.lock()
        {
            idle.push(c);
        }
    }
}

impl ConnectionPool {
    async fn open(&self) -> Result<Client, StoreError> {
        let target = self.target.clone();
        self.tls
            .connect(&self.config, move |e| {
                tracing::warn!(%target, "PostgreSQL connection lost: {}", describe(&e));
            })
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to PostgreSQL at {} (sslmode={}): {}",
                    self.target,
                    self.tls.mode().as_str(),
                    describe(&e)
                ))
            })
    }

    async fn get(&self) -> Result<Pooled<'_>, StoreError> {
        let slot = tokio::time::timeout(self.acquire_timeout, self.slots.acquire())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no free PostgreSQL connection within {:?}",
                    self.acquire_timeout
                ))
            })?
            .map_err(|_| StoreError::Backend("the connection pool is closed".into()))?;
        let reused = {
            let mut idle = self
                .idle
                .lock()
                .map_err(|_| StoreError::Backend("connection pool unusable".into()))?;
            // Closed ones (the server restarted) are dropped here.
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match reused {
            Some(c) => c,
            None => self.open().await?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: self,
            _slot: slot,
        })
    }
}

/// A driver error in words, without values (a row's values can be a patient's: logs carry
/// no PHI). Database errors: their SQLSTATE and message (not their detail).
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} {}: {}", db.severity(), db.code().code(), db.message());
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn backend(e: tokio_postgres::Error) -> StoreError {
    if e.is_closed() {
        return StoreError::Unavailable(format!("PostgreSQL connection lost: {}", describe(&e)));
    }
    // Class 08 (connection exception) and 57P01-57P03 (the server shutting down, crashed,
    // not yet accepting connections): the statement did not commit; a retry may succeed.
    if let Some(code) = e.code().map(|c| c.code())
        && (code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03"))
    {
        return StoreError::Unavailable(format!("PostgreSQL: {}", describe(&e)));
    }
    // An I/O error on the socket (reset, broken pipe) without a server message.
    if e.as_db_error().is_none()
        && std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>())
    {
        return StoreError::Unavailable(format!("PostgreSQL connection lost: {}", describe(&e)));
    }
    // 22021 (character_not_in_repertoire: a NUL, or bytes not in the encoding) and 22P05
    // (untranslatable_character): the value, not the database, is at fault.
    if matches!(
        e.code(),
        Some(c) if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *c == SqlState::UNTRANSLATABLE_CHARACTER
    ) {
        return StoreError::Invalid(format!(
            "text the database cannot store (a NUL character or one outside its encoding): \
             PostgreSQL: {}",
            describe(&e)
        ));
    }
    StoreError::Backend(format!("PostgreSQL: {}", describe(&e)))
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Column `i` of `row`; a value of another type is corruption of record `rec`.
fn col<'a, T: FromSql<'a>>(row: &'a Row, i: usize, rec: &str) -> Result<T, StoreError> {
    row.try_get(i).map_err(|e| {
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        StoreError::Corrupt(format!("{rec}: column {i}: {e}{cause}"))
    })
}

fn parse<T: FromStr>(record: &str, what: &str, s: &str) -> Result<T, StoreError>
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

fn read_pool_sample(r: &Row) -> Result<PoolSample, StoreError> {
    let kind: String = col(r, 0, "pool sample")?;
    let name: String = col(r, 1, "pool sample")?;
    let at_ms: i64 = col(r, 2, "pool sample")?;
    let rec = format!("pool sample {kind}:{name} at {at_ms}");
    let pool = match kind.as_str() {
        "equipment" => Pool::Equipment(name),
        "department" => Pool::Department(name),
        other => return Err(StoreError::Corrupt(format!("{rec}: pool kind {other:?}"))),
    };
    let count = |i: usize| -> Result<u32, StoreError> {
        let v: i64 = col(r, i, &rec)?;
        u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{rec}: column {i}: {v}")))
    };
    let waiting = |i: usize| -> Result<Waiting, StoreError> {
        Ok(Waiting {
            queued: count(i)?,
            oldest_wait_ms: col(r, i + 1, &rec)?,
        })
    };
    Ok(PoolSample {
        at_ms,
        units: count(3)?,
        in_use: count(4)?,
        unavailable: count(5)?,
        waiting: WaitingByPriority {
            stat: waiting(6)?,
            asap: waiting(8)?,
            urgent: waiting(10)?,
            routine: waiting(12)?,
        },
        pool,
    })
}

fn read_order(r: &Row) -> Result<Order, StoreError> {
    let id: String = col(r, 0, "order")?;
    let rec = format!("order {id:?}");
    let pool_kind: String = col(r, 2, &rec)?;
    let pool_name: String = col(r, 3, &rec)?;
    let pool = match pool_kind.as_str() {
        "equipment" => Pool::Equipment(pool_name),
        "department" => Pool::Department(pool_name),
        other => return Err(StoreError::Corrupt(format!("{rec}: pool kind {other:?}"))),
    };
    let capabilities: String = col(r, 4, &rec)?;
    let capabilities = serde_json::from_str(&capabilities)
        .map_err(|e| StoreError::Corrupt(format!("{rec}: capabilities {capabilities:?}: {e}")))?;
    Ok(Order {
        patient: parse(&rec, "patient", &col::<String>(r, 1, &rec)?)?,
        pool,
        capabilities,
        priority: parse(&rec, "priority", &col::<String>(r, 5, &rec)?)?,
        reason: col(r, 6, &rec)?,
        state: parse(&rec, "state", &col::<String>(r, 7, &rec)?)?,
        assigned: col(r, 8, &rec)?,
        created_ms: col(r, 9, &rec)?,
        updated_ms: col(r, 10, &rec)?,
        id: parse(&rec, "id", &id)?,
    })
}

fn read_token(r: &Row) -> Result<TokenRecord, StoreError> {
    let id: String = col(r, 0, "token")?;
    let rec = format!("token {id:?}");
    let patient: Option<String> = col(r, 3, &rec)?;
    Ok(TokenRecord {
        hash: col(r, 1, &rec)?,
        role: col(r, 2, &rec)?,
        patient: patient.map(|p| parse(&rec, "patient", &p)).transpose()?,
        label: col(r, 4, &rec)?,
        created_ms: col(r, 5, &rec)?,
        revoked_ms: col(r, 6, &rec)?,
        expires_ms: col(r, 7, &rec)?,
        replaced_by: col(r, 8, &rec)?,
        id,
    })
}

fn read_audit(r: &Row) -> Result<AuditRecord, StoreError> {
    let seq: i64 = col(r, 0, "audit record")?;
    let rec = format!("audit record {seq}");
    let patient: Option<String> = col(r, 5, &rec)?;
    let order: Option<String> = col(r, 6, &rec)?;
    Ok(AuditRecord {
        seq,
        at_ms: col(r, 1, &rec)?,
        actor: col(r, 2, &rec)?,
        role: col(r, 3, &rec)?,
        action: col(r, 4, &rec)?,
        patient: patient.map(|p| parse(&rec, "patient", &p)).transpose()?,
        order: order.map(|o| parse(&rec, "order", &o)).transpose()?,
        outcome: col(r, 7, &rec)?,
        detail: col(r, 8, &rec)?,
    })
}

fn read_alarm_event(r: &Row) -> Result<AlarmEvent, StoreError> {
    let alarm: String = col(r, 0, "alarm event")?;
    let rec = format!("alarm {alarm}");
    let seq: i64 = col(r, 1, &rec)?;
    let kind: String = col(r, 4, &rec)?;
    let priority: String = col(r, 5, &rec)?;
    Ok(AlarmEvent {
        seq: u32::try_from(seq)
            .map_err(|_| StoreError::Corrupt(format!("{rec}: sequence number {seq}")))?,
        rule: col(r, 2, &rec)?,
        scope: col(r, 3, &rec)?,
        kind: kind.parse()?,
        priority: priority
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("{rec}: priority {priority:?}")))?,
        at_ms: col(r, 6, &rec)?,
        actor: col(r, 7, &rec)?,
        role: col(r, 8, &rec)?,
        value: col(r, 9, &rec)?,
        note: col(r, 10, &rec)?,
        alarm,
    })
}

fn read_observation(r: &Row) -> Result<Observation, StoreError> {
    let id: String = col(r, 0, "observation")?;
    let rec = format!("observation {id}");
    let patient: String = col(r, 1, &rec)?;
    let code: String = col(r, 2, &rec)?;
    Ok(Observation {
        patient: patient
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("{rec}: patient {patient:?}")))?,
        code: VitalCode::parse(&code)
            .ok_or_else(|| StoreError::Corrupt(format!("{rec}: code {code:?}")))?,
        value: col(r, 3, &rec)?,
        effective_ms: col(r, 4, &rec)?,
        received_ms: col(r, 5, &rec)?,
        source: col(r, 6, &rec)?,
        artefact: col(r, 7, &rec)?,
        id,
    })
}

fn read_transition(r: &Row) -> Result<Transition, StoreError> {
    let order: String = col(r, 0, "transition")?;
    let rec = format!("transition of order {order:?}");
    let from: Option<String> = col(r, 1, &rec)?;
    let to: String = col(r, 2, &rec)?;
    Ok(Transition {
        order: parse(&rec, "order id", &order)?,
        from: from.map(|f| parse(&rec, "from state", &f)).transpose()?,
        to: parse(&rec, "to state", &to)?,
        at_ms: col(r, 3, &rec)?,
        actor: col(r, 4, &rec)?,
        unit: col(r, 5, &rec)?,
    })
}

/// Inserts a token; a taken id or hash is `Exists`.
async fn insert_token_in(tx: &Transaction<'_>, t: &TokenRecord) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO tokens ({TOKEN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ),
        &[
            &t.id,
            &t.hash,
            &t.role,
            &t.patient.as_ref().map(|p| p.as_str()),
            &t.label,
            &t.created_ms,
            &t.revoked_ms,
            &t.expires_ms,
            &t.replaced_by,
        ],
    )
    .await
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

/// Appends `a` inside a transaction that holds (or now takes) [`AUDIT_LOCK`]; returns its
/// sequence number.
async fn insert_audit(tx: &Transaction<'_>, a: &AuditRecord) -> Result<i64, StoreError> {
    take_audit_lock(tx).await?;
    insert_audit_locked(tx, a).await
}

async fn take_audit_lock(tx: &Transaction<'_>) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])
        .await
        .map_err(backend)?;
    Ok(())
}

async fn insert_audit_locked(tx: &Transaction<'_>, a: &AuditRecord) -> Result<i64, StoreError> {
    let row = tx
        .query_one(
            "INSERT INTO audit (at_ms, actor, role, action, patient, order_id, outcome, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
            &[
                &a.at_ms,
                &a.actor,
                &a.role,
                &a.action,
                &a.patient.as_ref().map(|p| p.as_str()),
                &a.order.as_ref().map(|o| o.as_str()),
                &a.outcome,
                &a.detail,
            ],
        )
        .await
        .map_err(backend)?;
    col(&row, 0, "audit")
}

async fn append_audit_in(tx: &Transaction<'_>, a: Option<&AuditRecord>) -> Result<(), StoreError> {
    if let Some(a) = a {
        insert_audit(tx, a).await?;
    }
    Ok(())
}

/// Brings the schema to the newest version in one transaction under [`MIGRATE_LOCK`].
async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(backend)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
        .await
        .map_err(backend)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS medkeeper_schema (
             id       INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
             version  BIGINT NOT NULL
         )",
    )
    .await
    .map_err(backend)?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM medkeeper_schema WHERE id = 1", &[])
        .await
        .map_err(backend)?
    {
        Some(row) => col(&row, 0, "medkeeper_schema")?,
        None => 0,
    };
    let known = MIGRATIONS.len() as i64;
    if version > known || version < 0 {
        return Err(StoreError::Backend(format!(
            "clinical store schema version {version} is newer than this medkeeper's ({known})"
        )));
    }
    if version == known {
        return tx.commit().await.map_err(backend);
    }
    for script in &MIGRATIONS[version as usize..] {
        tx.batch_execute(script).await.map_err(backend)?;
    }
    tx.execute(
        "INSERT INTO medkeeper_schema (id, version) VALUES (1, $1)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version",
        &[&known],
    )
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    tracing::info!(from = version, to = known, "clinical store schema migrated");
    Ok(())
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://USER@HOST:PORT/DB`, any libpq-style
    /// URL or key=value string tokio-postgres reads, with libpq's `sslmode`, `sslrootcert`,
    /// `sslcert` and `sslkey`: the module's *TLS*), migrating its schema to this build's.
    ///
    /// # Notable errors
    /// `Backend` if the URL is malformed, a certificate file is missing or unusable,
    /// PostgreSQL cannot be reached, refuses the login or fails the TLS checks, or the schema
    /// is newer than this build.
    pub async fn connect(url: &str, options: PostgresOptions) -> Result<PostgresStore, StoreError> {
        let (config, tls) = connection_settings(url, &options)?;
        let target = describe_target(&config);
        let pool = ConnectionPool {
            config,
            tls,
            target,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(options.pool_size.max(1)),
            acquire_timeout: options.acquire_timeout,
        };
        {
            let mut c = pool.get().await?;
            migrate(&mut c).await?;
        }
        Ok(PostgresStore {
            pool: std::sync::Arc::new(pool),
        })
    }

    /// One connection on its own, made exactly as the store makes its connections (the URL,
    /// TLS and password handling of [`connect`](PostgresStore::connect)) but without touching
    /// the schema: for tools and tests (creating a database, checking a server).
    ///
    /// # Notable errors
    /// As for [`connect`](PostgresStore::connect), less the schema.
    pub async fn connect_one(url: &str, options: &PostgresOptions) -> Result<Client, StoreError> {
        let (config, tls) = connection_settings(url, options)?;
        let target = describe_target(&config);
        let lost = target.clone();
        tls.connect(&config, move |e| {
            tracing::warn!(target = %lost, "PostgreSQL connection lost: {}", describe(&e));
        })
        .await
        .map_err(|e| {
            StoreError::Backend(format!(
                "cannot connect to PostgreSQL at {target} (sslmode={}): {}",
                tls.mode().as_str(),
                describe(&e)
            ))
        })
    }

    /// Whether the store's connections are encrypted: PostgreSQL's own answer
    /// (`pg_stat_ssl`) for the connection this call takes from the pool.
    pub async fn uses_tls(&self) -> Result<bool, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .map_err(backend)?;
        col(&row, 0, "pg_stat_ssl")
    }

    /// `host:port/database`: where this store is (for messages; never the password).
    pub fn target(&self) -> &str {
        &self.pool.target
    }

    /// Rows in each of [`TABLES`], in that order (`medkeeper store migrate` compares them).
    pub async fn table_counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let c = self.pool.get().await?;
        let mut out = Vec::with_capacity(TABLES.len());
        for t in TABLES {
            let row = c
                .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
                .await
                .map_err(backend)?;
            out.push((*t, col(&row, 0, t)?));
        }
        Ok(out)
    }

    /// Runs `sql` (one or more statements, no parameters) in one transaction. For
    /// `medkeeper store migrate` and tests; not part of the contract.
    pub async fn execute_batch(&self, sql: &str) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.batch_execute(sql).await.map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    /// Copies every row of the SQLite store at `path` into this one, in one transaction,
    /// then compares the tables' row counts on both sides (`medkeeper store migrate`).
    /// The SQLite file is first brought to this build's schema, as opening it would.
    /// Identity columns (transitions, audit, raw messages) keep their values and their
    /// sequences are moved past them, so audit sequence numbers stay as they were.
    ///
    /// # Notable errors
    /// `Backend` if this store already holds data (nothing is copied), if SQLite cannot be
    /// read, or if a count differs after the copy (then nothing is committed either);
    /// `Corrupt` for a value PostgreSQL's column refuses, naming the table, the row's key and a NUL
    /// if that is the cause.
    pub async fn import_sqlite(
        &self,
        path: &std::path::Path,
    ) -> Result<Vec<TableCopy>, StoreError> {
        drop(super::SqliteStore::open(path)?);
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        for t in TABLES {
            let row = tx
                .query_opt(&format!("SELECT 1 FROM {t} LIMIT 1"), &[])
                .await
                .map_err(backend)?;
            if row.is_some() {
                return Err(StoreError::Backend(format!(
                    "{}: table {t} already holds data; copy only into an empty store",
                    self.pool.target
                )));
            }
        }
        let (send, mut rows) = tokio::sync::mpsc::channel::<SqliteRows>(256);
        let path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || read_sqlite(&path, &send));
        let mut copies: Vec<TableCopy> = Vec::new();
        let mut insert = None;
        // The table being copied, its columns and the positions of its key, and the row's
        // number in it: what an error names, so the operator can find the row.
        let mut current: Option<(&'static str, Vec<String>, Vec<usize>)> = None;
        let mut row_number = 0_u64;
        while let Some(msg) = rows.recv().await {
            match msg {
                SqliteRows::Table(table, columns, key) => {
                    current = Some((table, columns.clone(), key));
                    row_number = 0;
                    let types = tx
                        .query(
                            "SELECT column_name::text, data_type::text
                             FROM information_schema.columns
                             WHERE table_schema = current_schema() AND table_name = $1",
                            &[&table],
                        )
                        .await
                        .map_err(backend)?;
                    let mut casts = Vec::with_capacity(columns.len());
                    for (i, name) in columns.iter().enumerate() {
                        let ty = types
                            .iter()
                            .find(|r| r.get::<_, String>(0) == *name)
                            .map(|r| r.get::<_, String>(1))
                            .ok_or_else(|| {
                                StoreError::Backend(format!("{table}: no column {name:?} here"))
                            })?;
                        casts.push(format!("${}::text::{ty}", i + 1));
                    }
                    let sql = format!(
                        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
                        columns.join(", "),
                        casts.join(", ")
                    );
                    insert = Some(tx.prepare(&sql).await.map_err(backend)?);
                }
                SqliteRows::Row(values) => {
                    let stmt = insert
                        .as_ref()
                        .ok_or_else(|| StoreError::Backend("a row before its table".into()))?;
                    let params: Vec<&(dyn ToSql + Sync)> =
                        values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                    row_number += 1;
                    tx.execute(stmt, &params).await.map_err(|e| {
                        if e.as_db_error().is_some() {
                            StoreError::Corrupt(refused_row(
                                current.as_ref(),
                                row_number,
                                &values,
                                &describe(&e),
                            ))
                        } else {
                            backend(e)
                        }
                    })?;
                }
                SqliteRows::Done(table, source) => copies.push(TableCopy {
                    table,
                    source,
                    target: 0,
                }),
                SqliteRows::Failed(e) => return Err(e),
            }
        }
        reader
            .await
            .map_err(|e| StoreError::Backend(format!("SQLite reader failed: {e}")))?;
        for (t, key) in [
            ("transitions", "id"),
            ("audit", "seq"),
            ("raw_messages", "id"),
        ] {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{t}', '{key}'),
                                   COALESCE((SELECT MAX({key}) FROM {t}), 0) + 1, false)"
                ),
                &[],
            )
            .await
            .map_err(backend)?;
        }
        for copy in &mut copies {
            let row = tx
                .query_one(&format!("SELECT COUNT(*) FROM {}", copy.table), &[])
                .await
                .map_err(backend)?;
            copy.target = col(&row, 0, copy.table)?;
        }
        if copies.len() != TABLES.len() {
            return Err(StoreError::Backend(format!(
                "copied {} tables of {}",
                copies.len(),
                TABLES.len()
            )));
        }
        if let Some(bad) = copies.iter().find(|c| c.source != c.target) {
            return Err(StoreError::Backend(format!(
                "table {}: {} rows in SQLite, {} copied; nothing committed",
                bad.table, bad.source, bad.target
            )));
        }
        tx.commit().await.map_err(backend)?;
        Ok(copies)
    }
}

/// One table copied by [`PostgresStore::import_sqlite`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    /// The table.
    pub table: &'static str,
    /// Its rows in SQLite.
    pub source: i64,
    /// Its rows in PostgreSQL after the copy.
    pub target: i64,
}

/// Where a row PostgreSQL refused is in the SQLite store, and why: its table, its key (the
/// primary key's columns, else its position), and the column holding a NUL if one does (the
/// usual cause: SQLite keeps a NUL in text, PostgreSQL cannot). Only the key's values are
/// shown, each cut to 64 characters, not the row's other (clinical) values.
fn refused_row(
    current: Option<&(&'static str, Vec<String>, Vec<usize>)>,
    row_number: u64,
    values: &[Option<String>],
    why: &str,
) -> String {
    let Some((table, columns, key)) = current else {
        return format!("a value refused: {why}");
    };
    let shown = |v: &Option<String>| match v {
        None => "NULL".to_string(),
        Some(v) => format!("{:?}", v.chars().take(64).collect::<String>()),
    };
    let key = if key.is_empty() {
        format!("row {row_number}")
    } else {
        key.iter()
            .filter_map(|&i| Some(format!("{}={}", columns.get(i)?, shown(values.get(i)?))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let nul = columns
        .iter()
        .zip(values)
        .find(|(_, v)| v.as_deref().is_some_and(|v| v.contains('\0')))
        .map(|(c, _)| {
            format!(
                "column {c} holds a NUL character, which PostgreSQL text cannot store \
                 (remove it in the SQLite store and migrate again); "
            )
        })
        .unwrap_or_default();
    format!("table {table}, row {key}: a value refused: {nul}{why}")
}

/// What the SQLite reader sends the copy.
enum SqliteRows {
    /// A table, its columns, and the positions of its primary key's columns (none: no key).
    Table(&'static str, Vec<String>, Vec<usize>),
    Row(Vec<Option<String>>),
    Done(&'static str, i64),
    Failed(StoreError),
}

/// Reads every table of the SQLite file at `path` (read-only), each value as text (reals in
/// Rust's shortest round-trip form, so they come back equal), into `send`.
fn read_sqlite(path: &std::path::Path, send: &tokio::sync::mpsc::Sender<SqliteRows>) {
    use rusqlite::types::Value;
    let sqlite = |e: rusqlite::Error| StoreError::Backend(format!("SQLite: {e}"));
    let run = || -> Result<(), StoreError> {
        let conn =
            rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(sqlite)?;
        // One snapshot of the whole file.
        conn.execute_batch("BEGIN").map_err(sqlite)?;
        for table in TABLES {
            let mut info = conn
                .prepare(&format!(
                    "SELECT name, pk FROM pragma_table_info('{table}')"
                ))
                .map_err(sqlite)?;
            let info = info
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(sqlite)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite)?;
            let columns: Vec<String> = info.iter().map(|(name, _)| name.clone()).collect();
            // `pk` is the column's position in the primary key, from 1; 0 if not in it.
            let mut key: Vec<(i64, usize)> = info
                .iter()
                .enumerate()
                .filter(|(_, (_, pk))| *pk > 0)
                .map(|(i, (_, pk))| (*pk, i))
                .collect();
            key.sort_unstable();
            let key = key.into_iter().map(|(_, i)| i).collect();
            if send
                .blocking_send(SqliteRows::Table(table, columns.clone(), key))
                .is_err()
            {
                return Ok(());
            }
            let mut stmt = conn
                .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
                .map_err(sqlite)?;
            let mut rows = stmt.query([]).map_err(sqlite)?;
            let mut n = 0;
            while let Some(r) = rows.next().map_err(sqlite)? {
                let mut values = Vec::with_capacity(columns.len());
                for (i, column) in columns.iter().enumerate() {
                    values.push(match r.get::<_, Value>(i).map_err(sqlite)? {
                        Value::Null => None,
                        Value::Integer(v) => Some(v.to_string()),
                        Value::Real(v) => Some(v.to_string()),
                        Value::Text(v) => Some(v),
                        Value::Blob(_) => {
                            return Err(StoreError::Corrupt(format!(
                                "{table}: a binary value in column {column}"
                            )));
                        }
                    });
                }
                n += 1;
                if send.blocking_send(SqliteRows::Row(values)).is_err() {
                    return Ok(());
                }
            }
            if send.blocking_send(SqliteRows::Done(table, n)).is_err() {
                return Ok(());
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        let _ = send.blocking_send(SqliteRows::Failed(e));
    }
}

/// The driver's settings and the TLS connector for `url`, with `options`' password and
/// timeouts and medkeeper's keepalives.
fn connection_settings(
    url: &str,
    options: &PostgresOptions,
) -> Result<(Config, tls::PgTls), StoreError> {
    let (rest, tls_params) = tls::split_url(url)?;
    let mut config: Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        StoreError::Backend(format!("invalid PostgreSQL URL: {}", describe(&e)))
    })?;
    let tls = tls::PgTls::new(&tls_params, &mut config)?;
    if let Some(p) = &options.password
        && config.get_password().is_none()
    {
        config.password(p.as_bytes());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(options.connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("medkeeper");
    }
    // A dead peer is noticed in seconds, not at the kernel's two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(10));
    config.tcp_user_timeout(Duration::from_secs(15));
    Ok((config, tls))
}

fn describe_target(config: &Config) -> String {
    use tokio_postgres::config::Host;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[async_trait]
impl ClinicalStore for PostgresStore {
    async fn upsert_patient(&self, p: &Patient) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO patients (id, name, birth_date) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET name = excluded.name,
                                            birth_date = excluded.birth_date",
            &[&p.id.as_str(), &p.name, &p.birth_date],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn insert_patient(
        &self,
        p: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO patients (id, name, birth_date) VALUES ($1, $2, $3)",
            &[&p.id.as_str(), &p.name, &p.birth_date],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Exists(format!("patient {}", p.id))
            } else {
                backend(e)
            }
        })?;
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT name, birth_date FROM patients WHERE id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        let rec = format!("patient {id}");
        row.map(|r| {
            Ok(Patient {
                id: id.clone(),
                name: col(&r, 0, &rec)?,
                birth_date: col(&r, 1, &rec)?,
            })
        })
        .transpose()
    }

    async fn insert_order(
        &self,
        o: &Order,
        actor: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let capabilities = serde_json::to_string(&o.capabilities)
            .map_err(|e| StoreError::Backend(format!("capabilities: {e}")))?;
        let (pool_kind, pool_name) = pool_columns(&o.pool);
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            &format!(
                "INSERT INTO orders ({ORDER_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ),
            &[
                &o.id.as_str(),
                &o.patient.as_str(),
                &pool_kind,
                &pool_name,
                &capabilities,
                &o.priority.code(),
                &o.reason,
                &o.state.code(),
                &o.assigned,
                &o.created_ms,
                &o.updated_ms,
            ],
        )
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                StoreError::Exists(format!("order {}", o.id))
            } else {
                backend(e)
            }
        })?;
        tx.execute(
            "INSERT INTO transitions (order_id, from_state, to_state, at_ms, actor, unit)
             VALUES ($1, NULL, $2, $3, $4, $5)",
            &[
                &o.id.as_str(),
                &o.state.code(),
                &o.created_ms,
                &actor,
                &o.assigned,
            ],
        )
        .await
        .map_err(backend)?;
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1"),
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(read_order).transpose()
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
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // The row lock: a racing transition waits here, then finds the state moved on.
        let changed = tx
            .execute(
                "UPDATE orders
                 SET state = $1, updated_ms = $2, assigned = COALESCE($3, assigned)
                 WHERE id = $4 AND state = $5",
                &[
                    &t.to.code(),
                    &t.at_ms,
                    &t.unit,
                    &t.order.as_str(),
                    &from.code(),
                ],
            )
            .await
            .map_err(backend)?;
        if changed != 1 {
            // Dropping the transaction rolls it back; nothing was written anyway.
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO transitions (order_id, from_state, to_state, at_ms, actor, unit)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &t.order.as_str(),
                &from.code(),
                &t.to.code(),
                &t.at_ms,
                &t.actor,
                &t.unit,
            ],
        )
        .await
        .map_err(backend)?;
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let changed = tx
            .execute(
                "UPDATE orders SET priority = $1, updated_ms = $2 WHERE id = $3 AND state = $4",
                &[
                    &priority.code(),
                    &at_ms,
                    &id.as_str(),
                    &OrderState::Queued.code(),
                ],
            )
            .await
            .map_err(backend)?;
        if changed != 1 {
            return Ok(false);
        }
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        let (after_ms, after_id) = match &after {
            Some((ms, id)) => (*ms, id.as_str().to_string()),
            None => (i64::MIN, String::new()),
        };
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders
                     WHERE updated_ms >= $1 AND updated_ms < $2
                       AND (updated_ms > $3 OR (updated_ms = $3 AND id > $4))
                     ORDER BY updated_ms, id LIMIT $5"
                ),
                &[
                    &since_ms,
                    &before_ms,
                    &after_ms,
                    &after_id,
                    &i64::from(limit),
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_order).collect()
    }

    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt("SELECT checked_until_ms FROM reconciler WHERE id = 1", &[])
            .await
            .map_err(backend)?;
        row.map(|r| col(&r, 0, "reconciler")).transpose()
    }

    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            "INSERT INTO reconciler (id, checked_until_ms) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE
             SET checked_until_ms = GREATEST(reconciler.checked_until_ms,
                                             excluded.checked_until_ms)",
            &[&ms],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT order_id, from_state, to_state, at_ms, actor, unit
                 FROM transitions WHERE order_id = $1 ORDER BY id",
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_transition).collect()
    }

    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let codes: Vec<&str> = states.iter().map(|s| s.code()).collect();
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE state = ANY($1)
                     ORDER BY created_ms, id"
                ),
                &[&codes],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_order).collect()
    }

    async fn order_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query("SELECT state, COUNT(*) FROM orders GROUP BY state", &[])
            .await
            .map_err(backend)?;
        let mut counts: Vec<(OrderState, u64)> = OrderState::ALL.iter().map(|s| (*s, 0)).collect();
        for r in &rows {
            let state: String = col(r, 0, "orders")?;
            let n: i64 = col(r, 1, "orders")?;
            let state: OrderState = parse("orders", "state", &state)?;
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == state) {
                c.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }

    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {ORDER_COLUMNS} FROM orders WHERE patient = $1
                     ORDER BY created_ms, id"
                ),
                &[&patient.as_str()],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_order).collect()
    }

    async fn put_result(&self, r: &ExamResult) -> Result<(), StoreError> {
        let c = self.pool.get().await?;
        c.execute(
            // A reported order's result is never replaced: only a draft stored before the
            // transition to reported. An unknown order is refused by the foreign key.
            "INSERT INTO results (order_id, text, at_ms, actor) VALUES ($1, $2, $3, $4)
             ON CONFLICT (order_id) DO UPDATE SET text = excluded.text,
                                                  at_ms = excluded.at_ms,
                                                  actor = excluded.actor
             WHERE (SELECT state FROM orders WHERE id = excluded.order_id) <> 'reported'",
            &[&r.order.as_str(), &r.text, &r.at_ms, &r.actor],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT text, at_ms, actor FROM results WHERE order_id = $1",
                &[&id.as_str()],
            )
            .await
            .map_err(backend)?;
        let rec = format!("result of {id}");
        row.map(|r| {
            Ok(ExamResult {
                order: id.clone(),
                text: col(&r, 0, &rec)?,
                at_ms: col(&r, 1, &rec)?,
                actor: col(&r, 2, &rec)?,
            })
        })
        .transpose()
    }

    async fn insert_token(
        &self,
        t: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        insert_token_in(&tx, t).await?;
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"),
                &[&id],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(read_token).transpose()
    }

    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // The row lock the UPDATE takes orders it with a racing revocation or rotation of the
        // same token: a revocation first leaves nothing to rotate; a rotation first is then
        // revoked with its successor in place; a second rotation, once the first commits,
        // finds `replaced_by` set (READ COMMITTED re-checks the WHERE on the locked row) and
        // changes nothing.
        let changed = tx
            .execute(
                "UPDATE tokens SET expires_ms = LEAST(COALESCE(expires_ms, $1), $1),
                                   replaced_by = $4
                 WHERE id = $2 AND revoked_ms IS NULL AND replaced_by IS NULL
                   AND (expires_ms IS NULL OR expires_ms > $3)",
                &[&old_expires_ms, &old, &new.created_ms, &new.id],
            )
            .await
            .map_err(backend)?;
        if changed != 1 {
            return Ok(false);
        }
        insert_token_in(&tx, new).await?;
        // The audit records last: the transaction writes nothing else after taking AUDIT_LOCK.
        for a in audit {
            insert_audit(&tx, a).await?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"),
                &[&hash],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(read_token).transpose()
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_ms, id"),
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_token).collect()
    }

    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let changed = tx
            .execute(
                "UPDATE tokens SET revoked_ms = $1 WHERE id = $2 AND revoked_ms IS NULL",
                &[&at_ms, &id],
            )
            .await
            .map_err(backend)?;
        if changed != 1 {
            return Ok(false);
        }
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(true)
    }

    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let seq = insert_audit(&tx, record).await?;
        tx.commit().await.map_err(backend)?;
        Ok(seq)
    }

    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let patient = q.patient.as_ref().map(|p| p.as_str().to_string());
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(p) = &patient {
            args.push(p);
            conds.push(format!("patient = ${}", args.len()));
        }
        if let Some(a) = &q.actor {
            args.push(a);
            conds.push(format!("actor = ${}", args.len()));
        }
        if let Some(t) = &q.since_ms {
            args.push(t);
            conds.push(format!("at_ms >= ${}", args.len()));
        }
        if let Some(s) = &q.after_seq {
            args.push(s);
            conds.push(format!("seq > ${}", args.len()));
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let limit = q.effective_limit();
        let sql = if q.after_seq.is_some() {
            format!("SELECT {AUDIT_COLUMNS} FROM audit {filter} ORDER BY seq LIMIT {limit}")
        } else {
            format!(
                "SELECT {AUDIT_COLUMNS} FROM (
                     SELECT {AUDIT_COLUMNS} FROM audit {filter} ORDER BY seq DESC LIMIT {limit}
                 ) AS recent ORDER BY seq"
            )
        };
        let c = self.pool.get().await?;
        let rows = c.query(&sql, &args).await.map_err(backend)?;
        rows.iter().map(read_audit).collect()
    }

    async fn record_alarm_events(&self, events: &[AlarmEvent]) -> Result<usize, StoreError> {
        if events.is_empty() {
            return Ok(0);
        }
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // Before the first insert (see the module docs): two copies of one alarm's events
        // racing would otherwise each hold a row the other waits for.
        take_audit_lock(&tx).await?;
        let mut new = 0;
        for e in events {
            let inserted = tx
                .execute(
                    "INSERT INTO alarm_events (alarm, seq, rule, scope, kind, priority, at_ms,
                                               actor, role, value, note)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (alarm, seq) DO NOTHING",
                    &[
                        &e.alarm,
                        &i64::from(e.seq),
                        &e.rule,
                        &e.scope,
                        &e.kind.as_str(),
                        &e.priority.as_str(),
                        &e.at_ms,
                        &e.actor,
                        &e.role,
                        &e.value,
                        &e.note,
                    ],
                )
                .await
                .map_err(backend)?;
            if inserted == 0 && !e.note.is_empty() {
                // Staff's note arrives with their own copy; the evaluator's copy of the same
                // event may have come first, without it.
                tx.execute(
                    "UPDATE alarm_events SET note = $3 WHERE alarm = $1 AND seq = $2
                                                           AND note = ''",
                    &[&e.alarm, &i64::from(e.seq), &e.note],
                )
                .await
                .map_err(backend)?;
            }
            if inserted == 1 {
                new += 1;
                insert_audit_locked(
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
                )
                .await?;
            }
        }
        tx.commit().await.map_err(backend)?;
        Ok(new)
    }

    async fn alarm_events(&self, q: &AlarmQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        let limit = i64::from(q.effective_limit());
        let since = q.since_ms.unwrap_or(i64::MIN);
        let c = self.pool.get().await?;
        let rows = match &q.alarm {
            Some(alarm) => c
                .query(
                    &format!(
                        "SELECT {ALARM_COLUMNS} FROM alarm_events
                         WHERE alarm = $1 AND at_ms >= $2 ORDER BY seq LIMIT $3"
                    ),
                    &[alarm, &since, &limit],
                )
                .await
                .map_err(backend)?,
            None => c
                .query(
                    &format!(
                        "SELECT {ALARM_COLUMNS} FROM alarm_events
                         WHERE at_ms >= $1 ORDER BY at_ms DESC, alarm DESC, seq DESC LIMIT $2"
                    ),
                    &[&since, &limit],
                )
                .await
                .map_err(backend)?,
        };
        rows.iter().map(read_alarm_event).collect()
    }

    async fn write_observations(
        &self,
        observations: &[(Observation, Revision)],
        raw: &RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<Observation>, StoreError> {
        let mut c = self.pool.get().await?;
        // Dropped without a commit on any error: rolled back, nothing of the call stored.
        let tx = c.transaction().await.map_err(backend)?;
        let row = tx
            .query_one(
                "INSERT INTO raw_messages (format, source, received_ms, body)
                 VALUES ($1, $2, $3, $4) RETURNING id",
                &[&raw.format, &raw.source, &raw.received_ms, &raw.body],
            )
            .await
            .map_err(backend)?;
        let raw_id: i64 = col(&row, 0, "raw message")?;
        let mut stored = Vec::with_capacity(observations.len());
        let select = format!(
            "SELECT {OBSERVATION_COLUMNS} FROM observations
             WHERE patient = $1 AND source = $2 AND code = $3 AND effective_ms = $4"
        );
        for (n, (o, revision)) in observations.iter().enumerate() {
            let id = format!("v-{}", uuid::Uuid::new_v4().simple());
            let inserted = tx
                .execute(
                    "INSERT INTO observations (id, patient, code, value, effective_ms,
                                               received_ms, source, artefact, raw_id)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (patient, source, code, effective_ms) DO NOTHING",
                    &[
                        &id,
                        &o.patient.as_str(),
                        &o.code.as_str(),
                        &o.value,
                        &o.effective_ms,
                        &o.received_ms,
                        &o.source,
                        &o.artefact,
                        &raw_id,
                    ],
                )
                .await
                .map_err(backend)?
                == 1;
            let key: [&(dyn ToSql + Sync); 4] = [
                &o.patient.as_str(),
                &o.source,
                &o.code.as_str(),
                &o.effective_ms,
            ];
            let row = read_observation(&tx.query_one(&select, &key).await.map_err(backend)?)?;
            if inserted || row.value == o.value {
                stored.push(row);
                continue;
            }
            if *revision == Revision::Original {
                return Err(StoreError::Exists(Revision::conflict(n + 1, &row, o.value)));
            }
            let row = tx
                .query_one(
                    &format!(
                        "UPDATE observations SET value = $5, artefact = $6, received_ms = $7,
                                                 raw_id = $8
                         WHERE patient = $1 AND source = $2 AND code = $3 AND effective_ms = $4
                         RETURNING {OBSERVATION_COLUMNS}"
                    ),
                    &[
                        &o.patient.as_str(),
                        &o.source,
                        &o.code.as_str(),
                        &o.effective_ms,
                        &o.value,
                        &o.artefact,
                        &o.received_ms,
                        &raw_id,
                    ],
                )
                .await
                .map_err(backend)?;
            stored.push(read_observation(&row)?);
        }
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)?;
        Ok(stored)
    }

    async fn observations(&self, q: &ObservationQuery) -> Result<Vec<Observation>, StoreError> {
        let patient = q.patient.as_ref().map(|p| p.as_str().to_string());
        let codes: Vec<&str> = q.codes.iter().map(|c| c.as_str()).collect();
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<&(dyn ToSql + Sync)> = Vec::new();
        if let Some(p) = &patient {
            args.push(p);
            conds.push(format!("patient = ${}", args.len()));
        }
        if let Some(s) = &q.since_ms {
            args.push(s);
            conds.push(format!("effective_ms >= ${}", args.len()));
        }
        if let Some(u) = &q.until_ms {
            args.push(u);
            conds.push(format!("effective_ms <= ${}", args.len()));
        }
        if !codes.is_empty() {
            args.push(&codes);
            conds.push(format!("code = ANY(${})", args.len()));
        }
        let limit = i64::from(q.limit.unwrap_or(1_000).min(10_000));
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let sql = format!(
            "SELECT {OBSERVATION_COLUMNS} FROM (
                 SELECT {OBSERVATION_COLUMNS} FROM observations {filter}
                 ORDER BY effective_ms DESC, id DESC LIMIT {limit}
             ) AS newest ORDER BY effective_ms, id"
        );
        let c = self.pool.get().await?;
        let rows = c.query(&sql, &args).await.map_err(backend)?;
        rows.iter().map(read_observation).collect()
    }

    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT patient FROM patient_identifiers WHERE system = $1 AND value = $2",
                &[&system, &value],
            )
            .await
            .map_err(backend)?;
        let rec = format!("identifier {system}|{value}");
        row.map(|r| {
            let p: String = col(&r, 0, &rec)?;
            p.parse()
                .map_err(|_| StoreError::Corrupt(format!("{rec}: {p:?}")))
        })
        .transpose()
    }

    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // Waits for a racing insert of the same identifier, then sees it committed.
        let inserted = tx
            .execute(
                "INSERT INTO patient_identifiers (system, value, patient) VALUES ($1, $2, $3)
                 ON CONFLICT (system, value) DO NOTHING",
                &[&system, &value, &patient.as_str()],
            )
            .await
            .map_err(backend)?;
        if inserted == 0 {
            let row = tx
                .query_one(
                    "SELECT patient FROM patient_identifiers WHERE system = $1 AND value = $2",
                    &[&system, &value],
                )
                .await
                .map_err(backend)?;
            let owner: String = col(&row, 0, "identifier")?;
            if owner == patient.as_str() {
                return Ok(());
            }
            return Err(StoreError::Exists(format!(
                "identifier {system}|{value} belongs to another patient"
            )));
        }
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn patient_settings(&self, patient: &PatientId) -> Result<PatientSettings, StoreError> {
        let c = self.pool.get().await?;
        let row = c
            .query_opt(
                "SELECT spo2_scale, scale_set_by, scale_set_ms, ward FROM patient_settings
                 WHERE patient = $1",
                &[&patient.as_str()],
            )
            .await
            .map_err(backend)?;
        let Some(r) = row else {
            return Ok(PatientSettings::default());
        };
        let rec = format!("patient {patient}");
        let scale: String = col(&r, 0, &rec)?;
        let spo2_scale = match scale.as_str() {
            "scale1" => SpO2Scale::Scale1,
            "scale2" => SpO2Scale::Scale2,
            other => {
                return Err(StoreError::Corrupt(format!("{rec}: SpO2 scale {other:?}")));
            }
        };
        Ok(PatientSettings {
            spo2_scale,
            scale_set_by: col(&r, 1, &rec)?,
            scale_set_ms: col(&r, 2, &rec)?,
            ward: col(&r, 3, &rec)?,
        })
    }

    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        s: &PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        let scale = match s.spo2_scale {
            SpO2Scale::Scale1 => "scale1",
            SpO2Scale::Scale2 => "scale2",
        };
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            "INSERT INTO patient_settings (patient, spo2_scale, scale_set_by, scale_set_ms, ward)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (patient) DO UPDATE SET spo2_scale = excluded.spo2_scale,
                 scale_set_by = excluded.scale_set_by, scale_set_ms = excluded.scale_set_ms,
                 ward = excluded.ward",
            &[
                &patient.as_str(),
                &scale,
                &s.scale_set_by,
                &s.scale_set_ms,
                &s.ward,
            ],
        )
        .await
        .map_err(backend)?;
        append_audit_in(&tx, audit).await?;
        tx.commit().await.map_err(backend)
    }

    async fn insert_news2(&self, record: &News2Record) -> Result<bool, StoreError> {
        let detail = serde_json::to_string(record)
            .map_err(|e| StoreError::Backend(format!("cannot encode a NEWS2 score: {e}")))?;
        let c = self.pool.get().await?;
        let n = c
            .execute(
                "INSERT INTO news2_scores (patient, at_ms, computed_ms, detail)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (patient, at_ms) DO UPDATE
                     SET computed_ms = excluded.computed_ms, detail = excluded.detail
                     WHERE news2_scores.detail <> excluded.detail",
                &[
                    &record.news2.patient.as_str(),
                    &record.news2.at_ms,
                    &record.computed_ms,
                    &detail,
                ],
            )
            .await
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<News2Record>, StoreError> {
        let c = self.pool.get().await?;
        let rows = c
            .query(
                "SELECT detail FROM (SELECT at_ms, detail FROM news2_scores
                                     WHERE patient = $1 AND at_ms >= $2
                                     ORDER BY at_ms DESC LIMIT $3) AS newest
                 ORDER BY at_ms",
                &[&patient.as_str(), &since_ms, &i64::from(limit.min(10_000))],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let d: String = col(r, 0, "a NEWS2 score")?;
                serde_json::from_str(&d)
                    .map_err(|e| StoreError::Corrupt(format!("a NEWS2 score: {e}")))
            })
            .collect()
    }
    async fn insert_pool_samples(&self, samples: &[PoolSample]) -> Result<usize, StoreError> {
        if samples.is_empty() {
            return Ok(0);
        }
        let mut c = self.pool.get().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let insert = tx
            .prepare(&format!(
                "INSERT INTO pool_samples ({POOL_SAMPLE_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                 ON CONFLICT (pool_kind, pool_name, at_ms) DO NOTHING"
            ))
            .await
            .map_err(backend)?;
        // In key order: two leaders writing the same intervals (an old one that has not noticed
        // it lost its term) then wait on each other's rows in one order, never in a cycle — in
        // the caller's order they deadlocked (40P01).
        let mut sorted: Vec<&PoolSample> = samples.iter().collect();
        sorted.sort_by(|a, b| {
            (pool_columns(&a.pool), a.at_ms).cmp(&(pool_columns(&b.pool), b.at_ms))
        });
        let mut new = 0;
        for x in sorted {
            let (kind, name) = pool_columns(&x.pool);
            let w = &x.waiting;
            let n = |v: u32| i64::from(v);
            new += tx
                .execute(
                    &insert,
                    &[
                        &kind,
                        &name,
                        &x.at_ms,
                        &n(x.units),
                        &n(x.in_use),
                        &n(x.unavailable),
                        &n(w.stat.queued),
                        &w.stat.oldest_wait_ms,
                        &n(w.asap.queued),
                        &w.asap.oldest_wait_ms,
                        &n(w.urgent.queued),
                        &w.urgent.oldest_wait_ms,
                        &n(w.routine.queued),
                        &w.routine.oldest_wait_ms,
                    ],
                )
                .await
                .map_err(backend)? as usize;
        }
        tx.commit().await.map_err(backend)?;
        Ok(new)
    }

    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&Pool>,
    ) -> Result<Vec<PoolSample>, StoreError> {
        let (kind, name) = pool.map(pool_columns).unzip();
        let c = self.pool.get().await?;
        let rows = c
            .query(
                &format!(
                    "SELECT {POOL_SAMPLE_COLUMNS} FROM (
                         SELECT * FROM pool_samples
                         WHERE at_ms >= $1 AND at_ms < $2
                           AND ($3::text IS NULL OR (pool_kind = $3 AND pool_name = $4))
                         ORDER BY at_ms DESC, pool_kind DESC, pool_name DESC LIMIT $5) AS newest
                     ORDER BY at_ms, pool_kind, pool_name"
                ),
                &[
                    &since_ms,
                    &until_ms,
                    &kind,
                    &name,
                    &i64::from(POOL_SAMPLES_MAX),
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(read_pool_sample).collect()
    }

    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError> {
        let c = self.pool.get().await?;
        c.execute("DELETE FROM pool_samples WHERE at_ms < $1", &[&before_ms])
            .await
            .map_err(backend)
    }
}
