//! Leader election, in the node layout of Apache Curator's `LeaderLatch`.
//!
//! # Node layout
//! Each candidate creates a protected ephemeral-sequential node `_c_<uuid>-latch-0000000004`
//! under the election directory, holding its participant id (for example an instance name;
//! never patient data). The lowest is the leader; each other candidate watches only the one
//! before it, so a leader's departure wakes exactly one candidate. Anyone can read the leader's
//! identity ([`Election::leader`]) and follow changes ([`Election::leader_change`]).
//!
//! # Leadership lost
//! [`Leadership::lost`] resolves when leadership ends: the session expired or closed, or (under
//! [`ConnectionPolicy::Standard`]) the connection was lost. A leader must stop acting as leader
//! then; its fenced writes ([`Leadership::write`]) fail from that moment. Under the default
//! [`ConnectionPolicy::Session`], a connection loss only suspends leadership
//! ([`HoldState::Suspended`]): act on nothing that needs exclusivity until it is `Held` again.
//!
//! # Cancellation safety
//! [`Election::campaign`] is cancellation-safe (the candidate node is deleted); dropping a
//! [`Leadership`] resigns in the background, [`Leadership::resign`] resigns and waits.

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{Error as CoordError, Session, path};
use tokio::time::Instant;

use crate::hold::{self, Hold};
use crate::line;
use crate::lock::{mutex_turn, validate_dir};
use crate::{ConnectionPolicy, Error, HoldState, Result};

/// The name part of a candidate's node (Curator's `LeaderLatch` `LOCK_NAME`).
pub const LATCH_MARKER: &str = "latch-";

fn is_candidate(name: &str) -> bool {
    name.contains(LATCH_MARKER) && line::sequence_of(name).is_some()
}

/// A participant of an election: its node and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// The candidate node's path.
    pub node: String,
    /// The participant id the candidate registered.
    pub id: String,
}

/// An election on a directory, for one participant id. Cheap to clone.
#[derive(Clone)]
pub struct Election {
    session: Arc<dyn Session>,
    dir: String,
    id: String,
    policy: ConnectionPolicy,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .finish()
    }
}

impl Election {
    /// An election on `dir` in which this process takes part as `id`.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        id: impl Into<String>,
    ) -> Result<Election> {
        let dir = dir.into();
        validate_dir(&dir)?;
        Ok(Election {
            session,
            dir,
            id: id.into(),
            policy: ConnectionPolicy::default(),
        })
    }

    /// Sets what a connection loss does to leadership.
    pub fn with_policy(mut self, policy: ConnectionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Stands as a candidate and waits until elected.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends while waiting.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future withdraws the candidacy.
    pub async fn campaign(&self) -> Result<Leadership> {
        self.campaign_until(None).await?.ok_or(Error::Timeout)
    }

    /// Stands as a candidate for at most `timeout` (`Timeout` otherwise; the candidacy is
    /// withdrawn).
    pub async fn campaign_timeout(&self, timeout: Duration) -> Result<Leadership> {
        self.campaign_until(Some(Instant::now() + timeout))
            .await?
            .ok_or(Error::Timeout)
    }

    async fn campaign_until(&self, deadline: Option<Instant>) -> Result<Option<Leadership>> {
        let hold = hold::acquire(
            &self.session,
            &self.dir,
            LATCH_MARKER,
            self.id.as_bytes(),
            self.policy,
            deadline,
            &is_candidate,
            &mutex_turn,
        )
        .await?;
        Ok(hold.map(|hold| Leadership {
            hold,
            id: self.id.clone(),
        }))
    }

    /// The candidates in order, leader first.
    pub async fn participants(&self) -> Result<Vec<Participant>> {
        participants(self.session.as_ref(), &self.dir).await
    }

    /// The current leader, if any.
    pub async fn leader(&self) -> Result<Option<Participant>> {
        leader(self.session.as_ref(), &self.dir).await
    }

    /// Waits until the leader differs from `known` (by node) and returns the new one (`None`:
    /// no leader). Returns at once if it already differs. Each call sets one child watch.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn leader_change(&self, known: Option<&Participant>) -> Result<Option<Participant>> {
        let s = self.session.as_ref();
        loop {
            let (children, watch) = match s.get_children_watch(&self.dir).await {
                Ok((c, _, w)) => (c, Some(w)),
                Err(CoordError::NoNode) => (Vec::new(), None),
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, None).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let current = first_participant(s, &self.dir, children).await?;
            if current.as_ref().map(|p| &p.node) != known.map(|p| &p.node) {
                return Ok(current);
            }
            match watch {
                Some(w) => {
                    let event = w.await;
                    if event.state.is_terminal() {
                        return Err(Error::Coord(
                            event.state.to_error().unwrap_or(CoordError::SessionExpired),
                        ));
                    }
                }
                None => {
                    // No directory yet: wait for it to appear.
                    let (stat, w) = s.exists_watch(&self.dir).await?;
                    if stat.is_none() {
                        w.await;
                    }
                }
            }
        }
    }
}

async fn participants(session: &dyn Session, dir: &str) -> Result<Vec<Participant>> {
    let sorted = match line::contenders(session, dir, &is_candidate).await {
        Ok(v) => v,
        Err(Error::Coord(CoordError::NoNode)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::with_capacity(sorted.len());
    for c in sorted {
        let node = path::join(dir, &c.name);
        match session.get_data(&node).await {
            Ok((data, _)) => out.push(Participant {
                node,
                id: String::from_utf8_lossy(&data).into_owned(),
            }),
            Err(CoordError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

async fn first_participant(
    session: &dyn Session,
    dir: &str,
    children: Vec<String>,
) -> Result<Option<Participant>> {
    for c in line::sort_contenders(children, &is_candidate) {
        let node = path::join(dir, &c.name);
        match session.get_data(&node).await {
            Ok((data, _)) => {
                return Ok(Some(Participant {
                    node,
                    id: String::from_utf8_lossy(&data).into_owned(),
                }));
            }
            Err(CoordError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// The leader of the election on `dir`, as any session can read it.
pub async fn leader(session: &dyn Session, dir: &str) -> Result<Option<Participant>> {
    let children = line::children_or_empty(session, dir).await?;
    first_participant(session, dir, children).await
}

/// Leadership won by [`Election::campaign`]. Dropping it resigns in the background.
#[derive(Debug)]
#[must_use = "dropping the leadership resigns"]
pub struct Leadership {
    hold: Hold,
    id: String,
}

impl Leadership {
    /// This leader's participant id.
    pub fn id(&self) -> &str {
        &self.id
    }

    hold::hold_methods! {
        /// The leader's candidate node.
        fn path;

        /// A fencing token: strictly larger for every later leader (the node's czxid).
        fn fencing_token;

        /// Held, suspended or lost.
        fn state;
    }

    /// True while leadership is held and not suspended.
    pub fn is_leader(&self) -> bool {
        self.state() == HoldState::Held
    }

    hold::hold_methods! {
        /// Resolves when leadership is lost, with the reason.
        ///
        /// # Cancellation safety
        /// Safe.
        fn lost;

        /// A check that makes a multi conditional on still leading.
        fn check_op;

        /// Applies `ops` atomically only while still leading.
        ///
        /// # Notable errors
        /// `Lost(reason)` if leadership is gone (nothing applied); `Multi { index, .. }` for a
        /// failing op of the caller's.
        fn write;

        /// Resigns and waits until the candidate node is deleted.
        fn resign = release;
    }
}
