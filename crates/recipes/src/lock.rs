//! The fair mutex of seed §4.3, lock-compatible with Apache Curator's `InterProcessMutex` and
//! with kazoo's `Lock`.
//!
//! # Node layout
//! A lock is a directory node, e.g. `/medical/resources/equipment/MRI/lock`. Each contender
//! creates an ephemeral-sequential child named as Curator's protected mutex names it:
//! `_c_<uuid>-lock-0000000007`. The contender with the lowest sequence number holds the lock;
//! every other contender watches only the contender just before it, so a release wakes exactly
//! one waiter (no herd) and the lock is handed on in arrival order (fair).
//!
//! Contenders are the children whose names contain `lock-` (medkeeper, Curator) or `__lock__`
//! (kazoo) and end in a ten-digit sequence number; they are ordered by that number alone, which
//! the parent assigns to all of them, so medkeeper, Curator and kazoo clients exclude each other
//! on the same path. (kazoo sees medkeeper's and Curator's contenders when given
//! `extra_lock_patterns=["-lock-"]`.) The directory is created as a container if missing, as
//! Curator does, so ZooKeeper removes it once the last contender has gone.
//!
//! # Guarantees
//! - **Mutual exclusion** among live sessions: at most one contender's node is the lowest.
//! - **Fencing**: [`LockGuard::fencing_token`] is the holder node's czxid, strictly larger for
//!   every later holder; [`LockGuard::write`] applies coordination writes only while the node
//!   still exists (one multi with a check of the node).
//! - **No leaked nodes**: a create cut by a connection loss is found again by its protected
//!   prefix; an acquire that times out, fails or is dropped deletes its node.
//!
//! # Connection loss and session expiry
//! While waiting, a connection loss is waited out (the node is kept, the line position too); an
//! expiry fails the acquire with the session-fatal error. While holding, see
//! [`ConnectionPolicy`]: by default a connection loss suspends the hold and only an expiry loses
//! it; [`LockGuard::lost`] resolves when it is lost. A pause longer than the session timeout
//! (a stopped process, a long GC) expires the session, and another client may acquire; the old
//! holder's fenced writes then fail with [`Error::Lost`](crate::Error::Lost).
//!
//! # Cancellation safety
//! Every acquire method is cancellation-safe: dropping its future deletes the contender node in
//! the background (found by its protected prefix if the create's reply had not arrived).
//! Dropping a [`LockGuard`] releases the lock in the background; [`LockGuard::release`] releases
//! it and waits.

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{Session, path};
use tokio::time::Instant;

use crate::hold::{self, Hold, Turn};
use crate::line::{self, Contender};
use crate::{ConnectionPolicy, Error, Result};

/// The name part of a mutex contender's node, as Curator's `InterProcessMutex` names it.
pub const LOCK_MARKER: &str = "lock-";
/// The name part of a kazoo `Lock` contender's node.
pub const KAZOO_LOCK_MARKER: &str = "__lock__";

/// True for the children of a lock directory that contend for the mutex.
pub(crate) fn is_mutex_contender(name: &str) -> bool {
    (name.contains(LOCK_MARKER) || name.contains(KAZOO_LOCK_MARKER))
        && line::sequence_of(name).is_some()
}

/// Options of a [`Mutex`].
#[derive(Debug, Clone, Default)]
pub struct LockOptions {
    /// Data stored in the contender node (for example the holder's instance id, for operators);
    /// empty by default. Never patient data.
    pub data: Vec<u8>,
    /// What a connection loss does to a held lock.
    pub policy: ConnectionPolicy,
}

/// A fair, distributed mutex on a lock directory (seed §4.3). Cheap to clone; every acquire is
/// one independent contender.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::Mutex;
/// let mri = Mutex::new(session, "/medical/resources/equipment/MRI/lock")?;
/// let guard = mri.acquire().await?;
/// println!("holding with fencing token {}", guard.fencing_token());
/// guard.release().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Mutex {
    session: Arc<dyn Session>,
    dir: String,
    options: LockOptions,
}

impl std::fmt::Debug for Mutex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("dir", &self.dir).finish()
    }
}

impl Mutex {
    /// A mutex on the lock directory `dir`, with default options.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` if `dir` is not a valid path, or is the root.
    pub fn new(session: Arc<dyn Session>, dir: impl Into<String>) -> Result<Mutex> {
        Mutex::with_options(session, dir, LockOptions::default())
    }

    /// A mutex with `options`.
    pub fn with_options(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        options: LockOptions,
    ) -> Result<Mutex> {
        let dir = dir.into();
        validate_dir(&dir)?;
        Ok(Mutex {
            session,
            dir,
            options,
        })
    }

