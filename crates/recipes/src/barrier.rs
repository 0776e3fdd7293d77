//! Barriers: a [`Barrier`] that holds everyone back while its node exists (Curator's
//! `DistributedBarrier`), and a [`DoubleBarrier`] that lets a fixed number of participants start
//! together and finish together (Curator's `DistributedDoubleBarrier`, the ZooKeeper recipe).
//!
//! # Node layout
//! - [`Barrier`]: one persistent node; set = it exists, removed = it does not.
//! - [`DoubleBarrier`]: a directory (created as a container if missing) with one ephemeral
//!   child per participant, named by a fresh UUID, and a persistent `ready` child created by the
//!   participant whose entry completes the count, as Curator does. Waiting entrants watch only
//!   `ready` (one exist watch each), never the children, so an entry does not wake them all.
//!   Leaving follows the ZooKeeper recipe: the lowest participant (by name) watches the highest,
//!   every other one deletes its node and watches the lowest, so each departure wakes at most one
//!   waiter besides the lowest's own. The last to leave deletes `ready`.
//!
//! A double barrier's directory serves one round at a time: `ready` stays until the round's
//! participants have left, and an entrant that finds it passes at once.
//!
//! # Connection loss and session expiry
//! Connection losses are waited out (the watches survive them). A session expiry fails a wait
//! with the session-fatal error; for a double barrier the participant's ephemeral node is gone
//! with the session, so the others may see one participant fewer.
//!
//! # Cancellation safety
//! Every wait is cancellation-safe. A cancelled, failed or timed-out
//! [`DoubleBarrier::enter`] deletes its participant node; dropping an [`Entered`] deletes it in
//! the background. A timed-out entrant may already have been counted by the participant that
//! completed the count (it is then let in: see [`DoubleBarrier::enter_timeout`]).

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Error as CoordError, Session, SessionExt, path};
use tokio::time::Instant;

use crate::line::{self, Waited};
use crate::lock::validate_dir;
use crate::{Error, Result};

/// The name of the double barrier's ready node (Curator's `READY_NODE`).
pub const READY_NODE: &str = "ready";

/// Sets an exist watch on `path`; `Ok(None)` if the node does not exist, else waits for the watch
/// to fire, the deadline, or the session's end (an error). One exist watch per call. Connection
/// losses while setting the watch are waited out.
async fn wait_exists_change(
    s: &dyn Session,
    path: &str,
    deadline: Option<Instant>,
) -> Result<Option<Waited>> {
    let (stat, watch) =
        line::retrying(s, deadline, || async { Ok(s.exists_watch(path).await?) }).await?;
    if stat.is_none() {
        return Ok(None);
    }
    line::wait_event(s, watch, deadline).await.map(Some)
}

/// A barrier: while its node exists, [`wait`](Barrier::wait) blocks; removing the node lets
/// every waiter through. Cheap to clone.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::barrier::Barrier;
/// let maintenance = Barrier::new(session, "/medical/barriers/ct-calibration")?;
/// maintenance.set().await?;
/// // ... elsewhere: maintenance.wait().await? blocks until ...
/// maintenance.remove().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Barrier {
    session: Arc<dyn Session>,
    path: String,
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier").field("path", &self.path).finish()
    }
}

