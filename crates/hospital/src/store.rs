//! The clinical store: what the coordination tree must not hold — patients (minimal
//! demographics), orders with their clinical reason, every transition with time and actor, and
//! results. SQLite is the embedded default ([`SqliteStore`]); several instances on several
//! machines share one PostgreSQL database ([`PostgresStore`], `serve --store postgres://…`).
//! Both keep the same contract, proven by one conformance suite
//! (`crates/hospital/tests/store_conformance.rs`): plain SQL, compare-and-set transitions,
//! no backend-only features in the contract.
//!
//! It also keeps what the HTTP API needs to authenticate and to account for access: API
//! bearer tokens (their SHA-256 hash only, never the token: [`TokenRecord`]) and the audit
//! trail of every access to patient data and every API write ([`AuditRecord`]).
//!
//! And the history the dashboard's charts draw: each pool's units and queue once a minute
//! ([`PoolSample`], written by the cluster's leader: [`crate::history`]), kept for a week.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Order, OrderId, OrderState, PatientId, Priority, Transition};

/// The audit records [`ClinicalStore::audit`] returns when the query sets no limit.
pub const AUDIT_DEFAULT_LIMIT: u32 = 100;

/// The most audit records one [`ClinicalStore::audit`] call returns, whatever the query's limit.
pub const AUDIT_MAX_LIMIT: u32 = 10_000;

mod postgres;
mod sqlite;
pub use postgres::{
    AUDIT_LOCK, MIGRATE_LOCK, MIGRATIONS as POSTGRES_MIGRATIONS, PostgresOptions, PostgresStore,
    TABLES, TableCopy,
};
pub use sqlite::SqliteStore;

/// A failure of the clinical store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, locking, constraint other than the ones below).
    #[error("database: {0}")]
    Backend(String),
    /// The database cannot be reached now — connection refused or lost, no free connection in
    /// time, the server starting up or shutting down — and nothing was written: a retry may
    /// succeed once it is back (the HTTP API answers 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The record already exists (an order id inserted twice).
    #[error("already exists: {0}")]
    Exists(String),
    /// A stored value could not be read back (a bad state name, malformed JSON).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The database refused a value given to it, not the database itself failing: text it
    /// cannot hold (PostgreSQL's `text` holds no NUL character). Nothing was written; the
    /// same value will be refused again (the HTTP API answers 422). The server checks text
    /// before it reaches a store, so this is its defence in depth.
    #[error("value refused: {0}")]
    Invalid(String),
}

/// A patient's minimal demographics. Lives only in the clinical store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    /// The opaque id the coordination tree knows.
    pub id: PatientId,
    /// Display name, for staff.
    pub name: String,
    /// Birth date (ISO 8601 date), if known.
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// An exam's results ("results ready").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExamResult {
    /// The order.
    pub order: OrderId,
    /// The report text.
    pub text: String,
    /// When reported, ms since the epoch.
    pub at_ms: i64,
    /// Who reported.
    pub actor: String,
}

/// An API bearer token as stored: only its SHA-256 hash (hex), never the token itself.
///
/// The server hashes the presented token and looks the hash up
/// ([`ClinicalStore::token_by_hash`]); a stolen copy of the store yields no usable token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Short public id, e.g. `t-1a2b3c4d`: what the audit trail and the token list name.
    pub id: String,
    /// Lowercase hex SHA-256 of the whole token text.
    pub hash: String,
    /// `admin`, `scheduler`, `doctor`, `nurse`, `technician` or `patient`: validated by the
    /// server, stored as text.
    pub role: String,
    /// The patient a `patient` token is for.
    #[serde(default)]
    pub patient: Option<PatientId>,
    /// What the token is for (who holds it), free text.
    pub label: String,
    /// When it was issued, ms since the epoch.
    pub created_ms: i64,
    /// When it was revoked, ms since the epoch; `None` while valid.
    #[serde(default)]
    pub revoked_ms: Option<i64>,
    /// When it expires, ms since the epoch: from then on it is refused (`token expired`);
    /// `None` for a token that does not expire. A rotation
    /// ([`ClinicalStore::rotate_token`]) brings an old token's expiry forward.
    #[serde(default)]
    pub expires_ms: Option<i64>,
    /// The id of the token that replaced this one, once it has been rotated: a token is
    /// rotated at most once, so it has one successor, and its expiry is the one it was issued
    /// with until then (what the successor's default lifetime is taken from).
    #[serde(default)]
    pub replaced_by: Option<String>,
}

