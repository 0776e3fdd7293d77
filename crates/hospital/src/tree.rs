//! The `/medical` tree (seed §4.2, kept) and what its nodes hold. No names, record numbers or
//! other PHI appear in paths or data: patients are opaque ids, orders are ids, and the clinical
//! reason stays in the clinical store.
//!
//! ```text
//! /medical
//!   /config                                   the loaded configuration's targets (JSON)
//!   /resources/equipment/<KIND>               an equipment kind, e.g. MRI (JSON: capabilities seen)
//!       /<unit>                               e.g. MRI-1: a UnitNode (status, capabilities, occupant)
//!       /lock/_c_<uuid>-lock-0000000001       seed §4.3 lock: the kind's dispatcher (ephemeral seq.)
//!       /queue/items/item-<c>-<ms>-<tag>-<seq> waiting orders (durable, sequential, by priority)
//!   /resources/doctors/<department>           a department, e.g. cardiology
//!       /<doctor>                             a UnitNode, as for units
//!       /lock, /queue                         as for equipment kinds
//!   /patients/<opaque-id>
//!       /active                               the exam the patient is in now (exists ⇔ in an exam)
//!       /queue/<order-id>                     seed §4.3: one per exam ordered for the patient,
//!                                             what the patient may see (PatientEntry); named
//!                                             by the order (earlier: queue-0000000001)
//!   /members/<instance>                       live medkeeper instances (ephemeral)
//!   /leader                                   leader election (ephemeral sequential)
//! ```
//!
//! **Deviation from the seed, kept on purpose** (SPEC.md): a waiting patient's place in line, a
//! patient's queue nodes and a unit's occupancy are *persistent* nodes, never tied to one
//! server's session — a crashed server must neither drop a patient from the line nor free a
//! scanner a patient is inside. Ephemeral nodes stand only for what must vanish with a process:
//! a dispatcher's lock, an instance's membership, leadership.

use serde::{Deserialize, Serialize};

use crate::model::{OrderId, OrderState, PatientId, Pool, Priority, UnitStatus, validate_name};

/// The root of medkeeper's tree.
pub const ROOT: &str = "/medical";
/// Equipment kinds.
pub const EQUIPMENT: &str = "/medical/resources/equipment";
/// Departments.
pub const DOCTORS: &str = "/medical/resources/doctors";
/// Patients.
pub const PATIENTS: &str = "/medical/patients";
/// Each monitored patient's NEWS2 escalation level (`/medical/escalations/<patient>`): a risk
/// level, when, the ward — never a value.
pub const ESCALATIONS: &str = "/medical/escalations";
/// Live instances.
pub const MEMBERS: &str = "/medical/members";
/// Leader election.
pub const LEADER: &str = "/medical/leader";
/// Alarms.
pub const ALARMS: &str = "/medical/alarms";
/// The loaded configuration.
pub const CONFIG: &str = "/medical/config";
/// The reconciler's lock: one run at a time in the cluster, and its enqueues fenced by it.
pub const RECONCILER: &str = "/medical/reconciler";

/// Child names of a pool that are not units: a unit or doctor may not be called so.
pub const RESERVED: [&str; 2] = ["lock", "queue"];

/// The pool's node.
pub fn pool_path(pool: &Pool) -> String {
    match pool {
        Pool::Equipment(k) => format!("{EQUIPMENT}/{k}"),
        Pool::Department(d) => format!("{DOCTORS}/{d}"),
    }
}

/// A unit's (or doctor's) node.
pub fn unit_path(pool: &Pool, unit: &str) -> String {
    format!("{}/{unit}", pool_path(pool))
}

/// Checks a pool's name before a path is built from it: `Invalid` unless it is one safe znode
/// name ([`validate_name`]). A [`Pool`] can be built from any text (an API path, a file), and
/// `..`, `a/b` or a NUL byte would make a path that names another node or none.
pub fn check_pool(pool: &Pool) -> crate::Result<()> {
    validate_name("pool", pool.name())
}

/// A unit's (or doctor's) node, checked before it is built: `Invalid` for a malformed pool or
/// unit name ([`validate_name`]), `NotFound` for a [`RESERVED`] one (`lock` and `queue` are
/// children of a pool but not units). Use this, not [`unit_path`], for a name from outside.
pub fn checked_unit_path(pool: &Pool, unit: &str) -> crate::Result<String> {
    check_pool(pool)?;
    validate_name("unit", unit)?;
    if RESERVED.contains(&unit) {
        return Err(crate::Error::NotFound(format!("unit {unit} of {pool}")));
    }
    Ok(unit_path(pool, unit))
}

/// The pool's dispatcher lock (seed §4.3).
pub fn lock_path(pool: &Pool) -> String {
    format!("{}/lock", pool_path(pool))
}

/// The pool's queue (the priority-queue recipe's directory).
pub fn queue_path(pool: &Pool) -> String {
    format!("{}/queue", pool_path(pool))
}

/// A patient's node.
pub fn patient_path(patient: &PatientId) -> String {
    format!("{PATIENTS}/{patient}")
}

/// The patient's active-exam node.
pub fn active_path(patient: &PatientId) -> String {
    format!("{PATIENTS}/{patient}/active")
}

/// The patient's exam queue (seed §4.3).
pub fn patient_queue_path(patient: &PatientId) -> String {
    format!("{PATIENTS}/{patient}/queue")
}