impl Barrier {
    /// The barrier at `path`.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(session: Arc<dyn Session>, path: impl Into<String>) -> Result<Barrier> {
        let path = path.into();
        validate_dir(&path)?;
        Ok(Barrier { session, path })
    }

    /// The barrier's node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Sets the barrier: creates its node (and missing ancestors) if missing. Idempotent;
    /// connection losses are waited out.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error; `Coord(NoAuth)`.
    pub async fn set(&self) -> Result<()> {
        let s = self.session.as_ref();
        line::retrying(s, None, || async { Ok(s.ensure_path(&self.path).await?) }).await
    }

    /// Removes the barrier, letting every waiter through. Idempotent; connection losses are
    /// waited out.
    ///
    /// # Notable errors
    /// `Coord(NotEmpty)` if someone created children under the node; a session-fatal `Coord`
    /// error.
    pub async fn remove(&self) -> Result<()> {
        let s = self.session.as_ref();
        line::retrying(s, None, || async {
            match s.delete(&self.path, -1).await {
                Ok(()) | Err(CoordError::NoNode) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// True if the barrier is set now.
    pub async fn is_set(&self) -> Result<bool> {
        let s = self.session.as_ref();
        line::retrying(s, None, || async {
            Ok(s.exists(&self.path).await?.is_some())
        })
        .await
    }

    /// Waits until the barrier is not set (at once if it is not). One exist watch per wake.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends while waiting.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn wait(&self) -> Result<()> {
        self.wait_until(None).await
    }

    /// Like [`wait`](Barrier::wait), for at most `timeout`.
    ///
    /// # Notable errors
    /// `Timeout` if the barrier is still set then.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_until(Some(Instant::now() + timeout)).await
    }

    async fn wait_until(&self, deadline: Option<Instant>) -> Result<()> {
        let s = self.session.as_ref();
        loop {
            match wait_exists_change(s, &self.path, deadline).await? {
                None => return Ok(()),
                Some(Waited::Changed) => {}
                Some(Waited::TimedOut) => return Err(Error::Timeout),
            }
        }
    }
}

/// A double barrier for `member_count` participants: [`enter`](DoubleBarrier::enter) returns
/// once that many have entered, [`Entered::leave`] once all have left. One value per
/// participant is not needed: every `enter` is one participant. Cheap to clone.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::barrier::DoubleBarrier;
/// let drill = DoubleBarrier::new(session, "/medical/barriers/failover-drill", 3)?;
/// let entered = drill.enter().await?;   // all three instances start together
/// // ... run the drill ...
/// entered.leave().await?;               // and finish together
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DoubleBarrier {
    session: Arc<dyn Session>,
    dir: String,
    member_count: usize,
}

impl std::fmt::Debug for DoubleBarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoubleBarrier")
            .field("dir", &self.dir)
            .field("member_count", &self.member_count)
            .finish()
    }
}

fn participants(mut children: Vec<String>) -> Vec<String> {
    children.retain(|c| c != READY_NODE);
    children.sort();
    children
}

impl DoubleBarrier {
    /// A double barrier in directory `dir` for `member_count` participants.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root or a
    /// `member_count` of 0.
    pub fn new(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        member_count: usize,
    ) -> Result<DoubleBarrier> {
        let dir = dir.into();
        validate_dir(&dir)?;
        if member_count == 0 {
            return Err(Error::InvalidArgument(
                "a double barrier needs at least one participant".into(),
            ));
        }
        Ok(DoubleBarrier {
            session,
            dir,
            member_count,
        })
    }

    /// The barrier's directory.
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// The number of participants the barrier waits for.
    pub fn member_count(&self) -> usize {
        self.member_count
    }

    /// Enters as one participant and waits until `member_count` participants have entered.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends while waiting.
    ///
    /// # Cancellation safety
    /// Safe: the participant node is deleted if the future is dropped.
    pub async fn enter(&self) -> Result<Entered> {
        self.enter_until(None).await
    }

    /// Like [`enter`](DoubleBarrier::enter), for at most `timeout`. An entrant that times out
    /// deletes its node — unless `ready` exists by then (the count was completed with it), in
    /// which case it has entered after all.
    ///
    /// # Notable errors
    /// `Timeout` if not enough participants entered in time.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn enter_timeout(&self, timeout: Duration) -> Result<Entered> {
        self.enter_until(Some(Instant::now() + timeout)).await
    }

    async fn enter_until(&self, deadline: Option<Instant>) -> Result<Entered> {
        let s = self.session.as_ref();
        let ready = path::join(&self.dir, READY_NODE);
        let name = uuid::Uuid::new_v4().to_string();
        let mut entered = Entered {
            session: self.session.clone(),
            dir: self.dir.clone(),
            path: path::join(&self.dir, &name),
            name,
            left: false,
        };
        // The watch on `ready` is set before our node exists, so the participant that completes
        // the count (which sees our node) creates `ready` after it, and the watch fires.
        let (ready_stat, mut ready_watch) =
            line::retrying(s, deadline, || async { Ok(s.exists_watch(&ready).await?) }).await?;
        self.create_participant(&entered.path, deadline).await?;
        if ready_stat.is_some() {
            return Ok(entered);
        }
        loop {
            let children =
                line::retrying(s, deadline, || line::children_or_empty(s, &self.dir)).await?;
            let children = participants(children);
            if !children.contains(&entered.name) {
                return Err(line::lost_now(s));
            }
            if children.len() >= self.member_count {
                line::retrying(s, deadline, || async {
                    match s
                        .create(&ready, b"", &CreateOptions::new(CreateMode::Persistent))
                        .await
                    {
                        Ok(_) | Err(CoordError::NodeExists) => Ok(()),
                        Err(e) => Err(Error::Coord(e)),
                    }
                })
                .await?;
                return Ok(entered);
            }
            match line::wait_event(s, ready_watch, deadline).await? {
                Waited::Changed => {}
                Waited::TimedOut => {
                    let late = s.exists(&ready).await.ok().flatten().is_some();
                    if late {
                        return Ok(entered);
                    }
                    entered.delete_now().await;
                    return Err(Error::Timeout);
                }
            }
            let (stat, w) =
                line::retrying(s, deadline, || async { Ok(s.exists_watch(&ready).await?) }).await?;
            if stat.is_some() {
                return Ok(entered);
            }
            ready_watch = w;
        }
    }

    /// Creates the participant's ephemeral node. Its UUID name is its protection: after a
    /// connection loss, the node is ours if it exists.
    async fn create_participant(&self, node: &str, deadline: Option<Instant>) -> Result<()> {
        let s = self.session.as_ref();
        let options = CreateOptions::new(CreateMode::Ephemeral);
        loop {
            match s.create(node, b"", &options).await {
                Ok(_) | Err(CoordError::NodeExists) => return Ok(()),
                Err(CoordError::NoNode) => {
                    line::retrying(s, deadline, || line::ensure_container(s, &self.dir)).await?;
                }
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, deadline).await?;
                    let exists =
                        line::retrying(s, deadline, || async { Ok(s.exists(node).await?) }).await?;
                    if exists.is_some() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A participant that has entered a [`DoubleBarrier`]. Dropping it deletes its node in the
/// background (without waiting for the others); [`leave`](Entered::leave) leaves and waits.
#[must_use = "dropping the participant leaves without waiting"]
pub struct Entered {
    session: Arc<dyn Session>,
    dir: String,
    name: String,
    path: String,
    left: bool,
}

impl std::fmt::Debug for Entered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entered").field("path", &self.path).finish()
    }
}

