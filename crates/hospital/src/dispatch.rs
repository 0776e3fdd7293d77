//! The dispatcher: assigns the head of a pool's queue to a free compatible unit (or doctor).
//!
//! # Who dispatches
//! One dispatcher per pool (equipment kind or department) at a time, chosen by the seed's own
//! recipe: the pool's fair lock `/medical/resources/<...>/<pool>/lock` (seed §4.3). Every
//! medkeeper instance runs a [`Dispatcher`] for every pool; each waits in the pool's lock line
//! and dispatches while it holds the lock. So pools spread over instances (an instance that
//! holds MRI need not hold CT), a dead or paused instance's pools pass to the next in line
//! within the session timeout, and no pool ever has two dispatchers deciding at once — which a
//! single elected leader would also give, but with all pools on one instance and one failover
//! for everything.
//!
//! # One multi per assignment
//! An assignment is one atomic multi, fenced by the lock:
//! 1. check the dispatcher's lock node (a stale dispatcher — expired, paused past its session
//!    — cannot assign: its node is gone);
//! 2. delete the order's queue item (it leaves the line exactly once);
//! 3. set the unit's node to in-use by this order, version-checked (a unit is never given to
//!    two patients, nor assigned after it went into maintenance);
//! 4. create the patient's `active` node (a patient is never in two exams at once: the create
//!    fails if the patient is already in one).
//!
//! Then the clinical store records `called` and the patient's queue node says where to go. A
//! crash between the multi and the store write is repaired by
//! [`Hospital::reconcile`](crate::orders::Hospital::reconcile).
//!
//! # Manual calls
//! A scheduler may call a queued order out of the queue's order, to a unit of their choice
//! ([`Hospital::call`]). It is the same multi (without the lock check) and the same store
//! write: the unit's version check, the item's delete and the `active` create keep a manual
//! call and a dispatcher (or two manual calls) from ever booking one unit, one order or one
//! patient twice, so it needs no lock.
//!
//! # Order of service
//! The queue's order: effective priority, then arrival. The effective priority is the FHIR
//! priority aged by one class per waiting target of its class, but never past asap
//! ([`AGEING_FLOOR`](crate::orders::AGEING_FLOOR)) unless the order is stat itself: a genuine
//! stat order is never behind an aged one (letting aged orders reach stat, where the earlier
//! arrival goes first, made stat waits worse under a backlog: docs/simulation.md). Routine
//! and urgent orders still age to asap, ahead of every later asap, urgent and routine order,
//! so they cannot starve — unless stat orders alone keep every compatible unit of the pool
//! busy, which no order of service short of ignoring stat priority could help. An order
//! whose capabilities no free unit has is passed over for now (the next compatible order
//! goes first); units in maintenance or offline are skipped.
//!
//! # No-shows
//! A called order whose patient has not started within the configured grace is handed to
//! [`Hospital::no_show`](crate::orders::Hospital::no_show) (ends as no-show, or re-queued,
//! by policy).
//!
//! # The queue, consumed inside the assignment
//! The dispatcher does not use the queue recipe's `take` / `complete` (claims): holding the
//! pool's lock, it alone consumes the pool's queue, so it deletes the chosen item inside the
//! assignment's own multi (step 2 above), as the recipe's docs describe under "Consuming
//! without a claim". A manual call does the same without the lock: the item's delete fails if
//! the dispatcher took it first.
//!
//! # Reads come from the pool's read model
//! A round reads the units and the queue from the pool's [read model](crate::readmodel) (after
//! [`PoolModel::settle`](crate::readmodel::PoolModel::settle), so it sees this session's own
//! writes), not from the tree: it sends only its writes. The model's changes wake the
//! dispatcher; the [`TICK`] recomputes what depends on time alone (ageing, no-show deadlines,
//! estimated waits) from the model, without a request. A stale model costs a failed multi and
//! another round, never a double booking (see the read model's docs).
//!
//! # Places in line
//! The waiting patients' queue nodes show their position and estimated wait. A round writes a
//! patient's node only when the position changed or the estimate moved by more than
//! [`ESTIMATE_TOLERANCE`] from what was last written (remembered in memory, so unchanged nodes
//! cost nothing; a new lock holder writes each waiting node once). A patient moving up the line
//! is rewritten at most once per [`POSITION_INTERVAL`]; reaching the head of the line, or
//! moving back behind a more urgent order, is written at once. The write is conditional on the
//! version this dispatcher last wrote, so it needs no read unless someone else wrote since.
//!
//! # Observing the calls
//! A [`DispatchObserver`] ([`Dispatcher::with_observer`]; the server's metrics implement it) is
//! told of every call a dispatcher makes that stands (its multi committed and the store
//! recorded it), with two durations by the hospital's clock:
//! - **waited**: from the order's arrival in the queue (its creation, or its return to the
//!   queue after a no-show) to the call's multi committed;
//! - **latency**: from the moment the order and the unit it was called to could first have
//!   been paired — the later of the order's arrival and the unit's last change to available
//!   (its node's `since_ms`, as the read model saw it) — to the call's multi committed. It is
//!   what the dispatcher added to the wait: the read model's notification, the round, the
//!   multi. It also counts, by design, a unit the stat reserve held back, or an order
//!   whose patient was in another exam meanwhile; and it is clamped at zero, as the unit's
//!   time may come from another instance's clock.
//!
//! Manual calls ([`Hospital::call`]) are not observed: a person chose when.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Error as CoordError, Op, SessionExt};
use medkeeper_recipes::{Error as RecipeError, LockGuard, LockOptions, Mutex};

