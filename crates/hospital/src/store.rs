//! The clinical store: what the coordination tree must not hold — patients (minimal
//! demographics), orders with their clinical reason, every transition with time and actor, and
//! results. SQLite is the embedded default ([`SqliteStore`]); the trait is shaped so a
//! PostgreSQL implementation can follow (plain SQL, compare-and-set transitions, no
//! SQLite-only features in the contract).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Order, OrderId, OrderState, PatientId, Priority, Transition};

mod sqlite;
pub use sqlite::SqliteStore;

/// A failure of the clinical store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (I/O, locking, constraint other than the ones below).
    #[error("database: {0}")]
    Backend(String),
    /// The record already exists (an order id inserted twice).
    #[error("already exists: {0}")]
    Exists(String),
    /// A stored value could not be read back (a bad state name, malformed JSON).
    #[error("corrupt record: {0}")]
    Corrupt(String),
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

/// The clinical store's contract. Every method is atomic on its own.
#[async_trait]
pub trait ClinicalStore: Send + Sync {
    /// Creates or updates a patient.
    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError>;

    /// A patient, if known.
    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError>;

    /// Stores a new order (in `order.state`, normally queued) and its creation transition
    /// (`from: None`) in one transaction.
    ///
    /// # Notable errors
    /// `Exists` if the order id is taken.
    async fn insert_order(&self, order: &Order, actor: &str) -> Result<(), StoreError>;

    /// An order, if known.
    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Moves the order from `t.from` to `t.to` if it is in `t.from` now (compare-and-set),
    /// records `t`, sets `assigned` to `t.unit` when it is `Some`, and `updated_ms` to
    /// `t.at_ms`, in one transaction. Returns false (and changes nothing) if the order is
    /// not in `t.from` or does not exist. The caller checks legality
    /// ([`OrderState::can_become`]).
    async fn transition(&self, t: &Transition) -> Result<bool, StoreError>;

    /// Sets the priority of an order that is queued (compare-and-set on the state), recording
    /// nothing else. Returns false if the order is not queued.
    async fn set_priority(&self, id: &OrderId, priority: Priority) -> Result<bool, StoreError>;

    /// The order's transitions, oldest first.
    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError>;

    /// Every order in one of `states`, oldest first (for the reconciler and the views).
    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError>;

    /// A patient's orders, oldest first.
    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError>;

    /// Stores an order's results (replacing earlier ones).
    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError>;

    /// An order's results, if reported.
    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError>;
}
