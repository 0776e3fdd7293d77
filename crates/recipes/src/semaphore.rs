//! Leases on N identical units, each lease naming the units it holds: a counting semaphore
//! for "two MRI scanners", where the holder must also know *which* scanner it has.
//!
//! # Guarantees
//! - **No unit in two leases.** A unit is held by the ephemeral node `leases/<unit>`; ZooKeeper
//!   lets only one such node exist, so two live leases can never name the same unit, and at most
//!   N units are in use.
//! - **All or nothing.** A lease of k units is created by one multi (k creates, one zxid): no
//!   client ever holds part of what it asked for, so two clients that each want 2 of 3 units
//!   cannot deadlock holding one each.
//! - **Fair, no herd.** Waiters form a FIFO line of ephemeral-sequential nodes; only the head
//!   of the line looks at the units, and it takes its units in the same multi that removes it
//!   from the line. A large request is never overtaken by later small ones (no starvation), at
//!   the price of head-of-line blocking: a waiter for 2 units holds up a later waiter for 1 even
//!   while 1 unit is free. Each waiter watches only its predecessor; the head sets one child
//!   watch on `leases/`. A release wakes the head only.
//! - **Fencing.** All nodes of a lease are created by one multi and share its zxid:
//!   [`Lease::fencing_token`] is larger for every later lease that takes any of those units.
//!   [`Lease::write`] applies coordination writes only while every unit node still exists.
//!
//! # Node layout
//! ```text
//! <dir>/line/_c_<uuid>-lease-0000000007   a waiter (ephemeral sequential, protected, data: label)
//! <dir>/leases/<unit>                     a held unit (ephemeral; data: "<tag>\n<label>")
//! ```
//! `<tag>` is 32 hex digits, fresh for each acquire: it tells which lease (and so which of a
//! session's acquires) holds a unit; the holding session is the node's `ephemeralOwner`. Both
//! directories are containers, created on demand. The units are the caller's
//! configuration, not part of the tree: every client of one semaphore must be given the same
//! unit names. Children of `leases/` that are not configured units are ignored.
//!
//! # Connection loss and session expiry
//! While waiting, a connection loss is waited out (the line node is kept). A multi that takes
//! units and whose reply is lost to a connection loss is resolved after reconnecting: once a
//! write has passed behind it, the units carrying this acquire's tag and owned by this session
//! are adopted (the multi was applied: all of them exist) or none exists (it was not) and the
//! head tries again. While held, [`Lease::state`] follows the session as the
//! [`ConnectionPolicy`] says; an expiry ends the lease (its units are freed by ZooKeeper, the
//! next waiter takes them) and [`Lease::lost`] resolves. A unit node deleted by hand while held
//! is noticed by the next [`Lease::write`]; an operator must not do that while a patient is
//! inside the unit.
//!
//! # Cancellation safety
//! Every acquire method is cancellation-safe: dropping the future at any point deletes its line
//! node and every unit node carrying its tag, in the background (after the session's earlier
//! requests have been applied, so an in-flight multi is not missed). Dropping a [`Lease`]
//! releases its units in the background; [`Lease::release`] releases and waits.

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Error as CoordError, Op, OpResult, Session};
use medkeeper_coord::{SessionId, Stat, path};
use tokio::time::Instant;

use crate::hold::{self, Hold, Monitor};
use crate::line::{self, PendingTagged, Waited};
use crate::lock::{mutex_turn, validate_dir};
use crate::{ConnectionPolicy, Error, FencingToken, HoldState, LostReason, Result};

/// The name part of a waiter's node in the line.
pub const LEASE_MARKER: &str = "lease-";

fn is_waiter(name: &str) -> bool {
    name.contains(LEASE_MARKER) && line::sequence_of(name).is_some()
}

/// Options of a [`Semaphore`].
#[derive(Debug, Clone, Default)]
pub struct SemaphoreOptions {
    /// Who holds, for operators (an instance name, never patient data); stored in the waiter's
    /// and the unit nodes' data.
    pub label: String,
    /// What a connection loss does to a held lease.
    pub policy: ConnectionPolicy,
}