use crate::actor::Actor;
use crate::model::{OrderId, OrderState, PatientId, Pool, Priority, Transition, UnitStatus};
use crate::orders::Hospital;
use crate::orders::QueueRow;
use crate::readmodel::{CachedItem, CachedUnit};
use crate::tree::{self, ActiveExam, PatientEntry, QueueEntry, UnitNode};
use crate::{Error, Result};

/// One assignment made by a dispatch round.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Assignment {
    /// The order.
    pub order: OrderId,
    /// The patient called.
    pub patient: PatientId,
    /// The unit or doctor.
    pub unit: String,
}

/// How often a dispatcher re-checks without a change (ageing, no-shows and estimated waits
/// depend on time), from the pool's read model: no request unless something is due.
pub const TICK: Duration = Duration::from_secs(1);

/// How far a waiting patient's estimated wait may drift from what their queue node last said
/// before the node is written again.
pub const ESTIMATE_TOLERANCE: Duration = Duration::from_secs(60);

/// How often at most a waiting patient's place in line is rewritten while it only moves up
/// the line: a burst of calls moves everyone behind them, and one write per patient per
/// second shows it. Reaching the head of the line is shown at once.
pub const POSITION_INTERVAL: Duration = Duration::from_secs(1);

/// A waiting patient's node as this dispatcher last wrote it.
#[derive(Debug, Clone)]
struct Shown {
    /// The position shown.
    position: u32,
    /// The expected call time (ms since the epoch) the estimate stood for.
    eta_ms: i64,
    /// When it was written, ms since the epoch.
    at_ms: i64,
    /// What the node held after the write, and its version then: the next position can be
    /// written without reading the node, conditional on that version (any other writer — a
    /// transition — makes the write fail and the node be read again).
    entry: PatientEntry,
    version: i32,
}

/// Told of each call a dispatcher makes (see "Observing the calls" in the module docs), on
/// the dispatcher's task: it must not block.
pub trait DispatchObserver: Send + Sync {
    /// The dispatcher of `pool` called an order of FHIR priority `priority` (as ordered, not
    /// as aged) that had waited `waited` in the queue; `latency` is how long the call took
    /// once the order and its unit could have been paired.
    fn called(&self, pool: &Pool, priority: Priority, waited: Duration, latency: Duration);
}

