//! Orders and their lifecycle: [`Hospital`] creates orders, moves them through
//! queued → called → in-progress → completed → reported (or cancelled / no-show), keeps the
//! patient's own queue nodes (seed §4.3) up to date, and reconciles the clinical store with the
//! coordination tree after a crash between their writes.
//!
//! # Write order, and what a crash between two writes leaves
//! - **Create**: the store first (the order exists once stored), then the patient's queue node,
//!   then the pool's queue item. A crash before the queue item leaves a stored queued order
//!   that is in no line: [`Hospital::reconcile`] enqueues it (and creates the patient node).
//! - **Dispatch** (see [`dispatch`](crate::dispatch)): one multi decides it in the tree, then
//!   the store records `called`. A crash in between leaves a unit occupied by an order the
//!   store calls queued: the reconciler records the call.
//! - **Complete / cancel / no-show of an occupying order**: the store first (compare-and-set
//!   on the state), then one multi frees the unit and ends the patient's active exam. A crash
//!   in between leaves a unit held by a finished order: the reconciler frees it.
//! - **No-show under the requeue policy**: the unit's node is marked
//!   ([`UnitNode::requeueing`]) first, then the store records called → queued, then the unit
//!   is freed and the order enqueued. A crash after the store write leaves a unit held by an
//!   order the store calls queued — what a lost dispatch store write also leaves; the mark
//!   tells them apart (a dispatch writes the unit's node afresh, without it), so the
//!   reconciler frees the unit and enqueues the order instead of calling the patient back. A
//!   mark left by a no-show that lost its compare-and-set (the patient arrived) is harmless:
//!   it matters only while the store calls the occupying order queued, and is gone when the
//!   unit is freed.
//! - **Cancel of a queued order**: the store first, then the queue item is removed; the
//!   reconciler removes queue items of orders that are no longer queued.
//! - **Manual call** ([`Hospital::call`]): as a dispatch — one multi, then the store.
//!
//! Each of those in-between states is also what a *live* operation leaves for a moment, between
//! its two writes. So the reconciler leaves alone what changed within [`RECONCILE_GRACE`]
//! (the operation still finishes it itself) and reads the order from the store again before
//! every repair: a repair never races the operation it would duplicate (two queue items for
//! one order, say). A crash's leftovers are repaired by the first run after the grace.
//!
//! Every transition is checked against the lifecycle ([`OrderState::can_become`]) and applied
//! with a compare-and-set in the store, so an illegal or concurrent transition changes nothing
//! and is reported ([`Error::IllegalTransition`]).
//!
//! # The patient's queue node follows the store
//! Every write of a patient's queue node is a version-checked read-modify-write that reads
//! the order from the store *after* reading the node, and shows the store's state, priority
//! and unit (`Hospital::sync_patient_node`); a write that loses the version check reads
//! both again. So of two racing transitions (a start racing a cancel), the node's last
//! successful write read the store after the last transition that preceded it, and every
//! transition is followed by its own write: the node ends showing the store's truth, never
//! one caller's stale view.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use medkeeper_coord::{CreateMode, CreateOptions, Error as CoordError, Op, Session, SessionExt};
use medkeeper_recipes::queue::{Clock, ItemId, QueueConfig};
use medkeeper_recipes::{PriorityQueue, TreeCache};

use crate::actor::Actor;
use crate::config::{HospitalConfig, NoShowPolicy};
use crate::dispatch::{OP_ACTIVE, OP_ITEM, OP_UNIT};
use crate::model::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition, UnitStatus};
use crate::readmodel::{CachedItem, CachedUnit, PoolModel};
use crate::store::{AuditRecord, ClinicalStore, ExamResult};
use crate::tree::{self, ActiveExam, Change, PatientEntry, QueueEntry, UnitNode};
use crate::{Error, OrderAction, Result};

/// What a new order asks for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewOrder {
    /// The patient (opaque id).
    pub patient: PatientId,
    /// The equipment kind or department.
    pub pool: Pool,
    /// Capabilities the unit must have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The FHIR priority.
    pub priority: Priority,
    /// The clinical reason (kept in the clinical store only).
    #[serde(default)]
    pub reason: String,
}

impl NewOrder {
    /// The order this asks for, as created at `now_ms`: a fresh id, queued, not assigned.
    pub fn into_queued(self, now_ms: i64) -> Order {
        Order {
            id: OrderId::generate(),
            patient: self.patient,
            pool: self.pool,
            capabilities: self.capabilities,
            priority: self.priority,
            reason: self.reason,
            state: OrderState::Queued,
            assigned: None,
            created_ms: now_ms,
            updated_ms: now_ms,
        }
    }
}

/// The order an action is about: its id (the action reads it from the store), or the order
/// as the caller has just read it (the action reads it no second time; a stale copy only
/// fails the store's compare-and-set, as a concurrent change would).
#[derive(Debug, Clone)]
pub enum OrderRef<'a> {
    /// Read it from the store.
    Id(&'a OrderId),
    /// As read by the caller.
    Loaded(Order),
}

impl<'a> From<&'a OrderId> for OrderRef<'a> {
    fn from(id: &'a OrderId) -> OrderRef<'a> {
        OrderRef::Id(id)
    }
}

impl From<Order> for OrderRef<'_> {
    fn from(o: Order) -> Self {
        OrderRef::Loaded(o)
    }
}

/// The longest clinical reason accepted, in bytes.
pub const MAX_REASON_LEN: usize = 2000;

/// The most urgent priority ageing lifts an order to: asap. A genuine stat order is never
/// behind an aged one; routine and urgent orders still age to asap, so they cannot starve
/// unless stat orders alone keep every unit of the pool busy.
pub const AGEING_FLOOR: Priority = Priority::Asap;

/// How long [`Hospital::reconcile`] leaves alone what changed last: an order stored as queued
/// but in no line, a unit held by an order the store calls queued or finished, a queue item
/// of an order no longer queued. Each of those is also what a live operation leaves between
/// its two writes (a create between storing and enqueueing, a no-show between its store
/// write and the enqueue, a dispatch between its multi and its store write, a cancel or
/// complete between its store write and the tree's); repairing it meanwhile would race that
/// operation (enqueue an order twice, say). Ten seconds is far longer than the gap between
/// two writes of one operation, and short enough that the periodic reconciler's next run
/// repairs a real crash soon. See [`Hospital::reconcile_with_grace`].
pub const RECONCILE_GRACE: Duration = Duration::from_secs(10);

/// How long a reconciler run waits for another one to end.
pub const RECONCILER_WAIT: Duration = Duration::from_secs(5);

/// Orders read from the store per page of the reconciler's pass over changed orders.
const VIEW_PASS_PAGE: u32 = 500;

/// How far back of the stored watermark the reconciler's pass over changed orders starts.
const VIEW_PASS_OVERLAP_MS: i64 = 1000;

/// How far back the reconciler's first pass over changed orders looks when the store has no
/// watermark yet (a store from before the pass existed): a day of orders, not all of them.
const VIEW_PASS_FIRST_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// How many times a patient queue node write is tried when racing writers keep changing the
/// node.
const NODE_WRITE_ATTEMPTS: usize = 16;

/// One waiting order of a pool's queue, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueRow {
    /// 1-based place in line (dequeue order now).
    pub position: u32,
    /// The order.
    pub order: OrderId,
    /// The patient.
    pub patient: PatientId,
    /// The ordered priority.
    pub priority: Priority,
    /// The priority after ageing.
    pub effective_priority: Priority,
    /// How long it has waited, seconds.
    pub waited_s: u64,
    /// Estimated wait until called, seconds: each order ahead takes the unit free soonest
    /// (available now, or when its exam should end), for the pool's exam duration.
    pub estimated_wait_s: u64,
    /// Capabilities it needs.
    pub capabilities: Vec<String>,
}

/// A unit or doctor, as staff see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitView {
    /// Its name.
    pub name: String,
    /// What its node says.
    #[serde(flatten)]
    pub node: UnitNode,
}

/// What [`Hospital::reconcile`] repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReconcileReport {
    /// Stored queued orders that were in no line and were enqueued.
    pub enqueued: Vec<OrderId>,
    /// Dispatches decided in the tree that the store now records as called.
    pub recorded_calls: Vec<OrderId>,
    /// Units held by finished orders that were freed.
    pub freed_units: Vec<String>,
    /// Queue items of orders no longer queued that were removed.
    pub removed_items: Vec<OrderId>,
    /// Active-exam nodes of finished orders that were removed.
    pub ended_exams: Vec<PatientId>,
    /// Orders whose patient's queue node did not show what the store says (a crash between
    /// a transition and the node's write), brought in line.
    pub synced_views: Vec<OrderId>,
    /// Units the store has an order on (called or in progress) that the tree showed free —
    /// a tree that lost what the store kept: a move to a new ensemble or chroot, `store
    /// migrate`, a restore of an older tree — given back to that order.
    pub restored_units: Vec<String>,
    /// What the store and the tree disagree on that no repair can settle: a unit the store has
    /// one order on and the tree another (`pool/unit: …`), or one the tree does not have.
    /// Each is also logged as an error; staff must look.
    pub conflicts: Vec<String>,
    /// Another run held the reconciler's lock for [`RECONCILER_WAIT`]: nothing was done.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub busy: bool,
    /// When something this run left alone for being too recent (see
    /// [`Hospital::reconcile_with_grace`]) will have been left alone for the grace, ms since
    /// the epoch by the hospital's clock: run again then to repair it as soon as it is safe.
    /// Not a repair: [`is_clean`](ReconcileReport::is_clean) ignores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_due_ms: Option<i64>,
}