impl Entered {
    /// The participant's node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Leaves: deletes this participant's node and waits until every participant has left;
    /// the last one out deletes `ready`.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends; `Lost(NodeDeleted)` if this
    /// participant's node was deleted by someone else.
    ///
    /// # Cancellation safety
    /// Safe: a dropped leave deletes the node in the background.
    pub async fn leave(self) -> Result<()> {
        self.leave_until(None).await
    }

    /// Like [`leave`](Entered::leave), for at most `timeout`; the node is deleted either way.
    ///
    /// # Notable errors
    /// `Timeout` if some participants had not left in time.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn leave_timeout(self, timeout: Duration) -> Result<()> {
        self.leave_until(Some(Instant::now() + timeout)).await
    }

    async fn leave_until(mut self, deadline: Option<Instant>) -> Result<()> {
        let session = self.session.clone();
        let s = session.as_ref();
        let mut ours_exists = true;
        loop {
            let children =
                line::retrying(s, deadline, || line::children_or_empty(s, &self.dir)).await?;
            let children = participants(children);
            let Some(lowest) = children.first().cloned() else {
                break;
            };
            let ours = children.iter().position(|c| *c == self.name);
            if ours.is_none() && ours_exists {
                self.left = true;
                return Err(line::lost_now(s));
            }
            if children.len() == 1 {
                if ours_exists {
                    self.delete_now().await;
                }
                break;
            }
            let target = if ours == Some(0) {
                children[children.len() - 1].clone()
            } else {
                if ours_exists {
                    self.delete_now().await;
                    ours_exists = false;
                }
                lowest
            };
            match wait_exists_change(s, &path::join(&self.dir, &target), deadline).await? {
                None | Some(Waited::Changed) => {}
                Some(Waited::TimedOut) => return Err(Error::Timeout),
            }
        }
        self.left = true;
        let ready = path::join(&self.dir, READY_NODE);
        line::retrying(s, deadline, || async {
            match s.delete(&ready, -1).await {
                Ok(()) | Err(CoordError::NoNode) | Err(CoordError::NotEmpty) => Ok(()),
                Err(e) => Err(Error::Coord(e)),
            }
        })
        .await
    }

    /// Deletes this participant's node (retrying through connection losses; a session that
    /// ended took it along). Failures are logged: the node goes with the session at the latest.
    async fn delete_now(&mut self) {
        let s = self.session.as_ref();
        if let Err(e) = line::delete_ephemeral(s, &self.path).await {
            tracing::warn!(path = %self.path, error = %e, "could not delete a barrier participant");
        }
        // Only now: a leave dropped during the delete leaves it to `Drop`.
        self.left = true;
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        if !self.left {
            let session = self.session.clone();
            let node = std::mem::take(&mut self.path);
            line::spawn_cleanup(async move {
                let _ = line::delete_ephemeral(session.as_ref(), &node).await;
            });
        }
    }
}