impl TokenRecord {
    /// True once the token has expired at `now_ms` (an expiry is exclusive: a token expiring
    /// at `t` is refused from `t` on).
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_ms.is_some_and(|e| now_ms >= e)
    }

    /// True if the token may be used at `now_ms`: neither revoked nor expired.
    pub fn valid_at(&self, now_ms: i64) -> bool {
        self.revoked_ms.is_none() && !self.expired_at(now_ms)
    }
}

/// One audited access to patient data (or any API write).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Assigned by the store on [append](ClinicalStore::append_audit) (the value passed in is
    /// ignored); increasing.
    pub seq: i64,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who: a token id (`t-1a2b3c4d`), or `cli` / `system`.
    pub actor: String,
    /// The actor's role.
    pub role: String,
    /// What, e.g. `order.create`, `patient.read`.
    pub action: String,
    /// The patient whose data was read or written, if any.
    #[serde(default)]
    pub patient: Option<PatientId>,
    /// The order concerned, if any.
    #[serde(default)]
    pub order: Option<OrderId>,
    /// `ok`, `denied`, or an error code such as `not_found`.
    pub outcome: String,
    /// Anything else worth keeping (free text).
    #[serde(default)]
    pub detail: String,
}

/// What happened to an alarm ([`AlarmEvent::kind`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmEventKind {
    /// Raised by the evaluator.
    Raised,
    /// Acknowledged by staff.
    Acknowledged,
    /// Escalated one priority step (unacknowledged for the rule's `escalate_after`).
    Escalated,
    /// Shelved by staff.
    Shelved,
    /// Back from a shelving whose time was up.
    Unshelved,
    /// Cleared by the evaluator (condition gone; latching: and acknowledged), or because its
    /// rule is no longer in the hospital file.
    Cleared,
}

impl AlarmEventKind {
    /// The name (`raised`, `acknowledged`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmEventKind::Raised => "raised",
            AlarmEventKind::Acknowledged => "acknowledged",
            AlarmEventKind::Escalated => "escalated",
            AlarmEventKind::Shelved => "shelved",
            AlarmEventKind::Unshelved => "unshelved",
            AlarmEventKind::Cleared => "cleared",
        }
    }
}

impl std::str::FromStr for AlarmEventKind {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<AlarmEventKind, StoreError> {
        Ok(match s {
            "raised" => AlarmEventKind::Raised,
            "acknowledged" => AlarmEventKind::Acknowledged,
            "escalated" => AlarmEventKind::Escalated,
            "shelved" => AlarmEventKind::Shelved,
            "unshelved" => AlarmEventKind::Unshelved,
            "cleared" => AlarmEventKind::Cleared,
            other => return Err(StoreError::Corrupt(format!("alarm event kind {other:?}"))),
        })
    }
}

/// One transition of one alarm ([`crate::alarms`]): kept in the alarm's node, then copied
/// here, keyed by `(alarm, seq)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmEvent {
    /// The alarm's id (`<rule>@<scope>@<raised_ms>`).
    pub alarm: String,
    /// Its sequence number within the alarm, from 0 (raised).
    pub seq: u32,
    /// The rule.
    pub rule: String,
    /// The scope's key.
    pub scope: String,
    /// What happened.
    pub kind: AlarmEventKind,
    /// The alarm's priority after it.
    pub priority: crate::alarms::AlarmPriority,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Who: a token's actor, or `evaluator:<instance>`.
    pub actor: String,
    /// Their role (`system` for the evaluator).
    pub role: String,
    /// The signal's value then.
    #[serde(default)]
    pub value: Option<f64>,
    /// A note, a shelving's reason, or why it cleared.
    #[serde(default)]
    pub note: String,
}