/// The dispatcher of one pool on one instance.
pub struct Dispatcher {
    hospital: Arc<Hospital>,
    pool: Pool,
    instance: String,
    observer: Option<Arc<dyn DispatchObserver>>,
    /// What each waiting patient's node was last written to show.
    shown: std::sync::Mutex<HashMap<OrderId, Shown>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("pool", &self.pool)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Dispatcher {
    /// The dispatcher of `pool` on instance `instance` (its name in the lock node and in the
    /// order history: `dispatcher:<instance>`).
    pub fn new(hospital: Arc<Hospital>, pool: Pool, instance: impl Into<String>) -> Dispatcher {
        Dispatcher {
            hospital,
            pool,
            instance: instance.into(),
            observer: None,
            shown: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Tells `observer` of every call this dispatcher makes.
    pub fn with_observer(mut self, observer: Arc<dyn DispatchObserver>) -> Dispatcher {
        self.observer = Some(observer);
        self
    }

    fn actor(&self) -> String {
        format!("dispatcher:{}", self.instance)
    }

    /// The pool's lock.
    pub fn lock(&self) -> Result<Mutex> {
        Ok(Mutex::with_options(
            self.hospital.session().clone(),
            tree::lock_path(&self.pool),
            LockOptions {
                data: self.instance.clone().into_bytes(),
                ..LockOptions::default()
            },
        )?)
    }

    /// Runs until `shutdown` resolves: waits for the pool's lock, dispatches while holding it
    /// (after every change of the pool's subtree, and every [`TICK`]), and waits again if it
    /// loses it. Returns an error only if the session ends.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future gives up the lock (or the place in its line).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let lock = self.lock()?;
        loop {
            let guard = tokio::select! {
                g = lock.acquire() => match g {
                    Ok(g) => g,
                    Err(e) if e.is_session_fatal() => return Err(e.into()),
                    Err(e) => {
                        tracing::warn!(pool = %self.pool, error = %e, "acquiring the dispatch lock");
                        tokio::time::sleep(TICK).await;
                        continue;
                    }
                },
                _ = &mut shutdown => return Ok(()),
            };
            tracing::info!(pool = %self.pool, instance = %self.instance, "dispatching");
            let model = self.hospital.pool_model(&self.pool).await?;
            let mut changes = model.subscribe();
            // A new holder does not know what the patients' nodes show: each is written once.
            self.shown.lock().unwrap_or_else(|p| p.into_inner()).clear();
            loop {
                tracing::trace!(pool = %self.pool, "dispatch round");
                match self.dispatch_once(&guard).await {
                    Ok(_) => {}
                    Err(Error::Recipe(RecipeError::Lost(reason))) => {
                        tracing::warn!(pool = %self.pool, %reason, "dispatch lock lost");
                        break;
                    }
                    Err(e) if is_session_fatal(&e) => return Err(e),
                    Err(e) => tracing::warn!(pool = %self.pool, error = %e, "dispatch round"),
                }
                tracing::trace!(pool = %self.pool, "dispatch round done");
                if let Err(e) = self.no_shows().await {
                    tracing::warn!(pool = %self.pool, error = %e, "no-show check");
                }
                tracing::trace!(pool = %self.pool, "no-show check done");
                tokio::select! {
                    _ = changes.next() => {
                        // Coalesce a burst of changes into one round.
                        while changes.try_next().is_some() {}
                    }
                    _ = tokio::time::sleep(TICK) => {}
                    reason = guard.lost() => {
                        tracing::warn!(pool = %self.pool, %reason, "dispatch lock lost");
                        break;
                    }
                    _ = &mut shutdown => {
                        let _ = guard.release().await;
                        return Ok(());
                    }
                }
            }
            drop(guard);
        }
    }

    /// One dispatch round while holding `guard`: assigns as many waiting orders as there are
    /// free compatible units. Returns what it assigned.
    ///
    /// # Notable errors
    /// `Recipe(Lost(_))` if the lock is no longer held (nothing more is assigned).
    pub async fn dispatch_once(&self, guard: &LockGuard) -> Result<Vec<Assignment>> {
        let h = &self.hospital;
        let model = h.pool_model(&self.pool).await?;
        model.ensure_live()?;
        model.settle().await;
        let mut units: Vec<(String, UnitNode, i32)> = model
            .units()
            .into_iter()
            .map(|u| (u.name, u.node, u.version))
            .collect();
        // Orders the model shows on a unit: an item of one of them is a duplicate (the
        // reconciler's enqueues are fenced against that, but a second item must never give one
        // order a second unit), left for the reconciler to remove.
        let on_units: std::collections::HashSet<OrderId> = units
            .iter()
            .filter_map(|(_, n, _)| n.order.clone())
            .collect();
        // Units the hospital file no longer declares take no one new (kept in the tree for
        // whoever may be inside: `config::load`), nor count for the stat reserve.
        units.retain(|(n, _, _)| h.config().declares_unit(&self.pool, n));
        let mut reserve = StatReserve::new(h, &self.pool, &units);
        let mut free: Vec<(String, UnitNode, i32)> = units
            .into_iter()
            .filter(|(_, n, _)| n.status == UnitStatus::Available)
            .collect();
        let mut made = Vec::new();
        if free.is_empty() {
            self.refresh_positions().await?;
            return Ok(made);
        }
        let q = h.queue(&self.pool)?;
        for CachedItem { info, entry } in model.queue() {
            if free.is_empty() {
                break;
            }
            if info.claimed || on_units.contains(&entry.order) {
                continue;
            }
            if info.effective_class > Priority::Stat.class() && reserve.holds(free.len()) {
                continue; // the last free unit waits for a stat order
            }
            // Best fit: of the free units that can do it, the one with the fewest capabilities,
            // so the most capable units stay free for the orders that need them.
            let Some(ix) = free
                .iter()
                .enumerate()
                .filter(|(_, (_, n, _))| n.can_do(&entry.capabilities))
                .min_by_key(|(_, (_, n, _))| n.capabilities.len())
                .map(|(ix, _)| ix)
            else {
                continue;
            };
            let (unit, node, version) = free[ix].clone();
            let ops = h.assignment_ops(
                &self.pool,
                q.item_path(&info.id),
                &entry,
                &unit,
                &node,
                version,
            );
            tracing::trace!(pool = %self.pool, %unit, "assigning");
            #[cfg(not(feature = "unfenced-control"))]
            let written = guard.write(&ops).await;
            #[cfg(feature = "unfenced-control")]
            let written = unfenced_control::write(h, guard, ops).await;
            match written {
                Ok(_) => {}
                Err(RecipeError::Multi {
                    index: Some(OP_ITEM),
                    ..
                }) => continue, // left the line
                Err(RecipeError::Multi {
                    index: Some(OP_UNIT),
                    ..
                }) => {
                    // The unit changed (maintenance, another assignment): next round re-reads.
                    free.remove(ix);
                    continue;
                }
                Err(RecipeError::Multi {
                    index: Some(OP_ACTIVE),
                    error: CoordError::NoNode,
                }) => {
                    // No patient node (an item older than the patient queue node): made now,
                    // the order is taken again in a later round.
                    h.ensure_patient(&entry.patient).await?;
                    continue;
                }
                Err(RecipeError::Multi {
                    index: Some(OP_ACTIVE),
                    ..
                }) => continue, // patient busy
                Err(e) => return Err(e.into()),
            }
            let committed_ms = h.now_ms();
            free.remove(ix);
            reserve.assigned();
            tracing::trace!(pool = %self.pool, %unit, "assigned; recording the call");
            if !h
                .record_call(&entry, &unit, &Actor::new(self.actor()))
                .await?
            {
                continue; // cancelled meanwhile: the unit was given back
            }
            if let Some(observer) = &self.observer
                && let Some(priority) = Priority::from_class(info.class)
            {
                let arrived_ms = i64::try_from(info.id.enqueued_at_ms()).unwrap_or(i64::MAX);
                let pairable_ms = arrived_ms.max(node.since_ms);
                let since = |ms: i64| Duration::from_millis((committed_ms - ms).max(0) as u64);
                observer.called(&self.pool, priority, since(arrived_ms), since(pairable_ms));
            }
            made.push(Assignment {
                order: entry.order,
                patient: entry.patient,
                unit,
            });
        }
        tracing::trace!(pool = %self.pool, "refreshing positions");
        self.refresh_positions().await?;
        Ok(made)
    }

    /// Keeps the position and estimated wait in the waiting patients' queue nodes current
    /// (writes only those that changed). Each write is the version-checked read-modify-write
    /// of [`Hospital::sync_patient_node`]: a position is shown only while the store says the
    /// order is queued, and a racing transition's state is never overwritten.
    async fn refresh_positions(&self) -> Result<()> {
        let h = &self.hospital;
        let model = h.pool_model(&self.pool).await?;
        // The round's own assignments are in the model before places are counted.
        model.settle().await;
        let rows = h.queue_rows(&self.pool, &model.units(), &model.queue());
        let now = h.now_ms();
        let tolerance = ESTIMATE_TOLERANCE.as_millis() as i64;
        let interval = POSITION_INTERVAL.as_millis() as i64;
        let due: Vec<_> = {
            let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
            // Orders no longer waiting here are forgotten.
            let waiting: std::collections::HashSet<&OrderId> =
                rows.iter().map(|(r, _)| &r.order).collect();
            shown.retain(|o, _| waiting.contains(o));
            rows.iter()
                .filter(|(row, _)| {
                    let eta = now + row.estimated_wait_s as i64 * 1000;
                    shown.get(&row.order).is_none_or(|s| {
                        let moved = s.position != row.position;
                        let drifted = (eta - s.eta_ms).abs() > tolerance;
                        // Moving back (a more urgent order arrived) and reaching the head are
                        // shown at once; moving up, at most once per interval.
                        let now_due = row.position == 1 || row.position > s.position;
                        (moved && (now_due || now - s.at_ms >= interval))
                            || (drifted && now - s.at_ms >= interval)
                    })
                })
                .map(|(row, entry)| (row.clone(), entry.clone(), shown.get(&row.order).cloned()))
                .collect()
        };
        for (row, entry, last) in due {
            let eta_ms = now + row.estimated_wait_s as i64 * 1000;
            // Blind, conditional on the version this dispatcher wrote: nobody else wrote since,
            // so the node still shows a queued order and only the place in line changes.
            if let Some(last) = last {
                let mut e = last.entry;
                e.position = Some(row.position);
                e.estimated_wait_s = Some(row.estimated_wait_s);
                match h
                    .session()
                    .set_data(&entry.patient_node, &tree::to_json(&e), last.version)
                    .await
                {
                    Ok(stat) => {
                        self.remember(&row, eta_ms, e, stat.version);
                        continue;
                    }
                    Err(CoordError::BadVersion | CoordError::NoNode) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let written = h
                .sync_patient_node_written(&entry.patient_node, &row.order, |e, o| {
                    if o.state == OrderState::Queued {
                        e.position = Some(row.position);
                        e.estimated_wait_s = Some(row.estimated_wait_s);
                    }
                })
                .await;
            match written {
                Ok((_, Some((e, version)))) if e.state == OrderState::Queued => {
                    self.remember(&row, eta_ms, e, version);
                }
                Ok(_) => {}
                // Racing writers: the next round tries again.
                Err(Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn remember(&self, row: &QueueRow, eta_ms: i64, entry: PatientEntry, version: i32) {
        self.shown.lock().unwrap_or_else(|p| p.into_inner()).insert(
            row.order.clone(),
            Shown {
                position: row.position,
                eta_ms,
                at_ms: self.hospital.now_ms(),
                entry,
                version,
            },
        );
    }

    /// Called orders of this pool whose patient has not arrived within the grace period.
    async fn no_shows(&self) -> Result<()> {
        let h = &self.hospital;
        let grace = h.config().no_show_grace.as_millis() as i64;
        let now = self.hospital.now_ms();
        let model = h.pool_model(&self.pool).await?;
        for CachedUnit { name, node, .. } in model.units() {
            let (UnitStatus::InUse, Some(order)) = (node.status, node.order) else {
                continue;
            };
            if now - node.since_ms < grace {
                continue;
            }
            // Called to this very unit: a stale model may still show an order since requeued
            // and called to another unit, whose patient is not late.
            if let Some(o) = h.store().order(&order).await?
                && o.state == OrderState::Called
                && o.assigned.as_deref() == Some(name.as_str())
            {
                match h.no_show(&order, &self.actor()).await {
                    Ok(_) | Err(Error::IllegalTransition { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }
}

/// In an assignment's multi ([`Hospital::assignment_ops`]): the delete of the queue item.
pub(crate) const OP_ITEM: usize = 0;
/// In an assignment's multi: the version-checked write of the unit's node.
pub(crate) const OP_UNIT: usize = 1;
/// In an assignment's multi: the create of the patient's `active` node.
pub(crate) const OP_ACTIVE: usize = 2;

impl Hospital {
    /// The operations of an assignment's multi, in this order (see the module docs): delete
    /// the order's queue item at `item_path` ([`OP_ITEM`]), set the unit's node (read at
    /// `version`) to in use by the order ([`OP_UNIT`]), create the patient's `active` node
    /// ([`OP_ACTIVE`]). The patient's node (the `active` node's parent) exists since the order's
    /// patient queue node was created; if it does not, the multi fails at [`OP_ACTIVE`] with
    /// `NoNode` and the caller creates it ([`Hospital::ensure_patient`]) and tries again.
    pub(crate) fn assignment_ops(
        &self,
        pool: &Pool,
        item_path: String,
        entry: &QueueEntry,
        unit: &str,
        node: &UnitNode,
        version: i32,
    ) -> Vec<Op> {
        let [set_unit, create_active] =
            self.occupy_ops(pool, unit, node, version, &entry.order, &entry.patient);
        vec![Op::delete(item_path, -1), set_unit, create_active]
    }

    /// The two writes that put `order` of `patient` on `unit` (its node `node`, read at
    /// `version`): the unit's node set in use by it, version-checked, and the patient's
    /// `active` node created. An assignment's multi ([`OP_UNIT`], [`OP_ACTIVE`]), and the
    /// reconciler's restore of a unit the tree lost.
    pub(crate) fn occupy_ops(
        &self,
        pool: &Pool,
        unit: &str,
        node: &UnitNode,
        version: i32,
        order: &OrderId,
        patient: &PatientId,
    ) -> [Op; 2] {
        let occupied = UnitNode {
            status: UnitStatus::InUse,
            capabilities: node.capabilities.clone(),
            order: Some(order.clone()),
            patient: Some(patient.clone()),
            since_ms: self.now_ms(),
            requeueing: false,
        };
        let active = ActiveExam {
            order: order.clone(),
            pool: pool.clone(),
            unit: unit.to_string(),
        };
        [
            Op::set_data(
                tree::unit_path(pool, unit),
                tree::to_json(&occupied),
                version,
            ),
            Op::create(
                tree::active_path(patient),
                tree::to_json(&active),
                CreateOptions::new(CreateMode::Persistent),
            ),
        ]
    }

    /// After an assignment's multi: the store records queued → called to `unit` by `actor`;
    /// the patient is told where to go. Returns false if the call does not stand: the order
    /// moved on in the store meanwhile (cancelled), and the unit was given back.
    pub(crate) async fn record_call(
        &self,
        entry: &QueueEntry,
        unit: &str,
        actor: &Actor,
    ) -> Result<bool> {
        let t = Transition {
            order: entry.order.clone(),
            from: Some(OrderState::Queued),
            to: OrderState::Called,
            at_ms: self.now_ms(),
            actor: actor.name().to_string(),
            unit: Some(unit.to_string()),
        };
        if self.store().transition(&t, actor.pending_audit()).await? {
            actor.mark_audit_written();
        } else {
            // The order moved on in the store meanwhile. Only if it no longer needs this unit
            // (cancelled, or otherwise finished) is the unit given back at once. A reconciler
            // that found the occupied unit first has recorded this very call (called or
            // already in progress on this unit): then the assignment stands — freeing the unit
            // here would give it to a second patient.
            let Some(mut order) = self.store().order(&entry.order).await? else {
                return Ok(false);
            };
            let ours = order.state.occupies() && order.assigned.as_deref() == Some(unit);
            if !ours {
                order.assigned = Some(unit.to_string());
                self.free_unit(&order).await?;
                // Whoever moved it on tells the patient.
                return Ok(false);
            }
        }
        // The patient's node shows the store's truth (called to this unit, unless a racing
        // transition moved the order on since).
        self.sync_patient_node_at(&entry.patient_node, &entry.order, |_, _| {})
            .await?;
        Ok(true)
    }
}

impl Hospital {
    /// Creates the patient's node if missing (the parent of their `active` node).
    pub(crate) async fn ensure_patient(&self, patient: &PatientId) -> Result<()> {
        Ok(self
            .session()
            .ensure_path(&tree::patient_path(patient))
            .await?)
    }

    /// True if the unit's node says it holds order `id` (after a lost reply: did the call
    /// apply?). Retries through connection losses; fails if the session ends.
    pub(crate) async fn holds_order(&self, pool: &Pool, unit: &str, id: &OrderId) -> Result<bool> {
        let path = tree::unit_path(pool, unit);
        let mut events = self.session().session_events();
        loop {
            match self.session().get_data(&path).await {
                Ok((data, _)) => {
                    let node: UnitNode = tree::from_json("unit", &data)?;
                    return Ok(node.order.as_ref() == Some(id));
                }
                Err(CoordError::NoNode) => return Ok(false),
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let st = events
                        .wait_for(|s| {
                            s == medkeeper_coord::SessionState::Connected || s.is_terminal()
                        })
                        .await;
                    if st.is_terminal() {
                        return Err(e.into());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The stat reserve of a pool (`reserve_for_stat` in the hospital file): in a pool of two or
/// more units in service, the last free unit is kept for stat orders while no busy unit is
/// expected to free within half the stat target — so a stat order arriving then is called
/// within the target even if that exam runs late or the next patient is slow to leave. Expected
/// ends are when the unit was called plus the pool's exam duration; an overrunning exam counts
/// as ending now. Orders below stat still take every unit but the last, and the last too as
/// soon as a busy unit is due within half the target.
struct StatReserve {
    enabled: bool,
    now_ms: i64,
    /// Half the stat target.
    target_ms: i64,
    exam_ms: i64,
    /// Expected ends of the busy units (and of the units assigned this round).
    busy_until: Vec<i64>,
}

impl StatReserve {
    fn new(h: &Hospital, pool: &Pool, units: &[(String, UnitNode, i32)]) -> StatReserve {
        let cfg = h.config().pool(pool);
        let exam_ms = cfg.map_or(0, |p| p.exam_duration.as_millis() as i64);
        let now_ms = h.now_ms();
        let in_service = units
            .iter()
            .filter(|(_, n, _)| matches!(n.status, UnitStatus::Available | UnitStatus::InUse))
            .count();
        StatReserve {
            enabled: cfg.is_some_and(|p| p.reserve_for_stat) && in_service >= 2,
            now_ms,
            target_ms: h.config().targets.stat.as_millis() as i64 / 2,
            exam_ms,
            busy_until: units
                .iter()
                .filter(|(_, n, _)| n.status == UnitStatus::InUse)
                .map(|(_, n, _)| (n.since_ms + exam_ms).max(now_ms))
                .collect(),
        }
    }

    /// True if an order below stat must leave the last of `free` units alone.
    fn holds(&self, free: usize) -> bool {
        self.enabled
            && free == 1
            && self
                .busy_until
                .iter()
                .min()
                .is_none_or(|&end| end - self.now_ms > self.target_ms)
    }

    /// A unit was just assigned.
    fn assigned(&mut self) {
        self.busy_until.push(self.now_ms + self.exam_ms);
    }
}

/// TEST-ONLY CONTROL (issue 18; `scripts/chaos --control`): the assignment's multi without
/// the check of the dispatcher's lock node, so that the chaos checker can show it catches what
/// the fence is there for. Compiled only with the `unfenced-control` feature, never on by
/// default; a binary built with it must never serve a hospital. With
/// `MEDKEEPER_UNFENCED_CONTROL=unversioned` the unit's write is unconditional as well (the
/// version check is the other guard of a stale decision).
#[cfg(feature = "unfenced-control")]
mod unfenced_control {
    use super::*;

    pub(super) async fn write(
        h: &Hospital,
        guard: &LockGuard,
        mut ops: Vec<Op>,
    ) -> std::result::Result<Vec<medkeeper_coord::OpResult>, RecipeError> {
        let _ = guard; // no fence: the lock node is not checked
        if std::env::var("MEDKEEPER_UNFENCED_CONTROL").as_deref() == Ok("unversioned")
            && let Op::SetData { version, .. } = &mut ops[OP_UNIT]
        {
            *version = -1;
        }
        h.session().multi(&ops).await.map_err(|e| {
            if e.error.is_session_fatal() {
                RecipeError::Lost(medkeeper_recipes::LostReason::SessionEnded)
            } else {
                RecipeError::Multi {
                    index: e.index,
                    error: e.error,
                }
            }
        })
    }
}

fn is_session_fatal(e: &Error) -> bool {
    match e {
        Error::Recipe(r) => r.is_session_fatal(),
        Error::Coord(c) => c.is_session_fatal(),
        _ => false,
    }
}
