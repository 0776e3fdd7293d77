//! A distributed read-write lock, lock-compatible with Apache Curator's
//! `InterProcessReadWriteLock`.
//!
//! # Node layout
//! Under the lock directory, readers create `_c_<uuid>-__READ__0000000007` and writers
//! `_c_<uuid>-__WRIT__0000000008` (ephemeral sequential), as Curator names them; all are ordered
//! by the sequence number the parent assigns.
//!
//! # Fairness
//! Strictly first come, first served by sequence number:
//! - a writer holds when it is the first contender of all; it watches the contender just
//!   before it;
//! - a reader holds when no writer is before it; otherwise it watches the first writer before
//!   it.
//!
//! So readers share the lock with each other, a waiting writer is never overtaken by readers
//! that arrive after it (no writer starvation), and readers that arrived before a writer keep
//! their turn. Not reentrant: a holder that acquires again waits for itself.
//!
//! # Connection loss, expiry, cancellation
//! As for [`Mutex`](crate::Mutex): protected creates, cancellation-safe acquires, guards that
//! release on drop, [`HoldState`](crate::HoldState) by [`ConnectionPolicy`], fencing tokens and
//! fenced writes.

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::Session;
use tokio::time::Instant;

use crate::hold::{self, Hold, Turn};
use crate::line::{self, Contender};
use crate::lock::validate_dir;
use crate::{ConnectionPolicy, Error, Result};

/// The name part of a reader's node (Curator's `READ_LOCK_NAME`).
pub const READ_MARKER: &str = "__READ__";
/// The name part of a writer's node (Curator's `WRITE_LOCK_NAME`).
pub const WRITE_MARKER: &str = "__WRIT__";

fn is_rw_contender(name: &str) -> bool {
    (name.contains(READ_MARKER) || name.contains(WRITE_MARKER)) && line::sequence_of(name).is_some()
}

fn writer_turn(sorted: &[Contender], ours: usize) -> Turn {
    crate::lock::mutex_turn(sorted, ours)
}

fn reader_turn(sorted: &[Contender], ours: usize) -> Turn {
    let mut writers = sorted[..ours]
        .iter()
        .filter(|c| c.name.contains(WRITE_MARKER));
    match writers.next() {
        None => Turn::Holds,
        // The first writer before us; if it is the only one, its deletion alone decides.
        Some(writer) => Turn::WaitFor {
            name: writer.name.clone(),
            decisive: writers.next().is_none(),
        },
    }
}

/// A read-write lock on a lock directory. Cheap to clone.
#[derive(Clone)]
pub struct RwLock {
    session: Arc<dyn Session>,
    dir: String,
    data: Vec<u8>,
    policy: ConnectionPolicy,
}

impl std::fmt::Debug for RwLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RwLock").field("dir", &self.dir).finish()
    }
}

impl RwLock {
    /// A read-write lock on `dir`.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(session: Arc<dyn Session>, dir: impl Into<String>) -> Result<RwLock> {
        let dir = dir.into();
        validate_dir(&dir)?;
        Ok(RwLock {
            session,
            dir,
            data: Vec::new(),
            policy: ConnectionPolicy::default(),
        })
    }

    /// Sets what a connection loss does to a held lock.
    pub fn with_policy(mut self, policy: ConnectionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the data stored in contender nodes.
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// Waits for a shared (read) hold.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the contender node.
    pub async fn read(&self) -> Result<ReadGuard> {
        self.acquire(READ_MARKER, &reader_turn, None)
            .await?
            .map(|hold| ReadGuard { hold })
            .ok_or(Error::Timeout)
    }

    /// Waits at most `timeout` for a shared hold (`Timeout` otherwise).
    pub async fn read_timeout(&self, timeout: Duration) -> Result<ReadGuard> {
        self.acquire(READ_MARKER, &reader_turn, Some(Instant::now() + timeout))
            .await?
            .map(|hold| ReadGuard { hold })
            .ok_or(Error::Timeout)
    }

    /// Waits for the exclusive (write) hold.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the contender node.
    pub async fn write(&self) -> Result<WriteGuard> {
        self.acquire(WRITE_MARKER, &writer_turn, None)
            .await?
            .map(|hold| WriteGuard { hold })
            .ok_or(Error::Timeout)
    }

    /// Waits at most `timeout` for the exclusive hold (`Timeout` otherwise).
    pub async fn write_timeout(&self, timeout: Duration) -> Result<WriteGuard> {
        self.acquire(WRITE_MARKER, &writer_turn, Some(Instant::now() + timeout))
            .await?
            .map(|hold| WriteGuard { hold })
            .ok_or(Error::Timeout)
    }

    async fn acquire(
        &self,
        marker: &str,
        turn: &(dyn Fn(&[Contender], usize) -> Turn + Sync),
        deadline: Option<Instant>,
    ) -> Result<Option<Hold>> {
        hold::acquire(
            &self.session,
            &self.dir,
            marker,
            &self.data,
            self.policy,
            deadline,
            &is_rw_contender,
            turn,
        )
        .await
    }
}

macro_rules! guard {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug)]
        #[must_use = "dropping the guard releases the lock"]
        pub struct $name {
            hold: Hold,
        }

        impl $name {
            hold::hold_methods! {
                /// The holder's node path.
                fn path;

                /// The fencing token (the node's czxid).
                fn fencing_token;

                /// Held, suspended or lost.
                fn state;

                /// Resolves when the hold is lost.
                fn lost;

                /// A check that makes a multi conditional on still holding.
                fn check_op;

                /// Applies `ops` atomically only while still holding.
                fn write;

                /// Releases and waits until the node is deleted.
                fn release;
            }
        }
    };
}

guard!(
    /// A shared hold of a [`RwLock`]. Dropping it releases in the background.
    ReadGuard
);
guard!(
    /// The exclusive hold of a [`RwLock`]. Dropping it releases in the background.
    WriteGuard
);
