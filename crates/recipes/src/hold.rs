//! What a held lock, read/write lock or leadership has in common: its node, its fencing token,
//! its state as the session goes through connection losses, and its release.

use std::sync::Arc;

use medkeeper_coord::{Error as CoordError, Op, OpResult, Session, SessionState, Stat, Zxid};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::line::{self, Contender, Pending, Waited};
use crate::{Error, LostReason, Result};

/// How a holder treats a connection loss (not an expiry) while it holds: the choice Apache
/// Curator calls the connection-state error policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConnectionPolicy {
    /// A connection loss suspends the hold ([`HoldState::Suspended`]); it is lost only if the
    /// session expires. The hold resumes when the connection comes back within the session
    /// timeout. (Curator's `SessionConnectionStateErrorPolicy`.) Right for work that can pause.
    #[default]
    Session,
    /// A connection loss ends the hold at once ([`LostReason::Disconnected`]): the holder cannot
    /// know whether another client holds it by the time it notices. (Curator's standard
    /// policy.) Right for work that must stop as soon as exclusivity is in doubt.
    Standard,
}

/// The state of a hold as seen by its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HoldState {
    /// Held: the session is connected and the node is there.
    Held,
    /// The connection is lost; the session (and so the hold) may still be alive. Under
    /// [`ConnectionPolicy::Session`] this is not yet a loss; stop side effects that need
    /// exclusivity until it is `Held` again.
    Suspended,
    /// Lost: another client may hold it now. Final.
    Lost(LostReason),
}

/// A fencing token: the zxid that created the holder's node. Every later holder of the same
/// lock gets a strictly larger one (zxids order all changes), also when the lock's parent node
/// is deleted and re-created, where sequence numbers would restart. A resource outside
/// coordination that remembers the largest token it has seen can refuse a stale holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub Zxid);

impl std::fmt::Display for FencingToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What decides whether a contender holds, given the sorted contenders and its own index:
/// it holds, or it waits for the named contender to go.
pub(crate) enum Turn {
    Holds,
    WaitFor(String),
}

