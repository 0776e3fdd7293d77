//! # medkeeper-hospital: the hospital domain
//!
//! The seed's business-logic layer (§2.2, §4.2, §4.3, §5.1) on the coordination recipes:
//! equipment kinds and units, doctors by department, orders with FHIR priorities and their
//! lifecycle, a dispatcher that assigns queue heads to free compatible units in one atomic
//! multi, and the clinical store that keeps what the coordination tree must not (patients,
//! order history, results).
//!
//! Layout:
//! - [`model`]: ids, priorities, pools, the order lifecycle, unit status.
//! - [`tree`]: the `/medical` tree and what its nodes hold.
//! - [`config`]: the hospital configuration file (TOML) and its idempotent loading.
//! - [`store`]: the clinical store trait and its SQLite implementation.
//! - [`orders`]: creating orders and moving them through their lifecycle.
//! - [`dispatch`]: the per-pool dispatcher.
//! - [`history`]: each pool's figures sampled by the leader for the dashboard's charts.
//!
//! ## Which store is the source of truth for what
//! - The **clinical store** is the source of truth for patients, orders (what was asked, by
//!   whom, why), every transition with its time and actor, and results.
//! - The **coordination tree** is the source of truth for *live coordination*: who waits in
//!   which line and in what order, which unit is occupied by which order, which patient is in
//!   an exam, who dispatches.
//! - Every change writes the tree first where the tree decides (a dispatch is decided by its
//!   multi), and the store first where the store decides (an order exists once stored). A crash
//!   between the two writes leaves a difference that [`orders::Hospital::reconcile`] repairs.

pub mod actor;
pub mod alarms;
pub mod config;
pub mod dispatch;
mod error;
pub mod history;
pub mod ingest;
pub mod model;
pub mod news2;
pub mod orders;
pub mod readmodel;
pub mod simulate;
pub mod store;
pub mod tree;
pub mod vitals;

pub use actor::Actor;
pub use error::{Error, OrderAction, Result};
pub use model::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition, UnitStatus};