/// Which alarm events to list ([`ClinicalStore::alarm_events`]), newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct AlarmQuery {
    /// Only this alarm's events (in ascending order then).
    #[serde(default)]
    pub alarm: Option<String>,
    /// Only events at or after this time, ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// At most this many (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl AlarmQuery {
    /// The limit that applies.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT)
    }
}

/// The message observations came in, kept for audit ([`ClinicalStore::insert_observations`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawMessage {
    /// `fhir` or `hl7v2`.
    pub format: String,
    /// Who sent it (a device, a system, a token).
    pub source: String,
    /// When it arrived, ms since the epoch.
    pub received_ms: i64,
    /// The message as received (JSON text, or the HL7 message with `\r` segment ends).
    pub body: String,
}

/// What an observation is to a value stored under its key ([`ClinicalStore::write_observations`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Revision {
    /// A first report (FHIR `final` or `preliminary`, HL7 OBX-11 `F` or `R`): the same value
    /// again is a duplicate, another value a conflict.
    #[default]
    Original,
    /// A correction of a reported value (FHIR `corrected` or `amended`, HL7 OBX-11 `C`): it
    /// replaces the stored value.
    Correction,
}

impl Revision {
    /// The message of a refused original, the `n`th (1-based) of its call: the key and both
    /// values.
    pub fn conflict(n: usize, stored: &crate::vitals::Observation, sent: f64) -> String {
        format!(
            "observation {n}: {} of patient {} from {} at {} ms is already stored as {} {} ({}); \
             {sent} is a different value",
            stored.code.as_str(),
            stored.patient,
            stored.source,
            stored.effective_ms,
            stored.value,
            stored.code.unit(),
            stored.id,
        )
    }
}

/// Which observations to list ([`ClinicalStore::observations`]), oldest effective time first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservationQuery {
    /// Whose.
    pub patient: Option<PatientId>,
    /// Only these codes (all if empty).
    #[serde(default)]
    pub codes: Vec<crate::vitals::VitalCode>,
    /// Effective at or after this time.
    pub since_ms: Option<i64>,
    /// Effective at or before this time.
    pub until_ms: Option<i64>,
    /// At most this many (the newest of them), default 1,000, at most 10,000.
    pub limit: Option<u32>,
}

/// Per-patient clinical settings ([`ClinicalStore::patient_settings`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientSettings {
    /// The SpO2 scale NEWS2 uses for the patient.
    #[serde(default)]
    pub spo2_scale: crate::news2::SpO2Scale,
    /// Who set the scale (`None`: never set, scale 1 by default).
    #[serde(default)]
    pub scale_set_by: Option<String>,
    /// When.
    #[serde(default)]
    pub scale_set_ms: Option<i64>,
    /// The ward or department the patient is on: where escalations go.
    #[serde(default)]
    pub ward: Option<String>,
}

/// A stored NEWS2 score ([`ClinicalStore::insert_news2`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct News2Record {
    /// The score and what it used.
    #[serde(flatten)]
    pub news2: crate::vitals::News2,
    /// When it was computed.
    pub computed_ms: i64,
}

/// The most pool samples one [`ClinicalStore::pool_samples`] call returns (the newest of those
/// asked for): a day of one-minute samples of 34 pools.
pub const POOL_SAMPLES_MAX: u32 = 50_000;

/// How many orders of one priority waited in a pool at a sample, and the longest wait.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// Orders of the priority in the pool's queue.
    pub queued: u32,
    /// How long the one that had waited longest had waited, ms (0 with none waiting).
    pub oldest_wait_ms: i64,
}

/// [`Waiting`] for each priority.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingByPriority {
    /// stat.
    pub stat: Waiting,
    /// asap.
    pub asap: Waiting,
    /// urgent.
    pub urgent: Waiting,
    /// routine.
    pub routine: Waiting,
}