impl ReconcileReport {
    /// True if nothing needed repair.
    pub fn is_clean(&self) -> bool {
        ReconcileReport {
            next_due_ms: None,
            busy: false,
            ..self.clone()
        } == ReconcileReport::default()
    }
}

/// The hospital: orders, units and queues over a coordination session and a clinical store.
/// Cheap to share (`Arc`); every method is safe to call from several instances at once.
pub struct Hospital {
    session: Arc<dyn Session>,
    store: Arc<dyn ClinicalStore>,
    config: Arc<HospitalConfig>,
    queues: HashMap<Pool, PriorityQueue>,
    /// Each pool's read model, started on first use ([`Hospital::pool_model`]).
    models: HashMap<Pool, tokio::sync::OnceCell<Arc<PoolModel>>>,
    /// Copies of `/medical/alarms`, `/medical/members` and `/medical/leader`, started on
    /// first use ([`Hospital::alarm_model`], [`Hospital::cluster_model`]).
    alarms: tokio::sync::OnceCell<Arc<TreeCache>>,
    members: tokio::sync::OnceCell<Arc<TreeCache>>,
    leader: tokio::sync::OnceCell<Arc<TreeCache>>,
    escalations: tokio::sync::OnceCell<Arc<TreeCache>>,
    clock: Clock,
}

impl std::fmt::Debug for Hospital {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hospital")
            .field("name", &self.config.name)
            .finish()
    }
}

impl Hospital {
    /// The hospital `config` describes (already [loaded](crate::config::load) into the tree).
    pub fn new(
        session: Arc<dyn Session>,
        store: Arc<dyn ClinicalStore>,
        config: HospitalConfig,
    ) -> Result<Hospital> {
        Hospital::with_clock(session, store, config, Clock::system())
    }

    /// Like [`new`](Hospital::new), reading the time from `clock` (order times, waiting times,
    /// ageing, no-show grace): for simulations that run a day in seconds. Every instance of one
    /// hospital must use the same clock.
    pub fn with_clock(
        session: Arc<dyn Session>,
        store: Arc<dyn ClinicalStore>,
        config: HospitalConfig,
        clock: Clock,
    ) -> Result<Hospital> {
        let mut queues = HashMap::new();
        for p in &config.pools {
            let q = PriorityQueue::new(
                session.clone(),
                tree::queue_path(&p.pool),
                QueueConfig::new(config.targets.by_class())
                    .with_clock(clock.clone())
                    .with_ageing_floor(AGEING_FLOOR.class()),
            )?;
            queues.insert(p.pool.clone(), q);
        }
        let models = config
            .pools
            .iter()
            .map(|p| (p.pool.clone(), tokio::sync::OnceCell::new()))
            .collect();
        Ok(Hospital {
            session,
            store,
            config: Arc::new(config),
            queues,
            models,
            alarms: Default::default(),
            members: Default::default(),
            leader: Default::default(),
            escalations: Default::default(),
            clock,
        })
    }

    /// This session's copy of `/medical/escalations` (each monitored patient's NEWS2 risk
    /// level, [`crate::ingest`]), started on first use.
    ///
    /// # Notable errors
    /// A session-fatal error if the session has ended.
    pub async fn escalation_model(&self) -> Result<Arc<TreeCache>> {
        self.tree_copy(&self.escalations, tree::ESCALATIONS).await
    }

    /// This session's copy of `/medical/alarms` (the active alarms, [`crate::alarms`]),
    /// started on first use: one read of the subtree, then one watch.
    ///
    /// # Notable errors
    /// A session-fatal error if the session has ended.
    pub async fn alarm_model(&self) -> Result<Arc<TreeCache>> {
        self.tree_copy(&self.alarms, tree::ALARMS).await
    }

    /// This session's copies of `/medical/members` and `/medical/leader` (who is in the
    /// cluster, who stands for leader), started on first use.
    ///
    /// # Notable errors
    /// A session-fatal error if the session has ended.
    pub async fn cluster_model(&self) -> Result<(Arc<TreeCache>, Arc<TreeCache>)> {
        Ok((
            self.tree_copy(&self.members, tree::MEMBERS).await?,
            self.tree_copy(&self.leader, tree::LEADER).await?,
        ))
    }

    async fn tree_copy(
        &self,
        cell: &tokio::sync::OnceCell<Arc<TreeCache>>,
        root: &str,
    ) -> Result<Arc<TreeCache>> {
        let cache = cell
            .get_or_try_init(|| async {
                let c = TreeCache::start(self.session.clone(), root).await?;
                Ok::<_, Error>(Arc::new(c))
            })
            .await?;
        Ok(cache.clone())
    }

    /// The read model of `pool` ([`crate::readmodel`]): started on first use (it reads the
    /// pool's subtree once), then shared by everything on this session that reads the pool
    /// often — the dispatcher first.
    ///
    /// # Notable errors
    /// `NotFound` for a pool not in the configuration; a session-fatal error if the session
    /// has ended.
    pub async fn pool_model(&self, pool: &Pool) -> Result<Arc<PoolModel>> {
        let cell = self
            .models
            .get(pool)
            .ok_or_else(|| Error::NotFound(pool.to_string()))?;
        let model = cell
            .get_or_try_init(|| async {
                let queue = self.queue(pool)?.clone();
                let m = PoolModel::start(self.session.clone(), pool.clone(), queue).await?;
                Ok::<_, Error>(Arc::new(m))
            })
            .await?;
        Ok(model.clone())
    }

    /// Milliseconds since the Unix epoch by this hospital's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// The coordination session.
    pub fn session(&self) -> &Arc<dyn Session> {
        &self.session
    }

    /// The clinical store.
    pub fn store(&self) -> &Arc<dyn ClinicalStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &HospitalConfig {
        &self.config
    }

    /// The queue of `pool`.
    pub fn queue(&self, pool: &Pool) -> Result<&PriorityQueue> {
        self.queues
            .get(pool)
            .ok_or_else(|| Error::NotFound(pool.to_string()))
    }

    /// Creates an order: stored as queued, a patient queue node, an item in the pool's queue.
    ///
    /// # Notable errors
    /// `NotFound` for an unknown pool; `Invalid` for capabilities no unit of the pool has, or
    /// an over-long reason. Capabilities are a set: one named twice is kept once.
    pub async fn create_order(&self, mut new: NewOrder, actor: impl Into<Actor>) -> Result<Order> {
        let actor = actor.into();
        let mut seen = HashSet::new();
        new.capabilities.retain(|c| seen.insert(c.clone()));
        let pool = self
            .config
            .pool(&new.pool)
            .ok_or_else(|| Error::NotFound(new.pool.to_string()))?;
        if !pool
            .units
            .iter()
            .any(|u| new.capabilities.iter().all(|c| u.capabilities.contains(c)))
        {
            return Err(Error::Invalid(format!(
                "no unit of {} has {:?}",
                new.pool, new.capabilities
            )));
        }
        if new.reason.len() > MAX_REASON_LEN {
            return Err(Error::Invalid(format!(
                "reason longer than {MAX_REASON_LEN} bytes"
            )));
        }
        let order = new.into_queued(self.now_ms());
        // The audit record names the order it created.
        let audit = actor.pending_audit().map(|a| AuditRecord {
            order: a.order.clone().or_else(|| Some(order.id.clone())),
            ..a.clone()
        });
        self.store
            .insert_order(&order, actor.name(), audit.as_ref())
            .await?;
        actor.mark_audit_written();
        self.enqueue(&order, true, None).await?;
        Ok(order)
    }