/// Joins the line under `dir` with a protected ephemeral-sequential node `<prefix><marker>`,
/// waits for its turn (watching only the node `turn` names: one notification per change that
/// matters) and returns the held node. `Ok(None)` if `deadline` passed first: the node is
/// deleted. Cancellation-safe: dropping the future deletes the node.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn acquire(
    session: &Arc<dyn Session>,
    dir: &str,
    marker: &str,
    data: &[u8],
    policy: ConnectionPolicy,
    deadline: Option<Instant>,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
    turn: &(dyn Fn(&[Contender], usize) -> Turn + Sync),
) -> Result<Option<Hold>> {
    let mut pending = Pending::new(session.clone(), dir, line::protected_prefix());
    let outcome = wait_turn(
        session,
        dir,
        marker,
        data,
        deadline,
        &mut pending,
        is_contender,
        turn,
    )
    .await;
    match outcome {
        Ok(Some((name, stat))) => {
            pending.disarm();
            Ok(Some(Hold::new(
                session.clone(),
                medkeeper_coord::path::join(dir, &name),
                stat,
                policy,
            )))
        }
        Ok(None) => {
            pending.delete_now().await?;
            Ok(None)
        }
        Err(e) => {
            if !e.is_session_fatal() {
                // Best effort; the node goes with the session otherwise.
                let _ = pending.delete_now().await;
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn wait_turn(
    session: &Arc<dyn Session>,
    dir: &str,
    marker: &str,
    data: &[u8],
    deadline: Option<Instant>,
    pending: &mut Pending,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
    turn: &(dyn Fn(&[Contender], usize) -> Turn + Sync),
) -> Result<Option<(String, Stat)>> {
    let (name, stat) = pending
        .create(
            marker,
            data,
            medkeeper_coord::CreateMode::EphemeralSequential,
            deadline,
        )
        .await?;
    let s = session.as_ref();
    loop {
        let sorted = line::retrying(s, deadline, || line::contenders(s, dir, is_contender)).await?;
        let Some(ours) = sorted.iter().position(|c| c.name == name) else {
            // Our node is gone: the session ended (its ephemerals went), or someone deleted it.
            return match s.state().to_error() {
                Some(e) if s.state().is_terminal() => Err(Error::Coord(e)),
                _ => Err(Error::Lost(LostReason::NodeDeleted)),
            };
        };
        match turn(&sorted, ours) {
            Turn::Holds => return Ok(Some((name, stat))),
            Turn::WaitFor(other) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                let other = medkeeper_coord::path::join(dir, &other);
                let waited = line::retrying(s, deadline, || line::wait_gone(s, &other, deadline))
                    .await
                    .or_else(|e| match e {
                        Error::Timeout => Ok(Waited::TimedOut),
                        e => Err(e),
                    })?;
                if waited == Waited::TimedOut {
                    return Ok(None);
                }
            }
        }
    }
}

/// A held node: the common part of lock guards and leadership.
pub(crate) struct Hold {
    session: Arc<dyn Session>,
    path: String,
    stat: Stat,
    state: watch::Receiver<HoldState>,
    monitor: tokio::task::AbortHandle,
    released: bool,
}

impl Hold {
    fn new(session: Arc<dyn Session>, path: String, stat: Stat, policy: ConnectionPolicy) -> Hold {
        let (rx, monitor) = spawn_monitor(session.as_ref(), policy);
        Hold {
            session,
            path,
            stat,
            state: rx,
            monitor,
            released: false,
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn token(&self) -> FencingToken {
        FencingToken(self.stat.czxid)
    }

    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    pub fn state(&self) -> HoldState {
        *self.state.borrow()
    }

    pub async fn lost(&self) -> LostReason {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| matches!(s, HoldState::Lost(_))).await {
            Ok(s) => match *s {
                HoldState::Lost(r) => r,
                _ => LostReason::SessionEnded,
            },
            // The monitor is gone only if the hold was dropped; the session ended meanwhile.
            Err(_) => LostReason::SessionEnded,
        }
    }

    pub fn check_op(&self) -> Op {
        Op::check(self.path.clone(), -1)
    }

    pub async fn write(&self, ops: &[Op]) -> Result<Vec<OpResult>> {
        if let HoldState::Lost(r) = self.state() {
            return Err(Error::Lost(r));
        }
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(self.check_op());
        all.extend_from_slice(ops);
        match self.session.multi(&all).await {
            Ok(mut results) => {
                results.remove(0);
                Ok(results)
            }
            Err(e) if e.index == Some(0) && e.error == CoordError::NoNode => {
                Err(Error::Lost(LostReason::NodeDeleted))
            }
            Err(e) if e.error.is_session_fatal() => Err(Error::Lost(LostReason::SessionEnded)),
            Err(e) => Err(Error::Multi {
                index: e.index.map(|i| i - 1),
                error: e.error,
            }),
        }
    }

    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        self.monitor.abort();
        delete_hold(self.session.clone(), self.path.clone()).await
    }
}

impl Hold {
    /// Gives the node up without deleting it: for a caller whose own multi deleted it (a
    /// semaphore's or queue's head leaving the line in the multi that takes what it waited for).
    pub fn forget(mut self) {
        self.released = true;
        self.monitor.abort();
    }
}

/// Follows the session's states and maps them to a [`HoldState`] by `policy`, in a task that
/// ends once the hold is lost (or when the returned handle aborts it). What every hold — a
/// lock's node, a lease's unit nodes, a queue claim — reports as its state.
pub(crate) fn spawn_monitor(
    session: &dyn Session,
    policy: ConnectionPolicy,
) -> (watch::Receiver<HoldState>, tokio::task::AbortHandle) {
    let (tx, rx) = watch::channel(HoldState::Held);
    let mut events = session.session_events();
    let monitor = tokio::spawn(async move {
        let mut state = events.current();
        loop {
            let next = match state {
                SessionState::Connected => HoldState::Held,
                SessionState::Disconnected => match policy {
                    ConnectionPolicy::Session => HoldState::Suspended,
                    ConnectionPolicy::Standard => HoldState::Lost(LostReason::Disconnected),
                },
                _ => HoldState::Lost(LostReason::SessionEnded),
            };
            tx.send_if_modified(|s| {
                if matches!(s, HoldState::Lost(_)) || *s == next {
                    false
                } else {
                    *s = next;
                    true
                }
            });
            if matches!(next, HoldState::Lost(_)) {
                return;
            }
            state = events.changed().await;
        }
    })
    .abort_handle();
    (rx, monitor)
}

/// Waits until the state `rx` follows is lost, with the reason.
pub(crate) async fn wait_lost(rx: &watch::Receiver<HoldState>) -> LostReason {
    let mut rx = rx.clone();
    match rx.wait_for(|s| matches!(s, HoldState::Lost(_))).await {
        Ok(s) => match *s {
            HoldState::Lost(r) => r,
            _ => LostReason::SessionEnded,
        },
        // The monitor is gone only if the hold was dropped; the session ended meanwhile.
        Err(_) => LostReason::SessionEnded,
    }
}

async fn delete_hold(session: Arc<dyn Session>, path: String) -> Result<()> {
    let s = session.as_ref();
    let r = line::retrying(s, None, || async {
        match s.delete(&path, -1).await {
            Ok(()) | Err(CoordError::NoNode) => Ok(()),
            Err(e) => Err(Error::Coord(e)),
        }
    })
    .await;
    match r {
        // The session ended: its ephemeral node is gone with it.
        Err(e) if e.is_session_fatal() => Ok(()),
        other => other,
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.monitor.abort();
        if !self.released {
            let session = self.session.clone();
            let path = std::mem::take(&mut self.path);
            line::spawn_cleanup(async move {
                if let Err(e) = delete_hold(session, path.clone()).await {
                    tracing::warn!(%path, error = %e, "could not release a dropped hold");
                }
            });
        }
    }
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("path", &self.path)
            .field("token", &self.token())
            .field("state", &self.state())
            .finish()
    }
}