/// Who holds a unit, as [`Semaphore::holders`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHolder {
    /// The lease's tag (32 hex digits), the same on every unit of one lease.
    pub lease: String,
    /// The session that holds it (the unit node's `ephemeralOwner`).
    pub session: SessionId,
    /// The holder's label ([`SemaphoreOptions::label`]).
    pub label: String,
}

/// A counting semaphore over named units under a directory. Cheap to clone; every acquire is
/// one independent waiter.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::Semaphore;
/// let mri = Semaphore::new(session, "/medical/resources/equipment/MRI/units", vec!["MRI-1".into(), "MRI-2".into()])?;
/// let lease = mri.acquire(1).await?;
/// println!("patient goes to {}", lease.units()[0]);
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Semaphore {
    session: Arc<dyn Session>,
    dir: String,
    line_dir: String,
    leases_dir: String,
    units: Arc<[String]>,
    options: SemaphoreOptions,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("dir", &self.dir)
            .field("units", &self.units)
            .finish()
    }
}

impl Semaphore {
    /// A semaphore on `dir` over `units`, with default options.
    ///
    /// # Notable errors
    /// `InvalidArgument` if `units` is empty, has a duplicate, or has a name that is not a valid
    /// znode name; `Coord(BadArguments)` for an invalid `dir`, `InvalidArgument` for the root.
    pub fn new(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        units: Vec<String>,
    ) -> Result<Semaphore> {
        Semaphore::with_options(session, dir, units, SemaphoreOptions::default())
    }

    /// A semaphore with `options`.
    pub fn with_options(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        units: Vec<String>,
        options: SemaphoreOptions,
    ) -> Result<Semaphore> {
        let dir = dir.into();
        validate_dir(&dir)?;
        if units.is_empty() {
            return Err(Error::InvalidArgument("a semaphore needs units".into()));
        }
        for (i, u) in units.iter().enumerate() {
            validate_unit(u)?;
            if units[..i].contains(u) {
                return Err(Error::InvalidArgument(format!("unit {u:?} given twice")));
            }
        }
        Ok(Semaphore {
            session,
            line_dir: path::join(&dir, "line"),
            leases_dir: path::join(&dir, "leases"),
            dir,
            units: units.into(),
            options,
        })
    }

    /// The semaphore's directory.
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// The configured units, in preference order (a lease takes the first free ones).
    pub fn units(&self) -> &[String] {
        &self.units
    }

    /// Waits for its turn and then until `k` units are free, and takes them.
    ///
    /// # Notable errors
    /// `InvalidArgument` if `k` is 0 or more than the number of units; a session-fatal `Coord`
    /// error if the session ends while waiting; `Lost(NodeDeleted)` if the waiter's node was
    /// deleted by someone else.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the waiter node and any unit node it created.
    pub async fn acquire(&self, k: usize) -> Result<Lease> {
        self.acquire_until(k, &|_| true, None)
            .await?
            .ok_or(Error::Timeout)
    }