    /// The lock directory.
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// Waits until the lock is held.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends while waiting; `Lost(NodeDeleted)` if
    /// the contender node was deleted by someone else while waiting.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the contender node.
    pub async fn acquire(&self) -> Result<LockGuard> {
        match self.acquire_until(None).await? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout),
        }
    }

    /// Waits at most `timeout` for the lock.
    ///
    /// # Notable errors
    /// `Timeout` if it was not acquired in time (the contender node is deleted); as
    /// [`acquire`](Mutex::acquire) otherwise.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<LockGuard> {
        match self.acquire_until(Some(Instant::now() + timeout)).await? {
            Some(g) => Ok(g),
            None => Err(Error::Timeout),
        }
    }

    /// Takes the lock if nobody holds it or waits for it; `None` otherwise (no node is left).
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.acquire_until(Some(Instant::now())).await
    }

    async fn acquire_until(&self, deadline: Option<Instant>) -> Result<Option<LockGuard>> {
        let hold = hold::acquire(
            &self.session,
            &self.dir,
            LOCK_MARKER,
            &self.options.data,
            self.options.policy,
            deadline,
            &is_mutex_contender,
            &mutex_turn,
        )
        .await?;
        Ok(hold.map(|hold| LockGuard { hold }))
    }

    /// Releases `guard` and joins the back of the line again, in one request, then waits for
    /// the turn: what a loop of [`acquire`](Mutex::acquire) and
    /// [`release`](LockGuard::release) does, fair in the same way (every contender already
    /// waiting goes first), for one write instead of two — the release's delete and the new
    /// contender's create are one multi. For a worker that takes the lock again and again.
    ///
    /// # Notable errors
    /// As [`acquire`](Mutex::acquire). If the guard's lock was lost meanwhile, this simply
    /// joins the line. `InvalidArgument` for a guard of another lock (it is released).
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the new contender node, and the old one if the
    /// request that replaces it is not known to have applied (in the background; deleting it
    /// twice is harmless).
    pub async fn requeue(&self, guard: LockGuard) -> Result<LockGuard> {
        if path::parent(guard.path()) != Some(self.dir.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "{} is not a guard of the lock {}",
                guard.path(),
                self.dir
            )));
        }
        let hold = hold::requeue(
            guard.hold,
            LOCK_MARKER,
            &self.options.data,
            self.options.policy,
            None,
            &is_mutex_contender,
            &mutex_turn,
        )
        .await?;
        hold.map(|hold| LockGuard { hold }).ok_or(Error::Timeout)
    }

    /// The node names of the contenders, holder first.
    pub async fn contenders(&self) -> Result<Vec<String>> {
        match line::contenders(self.session.as_ref(), &self.dir, &is_mutex_contender).await {
            Ok(v) => Ok(v.into_iter().map(|c| c.name).collect()),
            Err(Error::Coord(medkeeper_coord::Error::NoNode)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// The current holder's node path and data, if the lock is held.
    pub async fn holder(&self) -> Result<Option<(String, Vec<u8>)>> {
        for name in self.contenders().await? {
            let p = path::join(&self.dir, &name);
            match self.session.get_data(&p).await {
                Ok((data, _)) => return Ok(Some((p, data))),
                Err(medkeeper_coord::Error::NoNode) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

pub(crate) fn mutex_turn(sorted: &[Contender], ours: usize) -> Turn {
    if ours == 0 {
        Turn::Holds
    } else {
        // The predecessor's deletion alone decides when it was the holder.
        Turn::WaitFor {
            name: sorted[ours - 1].name.clone(),
            decisive: ours == 1,
        }
    }
}

pub(crate) fn validate_dir(dir: &str) -> Result<()> {
    path::validate_path(dir, false)?;
    if dir == "/" {
        return Err(Error::InvalidArgument(
            "a recipe's directory cannot be the root".into(),
        ));
    }
    Ok(())
}

/// A held [`Mutex`]. Dropping it releases the lock in the background;
/// [`release`](LockGuard::release) releases it and waits.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock"]
pub struct LockGuard {
    hold: Hold,
}

impl LockGuard {
    hold::hold_methods! {
        /// The holder's node path (`.../lock/_c_<uuid>-lock-0000000007`).
        fn path;

        /// The fencing token: strictly larger for every later holder of this lock.
        fn fencing_token;

        /// The holder node's stat when it was created.
        fn stat;

        /// Held, suspended (connection lost, session may live) or lost.
        fn state;

        /// Resolves when the lock is lost (see [`ConnectionPolicy`]), with the reason. A node
        /// deleted by someone else is noticed by the next [`write`](LockGuard::write), not here.
        ///
        /// # Cancellation safety
        /// Safe.
        fn lost;

        /// The operation that makes a multi conditional on still holding this lock: a check that
        /// the holder node exists. Put it first in a multi of your own.
        fn check_op;

        /// Applies `ops` atomically, only if this lock is still held (one multi led by
        /// [`check_op`](LockGuard::check_op)). Results are the caller's ops' own.
        ///
        /// # Notable errors
        /// `Lost(reason)` if the lock is no longer held (nothing applied); `Multi { index, .. }`
        /// with the index into `ops` if one of them failed (nothing applied).
        fn write;

        /// Releases the lock and waits until the holder node is deleted (retrying through
        /// connection losses). Succeeds if the session has ended meanwhile: the node went with it.
        fn release;
    }
}