/// The patient's queue node for one order: named by the order, so it is found without a
/// listing. (Earlier releases named these nodes `queue-NNNNNNNNNN`; such nodes are still found,
/// by a listing, when no node is named by the order.)
pub fn patient_order_path(patient: &PatientId, order: &OrderId) -> String {
    format!("{PATIENTS}/{patient}/queue/{order}")
}

/// What a unit's (or doctor's) node holds.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitNode {
    /// Available, in use, maintenance, offline.
    pub status: UnitStatus,
    /// What the unit can do (`contrast`, `3T`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The order occupying it, while in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<OrderId>,
    /// The patient inside, while in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<PatientId>,
    /// Since when the status holds, ms since the epoch.
    #[serde(default)]
    pub since_ms: i64,
    /// The occupying order is going back in line (a no-show under the requeue policy): set
    /// in the unit's node *before* the store records called → queued, so that
    /// [`Hospital::reconcile`](crate::orders::Hospital::reconcile) can tell a crash after that
    /// store write (free the unit, re-enqueue) from a dispatch whose store write was lost
    /// (record the call). A dispatch writes the node afresh, without it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub requeueing: bool,
}

impl UnitNode {
    /// True if the unit has every capability in `required`.
    pub fn can_do(&self, required: &[String]) -> bool {
        required.iter().all(|c| self.capabilities.contains(c))
    }
}

/// What a queue item of a pool holds: enough to dispatch without the clinical store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    /// The order.
    pub order: OrderId,
    /// The patient (opaque id), so the dispatcher can claim the patient's active exam.
    pub patient: PatientId,
    /// Capabilities the unit must have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The patient-queue node to update when called.
    pub patient_node: String,
}

/// The patient's active exam (`/medical/patients/<id>/active`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveExam {
    /// The order.
    pub order: OrderId,
    /// Its pool.
    pub pool: Pool,
    /// The unit or doctor.
    pub unit: String,
}

/// What the patient may see of one exam (`/medical/patients/<id>/queue/queue-NNNNNNNNNN`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientEntry {
    /// The order.
    pub order: OrderId,
    /// Its pool.
    pub pool: Pool,
    /// Its priority.
    pub priority: Priority,
    /// Its state.
    pub state: OrderState,
    /// 1-based place in line while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u32>,
    /// Estimated wait in seconds while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_wait_s: Option<u64>,
    /// The unit or doctor the patient is called to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub called_to: Option<String>,
    /// Results are ready.
    #[serde(default)]
    pub results_ready: bool,
}

/// Serialises a node value.
pub fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("node values serialise")
}

/// Parses a node value; `what` names it in the error.
pub fn from_json<T: for<'de> Deserialize<'de>>(what: &str, data: &[u8]) -> crate::Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| crate::Error::Invalid(format!("malformed {what} node: {e}")))
}

/// What one step of [`read_modify_write`] decides about the node it was shown.
pub(crate) enum Change<T> {
    /// Leave the node as it is; the update ends with this value.
    Keep(T),
    /// Write these bytes (version-checked against the read, or a create if the node was
    /// missing); the update ends with this value once the write succeeds.
    Write(Vec<u8>, T),
}

/// The one version-checked read-modify-write loop of the domain: reads `path` (`None` if it
/// does not exist), asks `decide` what to do, and writes conditionally on the version read —
/// `set_data` with that version, or a create (with any missing parents) if the node was
/// missing. A write that loses the race (`BadVersion`, `NoNode`, `NodeExists`: someone changed
/// the node between the read and the write) reads again and asks again, at most `attempts`
/// times, so a concurrent change is merged, never overwritten.
///
/// Returns `decide`'s value and, if it wrote, the node's new version.
///
/// # Notable errors
/// `Conflict` if the node changed under every one of the `attempts`; whatever `decide` returns.
pub(crate) async fn read_modify_write<T, F, Fut>(
    session: &dyn medkeeper_coord::Session,
    path: &str,
    attempts: usize,
    mut decide: F,
) -> crate::Result<(T, Option<i32>)>
where
    F: FnMut(Option<Vec<u8>>) -> Fut,
    Fut: std::future::Future<Output = crate::Result<Change<T>>>,
{
    use medkeeper_coord::{CreateMode, CreateOptions, Error as Coord, SessionExt};
    for _ in 0..attempts {
        // A plain closure returning a future, with the data by value: an async closure's
        // future borrowing its argument would not be `Send` for every lifetime.
        let (current, version) = match session.get_data(path).await {
            Ok((data, stat)) => (Some(data), Some(stat.version)),
            Err(Coord::NoNode) => (None, None),
            Err(e) => return Err(e.into()),
        };
        let (data, value) = match decide(current).await? {
            Change::Keep(v) => return Ok((v, None)),
            Change::Write(data, v) => (data, v),
        };
        let written = match version {
            Some(version) => session
                .set_data(path, &data, version)
                .await
                .map(|st| Some(st.version)),
            None => session
                .create_all(path, &data, &CreateOptions::new(CreateMode::Persistent))
                .await
                .map(|created| created.then_some(0)),
        };
        match written {
            Ok(Some(version)) => return Ok((value, Some(version))),
            // Created by someone else meanwhile.
            Ok(None) => {}
            Err(Coord::BadVersion | Coord::NoNode | Coord::NodeExists) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(crate::Error::Conflict(format!("{path} keeps changing")))
}
