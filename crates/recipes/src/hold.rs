//! What a held lock, read/write lock or leadership has in common: its node, its fencing token,
//! its state as the session goes through connection losses, and its release.

use std::sync::Arc;

use medkeeper_coord::{Error as CoordError, Op, OpResult, Session, SessionState, Stat, Zxid};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::line::{self, Contender, Gone, Pending};
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
    /// Wait for the named contender to go. `decisive`: its deletion alone gives the turn, so
    /// the contenders need not be read again (a hand-off costs the holder's delete and one
    /// notification, no read). Sound because sequence numbers only grow: no contender can
    /// later appear before this one, so what the sorted list showed before it stays true.
    WaitFor {
        name: String,
        decisive: bool,
    },
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
    acquire_replacing(
        session,
        dir,
        marker,
        data,
        policy,
        deadline,
        None,
        is_contender,
        turn,
    )
    .await
}

/// Gives up `old` (a held node of this line) and joins the back of the line in one request
/// (see [`Pending::create_replacing`]), then waits for the turn as [`acquire`] does. If the
/// request fails, `old` is released as a dropped hold is.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn requeue(
    old: Hold,
    marker: &str,
    data: &[u8],
    policy: ConnectionPolicy,
    deadline: Option<Instant>,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
    turn: &(dyn Fn(&[Contender], usize) -> Turn + Sync),
) -> Result<Option<Hold>> {
    let session = old.session.clone();
    let dir = medkeeper_coord::path::parent(&old.path)
        .ok_or_else(|| Error::InvalidArgument(format!("{} has no parent", old.path)))?
        .to_string();
    // `old` stays armed until the multi is known to have applied: if this future is dropped
    // or fails before that, dropping `old` deletes the old node in the background (harmless
    // if the multi did apply), so the lock is never left held by nobody.
    acquire_replacing(
        &session,
        &dir,
        marker,
        data,
        policy,
        deadline,
        Some(old),
        is_contender,
        turn,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn acquire_replacing(
    session: &Arc<dyn Session>,
    dir: &str,
    marker: &str,
    data: &[u8],
    policy: ConnectionPolicy,
    deadline: Option<Instant>,
    replacing: Option<Hold>,
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
        replacing,
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
    replacing: Option<Hold>,
    pending: &mut Pending,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
    turn: &(dyn Fn(&[Contender], usize) -> Turn + Sync),
) -> Result<Option<(String, Stat)>> {
    let mode = medkeeper_coord::CreateMode::EphemeralSequential;
    let (name, stat) = match replacing {
        None => pending.create(marker, data, mode, deadline).await?,
        Some(old) => {
            // On failure `old` is dropped here: the old node is deleted in the background, as
            // a dropped hold's is.
            let created = pending
                .create_replacing(&old.path, marker, data, mode, deadline)
                .await?;
            // The multi deleted the old node: the hold must not delete it again.
            old.forget();
            created
        }
    };
    let s = session.as_ref();
    loop {
        let sorted = line::retrying(s, deadline, || line::contenders(s, dir, is_contender)).await?;
        let Some(ours) = sorted.iter().position(|c| c.name == name) else {
            // Our node is gone: the session ended (its ephemerals went), or someone deleted it.
            return Err(line::lost_now(s));
        };
        match turn(&sorted, ours) {
            Turn::Holds => return Ok(Some((name, stat))),
            Turn::WaitFor {
                name: other,
                decisive,
            } => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
                let other = medkeeper_coord::path::join(dir, &other);
                let waited =
                    line::retrying(s, deadline, || line::wait_deleted(s, &other, deadline))
                        .await
                        .or_else(|e| match e {
                            Error::Timeout => Ok(Gone::TimedOut),
                            e => Err(e),
                        })?;
                match waited {
                    Gone::TimedOut => return Ok(None),
                    Gone::Deleted if decisive => return Ok(Some((name, stat))),
                    Gone::Deleted | Gone::Changed => {}
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
    monitor: Monitor,
    released: bool,
}

impl Hold {
    fn new(session: Arc<dyn Session>, path: String, stat: Stat, policy: ConnectionPolicy) -> Hold {
        let monitor = Monitor::spawn(session.as_ref(), policy);
        Hold {
            session,
            path,
            stat,
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
        self.monitor.state()
    }

    pub async fn lost(&self) -> LostReason {
        self.monitor.lost().await
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
        self.monitor.stop();
        line::delete_ephemeral(self.session.as_ref(), &self.path).await
    }

    /// Gives the node up without deleting it: for a caller whose own multi deleted it (a
    /// semaphore's or queue's head leaving the line in the multi that takes what it waited for).
    pub fn forget(mut self) {
        self.released = true;
        self.monitor.stop();
    }
}

/// Writes, inside the `impl` of a guard whose field `hold` is a [`Hold`], the guard's methods
/// that hand on to it, each under the doc comment written before it: `fn path;`,
/// `fn fencing_token;`, `fn stat;`, `fn state;`, `fn lost;`, `fn check_op;`, `fn write;` and
/// `fn release;` (or `fn resign = release;`, the same under another name). What a guard adds
/// of its own stays beside it.
macro_rules! hold_methods {
    () => {};
    ($(#[$doc:meta])* fn path; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn path(&self) -> &str {
            self.hold.path()
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn fencing_token; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn fencing_token(&self) -> $crate::FencingToken {
            self.hold.token()
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn stat; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn stat(&self) -> &::medkeeper_coord::Stat {
            self.hold.stat()
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn state; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn state(&self) -> $crate::HoldState {
            self.hold.state()
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn lost; $($rest:tt)*) => {
        $(#[$doc])*
        pub async fn lost(&self) -> $crate::LostReason {
            self.hold.lost().await
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn check_op; $($rest:tt)*) => {
        $(#[$doc])*
        pub fn check_op(&self) -> ::medkeeper_coord::Op {
            self.hold.check_op()
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn write; $($rest:tt)*) => {
        $(#[$doc])*
        pub async fn write(
            &self,
            ops: &[::medkeeper_coord::Op],
        ) -> $crate::Result<Vec<::medkeeper_coord::OpResult>> {
            self.hold.write(ops).await
        }
        $crate::hold::hold_methods!($($rest)*);
    };
    ($(#[$doc:meta])* fn release; $($rest:tt)*) => {
        $crate::hold::hold_methods!($(#[$doc])* fn release = release; $($rest)*);
    };
    ($(#[$doc:meta])* fn $name:ident = release; $($rest:tt)*) => {
        $(#[$doc])*
        pub async fn $name(self) -> $crate::Result<()> {
            self.hold.release().await
        }
        $crate::hold::hold_methods!($($rest)*);
    };
}
pub(crate) use hold_methods;

/// The state of a hold — a lock's node, a lease's unit nodes, a queue claim, a member — as a
/// task follows it; the task ends once the hold is lost, on [`stop`](Monitor::stop), or when
/// this value is dropped.
pub(crate) struct Monitor {
    state: watch::Receiver<HoldState>,
    task: tokio::task::AbortHandle,
}

impl Monitor {
    /// Follows the session's states and maps them to a [`HoldState`] by `policy`: what every
    /// hold whose node only the session's end can take reports as its state.
    pub fn spawn(session: &dyn Session, policy: ConnectionPolicy) -> Monitor {
        let (tx, rx) = watch::channel(HoldState::Held);
        let mut events = session.session_events();
        let task = tokio::spawn(async move {
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
        Monitor { state: rx, task }
    }

    /// A monitor of the task `task`, which reports the state through `state`'s sender.
    pub fn from_task(state: watch::Receiver<HoldState>, task: tokio::task::AbortHandle) -> Monitor {
        Monitor { state, task }
    }

    /// The state now.
    pub fn state(&self) -> HoldState {
        *self.state.borrow()
    }

    /// A receiver of the state and its changes.
    pub fn subscribe(&self) -> watch::Receiver<HoldState> {
        self.state.clone()
    }

    /// Waits until the hold is lost, with the reason.
    pub async fn lost(&self) -> LostReason {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| matches!(s, HoldState::Lost(_))).await {
            Ok(s) => match *s {
                HoldState::Lost(r) => r,
                _ => LostReason::SessionEnded,
            },
            // The task is gone only if the hold was dropped; the session ended meanwhile.
            Err(_) => LostReason::SessionEnded,
        }
    }

    /// Stops following: the hold was released or handed on.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.released {
            let session = self.session.clone();
            let path = std::mem::take(&mut self.path);
            line::spawn_cleanup(async move {
                if let Err(e) = line::delete_ephemeral(session.as_ref(), &path).await {
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