    /// As [`acquire`](Semaphore::acquire), for at most `timeout`.
    ///
    /// # Notable errors
    /// `Timeout` if the units were not taken in time (nothing is left behind); as
    /// [`acquire`](Semaphore::acquire) otherwise.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn acquire_timeout(&self, k: usize, timeout: Duration) -> Result<Lease> {
        self.acquire_until(k, &|_| true, Some(Instant::now() + timeout))
            .await?
            .ok_or(Error::Timeout)
    }

    /// Takes `k` units if nobody is waiting and `k` are free now; `None` otherwise (nothing is
    /// left behind). Does not jump the line.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn try_acquire(&self, k: usize) -> Result<Option<Lease>> {
        self.acquire_until(k, &|_| true, Some(Instant::now())).await
    }

    /// As [`acquire_timeout`](Semaphore::acquire_timeout) (`None` for no limit), taking only
    /// units that `accept` accepts (for example the scanners with a capability the exam needs).
    /// While this waiter is the head of the line and no `k` accepted units are free, the waiters
    /// behind it wait too (the line is strictly FIFO).
    ///
    /// # Notable errors
    /// `InvalidArgument` if fewer than `k` configured units are accepted.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn acquire_units(
        &self,
        k: usize,
        accept: impl Fn(&str) -> bool + Sync,
        timeout: Option<Duration>,
    ) -> Result<Lease> {
        let deadline = timeout.map(|t| Instant::now() + t);
        self.acquire_until(k, &accept, deadline)
            .await?
            .ok_or(Error::Timeout)
    }

    async fn acquire_until(
        &self,
        k: usize,
        accept: &(dyn Fn(&str) -> bool + Sync),
        deadline: Option<Instant>,
    ) -> Result<Option<Lease>> {
        let eligible = self.units.iter().filter(|u| accept(u)).count();
        if k == 0 || k > eligible {
            return Err(Error::InvalidArgument(format!(
                "cannot lease {k} of {eligible} eligible units"
            )));
        }
        let Some(waiter) = hold::acquire(
            &self.session,
            &self.line_dir,
            LEASE_MARKER,
            self.options.label.as_bytes(),
            self.options.policy,
            deadline,
            &is_waiter,
            &mutex_turn,
        )
        .await?
        else {
            return Ok(None);
        };
        let mut pending =
            PendingTagged::new(self.session.clone(), &self.leases_dir, &line::attempt_tag());
        let outcome = self
            .take_units(&waiter, &mut pending, k, accept, deadline)
            .await;
        match outcome {
            Ok(Some((units, stat))) => {
                pending.disarm();
                // The multi that took the units deleted the waiter node.
                waiter.forget();
                Ok(Some(Lease::new(
                    self.session.clone(),
                    &self.leases_dir,
                    units,
                    pending.tag().to_string(),
                    stat,
                    self.options.policy,
                )))
            }
            Ok(None) | Err(Error::Timeout) => {
                pending.delete_now().await?;
                waiter.release().await?;
                Ok(None)
            }
            Err(e) => {
                if !e.is_session_fatal() {
                    // Best effort; the nodes go with the session otherwise.
                    let _ = pending.delete_now().await;
                    let _ = waiter.release().await;
                }
                Err(e)
            }
        }
    }

    /// As the head of the line: waits until `k` accepted units are free and takes them in one
    /// multi that also deletes the waiter node.
    async fn take_units(
        &self,
        waiter: &Hold,
        pending: &mut PendingTagged,
        k: usize,
        accept: &(dyn Fn(&str) -> bool + Sync),
        deadline: Option<Instant>,
    ) -> Result<Option<(Vec<String>, Stat)>> {
        let s = self.session.as_ref();
        let data = line::tagged_data(pending.tag(), &self.options.label);
        let ephemeral = CreateOptions::new(CreateMode::Ephemeral);
        loop {
            let read = line::retrying(s, deadline, || async {
                match s.get_children_watch(&self.leases_dir).await {
                    Ok((held, _, w)) => Ok((held, Some(w))),
                    Err(CoordError::NoNode) => Ok((Vec::new(), None)),
                    Err(e) => Err(Error::from(e)),
                }
            })
            .await?;
            let (held, watch) = read;
            let free: Vec<String> = self
                .units
                .iter()
                .filter(|u| accept(u) && !held.contains(u))
                .take(k)
                .cloned()
                .collect();
            if free.len() < k {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                let Some(watch) = watch else {
                    // No leases directory yet every eligible unit taken: cannot happen with
                    // consistent reads; look again shortly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                if line::wait_event(s, watch, deadline).await? == Waited::TimedOut {
                    return Ok(None);
                }
                continue;
            }
            let paths: Vec<String> = free
                .iter()
                .map(|u| path::join(&self.leases_dir, u))
                .collect();
            let mut ops: Vec<Op> = paths
                .iter()
                .map(|p| Op::create(p.clone(), data.clone(), ephemeral.clone()))
                .collect();
            ops.push(Op::delete(waiter.path(), -1));
            pending.attempt(&paths);
            match s.multi(&ops).await {
                Ok(_) => {
                    let stat = line::retrying(s, None, || async { Ok(s.exists(&paths[0]).await?) })
                        .await?;
                    return match stat {
                        Some(stat) if stat.ephemeral_owner == s.session_id().0 => {
                            Ok(Some((free, stat)))
                        }
                        _ => Err(line::lost_now(s)),
                    };
                }
                Err(e) if e.index.is_some_and(|i| i < k) && e.error == CoordError::NoNode => {
                    line::ensure_container(s, &self.leases_dir).await?;
                }
                // Someone outside the line took a unit meanwhile: look again.
                Err(e) if e.index.is_some_and(|i| i < k) && e.error == CoordError::NodeExists => {}
                Err(e) if e.index == Some(k) && e.error == CoordError::NoNode => {
                    return Err(line::lost_now(s));
                }
                Err(e) if e.error.is_retryable() => {
                    line::await_connected(s, deadline).await?;
                    let found = line::retrying(s, deadline, || pending.find(&paths)).await?;
                    if found.len() == paths.len() {
                        // The multi was applied: all units (and the waiter's deletion) are ours.
                        return Ok(Some((free, found[0].1)));
                    }
                    // Not applied (an atomic multi leaves all or none): look again.
                }
                Err(e) => return Err(Error::Coord(e.error)),
            }
        }
    }

    /// Who holds which unit, in the configured order of the units.
    pub async fn holders(&self) -> Result<Vec<(String, LeaseHolder)>> {
        let held = line::children_or_empty(self.session.as_ref(), &self.leases_dir).await?;
        let mut out = Vec::new();
        for unit in self.units.iter().filter(|u| held.contains(u)) {
            let p = path::join(&self.leases_dir, unit);
            match self.session.get_data(&p).await {
                Ok((data, stat)) => {
                    let Some((lease, label)) = line::parse_tagged(&data) else {
                        return Err(Error::Malformed {
                            path: p,
                            reason: "a unit lease's data is not `<tag>\\n<label>`".into(),
                        });
                    };
                    out.push((
                        unit.clone(),
                        LeaseHolder {
                            lease: lease.to_string(),
                            session: SessionId(stat.ephemeral_owner),
                            label: label.to_string(),
                        },
                    ));
                }
                Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// The units nobody holds, in the configured order.
    pub async fn free_units(&self) -> Result<Vec<String>> {
        let held = line::children_or_empty(self.session.as_ref(), &self.leases_dir).await?;
        Ok(self
            .units
            .iter()
            .filter(|u| !held.contains(u))
            .cloned()
            .collect())
    }

    /// The waiter nodes in line order (the head first).
    pub async fn waiters(&self) -> Result<Vec<String>> {
        match line::contenders(self.session.as_ref(), &self.line_dir, &is_waiter).await {
            Ok(v) => Ok(v.into_iter().map(|c| c.name).collect()),
            Err(Error::Coord(CoordError::NoNode)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

fn validate_unit(unit: &str) -> Result<()> {
    let valid = !unit.contains('/')
        && unit != "."
        && unit != ".."
        && path::validate_path(&format!("/{unit}"), false).is_ok()
        && unit != "/";
    if unit.is_empty() || !valid {
        return Err(Error::InvalidArgument(format!(
            "{unit:?} is not a valid unit (znode) name"
        )));
    }
    Ok(())
}

/// Held units of a [`Semaphore`]. Dropping it releases them in the background;
/// [`release`](Lease::release) releases and waits.
#[must_use = "dropping the lease releases its units"]
pub struct Lease {
    session: Arc<dyn Session>,
    units: Vec<String>,
    paths: Vec<String>,
    tag: String,
    stat: Stat,
    monitor: Monitor,
    released: bool,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("units", &self.units)
            .field("token", &self.fencing_token())
            .field("state", &self.state())
            .finish()
    }
}

impl Lease {
    fn new(
        session: Arc<dyn Session>,
        leases_dir: &str,
        units: Vec<String>,
        tag: String,
        stat: Stat,
        policy: ConnectionPolicy,
    ) -> Lease {
        Lease {
            paths: units.iter().map(|u| path::join(leases_dir, u)).collect(),
            monitor: Monitor::spawn(session.as_ref(), policy),
            session,
            units,
            tag,
            stat,
            released: false,
        }
    }

    /// The units this lease holds, e.g. `["MRI-2"]`.
    pub fn units(&self) -> &[String] {
        &self.units
    }

    /// The unit nodes' paths.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// The lease's tag (32 hex digits), as [`Semaphore::holders`] reports it.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The fencing token: the zxid of the multi that created the unit nodes, larger for every
    /// later lease of any of these units.
    pub fn fencing_token(&self) -> FencingToken {
        FencingToken(self.stat.czxid)
    }

    /// Held, suspended (connection lost, session may live) or lost.
    pub fn state(&self) -> HoldState {
        self.monitor.state()
    }

    /// Resolves when the lease is lost (see [`ConnectionPolicy`]), with the reason. Unit nodes
    /// deleted by someone else are noticed by the next [`write`](Lease::write), not here.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn lost(&self) -> LostReason {
        self.monitor.lost().await
    }

    /// The operations that make a multi conditional on still holding this lease: one check per
    /// unit node. Put them first in a multi of your own.
    pub fn check_ops(&self) -> Vec<Op> {
        self.paths
            .iter()
            .map(|p| Op::check(p.clone(), -1))
            .collect()
    }

    /// Applies `ops` atomically, only while every unit of this lease is still held (one multi
    /// led by [`check_ops`](Lease::check_ops)). Results are the caller's ops' own.
    ///
    /// # Notable errors
    /// `Lost(reason)` if the lease is no longer held (nothing applied); `Multi { index, .. }`
    /// with the index into `ops` if one of them failed (nothing applied).
    pub async fn write(&self, ops: &[Op]) -> Result<Vec<OpResult>> {
        if let HoldState::Lost(r) = self.state() {
            return Err(Error::Lost(r));
        }
        let k = self.paths.len();
        let mut all = self.check_ops();
        all.extend_from_slice(ops);
        match self.session.multi(&all).await {
            Ok(mut results) => Ok(results.split_off(k)),
            Err(e) if e.index.is_some_and(|i| i < k) && e.error == CoordError::NoNode => {
                Err(Error::Lost(LostReason::NodeDeleted))
            }
            Err(e) if e.error.is_session_fatal() => Err(Error::Lost(LostReason::SessionEnded)),
            Err(e) => Err(Error::Multi {
                index: e.index.map(|i| i - k),
                error: e.error,
            }),
        }
    }

    /// Releases every unit in one multi and waits until it is applied (retrying through
    /// connection losses). Succeeds if the session has ended meanwhile: the units went with it.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.monitor.stop();
        release_units(self.session.clone(), std::mem::take(&mut self.paths)).await
    }
}

async fn release_units(session: Arc<dyn Session>, paths: Vec<String>) -> Result<()> {
    let s = session.as_ref();
    let ops: Vec<Op> = paths.iter().map(|p| Op::delete(p.clone(), -1)).collect();
    let r = line::retrying(s, None, || async {
        match s.multi(&ops).await {
            Ok(_) => Ok(()),
            // One unit already gone (a retried release whose first reply was lost, or a node
            // deleted by hand): delete the others one by one.
            Err(e) if e.error == CoordError::NoNode && e.index.is_some() => {
                for p in &paths {
                    match s.delete(p, -1).await {
                        Ok(()) | Err(CoordError::NoNode) => {}
                        Err(e) => return Err(Error::Coord(e)),
                    }
                }
                Ok(())
            }
            Err(e) => Err(Error::Coord(e.error)),
        }
    })
    .await;
    line::gone_with_session(r)
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.released {
            let session = self.session.clone();
            let paths = std::mem::take(&mut self.paths);
            line::spawn_cleanup(async move {
                if let Err(e) = release_units(session, paths).await {
                    tracing::warn!(error = %e, "could not release a dropped lease");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        assert!(validate_unit("MRI-1").is_ok());
        assert!(validate_unit("").is_err());
        assert!(validate_unit("a/b").is_err());
        assert!(validate_unit("..").is_err());
        assert!(validate_unit("a\0").is_err());
        assert!(is_waiter("_c_x-lease-0000000001"));
        assert!(!is_waiter("MRI-1"));
    }
}