impl WaitingByPriority {
    /// The figures of `priority`.
    pub fn of(&self, priority: Priority) -> &Waiting {
        match priority {
            Priority::Stat => &self.stat,
            Priority::Asap => &self.asap,
            Priority::Urgent => &self.urgent,
            Priority::Routine => &self.routine,
        }
    }

    /// The figures of `priority`, to change.
    pub fn of_mut(&mut self, priority: Priority) -> &mut Waiting {
        match priority {
            Priority::Stat => &mut self.stat,
            Priority::Asap => &mut self.asap,
            Priority::Urgent => &mut self.urgent,
            Priority::Routine => &mut self.routine,
        }
    }
}

/// One pool's figures at one moment, kept for the dashboard's charts ([`crate::history`]):
/// written by the cluster's leader once per sampling interval, keyed by `(pool, at_ms)`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSample {
    /// The start of the sampling interval it stands for, ms since the epoch (the sample was
    /// taken in `[at_ms, at_ms + interval)`); the key, with the pool.
    pub at_ms: i64,
    /// The pool: `"pool": "equipment"`, `"name": "MRI"`.
    #[serde(flatten)]
    pub pool: crate::model::Pool,
    /// Units (or doctors) configured.
    pub units: u32,
    /// Units in use.
    pub in_use: u32,
    /// Units in maintenance or offline.
    pub unavailable: u32,
    /// The queue, per priority.
    pub waiting: WaitingByPriority,
}

impl PoolSample {
    /// Units in use as a percentage of those in service (available or in use); `None` with
    /// none in service.
    pub fn utilisation(&self) -> Option<f64> {
        let in_service = self.units.saturating_sub(self.unavailable);
        (in_service > 0).then(|| 100.0 * f64::from(self.in_use) / f64::from(in_service))
    }
}

/// Which audit records to list ([`ClinicalStore::audit`]). Every filter that is set must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only records about this patient.
    #[serde(default)]
    pub patient: Option<PatientId>,
    /// Only records by this actor.
    #[serde(default)]
    pub actor: Option<String>,
    /// Only records at or after this time, ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Only records after this sequence number (paging forward).
    #[serde(default)]
    pub after_seq: Option<i64>,
    /// At most this many records: [`AUDIT_DEFAULT_LIMIT`] if unset, never more than
    /// [`AUDIT_MAX_LIMIT`].
    #[serde(default)]
    pub limit: Option<u32>,
}

impl AuditQuery {
    /// The limit this query gets: its own, or the default, capped.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(AUDIT_DEFAULT_LIMIT)
            .min(AUDIT_MAX_LIMIT)
    }
}

/// The clinical store's contract. Every method is atomic on its own.
///
/// # Audit records travel with the change
/// The methods that change something (a patient, an order, a token) take the audit record of
/// the request that asked for the change and append it in the same transaction, only if the
/// change is made: after a crash the trail has a record for every change, and none for a
/// change that was not made. [`append_audit`](ClinicalStore::append_audit) is for what
/// changes nothing here (reads, refusals, failures) and for the `started` record written
/// before a change that begins in the coordination tree.
#[async_trait]
pub trait ClinicalStore: Send + Sync {
    /// Creates or updates a patient.
    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError>;