    /// Puts a stored queued order in line: its queue item, with its priority and its order time
    /// (ageing counts from when it was ordered, also for an order that goes back in line), and
    /// the patient's queue node for it if missing — both in one multi when the node is new.
    /// `fresh`: the order was just stored, so it has no patient node yet (none is looked for).
    /// Returns the item, or `None` for a fresh order whose multi an earlier attempt (a reply
    /// lost) applied: its item may already have been dispatched, so none is added again.
    ///
    /// `fence`: an op every write of the enqueue carries (the reconciler's lock check), so the
    /// item goes in only while its holder still holds the lock; if it fails, nothing is written
    /// and the error is `Recipe(Lost)`.
    async fn enqueue(
        &self,
        order: &Order,
        fresh: bool,
        fence: Option<&Op>,
    ) -> Result<Option<ItemId>> {
        let fenced = |e: medkeeper_recipes::Error, fence_ix: Option<usize>| -> Error {
            match e {
                medkeeper_recipes::Error::Multi { index: Some(i), .. } if fence_ix == Some(i) => {
                    Error::Recipe(medkeeper_recipes::Error::Lost(
                        medkeeper_recipes::LostReason::NodeDeleted,
                    ))
                }
                e => e.into(),
            }
        };
        let q = self.queue(&order.pool)?;
        let class = order.priority.class();
        let at = UNIX_EPOCH + Duration::from_millis(order.created_ms.max(0) as u64);
        let item = |patient_node: String| {
            tree::to_json(&QueueEntry {
                order: order.id.clone(),
                patient: order.patient.clone(),
                capabilities: order.capabilities.clone(),
                patient_node,
            })
        };
        if !fresh && let Some((p, _)) = self.find_patient_node(&order.patient, &order.id).await? {
            return match fence {
                None => Ok(Some(q.enqueue_at(class, &item(p), at).await?)),
                Some(f) => q
                    .enqueue_with(class, &item(p), at, std::slice::from_ref(f))
                    .await
                    .map(Some)
                    .map_err(|e| fenced(e, Some(0))),
            };
        }
        let node = tree::patient_order_path(&order.patient, &order.id);
        let create_node = Op::create(
            node.clone(),
            tree::to_json(&entry_of(order)),
            CreateOptions::new(CreateMode::Persistent),
        );
        let data = item(node);
        // A patient's first order: the multi fails for want of their queue directory, and is
        // made again with their node and queue directory created in it (if another order
        // created them meanwhile, that one fails on them and goes in without them).
        let parents = [
            tree::patient_path(&order.patient),
            tree::patient_queue_path(&order.patient),
        ];
        let mut with_parents = false;
        for _ in 0..NODE_WRITE_ATTEMPTS {
            let mut with: Vec<Op> = Vec::with_capacity(3);
            if with_parents {
                with.extend(parents.iter().map(|p| {
                    Op::create(
                        p.clone(),
                        Vec::new(),
                        CreateOptions::new(CreateMode::Persistent),
                    )
                }));
            }
            let node_ix = with.len();
            with.push(create_node.clone());
            let fence_ix = fence.map(|f| {
                with.push(f.clone());
                with.len() - 1
            });
            match q.enqueue_with(class, &data, at, &with).await {
                Ok(id) => return Ok(Some(id)),
                Err(medkeeper_recipes::Error::Multi { index: Some(i), .. })
                    if Some(i) == fence_ix =>
                {
                    return Err(fenced(
                        medkeeper_recipes::Error::Multi {
                            index: Some(i),
                            error: CoordError::NoNode,
                        },
                        fence_ix,
                    ));
                }
                // The patient's nodes exist after all: without them.
                Err(medkeeper_recipes::Error::Multi {
                    index: Some(i),
                    error: CoordError::NodeExists,
                }) if i < node_ix => with_parents = false,
                // The node is there already. For a fresh order only its own multi makes it: an
                // earlier attempt whose reply was lost applied (the item may be dispatched by
                // now, so it is not added again). Otherwise (a requeue, a repair) the item.
                Err(medkeeper_recipes::Error::Multi {
                    index: Some(i),
                    error: CoordError::NodeExists,
                }) if i == node_ix => {
                    if fresh {
                        return Ok(None);
                    }
                    return match fence {
                        None => Ok(Some(q.enqueue_at(class, &data, at).await?)),
                        Some(f) => q
                            .enqueue_with(class, &data, at, std::slice::from_ref(f))
                            .await
                            .map(Some)
                            .map_err(|e| fenced(e, Some(0))),
                    };
                }
                // No queue directory yet: the patient's first order.
                Err(medkeeper_recipes::Error::Multi {
                    index: Some(i),
                    error: CoordError::NoNode,
                }) if i == node_ix && !with_parents => with_parents = true,
                // The patients' directory itself is missing (a tree not loaded from a
                // configuration): made, and again.
                Err(medkeeper_recipes::Error::Multi {
                    index: Some(_),
                    error: CoordError::NoNode,
                }) => {
                    self.session
                        .ensure_path(&tree::patient_queue_path(&order.patient))
                        .await?;
                    with_parents = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!(
            "the patient queue node of order {} keeps changing",
            order.id
        )))
    }

    /// The patient's queue node for `order` and what it holds: the node named by the order
    /// (one read), else — for nodes of earlier releases — a listing of the patient's nodes.
    pub(crate) async fn find_patient_node(
        &self,
        patient: &PatientId,
        order: &OrderId,
    ) -> Result<Option<(String, PatientEntry)>> {
        let direct = tree::patient_order_path(patient, order);
        if let Some(e) = self.patient_node_at(&direct, order).await? {
            return Ok(Some((direct, e)));
        }
        self.find_legacy_patient_node(patient, order).await
    }

    /// What the patient queue node at `path` holds, if it exists and is `order`'s.
    async fn patient_node_at(&self, path: &str, order: &OrderId) -> Result<Option<PatientEntry>> {
        match self.session.get_data(path).await {
            Ok((d, _)) => Ok(tree::from_json::<PatientEntry>("patient queue", &d)
                .ok()
                .filter(|e| &e.order == order)),
            Err(CoordError::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A patient queue node of an earlier release (`queue-NNNNNNNNNN`) for `order`, by a
    /// listing of the patient's nodes.
    async fn find_legacy_patient_node(
        &self,
        patient: &PatientId,
        order: &OrderId,
    ) -> Result<Option<(String, PatientEntry)>> {
        let dir = tree::patient_queue_path(patient);
        let children = match self.session.get_children(&dir).await {
            Ok(c) => c,
            Err(CoordError::NoNode) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        for c in children.into_iter().filter(|c| c.starts_with("queue-")) {
            let p = format!("{dir}/{c}");
            if let Some(e) = self.patient_node_at(&p, order).await? {
                return Ok(Some((p, e)));
            }
        }
        Ok(None)
    }

    /// Brings the patient's queue node of `order` in line with the store (see the module
    /// docs): reads the node, then the order from the store, applies `f` (display fields such
    /// as the position; it sees the store's order) and the store's state, priority and unit,
    /// and writes it back version-checked, again from the start if the node changed meanwhile.
    /// Nothing to do if the patient has no node for the order.
    ///
    /// # Notable errors
    /// `Conflict` if racing writers changed the node on every one of a bounded number of
    /// attempts.
    pub(crate) async fn sync_patient_node(
        &self,
        patient: &PatientId,
        order: &OrderId,
        f: impl Fn(&mut PatientEntry, &Order),
    ) -> Result<()> {
        let direct = tree::patient_order_path(patient, order);
        if self.sync_patient_node_at(&direct, order, &f).await? {
            return Ok(());
        }
        match self.find_legacy_patient_node(patient, order).await? {
            Some((p, _)) => self.sync_patient_node_at(&p, order, f).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// [`sync_patient_node`](Hospital::sync_patient_node) of the node at `path`. False if
    /// there is no node for `order` there (nothing written).
    pub(crate) async fn sync_patient_node_at(
        &self,
        path: &str,
        order: &OrderId,
        f: impl Fn(&mut PatientEntry, &Order),
    ) -> Result<bool> {
        Ok(self.sync_patient_node_written(path, order, f).await?.0)
    }

    /// [`sync_patient_node_at`](Hospital::sync_patient_node_at), also returning what it
    /// wrote and the node's new version (`None` if it wrote nothing).
    pub(crate) async fn sync_patient_node_written(
        &self,
        path: &str,
        order: &OrderId,
        f: impl Fn(&mut PatientEntry, &Order),
    ) -> Result<(bool, Option<(PatientEntry, i32)>)> {
        let f = &f;
        tree::read_modify_write(
            self.session.as_ref(),
            path,
            NODE_WRITE_ATTEMPTS,
            |data| async move {
                let Some(Ok(mut e)) =
                    data.map(|d| tree::from_json::<PatientEntry>("patient queue", &d))
                else {
                    return Ok(Change::Keep((false, None)));
                };
                if &e.order != order {
                    return Ok(Change::Keep((false, None)));
                }
                // The store after the node: whatever transition this write may hide was made
                // before the node was read, so its own write of the node (which follows it)
                // fails the version check or comes after this one.
                let Some(o) = self.store.order(order).await? else {
                    return Ok(Change::Keep((true, None)));
                };
                f(&mut e, &o);
                show_order(&mut e, &o);
                // Written even when unchanged: the new version makes a stale writer that read
                // the node before us fail its version check.
                Ok(Change::Write(tree::to_json(&e), (true, Some(e))))
            },
        )
        .await
        .map(|((found, entry), version)| (found, entry.zip(version)))
    }

    /// The order `r` names (read from the store unless the caller has it).
    pub(crate) async fn resolve(&self, r: OrderRef<'_>) -> Result<Order> {
        match r {
            OrderRef::Id(id) => self.order(id).await,
            OrderRef::Loaded(o) => Ok(o),
        }
    }

    /// An order.
    ///
    /// # Notable errors
    /// `NotFound`.
    pub async fn order(&self, id: &OrderId) -> Result<Order> {
        self.store
            .order(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("order {id}")))
    }

    /// The queue item of a queued order ([`find_entry`](Hospital::find_entry)).
    pub(crate) async fn find_item(&self, order: &Order) -> Result<Option<ItemId>> {
        Ok(self.find_entry(order).await?.map(|(id, _)| id))
    }

    /// The queue item of a queued order and what it holds: looked up in the pool's read model
    /// (no request); if it is not there — enqueued through another session whose event has
    /// not arrived yet — by a scan of the queue (O(items) requests).
    pub(crate) async fn find_entry(&self, order: &Order) -> Result<Option<(ItemId, QueueEntry)>> {
        let model = self.pool_model(&order.pool).await?;
        model.settle().await;
        if let Some(item) = model
            .queue()
            .into_iter()
            .find(|i| i.entry.order == order.id)
        {
            return Ok(Some((item.info.id, item.entry)));
        }
        self.scan_entry(order).await
    }

    /// The queue item of a queued order, by a scan of the queue itself (O(items) requests).
    async fn scan_entry(&self, order: &Order) -> Result<Option<(ItemId, QueueEntry)>> {
        let q = self.queue(&order.pool)?;
        for info in q.list().await? {
            if let Some(d) = q.data(&info.id).await?
                && let Ok(e) = tree::from_json::<QueueEntry>("queue item", &d)
                && e.order == order.id
            {
                return Ok(Some((info.id, e)));
            }
        }
        Ok(None)
    }

    /// Moves `order` from its current state to `to` in the store (compare-and-set).
    async fn record(
        &self,
        order: &Order,
        to: OrderState,
        actor: &Actor,
        unit: Option<String>,
    ) -> Result<Order> {
        if !order.state.can_become(to) {
            return Err(Error::IllegalTransition {
                order: order.id.clone(),
                from: order.state,
                to,
                action: OrderAction::to(to),
            });
        }
        let t = Transition {
            order: order.id.clone(),
            from: Some(order.state),
            to,
            at_ms: self.now_ms(),
            actor: actor.name().to_string(),
            unit: unit.clone(),
        };
        if !self.store.transition(&t, actor.pending_audit()).await? {
            // Someone moved it first: report against its real state.
            let now = self.order(&order.id).await?;
            return Err(Error::IllegalTransition {
                order: order.id.clone(),
                from: now.state,
                to,
                action: OrderAction::to(to),
            });
        }
        actor.mark_audit_written();
        let mut next = order.clone();
        next.state = to;
        next.updated_ms = t.at_ms;
        if unit.is_some() {
            next.assigned = unit;
        }
        Ok(next)
    }

    /// Changes the priority of a queued order, keeping its place in arrival order. The queue
    /// item moves first, then the store records the priority (with `actor`'s audit record).
    ///
    /// # Notable errors
    /// `IllegalTransition` (to `queued`) if it is no longer queued.
    pub async fn reprioritise(
        &self,
        order: impl Into<OrderRef<'_>>,
        priority: Priority,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.resolve(order.into()).await?;
        let id = &order.id.clone();
        if order.state != OrderState::Queued {
            return Err(Error::IllegalTransition {
                order: order.id,
                from: order.state,
                to: OrderState::Queued,
                action: OrderAction::Reprioritise,
            });
        }
        if order.priority == priority {
            return Ok(order);
        }
        let item = self
            .find_item(&order)
            .await?
            .ok_or_else(|| Error::Conflict(format!("order {id} is being dispatched")))?;
        let moved = self
            .queue(&order.pool)?
            .reprioritise(&item, priority.class())
            .await
            .map_err(|e| match e.coord() {
                Some(CoordError::NoNode) | Some(CoordError::NodeExists) => {
                    Error::Conflict(format!("order {id} is being dispatched"))
                }
                _ => Error::Recipe(e),
            })?;
        if !self
            .store
            .set_priority(id, priority, self.now_ms(), actor.pending_audit())
            .await?
        {
            // Cancelled meanwhile: the cancel may have looked for the item before it was
            // renamed, so the renamed item leaves the line here (a no-op if dispatched).
            self.queue(&order.pool)?.remove(&moved).await?;
            return Err(Error::Conflict(format!("order {id} left the queue")));
        }
        actor.mark_audit_written();
        let mut order = order;
        order.priority = priority;
        self.sync_patient_node(&order.patient, &order.id, |_, _| {})
            .await?;
        Ok(order)
    }

    /// Cancels an order that is queued, called or in progress; frees its unit. Cancelling a
    /// cancelled order (a retry whose first answer was lost) finishes what the first left
    /// undone and answers the order.
    pub async fn cancel(
        &self,
        order: impl Into<OrderRef<'_>>,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.resolve(order.into()).await?;
        let retry = order.state == OrderState::Cancelled;
        let done = self.advance(&order, OrderState::Cancelled, &actor).await?;
        // Out of line if it was queued, its unit free if it held one; a retry does whichever
        // the first did not get to.
        if retry || order.state == OrderState::Queued {
            self.leave_line(&order).await?;
        }
        if retry || order.state != OrderState::Queued {
            self.free_unit(&order).await?;
        }
        self.sync_patient_node(&done.patient, &done.id, |_, _| {})
            .await?;
        Ok(done)
    }

    /// `order` moved to `to` in the store, or — if it is in `to` already — as it is: a retry
    /// whose first answer was lost, which the caller finishes as it finishes the first (freeing
    /// what is still held, telling the patient). Nothing is recorded twice.
    async fn advance(&self, order: &Order, to: OrderState, actor: &Actor) -> Result<Order> {
        if order.state == to {
            return Ok(order.clone());
        }
        self.record(order, to, actor, None).await
    }

    /// Takes `order`'s item out of its pool's queue, if it has one; found again by a scan if it
    /// was renamed meanwhile (a re-prioritisation through another session).
    async fn leave_line(&self, order: &Order) -> Result<()> {
        let q = self.queue(&order.pool)?;
        if let Some(item) = self.find_item(order).await?
            && !q.remove(&item).await?
            && let Some((item, _)) = self.scan_entry(order).await?
        {
            q.remove(&item).await?;
        }
        Ok(())
    }

    /// The called patient has arrived: the exam starts. An order the views already show as
    /// called (its unit's node names it) starts even if the store has not recorded the call
    /// yet: the call is recorded first, as the dispatcher would record it. Starting a
    /// started order (a retry) answers the order.
    pub async fn start(
        &self,
        order: impl Into<OrderRef<'_>>,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.settle_call(self.resolve(order.into()).await?).await?;
        let next = self.advance(&order, OrderState::InProgress, &actor).await?;
        self.sync_patient_node(&next.patient, &next.id, |_, _| {})
            .await?;
        Ok(next)
    }

    /// The exam is done: the unit is free for the next patient. Completing a completed order
    /// (a retry whose first answer was lost) frees the unit and tells the patient if the
    /// first did not get that far, and answers the order.
    pub async fn complete(
        &self,
        order: impl Into<OrderRef<'_>>,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.resolve(order.into()).await?;
        let next = self.advance(&order, OrderState::Completed, &actor).await?;
        self.free_unit(&order).await?;
        self.sync_patient_node(&next.patient, &next.id, |_, _| {})
            .await?;
        Ok(next)
    }

    /// Results are ready: stored, and the patient is told. The result is stored first, then
    /// the transition (with `actor`'s audit record): a result without the transition is a
    /// draft nobody sees, replaced by the next report. Reporting a reported order again with
    /// the same text (a retry) tells the patient if the first did not get that far, and
    /// answers the order; other text is refused (results are not amended here).
    pub async fn report(
        &self,
        order: impl Into<OrderRef<'_>>,
        text: &str,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.resolve(order.into()).await?;
        let id = &order.id.clone();
        if order.state == OrderState::Reported
            && self.store.result(id).await?.is_some_and(|r| r.text == text)
        {
            self.sync_patient_node(&order.patient, &order.id, |_, _| {})
                .await?;
            return Ok(order);
        }
        if !order.state.can_become(OrderState::Reported) {
            return Err(Error::IllegalTransition {
                order: order.id,
                from: order.state,
                to: OrderState::Reported,
                action: OrderAction::Report,
            });
        }
        self.store
            .put_result(&ExamResult {
                order: order.id.clone(),
                text: text.to_string(),
                at_ms: self.now_ms(),
                actor: actor.name().to_string(),
            })
            .await?;
        let next = self
            .record(&order, OrderState::Reported, &actor, None)
            .await?;
        self.sync_patient_node(&next.patient, &next.id, |_, _| {})
            .await?;
        Ok(next)
    }

    /// The called patient did not arrive: by the configured policy the order ends as no-show,
    /// or goes back in line with its priority, ageing counted from when it was ordered (its
    /// place in line is new: behind the orders of its class enqueued before). The unit is
    /// freed. As with [`start`](Hospital::start), an order the views show as called but whose
    /// call the store has not recorded yet has it recorded first. Under the no-show policy, a
    /// retry on an order already ended as no-show frees what the first left held and answers
    /// the order.
    pub async fn no_show(
        &self,
        order: impl Into<OrderRef<'_>>,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        let order = self.settle_call(self.resolve(order.into()).await?).await?;
        let id = &order.id.clone();
        let to = match self.config.no_show_policy {
            NoShowPolicy::NoShow => OrderState::NoShow,
            NoShowPolicy::Requeue => OrderState::Queued,
        };
        if to == OrderState::Queued && order.state.can_become(to) {
            // Before the store write: see the module docs.
            self.mark_requeueing(&order).await?;
        }
        // A retry only under the no-show policy: a queued order is not one that was requeued.
        let next = if to == OrderState::NoShow {
            self.advance(&order, to, &actor).await?
        } else {
            self.record(&order, to, &actor, None).await?
        };
        self.free_unit(&order).await?;
        if to == OrderState::Queued {
            let item = self.enqueue(&next, false, None).await?;
            // Cancelled meanwhile: the cancel may have looked for the item before it was
            // enqueued, so the item leaves the line here (a no-op if dispatched).
            if let Some(item) = item
                && self.order(id).await?.state != OrderState::Queued
            {
                self.queue(&next.pool)?.remove(&item).await?;
            }
        }
        self.sync_patient_node(&next.patient, &next.id, |_, _| {})
            .await?;
        Ok(next)
    }

    /// Calls a queued order to `unit` (or, if `None`, the first available compatible unit of
    /// its pool, by name), out of the queue's order: a scheduler's override of the
    /// dispatcher. `actor` is recorded with the call.
    ///
    /// The call is made exactly as the dispatcher makes one: one multi deletes the order's
    /// queue item, sets the unit's node to in use by the order (version-checked against the
    /// node read here) and creates the patient's `active` node; then the store records
    /// queued → called with the unit and `actor`, and the patient's queue node says where to
    /// go. A crash between the multi and the store write is repaired by
    /// [`reconcile`](Hospital::reconcile) like a dispatcher's.
    ///
    /// It does not take the pool's dispatch lock, and needs not: the multi alone makes
    /// double-booking impossible. The unit's version check fails if anyone (a dispatcher, a
    /// second call, a status change) wrote the unit since it was read; the item delete fails
    /// if the order left the line (dispatched, cancelled, reprioritised); the `active` create
    /// fails if the patient is in an exam. A racing dispatcher meets the same checks from the
    /// other side. So whichever writes first wins and the other changes nothing.
    ///
    /// # Notable errors
    /// - `NotFound` for an unknown order, or an unknown `unit` of the order's pool.
    /// - `IllegalTransition` (to `called`) if the order is not queued, also if it was
    ///   cancelled between the multi and the store write (the unit is then given back).
    /// - `Invalid` if `unit` lacks a capability the order needs (units' capabilities are
    ///   configuration: retrying cannot help), or is not a well-formed unit name.
    /// - `Conflict` if `unit` is not available (in use, maintenance, offline), no unit of the
    ///   pool is available and compatible (`unit: None`), the order is not in line right now
    ///   (being dispatched, or not yet enqueued), the patient is already in an exam, or the
    ///   multi lost a race (the unit or the item changed meanwhile). Nothing was changed.
    pub async fn call(
        &self,
        order: impl Into<OrderRef<'_>>,
        unit: Option<&str>,
        actor: impl Into<Actor>,
    ) -> Result<Order> {
        let actor = actor.into();
        if let Some(name) = unit {
            crate::model::validate_name("unit", name)?;
        }
        let order = self.resolve(order.into()).await?;
        let id = &order.id.clone();
        if order.state != OrderState::Queued {
            return Err(Error::IllegalTransition {
                order: order.id,
                from: order.state,
                to: OrderState::Called,
                action: OrderAction::Call,
            });
        }
        let pool = order.pool.clone();
        let mut units = self.units_with_version(&pool).await?;
        // A unit the hospital file no longer declares takes no one new (it is kept in the
        // tree only for the patient who may be inside: see `config::load`).
        units.retain(|(n, _, _)| self.config.declares_unit(&pool, n));
        let (name, node, version) = match unit {
            Some(name) => {
                let Some(u) = units.into_iter().find(|(n, _, _)| n == name) else {
                    return Err(Error::NotFound(format!("unit {name} of {pool}")));
                };
                if !u.1.can_do(&order.capabilities) {
                    return Err(Error::Invalid(format!(
                        "unit {name} of {pool} lacks some of {:?}",
                        order.capabilities
                    )));
                }
                if u.1.status != UnitStatus::Available {
                    return Err(Error::Conflict(format!(
                        "unit {name} of {pool} is {}",
                        u.1.status
                    )));
                }
                u
            }
            None => units
                .into_iter()
                .find(|(_, n, _)| {
                    n.status == UnitStatus::Available && n.can_do(&order.capabilities)
                })
                .ok_or_else(|| {
                    Error::Conflict(format!(
                        "no unit of {pool} with {:?} is available",
                        order.capabilities
                    ))
                })?,
        };
        let Some((item, entry)) = self.find_entry(&order).await? else {
            return Err(Error::Conflict(format!(
                "order {id} is not in line right now (being dispatched or enqueued)"
            )));
        };
        let q = self.queue(&pool)?;
        let ops = self.assignment_ops(&pool, q.item_path(&item), &entry, &name, &node, version);
        let mut applied = self.session().multi(&ops).await;
        if let Err(e) = &applied
            && e.index == Some(OP_ACTIVE)
            && e.error == CoordError::NoNode
        {
            // No patient node (an item older than the patient queue node): made, and again.
            self.ensure_patient(&entry.patient).await?;
            applied = self.session().multi(&ops).await;
        }
        match applied {
            Ok(_) => {}
            // A lost reply: the multi may have applied. The unit's node says: if it now holds
            // this order, the call was made and is recorded below; otherwise it was not.
            Err(e) if e.error.is_retryable() && self.holds_order(&pool, &name, id).await? => {}
            Err(e) => {
                return Err(match (e.index, &e.error) {
                    (Some(OP_ITEM), CoordError::NoNode) => {
                        Error::Conflict(format!("order {id} left the line meanwhile"))
                    }
                    (Some(OP_UNIT), CoordError::BadVersion | CoordError::NoNode) => {
                        Error::Conflict(format!("unit {name} of {pool} changed meanwhile"))
                    }
                    (Some(OP_ACTIVE), CoordError::NodeExists) => {
                        Error::Conflict(format!("patient {} is already in an exam", order.patient))
                    }
                    _ => e.into(),
                });
            }
        }
        if !self.record_call(&entry, &name, &actor).await? {
            let now = self.order(id).await?;
            return Err(Error::IllegalTransition {
                order: now.id,
                from: now.state,
                to: OrderState::Called,
                action: OrderAction::Call,
            });
        }
        self.order(id).await
    }

    /// `order` as the views show it: an order the store calls queued while a unit's node
    /// names it (without the requeue mark) was called by a dispatcher whose store write has
    /// not landed yet — between its multi and its store write, or lost in a crash. The call
    /// is recorded now, as the dispatcher (or the reconciler) would record it, so what the
    /// views show as called can be started or marked no-show at once. Whoever records it
    /// first wins the compare-and-set; the other finds it recorded. Any other order is
    /// returned as it is.
    pub(crate) async fn settle_call(&self, order: Order) -> Result<Order> {
        if order.state != OrderState::Queued {
            return Ok(order);
        }
        let held = self
            .units_with_version(&order.pool)
            .await?
            .into_iter()
            .find(|(_, n, _)| n.order.as_ref() == Some(&order.id) && !n.requeueing);
        let Some((unit, _, _)) = held else {
            return Ok(order);
        };
        let t = Transition {
            order: order.id.clone(),
            from: Some(OrderState::Queued),
            to: OrderState::Called,
            at_ms: self.now_ms(),
            actor: "reconciler".into(),
            unit: Some(unit),
        };
        self.store.transition(&t, None).await?;
        self.order(&order.id).await
    }

    /// Marks the unit `order` occupies as going back in line ([`UnitNode::requeueing`]).
    /// Nothing to do if no unit names the order.
    async fn mark_requeueing(&self, order: &Order) -> Result<()> {
        let Some(unit) = order.assigned.as_deref() else {
            return Ok(());
        };
        let unit_path = tree::unit_path(&order.pool, unit);
        tree::read_modify_write(
            self.session.as_ref(),
            &unit_path,
            NODE_WRITE_ATTEMPTS,
            |data| async move {
                let Some(data) = data else {
                    return Ok(Change::Keep(()));
                };
                let mut node: UnitNode = tree::from_json("unit", &data)?;
                if node.order.as_ref() != Some(&order.id) || node.requeueing {
                    return Ok(Change::Keep(()));
                }
                node.requeueing = true;
                Ok(Change::Write(tree::to_json(&node), ()))
            },
        )
        .await
        .map(|(v, _)| v)
    }

    /// Frees the unit `order` occupies and ends the patient's active exam, in one multi.
    /// Idempotent: a unit no longer held by this order is left alone.
    ///
    /// First from the pool's read model, without a read: if it shows the unit held by the
    /// order, one multi sets the unit free (checked against the model's version) and deletes
    /// the patient's `active` node — which exists exactly while the unit holds the order (the
    /// assignment's multi created both, and only this multi ends both). If the model is stale
    /// or the multi fails, the nodes are read and the multi made from what they say.
    pub(crate) async fn free_unit(&self, order: &Order) -> Result<()> {
        let Some(unit) = order.assigned.clone() else {
            return Ok(());
        };
        let unit_path = tree::unit_path(&order.pool, &unit);
        let active = tree::active_path(&order.patient);
        if let Ok(model) = self.pool_model(&order.pool).await {
            model.settle().await;
            if let Some(cached) = model.units().into_iter().find(|u| u.name == unit)
                && cached.node.order.as_ref() == Some(&order.id)
            {
                let mut node = cached.node;
                node.status = UnitStatus::Available;
                node.order = None;
                node.patient = None;
                node.requeueing = false;
                node.since_ms = self.now_ms();
                let ops = [
                    Op::set_data(&unit_path, tree::to_json(&node), cached.version),
                    Op::delete(&active, -1),
                ];
                match self.session.multi(&ops).await {
                    Ok(_) => return Ok(()),
                    // Stale, or the nodes are not as the invariant says: read them.
                    Err(e) if matches!(e.error, CoordError::BadVersion | CoordError::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for _ in 0..16 {
            let (data, stat) = match self.session.get_data(&unit_path).await {
                Ok(v) => v,
                Err(CoordError::NoNode) => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            let mut node: UnitNode = tree::from_json("unit", &data)?;
            let mut ops = Vec::new();
            if node.order.as_ref() == Some(&order.id) {
                node.status = UnitStatus::Available;
                node.order = None;
                node.patient = None;
                node.requeueing = false;
                node.since_ms = self.now_ms();
                ops.push(Op::set_data(&unit_path, tree::to_json(&node), stat.version));
            }
            match self.session.get_data(&active).await {
                Ok((d, st)) => {
                    // Only the exam on this unit: a late free of an order since called again
                    // elsewhere must not end that exam.
                    if let Ok(a) = tree::from_json::<ActiveExam>("active exam", &d)
                        && a.order == order.id
                        && a.unit == unit
                    {
                        ops.push(Op::delete(&active, st.version));
                    }
                }
                Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
            if ops.is_empty() {
                return Ok(());
            }
            match self.session.multi(&ops).await {
                Ok(_) => return Ok(()),
                // Changed meanwhile: read again.
                Err(e) if matches!(e.error, CoordError::BadVersion | CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Conflict(format!("unit {unit} keeps changing")))
    }

    /// Puts a unit into maintenance or offline, or back to available. A unit in use cannot
    /// change status (it frees itself when its exam completes).
    ///
    /// # Notable errors
    /// `NotFound` for an unknown unit (also `lock` or `queue`); `Conflict` if it is in use;
    /// `Invalid` for `InUse`, or for a malformed pool or unit name (`..`, `a/b`, a NUL byte:
    /// checked before any path is built from it).
    pub async fn set_unit_status(&self, pool: &Pool, unit: &str, status: UnitStatus) -> Result<()> {
        let p = tree::checked_unit_path(pool, unit)?;
        if status == UnitStatus::InUse {
            return Err(Error::Invalid(
                "in-use is set by the dispatcher, not by hand".into(),
            ));
        }
        tree::read_modify_write(
            self.session.as_ref(),
            &p,
            NODE_WRITE_ATTEMPTS,
            |data| async move {
                let Some(data) = data else {
                    return Err(Error::NotFound(format!("unit {unit} of {pool}")));
                };
                let mut node: UnitNode = tree::from_json("unit", &data)?;
                if node.status == UnitStatus::InUse {
                    return Err(Error::Conflict(format!("unit {unit} is in use")));
                }
                if node.status == status {
                    return Ok(Change::Keep(()));
                }
                node.status = status;
                node.since_ms = self.now_ms();
                Ok(Change::Write(tree::to_json(&node), ()))
            },
        )
        .await
        .map(|(v, _)| v)
    }

    /// The units (or doctors) of a pool, by name, from the pool's read model as
    /// [`queue_view`](Hospital::queue_view) reads it: no request.
    pub async fn units(&self, pool: &Pool) -> Result<Vec<UnitView>> {
        tree::check_pool(pool)?;
        let model = self.pool_model(pool).await?;
        model.settle().await;
        Ok(model
            .units()
            .into_iter()
            .map(|u| UnitView {
                name: u.name,
                node: u.node,
            })
            .collect())
    }

    /// The units of a pool with their nodes' versions, read afresh from the tree (for the
    /// reconciler and the manual call, which compare or write against the tree itself).
    pub(crate) async fn units_with_version(
        &self,
        pool: &Pool,
    ) -> Result<Vec<(String, UnitNode, i32)>> {
        tree::check_pool(pool)?;
        let dir = tree::pool_path(pool);
        let mut names = match self.session.get_children(&dir).await {
            Ok(c) => c,
            Err(CoordError::NoNode) => return Err(Error::NotFound(pool.to_string())),
            Err(e) => return Err(e.into()),
        };
        names.retain(|n| !tree::RESERVED.contains(&n.as_str()));
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            match self.session.get_data(&tree::unit_path(pool, &n)).await {
                Ok((d, st)) => out.push((n, tree::from_json("unit", &d)?, st.version)),
                Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The waiting orders of a pool in dispatch order, with estimated waits, from the pool's
    /// read model ([`Hospital::pool_model`]) brought up to every change this session has made
    /// ([`PoolModel::settle`]): no request. Changes made through other sessions show once
    /// their watch events arrive.
    pub async fn queue_view(&self, pool: &Pool) -> Result<Vec<QueueRow>> {
        tree::check_pool(pool)?;
        let model = self.pool_model(pool).await?;
        model.settle().await;
        Ok(self
            .queue_rows(pool, &model.units(), &model.queue())
            .into_iter()
            .map(|(row, _)| row)
            .collect())
    }

    /// The pool's exam duration, ms.
    fn exam_ms(&self, pool: &Pool) -> i64 {
        self.config
            .pool(pool)
            .map(|p| p.exam_duration)
            .unwrap_or(Duration::from_secs(1800))
            .as_millis() as i64
    }

    /// When each working unit is next free: now if available; for one in use, when its exam
    /// is expected to end (at least now). Each waiting order in dispatch order takes the unit
    /// free soonest. Capabilities are not matched here: an estimate, not a plan. With nothing
    /// in service, one unit is assumed back after one exam's time.
    fn free_at<'a>(
        &self,
        pool: &Pool,
        units: impl Iterator<Item = &'a UnitNode>,
    ) -> std::collections::BinaryHeap<std::cmp::Reverse<i64>> {
        let now = self.now_ms();
        let per_exam_ms = self.exam_ms(pool);
        let mut free_at: std::collections::BinaryHeap<_> = units
            .filter_map(|n| match n.status {
                UnitStatus::Available => Some(now),
                UnitStatus::InUse => Some((n.since_ms + per_exam_ms).max(now)),
                UnitStatus::Maintenance | UnitStatus::Offline => None,
            })
            .map(std::cmp::Reverse)
            .collect();
        if free_at.is_empty() {
            free_at.push(std::cmp::Reverse(now + per_exam_ms));
        }
        free_at
    }

    /// [`queue_view`](Hospital::queue_view)'s rows computed from a read model's copy of the
    /// pool's units and queue: no request. Each row comes with the item's entry (its patient
    /// node's path).
    pub fn queue_rows(
        &self,
        pool: &Pool,
        units: &[CachedUnit],
        items: &[CachedItem],
    ) -> Vec<(QueueRow, QueueEntry)> {
        let mut free_at = self.free_at(pool, units.iter().map(|u| &u.node));
        let now = self.now_ms();
        let per_exam_ms = self.exam_ms(pool);
        items
            .iter()
            .enumerate()
            .map(|(ix, item)| {
                let info = &item.info;
                let std::cmp::Reverse(at) = free_at.pop().unwrap_or(std::cmp::Reverse(now));
                free_at.push(std::cmp::Reverse(at + per_exam_ms));
                let row = QueueRow {
                    position: ix as u32 + 1,
                    order: item.entry.order.clone(),
                    patient: item.entry.patient.clone(),
                    priority: Priority::from_class(info.class).unwrap_or(Priority::Routine),
                    effective_priority: Priority::from_class(info.effective_class)
                        .unwrap_or(Priority::Routine),
                    waited_s: (now - info.id.enqueued_at_ms() as i64).max(0) as u64 / 1000,
                    estimated_wait_s: ((at - now).max(0) / 1000) as u64,
                    capabilities: item.entry.capabilities.clone(),
                };
                (row, item.entry.clone())
            })
            .collect()
    }

    /// What the patient may see: one entry per exam ordered for them.
    pub async fn patient_view(&self, patient: &PatientId) -> Result<Vec<PatientEntry>> {
        let dir = tree::patient_queue_path(patient);
        let mut children = match self.session.get_children(&dir).await {
            Ok(c) => c,
            Err(CoordError::NoNode) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        children.sort();
        let mut out = Vec::new();
        for c in children {
            match self.session.get_data(&format!("{dir}/{c}")).await {
                Ok((d, st)) => out.push((st.czxid, tree::from_json("patient queue", &d)?)),
                Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // In the order the exams were ordered (the nodes' names are the orders' ids).
        out.sort_by_key(|(czxid, _)| *czxid);
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    /// Repairs what a crash between a store write and a tree write left (see the module docs),
    /// leaving alone what changed within [`RECONCILE_GRACE`]: that is presumably an operation
    /// still between its two writes, which finishes it itself. Safe to run at any time and
    /// from several instances; run it at start-up (it repairs what is older than the grace)
    /// and periodically (each run picks up what the previous one left for being too recent).
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        self.reconcile_with_grace(RECONCILE_GRACE).await
    }

    /// [`reconcile`](Hospital::reconcile) with another grace, measured by this hospital's
    /// clock. Every repair waits until what it repairs has been left as it is for `grace`:
    /// - a queued order in no line (a create, or a requeued no-show, between the store write
    ///   and the enqueue) — by the order's `updated_ms`;
    /// - a unit held by an order the store calls queued: with the requeue mark (a no-show
    ///   between its store write and the unit freed) by the order's `updated_ms`, without it
    ///   (a dispatch or a [`call`](Hospital::call) between its multi and its store write) by
    ///   the unit's `since_ms`;
    /// - a queue item of an order no longer queued (a cancel between its store write and the
    ///   item's removal) and a unit held by a finished order (a complete, cancel or no-show
    ///   between its store write and the unit freed) — by the order's `updated_ms`.
    ///
    /// One repair has no grace: an order called or in progress in the store whose unit the
    /// tree shows free gets it back at once ([`ReconcileReport::restored_units`]; no live
    /// operation leaves that, only a tree that lost what the store kept — see
    /// `restore_unit`). Instances run the reconciler before they dispatch, so a dispatcher
    /// never gives such a unit to a second patient.
    ///
    /// A repair of something younger would race the live operation: two enqueues of one
    /// order (the harm the grace exists for), or a repair done twice and reported by both.
    /// Every decision reads the order from the store again just before acting (an order
    /// created, requeued or finished after the run's first read is judged by its state now,
    /// never by a stale one).
    ///
    /// Last, every order changed since the previous run (the store keeps how far runs have
    /// got: [`ClinicalStore::reconciled_until`]) and at least the grace ago has its patient's
    /// queue node compared with the store, and brought in line if it differs: a crash between
    /// a transition and the node's write (a completed exam still shown in progress, results
    /// never shown ready) is repaired even though nothing else about the order looks wrong.
    /// This assumes the instances' clocks agree within the grace.
    ///
    /// A zero grace repairs everything at once: for a start-up while no other process can be
    /// between two writes (the embedded engine: one process owns the data directory), for
    /// tests that simulate a crash and reconcile straight after, and for a tool run while no
    /// instance is live. With a grace, [`ReconcileReport::next_due_ms`] says when the first
    /// repair left for being too recent becomes due.
    ///
    /// One run at a time in the cluster: a run holds the lock at [`tree::RECONCILER`] (waiting
    /// up to [`RECONCILER_WAIT`] for another run to end; if it does not, nothing is done and
    /// the report says to come back in a second), and every enqueue it makes carries the lock's
    /// check, so an item goes in only while the run still holds it. Two runs that both found
    /// an order in no line would otherwise both put it in line — found under faults (a
    /// restarted instance's start-up run beside the leader's): the order was then called to
    /// two units one after the other.
    pub async fn reconcile_with_grace(&self, grace: Duration) -> Result<ReconcileReport> {
        let lock = medkeeper_recipes::Mutex::new(self.session.clone(), tree::RECONCILER)?;
        let guard = match lock.acquire_timeout(RECONCILER_WAIT).await {
            Ok(g) => g,
            Err(medkeeper_recipes::Error::Timeout) => {
                return Ok(ReconcileReport {
                    next_due_ms: Some(self.now_ms().saturating_add(1000)),
                    busy: true,
                    ..ReconcileReport::default()
                });
            }
            Err(e) => return Err(e.into()),
        };
        let result = self.reconcile_holding(grace, &guard.check_op()).await;
        if let Err(e) = guard.release().await {
            tracing::debug!(error = %e, "releasing the reconciler's lock");
        }
        result
    }

    /// One reconciler run while holding its lock; `fence` is the lock's check.
    async fn reconcile_holding(&self, grace: Duration, fence: &Op) -> Result<ReconcileReport> {
        let grace_ms = i64::try_from(grace.as_millis()).unwrap_or(i64::MAX);
        // i64::MAX: nothing left for later.
        let next_due = std::sync::atomic::AtomicI64::new(i64::MAX);
        // True if what changed at `at_ms` has been left alone for the grace. A time ahead of
        // this clock (another instance's clock runs ahead) is not settled until it is passed.
        // What is not settled yet is due at `at_ms + grace`.
        let settled = |at_ms: i64| {
            let ok = grace.is_zero() || self.now_ms().saturating_sub(at_ms) >= grace_ms;
            if !ok {
                let due = at_ms.saturating_add(grace_ms);
                next_due.fetch_min(due, std::sync::atomic::Ordering::Relaxed);
            }
            ok
        };
        let mut report = ReconcileReport::default();
        let live = self
            .store
            .orders_in(&[
                OrderState::Queued,
                OrderState::Called,
                OrderState::InProgress,
            ])
            .await?;
        let by_id: HashMap<&OrderId, &Order> = live.iter().map(|o| (&o.id, o)).collect();
        // What the tree says: queue items and unit occupants, per pool.
        let mut in_line: HashSet<OrderId> = HashSet::new();
        let mut occupying: HashMap<OrderId, Occupant> = HashMap::new();
        // Every unit's node and version, by pool and name.
        let mut units: HashMap<(Pool, String), (UnitNode, i32)> = HashMap::new();
        for pc in &self.config.pools {
            let q = self.queue(&pc.pool)?;
            for info in q.list().await? {
                let Some(d) = q.data(&info.id).await? else {
                    continue;
                };
                let Ok(e) = tree::from_json::<QueueEntry>("queue item", &d) else {
                    continue;
                };
                let still_queued = by_id
                    .get(&e.order)
                    .is_some_and(|o| o.state == OrderState::Queued);
                if still_queued {
                    in_line.insert(e.order);
                } else if let Some(o) = self.store.order(&e.order).await?
                    // Queued now: created or requeued after the first read; in line rightly.
                    && o.state != OrderState::Queued
                    && settled(o.updated_ms)
                {
                    // Cancelled (or otherwise gone on) in the store: take it out of line,
                    // and tell the patient.
                    if q.remove(&info.id).await? {
                        self.sync_patient_node(&o.patient, &o.id, |_, _| {}).await?;
                        report.removed_items.push(e.order);
                    }
                }
            }
            for (name, node, version) in self.units_with_version(&pc.pool).await? {
                if let Some(o) = node.order.clone() {
                    occupying.insert(
                        o,
                        Occupant {
                            pool: pc.pool.clone(),
                            unit: name.clone(),
                            requeueing: node.requeueing,
                            since_ms: node.since_ms,
                        },
                    );
                }
                units.insert((pc.pool.clone(), name), (node, version));
            }
        }
        for o in live.iter().filter(|o| o.state == OrderState::Queued) {
            let held = occupying.get(&o.id);
            if held.is_none() && in_line.contains(&o.id) {
                continue; // In line, as it should be.
            }
            // The store again, now: the first read may be stale.
            let Some(o) = self.store.order(&o.id).await? else {
                continue;
            };
            if o.state != OrderState::Queued {
                continue;
            }
            match held {
                Some(occ) if occ.requeueing => {
                    if !settled(o.updated_ms) {
                        continue;
                    }
                    // A no-show went back in line in the store; the tree had not followed:
                    // free the unit and enqueue, as the no-show would have.
                    let mut held = o.clone();
                    held.assigned = Some(occ.unit.clone());
                    held.pool = occ.pool.clone();
                    self.free_unit(&held).await?;
                    report.freed_units.push(occ.unit.clone());
                    report.ended_exams.push(o.patient.clone());
                    if !in_line.contains(&o.id) {
                        self.enqueue(&o, false, Some(fence)).await?;
                        report.enqueued.push(o.id.clone());
                    }
                    self.sync_patient_node(&o.patient, &o.id, |_, _| {}).await?;
                }
                Some(occ) => {
                    if !settled(occ.since_ms) {
                        continue;
                    }
                    // The assignment multi happened; the store missed it.
                    let t = Transition {
                        order: o.id.clone(),
                        from: Some(OrderState::Queued),
                        to: OrderState::Called,
                        at_ms: self.now_ms(),
                        actor: "reconciler".into(),
                        unit: Some(occ.unit.clone()),
                    };
                    if self.store.transition(&t, None).await? {
                        // The patient is told where to go, as the dispatcher would have.
                        self.sync_patient_node(&o.patient, &o.id, |_, _| {}).await?;
                        report.recorded_calls.push(o.id.clone());
                    }
                }
                None => {
                    if !settled(o.updated_ms) {
                        continue;
                    }
                    self.enqueue(&o, false, Some(fence)).await?;
                    // A no-show that died after freeing the unit left "called" on display.
                    self.sync_patient_node(&o.patient, &o.id, |_, _| {}).await?;
                    report.enqueued.push(o.id.clone());
                }
            }
        }
        // Orders the store has on a unit that the tree does not show them on.
        for o in live
            .iter()
            .filter(|o| o.state.occupies() && !occupying.contains_key(&o.id))
        {
            self.restore_unit(o, &units, fence, &mut report).await?;
        }
        // Units held by orders that are finished (or unknown to the store).
        for (order_id, occ) in occupying {
            if by_id
                .get(&order_id)
                .is_some_and(|o| o.state.occupies() || o.state == OrderState::Queued)
            {
                continue;
            }
            let Some(order) = self.store.order(&order_id).await? else {
                continue;
            };
            // Live now (created and called after the first read): the unit is rightly held.
            if order.state.occupies() || order.state == OrderState::Queued {
                continue;
            }
            if !settled(order.updated_ms) {
                continue;
            }
            let mut o = order.clone();
            o.assigned = Some(occ.unit.clone());
            o.pool = occ.pool;
            self.free_unit(&o).await?;
            self.sync_patient_node(&order.patient, &order.id, |_, _| {})
                .await?;
            report.freed_units.push(occ.unit);
            report.ended_exams.push(order.patient);
        }
        report.synced_views = self.sync_changed_views(grace, grace_ms).await?;
        report.next_due_ms = Some(next_due.into_inner()).filter(|&d| d != i64::MAX);
        Ok(report)
    }

    /// The last step of [`reconcile_with_grace`](Hospital::reconcile_with_grace): every order
    /// changed since the stored watermark and before now minus the grace gets its patient's
    /// queue node compared with the store; the watermark then moves to now minus the grace.
    /// Returns the orders whose node was brought in line.
    async fn sync_changed_views(&self, grace: Duration, grace_ms: i64) -> Result<Vec<OrderId>> {
        let now = self.now_ms();
        let cutoff = if grace.is_zero() {
            now.saturating_add(1)
        } else {
            now.saturating_sub(grace_ms)
        };
        // The previous window's last moments again: an order changed in the very millisecond
        // a pass ended (or stamped by a clock a little behind) is not missed.
        // The first run (no watermark: a store from before this pass existed) looks back
        // VIEW_PASS_FIRST_WINDOW, not at every order ever stored.
        let since = match self.store.reconciled_until().await? {
            Some(ms) => ms.saturating_sub(VIEW_PASS_OVERLAP_MS),
            None => now.saturating_sub(VIEW_PASS_FIRST_WINDOW_MS),
        };
        if cutoff <= since {
            return Ok(Vec::new());
        }
        let mut synced = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .orders_updated(since, cutoff, after.clone(), VIEW_PASS_PAGE)
                .await?;
            for o in &page {
                let Some((path, entry)) = self.find_patient_node(&o.patient, &o.id).await? else {
                    continue;
                };
                let mut want = entry.clone();
                show_order(&mut want, o);
                if want != entry {
                    self.sync_patient_node_at(&path, &o.id, |_, _| {}).await?;
                    synced.push(o.id.clone());
                }
            }
            match page.last() {
                Some(o) if page.len() == VIEW_PASS_PAGE as usize => {
                    after = Some((o.updated_ms, o.id.clone()));
                }
                _ => break,
            }
        }
        self.store.set_reconciled_until(cutoff).await?;
        Ok(synced)
    }
}

impl Hospital {
    /// Gives back to `order` (called or in progress in the store, on a unit no node shows it
    /// on) its unit, if the tree shows that unit free and available: the unit's node in use by
    /// the order (version-checked against `units`, read before the order), the patient's
    /// `active` node, and their queue node if missing — as the call that put it there left
    /// them. Part of the reconciler's run (`fence`: its lock's check).
    ///
    /// No live operation leaves an order in use in the store with its unit free in the tree:
    /// every transition into called or in progress writes the tree first, every one out of it
    /// the store first. Only a tree that lost what the store kept does (a move to a new
    /// ensemble or chroot, `store migrate`, a restore of an older tree). So there is no grace
    /// here: a dispatcher started on such a tree would give the unit to a second patient, and
    /// an instance repairs this at start-up before it dispatches. The order is read again
    /// after the unit's node, so one finished meanwhile is left alone; one finished between
    /// that read and the write leaves its unit held by a finished order, which a later run
    /// frees like any other.
    async fn restore_unit(
        &self,
        order: &Order,
        units: &HashMap<(Pool, String), (UnitNode, i32)>,
        fence: &Op,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let Some(unit) = order.assigned.clone() else {
            return Ok(());
        };
        let key = (order.pool.clone(), unit.clone());
        let conflict = |what: String, report: &mut ReconcileReport| {
            tracing::error!(order = %order.id, "reconciler: {what}");
            report.conflicts.push(what);
        };
        let Some((node, version)) = units.get(&key) else {
            conflict(
                format!(
                    "{}/{unit}: the store has order {} {} on it, and the tree has no such unit",
                    order.pool.name(),
                    order.id,
                    order.state
                ),
                report,
            );
            return Ok(());
        };
        if let Some(other) = &node.order {
            if other != &order.id {
                conflict(
                    format!(
                        "{}/{unit}: the store has order {} {} on it, the tree order {other}",
                        order.pool.name(),
                        order.id,
                        order.state
                    ),
                    report,
                );
            }
            return Ok(());
        }
        // Not to be dispatched anyway (maintenance, offline): a later run, once it is back.
        if node.status != UnitStatus::Available {
            return Ok(());
        }
        // The store again, after the tree: finished meanwhile, it needs the unit no more.
        let Some(now) = self.store.order(&order.id).await? else {
            return Ok(());
        };
        if !now.state.occupies() || now.assigned.as_deref() != Some(unit.as_str()) {
            return Ok(());
        }
        let [set_unit, create_active] =
            self.occupy_ops(&now.pool, &unit, node, *version, &now.id, &now.patient);
        // The patient's view of the order, made in the same multi if the tree lost it too (a
        // crash after the unit's write must not leave the patient told nothing: no later run
        // would find the unit to restore), else brought in line after.
        let create_view = Op::create(
            tree::patient_order_path(&now.patient, &now.id),
            tree::to_json(&entry_of(&now)),
            CreateOptions::new(CreateMode::Persistent),
        );
        let mut with_view = self
            .find_patient_node(&now.patient, &now.id)
            .await?
            .is_none();
        let mut with_active = true;
        self.session
            .ensure_path(&tree::patient_queue_path(&now.patient))
            .await?;
        let mut written = false;
        for _ in 0..NODE_WRITE_ATTEMPTS {
            let mut ops = vec![set_unit.clone()];
            let active_ix = with_active.then(|| {
                ops.push(create_active.clone());
                ops.len() - 1
            });
            let view_ix = with_view.then(|| {
                ops.push(create_view.clone());
                ops.len() - 1
            });
            ops.push(fence.clone());
            match self.session.multi(&ops).await {
                Ok(_) => {
                    written = true;
                    break;
                }
                // Changed since it was read (a dispatcher, an operator): the next run looks
                // again.
                Err(e) if e.index == Some(0) && e.error == CoordError::BadVersion => {
                    return Ok(());
                }
                Err(e) if e.index == Some(ops.len() - 1) => {
                    return Err(Error::Recipe(medkeeper_recipes::Error::Lost(
                        medkeeper_recipes::LostReason::NodeDeleted,
                    )));
                }
                // Made meanwhile: brought in line after.
                Err(e) if e.index == view_ix && e.error == CoordError::NodeExists => {
                    with_view = false;
                }
                // The patient's `active` node is there already: this exam's (kept by the
                // tree), or another's — the patient in two exams, by the store.
                Err(e) if e.index == active_ix && e.error == CoordError::NodeExists => {
                    let held = match self
                        .session
                        .get_data(&tree::active_path(&now.patient))
                        .await
                    {
                        Ok((d, _)) => tree::from_json::<ActiveExam>("active exam", &d).ok(),
                        Err(CoordError::NoNode) => continue,
                        Err(e) => return Err(e.into()),
                    };
                    match held {
                        Some(a) if a.order == now.id => with_active = false,
                        other => {
                            conflict(
                                format!(
                                    "patient {}: the store has order {} {} on {}/{unit}, the \
                                     tree has them in {}",
                                    now.patient,
                                    now.id,
                                    now.state,
                                    now.pool.name(),
                                    other.map_or("an unreadable exam".to_string(), |a| format!(
                                        "order {}'s exam",
                                        a.order
                                    ))
                                ),
                                report,
                            );
                            return Ok(());
                        }
                    }
                }
                Err(e) => return Err(e.error.into()),
            }
        }
        if !written {
            return Ok(()); // The patient's nodes kept coming and going: the next run.
        }
        if !with_view {
            self.sync_patient_node(&now.patient, &now.id, |_, _| {})
                .await?;
        }
        report.restored_units.push(unit);
        Ok(())
    }
}

/// An order occupying a unit, as [`Hospital::reconcile_with_grace`] found it.
struct Occupant {
    pool: Pool,
    unit: String,
    /// Marked as going back in line (a no-show under the requeue policy).
    requeueing: bool,
    /// When the unit's node was last written as in use by it.
    since_ms: i64,
}

/// A new patient queue node for `o`: what [`show_order`] shows of it, no place in line yet.
fn entry_of(o: &Order) -> PatientEntry {
    let mut e = PatientEntry {
        order: o.id.clone(),
        pool: o.pool.clone(),
        priority: o.priority,
        state: o.state,
        position: None,
        estimated_wait_s: None,
        called_to: None,
        results_ready: false,
    };
    show_order(&mut e, o);
    e
}

/// What the patient's queue node shows of `o` as the store has it: its state and priority,
/// where to go while called or in the exam, no place in line unless queued, results once
/// reported.
fn show_order(e: &mut PatientEntry, o: &Order) {
    e.state = o.state;
    e.priority = o.priority;
    e.called_to = if o.state.occupies() {
        o.assigned.clone()
    } else {
        None
    };
    if o.state != OrderState::Queued {
        e.position = None;
        e.estimated_wait_s = None;
    }
    if o.state == OrderState::Reported {
        e.results_ready = true;
    }
}