    /// Registers a new patient, and appends `audit` (if any) to the audit trail in the same
    /// transaction.
    ///
    /// # Notable errors
    /// `Exists` if the id is taken (nothing is changed, nothing is appended).
    async fn insert_patient(
        &self,
        patient: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;

    /// A patient, if known.
    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError>;

    /// Stores a new order (in `order.state`, normally queued), its creation transition
    /// (`from: None`) and `audit` (if any) in one transaction.
    ///
    /// # Notable errors
    /// `Exists` if the order id is taken (nothing is changed, nothing is appended).
    async fn insert_order(
        &self,
        order: &Order,
        actor: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;

    /// An order, if known.
    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Moves the order from `t.from` to `t.to` if it is in `t.from` now (compare-and-set),
    /// records `t`, sets `assigned` to `t.unit` when it is `Some`, and `updated_ms` to
    /// `t.at_ms`, in one transaction. Returns false (and changes nothing) if the order is
    /// not in `t.from` or does not exist. The caller checks legality
    /// ([`OrderState::can_become`]).
    ///
    /// `audit` (if any) is appended to the audit trail in the same transaction, and only if
    /// the order moved: a change and its audit record are stored together or not at all.
    async fn transition(
        &self,
        t: &Transition,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    /// Sets the priority of an order that is queued (compare-and-set on the state) and its
    /// `updated_ms` to `at_ms` (so the reconciler's pass over changed orders looks at it),
    /// recording nothing else but `audit` (if any, in the same transaction, only if it
    /// changed). Returns false if the order is not queued.
    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    /// Orders last changed (`updated_ms`) at or after `since_ms` and before `before_ms`, in
    /// ascending (`updated_ms`, id), starting after `after` (the last (`updated_ms`, id) of the
    /// previous page), at most `limit`. For the reconciler's pass over recently changed orders
    /// ([`Hospital::reconcile`](crate::orders::Hospital::reconcile)).
    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError>;

    /// The time up to which the reconciler has checked every changed order's tree state
    /// ([`set_reconciled_until`](ClinicalStore::set_reconciled_until)); `None` if never.
    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError>;

    /// Records that every order changed before `ms` has been checked. Never moves back: a
    /// smaller value than the stored one is ignored.
    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError>;

    /// The order's transitions, oldest first.
    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError>;

    /// Every order in one of `states`, oldest first (for the reconciler and the views).
    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError>;

    /// How many orders are in each state, every state listed (zeros included), in
    /// [`OrderState::ALL`]'s order (for `/metrics`). A backend should count without reading
    /// the orders; this default reads them all.
    async fn order_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        let orders = self.orders_in(&OrderState::ALL).await?;
        Ok(OrderState::ALL
            .iter()
            .map(|s| (*s, orders.iter().filter(|o| o.state == *s).count() as u64))
            .collect())
    }

    /// A patient's orders, oldest first.
    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError>;

    /// Stores an order's results: replaces a draft stored earlier, never the results of an
    /// order already reported (a late or racing report changes nothing).
    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError>;

    /// An order's results, if reported.
    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError>;

    /// Stores a new API token, and `audit` (if any) in the same transaction.
    ///
    /// # Notable errors
    /// `Exists` if the id or the hash is taken (nothing is changed, nothing is appended).
    async fn insert_token(
        &self,
        token: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;

    /// The token with this hash, if any — revoked and expired ones included (the caller
    /// checks [`TokenRecord::valid_at`]).
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Every token, revoked and expired ones included, oldest first.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;

    /// The token with this public id, if any — revoked and expired ones included.
    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;

    /// Rotates the token `old`: stores `new` (its successor, issued at `new.created_ms`) and
    /// brings `old`'s expiry forward to `old_expires_ms` (an earlier expiry it already has is
    /// kept), appending every record of `audit` (the rotation's and the new token's), all in
    /// one transaction, and records `new.id` as `old`'s `replaced_by`. Returns false — and
    /// changes and appends nothing — if `old` does not exist, is revoked, has expired by
    /// `new.created_ms`, or has already been rotated: only a token in use is rotated, and only
    /// once. Of racing rotations of one token, exactly one returns true.
    ///
    /// # Notable errors
    /// `Exists` if `new`'s id or hash is taken (nothing is changed, nothing is appended).
    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError>;

    /// Revokes the token `id` at `at_ms`, appending `audit` (if any) in the same transaction.
    /// Returns false (and changes nothing, appends nothing) if no such token exists or it is
    /// already revoked.
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError>;

    /// Appends `record` to the audit trail (its `seq` is ignored) and returns the sequence
    /// number assigned: greater than every earlier one.
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError>;

    /// The audit records matching `query`, in ascending `seq`, at most
    /// [`query.effective_limit()`](AuditQuery::effective_limit) of them: with `after_seq`
    /// the first ones after it (paging forward), without it the most recent ones (the last
    /// `limit` matching records — still in ascending order).
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Stores alarm events that are not stored yet (by `(alarm, seq)`; one already stored is
    /// kept as it is, except that an empty note is filled in by a copy that has one), each
    /// with an audit record (`alarm.<kind>` by the event's actor and
    /// role, detail the alarm id), in one transaction. Returns how many were new.
    async fn record_alarm_events(&self, events: &[AlarmEvent]) -> Result<usize, StoreError>;

    /// Alarm events: an alarm's in sequence order, else the newest
    /// [`effective_limit`](AlarmQuery::effective_limit) matching, newest first.
    async fn alarm_events(&self, query: &AlarmQuery) -> Result<Vec<AlarmEvent>, StoreError>;

    /// Stores one message's observations, all [`Revision::Original`] (see
    /// [`write_observations`](ClinicalStore::write_observations)).
    ///
    /// # Errors
    /// `Exists` if one's key is stored with another value: nothing is stored.
    async fn insert_observations(
        &self,
        observations: &[crate::vitals::Observation],
        raw: &RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<crate::vitals::Observation>, StoreError> {
        let writes: Vec<_> = observations
            .iter()
            .map(|o| (o.clone(), Revision::Original))
            .collect();
        self.write_observations(&writes, raw, audit).await
    }

    /// Stores one message's observations and the message itself, all or nothing. An
    /// observation whose key (same patient, source, code and effective time) is already
    /// stored with the same value is that observation sent again: kept as it is. With another
    /// value, a [`Revision::Correction`] replaces the stored value (and artefact flag, arrival
    /// time and message; the id stays), and a [`Revision::Original`] is refused — a second
    /// reading for one key is never dropped silently. Observations of one call are applied in
    /// order (a later one of the same key sees an earlier one). Returns each observation as
    /// stored (with its id; a duplicate with the id it was first stored with), in the order
    /// given. With `audit`, one record in the same transaction.
    ///
    /// # Errors
    /// `Exists` naming the key if an original's key is stored with another value: nothing of
    /// the call is stored (nor the message, nor the record).
    async fn write_observations(
        &self,
        observations: &[(crate::vitals::Observation, Revision)],
        raw: &RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<crate::vitals::Observation>, StoreError>;

    /// Observations, oldest effective time first (the newest `limit` of those matching).
    async fn observations(
        &self,
        query: &ObservationQuery,
    ) -> Result<Vec<crate::vitals::Observation>, StoreError>;

    /// The patient an identifier (`system`, `value`: an MRN) is mapped to.
    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError>;

    /// Maps an identifier to a patient. Mapping it again to the same patient changes nothing.
    ///
    /// # Errors
    /// `Exists` if it is mapped to another patient.
    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;

    /// A patient's settings (the defaults if none were set).
    async fn patient_settings(&self, patient: &PatientId) -> Result<PatientSettings, StoreError>;

    /// Replaces a patient's settings, with `audit` in the same transaction.
    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        settings: &PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError>;

    /// Stores a NEWS2 score, replacing the patient's score at the same time (recomputed once
    /// a late observation arrived). Returns true if new or changed.
    async fn insert_news2(&self, record: &News2Record) -> Result<bool, StoreError>;

    /// A patient's NEWS2 scores at or after `since_ms`, oldest first (the newest `limit`).
    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<News2Record>, StoreError>;

    /// Stores the pool samples not stored yet, by `(pool, at_ms)`: a sample already stored
    /// for a pool and interval is kept as it is (the first writer wins), so a leader that
    /// takes over within an interval its predecessor already sampled adds nothing. One
    /// transaction. Returns how many were new.
    async fn insert_pool_samples(&self, samples: &[PoolSample]) -> Result<usize, StoreError>;

    /// The pool samples with `since_ms <= at_ms < until_ms` (of `pool` only, if given),
    /// oldest first, then by pool (kind, then name): the newest [`POOL_SAMPLES_MAX`] of them.
    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&crate::model::Pool>,
    ) -> Result<Vec<PoolSample>, StoreError>;

    /// Deletes the pool samples older than `before_ms` (`at_ms < before_ms`). Returns how
    /// many.
    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError>;
}
