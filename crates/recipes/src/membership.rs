//! Group membership and service registry: each live instance is an ephemeral node holding its
//! description, and anyone can list or follow the members.
//!
//! # Node layout
//! A group is a directory, e.g. `/medical/cluster/members`. Each member is an ephemeral child
//! named by its member id, `dir/<member-id>`, whose data is the member's description (JSON by
//! convention; the caller serialises, never patient data). The directory is created as a
//! container if missing (as Curator's `GroupMember` does), so ZooKeeper removes it once the last
//! member has gone. One id is one member: a second session joining with a taken id gets
//! [`Error::Occupied`].
//!
//! # Guarantees
//! - A member is listed exactly while its session lives (or until it leaves): a crashed instance
//!   disappears within the session timeout, because the service deletes its ephemeral node.
//! - [`MemberWatch`] yields the full member list (ids and data) after every change it observes;
//!   changes that happen close together may be coalesced into one list, never lost: the last
//!   list it yields before a quiet period is the current one.
//! - [`Registration`] keeps an id registered across session expiries by joining again on a new
//!   session from a [`SessionSource`].
//!
//! # Connection loss and session expiry
//! A connection loss suspends a [`Member`] ([`HoldState::Suspended`]); its node is kept while
//! the session lives. An expiry loses it ([`LostReason::SessionEnded`], reported by
//! [`Member::lost`]): the node is gone and joining again needs a new session — which is what
//! [`Registration`] does.
//!
//! # Cancellation safety
//! [`Membership::join`] is cancellation-safe: a node it may have created is deleted in the
//! background when the future is dropped. Dropping a [`Member`] leaves in the background;
//! [`Member::leave`] leaves and waits. [`MemberWatch::next`] is cancellation-safe (the next call
//! re-reads).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{
    CreateMode, CreateOptions, Error as CoordError, EventType, OneshotWatch, Session, SessionId,
    SessionState, Stat, path,
};
use tokio::sync::{oneshot, watch};

use crate::hold::Monitor;
use crate::line;
use crate::lock::validate_dir;
use crate::{Error, HoldState, LostReason, Result};

/// A member id with its data, as [`Membership::members`] and [`MemberWatch`] report them.
pub type MemberEntry = (String, Vec<u8>);

/// Room left below the backend's request limit for a create's framing beyond a set_data's (mode
/// flag, ACL), so an oversize description is refused here rather than cutting the connection.
const CREATE_OVERHEAD: usize = 64;

/// The most data a write of `path` may carry on this backend: within the data limit and, less
/// `overhead`, within the request limit.
fn data_limit(s: &dyn Session, path: &str, overhead: usize) -> usize {
    let caps = s.capabilities();
    caps.max_data_len
        .min(caps.max_set_data_len(path).saturating_sub(overhead))
}

/// Checks that `id` is usable as one znode name.
fn validate_id(dir: &str, id: &str) -> Result<()> {
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(Error::InvalidArgument(format!(
            "member id {id:?} is not a single node name"
        )));
    }
    path::validate_path(&path::join(dir, id), false)
        .map_err(|e| Error::InvalidArgument(format!("member id {id:?}: {e}")))
}

/// A group of members under one directory, seen through one session. Cheap to clone.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::membership::Membership;
/// let group = Membership::new(session, "/medical/cluster/members")?;
/// let me = group.join("scheduler-1", br#"{"http":"10.0.0.5:8080"}"#.to_vec()).await?;
/// for (id, data) in group.members().await? {
///     println!("{id}: {}", String::from_utf8_lossy(&data));
/// }
/// me.leave().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Membership {
    session: Arc<dyn Session>,
    dir: String,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("dir", &self.dir)
            .finish()
    }
}

impl Membership {
    /// The group in directory `dir`.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(session: Arc<dyn Session>, dir: impl Into<String>) -> Result<Membership> {
        let dir = dir.into();
        validate_dir(&dir)?;
        Ok(Membership { session, dir })
    }

    /// The group's directory.
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// Joins the group as `id` with `data`: creates the ephemeral node `dir/<id>` (and the
    /// directory, as a container, if missing).
    ///
    /// If the node already exists and belongs to this very session (a join repeated after a
    /// connection loss, or a second join of the same id), it is adopted and its data set to
    /// `data`; the members then share the node, and whichever leaves first removes it.
    /// Connection losses are waited out.
    ///
    /// # Notable errors
    /// `Occupied { owner, .. }` if another session's member holds the id (or a persistent node
    /// has that name); `InvalidArgument` if `id` is not a single node name or `data` is larger
    /// than the backend accepts; a session-fatal `Coord` error if the session has ended.
    ///
    /// # Cancellation safety
    /// Safe: if the future is dropped after the create was sent, the node is deleted in the
    /// background (only if this session owns it).
    pub async fn join(&self, id: &str, data: Vec<u8>) -> Result<Member> {
        join_member(&self.session, &self.dir, id, &data).await
    }

    /// The current members, sorted by id, with their data. An absent directory is an empty
    /// group. Connection losses are waited out.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session has ended.
    pub async fn members(&self) -> Result<Vec<MemberEntry>> {
        let s = self.session.as_ref();
        line::retrying(s, None, || members(s, &self.dir)).await
    }

    /// A follower of the member list: see [`MemberWatch`].
    pub fn watch(&self) -> MemberWatch {
        MemberWatch {
            session: self.session.clone(),
            dir: self.dir.clone(),
            last: None,
        }
    }
}

/// The members of the group in `dir`, sorted by id, with their data, as any session can read
/// them (one read, no retry). An absent directory is an empty group.
///
/// # Notable errors
/// The coordination error of a failed read (`ConnectionLoss`, a session-fatal one).
pub async fn members(session: &dyn Session, dir: &str) -> Result<Vec<MemberEntry>> {
    let children = line::children_or_empty(session, dir).await?;
    let mut out = read_members(session, dir, children, false).await?.0;
    out.sort();
    Ok(out)
}

/// Reads each child's data (skipping children that vanished), optionally with a data watch on
/// each.
async fn read_members(
    session: &dyn Session,
    dir: &str,
    mut children: Vec<String>,
    watch: bool,
) -> Result<(Vec<MemberEntry>, Vec<OneshotWatch>)> {
    children.sort();
    let mut out = Vec::with_capacity(children.len());
    let mut watches = Vec::new();
    for id in children {
        let p = path::join(dir, &id);
        let read = if watch {
            session.get_data_watch(&p).await.map(|(d, _, w)| {
                watches.push(w);
                d
            })
        } else {
            session.get_data(&p).await.map(|(d, _)| d)
        };
        match read {
            Ok(data) => out.push((id, data)),
            Err(CoordError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok((out, watches))
}

/// Deletes `path` in the background when dropped armed, if this session owns it: the node a
/// cancelled join may have created.
struct JoinCleanup {
    session: Arc<dyn Session>,
    path: String,
    armed: bool,
}

impl Drop for JoinCleanup {
    fn drop(&mut self) {
        if self.armed {
            let session = self.session.clone();
            let path = std::mem::take(&mut self.path);
            line::spawn_cleanup(async move {
                let _ = delete_own(session.as_ref(), &path).await;
            });
        }
    }
}

/// Deletes `path` if it is an ephemeral node of this session, retrying through connection
/// losses. A session that ended took its node with it: success.
async fn delete_own(s: &dyn Session, path: &str) -> Result<()> {
    let r = line::retrying(s, None, || async {
        match s.exists(path).await? {
            Some(stat) if stat.ephemeral_owner == s.session_id().0 => {
                match s.delete(path, stat.version).await {
                    Ok(()) | Err(CoordError::NoNode) => Ok(()),
                    Err(e) => Err(Error::Coord(e)),
                }
            }
            _ => Ok(()),
        }
    })
    .await;
    line::gone_with_session(r)
}

async fn join_member(
    session: &Arc<dyn Session>,
    dir: &str,
    id: &str,
    data: &[u8],
) -> Result<Member> {
    validate_id(dir, id)?;
    let path = path::join(dir, id);
    let s = session.as_ref();
    let limit = data_limit(s, &path, CREATE_OVERHEAD);
    if data.len() > limit {
        return Err(Error::InvalidArgument(format!(
            "member data of {} bytes exceeds the backend's limit of {limit}",
            data.len()
        )));
    }
    let options = CreateOptions::new(CreateMode::Ephemeral);
    let mut cleanup = JoinCleanup {
        session: session.clone(),
        path: path.clone(),
        armed: false,
    };
    let mut maybe_created = false;
    loop {
        cleanup.armed = true;
        match s.create(&path, data, &options).await {
            Ok((_, stat)) => {
                cleanup.armed = false;
                return Ok(Member::new(session.clone(), path, id, stat));
            }
            Err(CoordError::NoNode) => {
                cleanup.armed = maybe_created;
                line::retrying(s, None, || line::ensure_container(s, dir)).await?;
                continue;
            }
            Err(CoordError::NodeExists) => cleanup.armed = maybe_created,
            Err(e) if e.is_retryable() => {
                maybe_created = true;
                line::await_connected(s, None).await?;
            }
            Err(e) => {
                cleanup.armed = false;
                return Err(e.into());
            }
        }
        // The node exists, or our create's outcome is unknown: whose is it?
        let found = line::retrying(s, None, || async {
            match s.get_data(&path).await {
                Ok(v) => Ok(Some(v)),
                Err(CoordError::NoNode) => Ok(None),
                Err(e) => Err(Error::Coord(e)),
            }
        })
        .await?;
        let Some((current, stat)) = found else {
            continue;
        };
        if stat.ephemeral_owner != s.session_id().0 {
            cleanup.armed = false;
            return Err(Error::Occupied {
                path,
                owner: SessionId(stat.ephemeral_owner),
            });
        }
        let stat = if current == data {
            stat
        } else {
            let set = line::retrying(s, None, || async {
                match s.set_data(&path, data, -1).await {
                    Ok(st) => Ok(Some(st)),
                    Err(CoordError::NoNode) => Ok(None),
                    Err(e) => Err(Error::Coord(e)),
                }
            })
            .await?;
            match set {
                Some(st) => st,
                None => continue,
            }
        };
        cleanup.armed = false;
        return Ok(Member::new(session.clone(), path, id, stat));
    }
}

/// A joined member: its ephemeral node exists while this value is held and the session lives.
/// Dropping it leaves the group in the background; [`leave`](Member::leave) leaves and waits.
#[must_use = "dropping the member leaves the group"]
pub struct Member {
    session: Arc<dyn Session>,
    path: String,
    id: String,
    stat: Stat,
    monitor: Monitor,
    left: bool,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("path", &self.path)
            .field("state", &self.state())
            .finish()
    }
}

impl Member {
    fn new(session: Arc<dyn Session>, path: String, id: &str, stat: Stat) -> Member {
        let (tx, rx) = watch::channel(HoldState::Held);
        let task = tokio::spawn(monitor(session.clone(), path.clone(), tx)).abort_handle();
        Member {
            session,
            path,
            id: id.to_string(),
            stat,
            monitor: Monitor::from_task(rx, task),
            left: false,
        }
    }

    /// The member id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The member's node, `dir/<id>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The node's stat when it was joined.
    pub fn stat(&self) -> &Stat {
        &self.stat
    }

    /// The id of the session that owns the node.
    pub fn session_id(&self) -> SessionId {
        self.session.session_id()
    }

    /// `Held` while registered, `Suspended` while the connection is lost (the node may still
    /// exist), `Lost` once the session ended or the node was deleted by someone else. Final once
    /// lost.
    pub fn state(&self) -> HoldState {
        self.monitor.state()
    }

    /// Resolves when the membership is lost: the session ended (`SessionEnded`: the node is
    /// gone) or the node was deleted by someone else (`NodeDeleted`).
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn lost(&self) -> LostReason {
        self.monitor.lost().await
    }

    /// Replaces the member's data (unconditionally: only this member writes it). Connection
    /// losses are waited out; the write is idempotent.
    ///
    /// # Notable errors
    /// `Lost(NodeDeleted)` if the node is gone; `Lost(SessionEnded)` if the session ended;
    /// `InvalidArgument` if `data` is larger than the backend accepts.
    ///
    /// # Cancellation safety
    /// Safe: the data is either the old or the new.
    pub async fn update(&self, data: &[u8]) -> Result<Stat> {
        let s = self.session.as_ref();
        let limit = data_limit(s, &self.path, 0);
        if data.len() > limit {
            return Err(Error::InvalidArgument(format!(
                "member data of {} bytes exceeds the backend's limit of {limit}",
                data.len()
            )));
        }
        let r = line::retrying(s, None, || async {
            s.set_data(&self.path, data, -1).await.map_err(Error::Coord)
        })
        .await;
        match r {
            Err(Error::Coord(CoordError::NoNode)) => Err(Error::Lost(LostReason::NodeDeleted)),
            Err(e) if e.is_session_fatal() => Err(Error::Lost(LostReason::SessionEnded)),
            other => other,
        }
    }

    /// Leaves the group and waits until the node is deleted (retrying through connection
    /// losses). Succeeds if the session ended meanwhile: the node went with it.
    ///
    /// # Cancellation safety
    /// Safe: if dropped, the deletion continues in the background.
    pub async fn leave(mut self) -> Result<()> {
        self.left = true;
        self.monitor.stop();
        let session = self.session.clone();
        let path = self.path.clone();
        // In a task, so a cancelled leave still leaves.
        match tokio::spawn(async move { delete_own(session.as_ref(), &path).await }).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if !self.left {
            let session = self.session.clone();
            let path = std::mem::take(&mut self.path);
            line::spawn_cleanup(async move {
                if let Err(e) = delete_own(session.as_ref(), &path).await {
                    tracing::warn!(%path, error = %e, "could not leave a dropped membership");
                }
            });
        }
    }
}

/// Follows a member's session and node into its state: `Suspended` while disconnected, `Lost`
/// once the session ends or the node is deleted.
async fn monitor(session: Arc<dyn Session>, path: String, tx: watch::Sender<HoldState>) {
    let set = |next: HoldState| {
        tx.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    };
    let s = session.as_ref();
    let mut events = s.session_events();
    loop {
        match events.current() {
            SessionState::Connected => {}
            SessionState::Disconnected => {
                set(HoldState::Suspended);
                events.changed().await;
                continue;
            }
            _ => return set(HoldState::Lost(LostReason::SessionEnded)),
        }
        set(HoldState::Held);
        match s.exists_watch(&path).await {
            Ok((Some(_), watch)) => {
                tokio::select! {
                    event = watch => {
                        if event.state.is_terminal() {
                            return set(HoldState::Lost(LostReason::SessionEnded));
                        }
                    }
                    _ = events.changed() => {}
                }
            }
            Ok((None, _)) => {
                let reason = if s.state().is_terminal() {
                    LostReason::SessionEnded
                } else {
                    LostReason::NodeDeleted
                };
                return set(HoldState::Lost(reason));
            }
            Err(e) if e.is_session_fatal() => {
                return set(HoldState::Lost(LostReason::SessionEnded));
            }
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot watch a member node");
                events.wait_for(SessionState::is_terminal).await;
            }
        }
    }
}

/// Follows a group's member list. Each [`next`](MemberWatch::next) returns the full list (sorted
/// by id, with data) once it differs from the one returned before; the first call returns the
/// current list at once.
///
/// Each wait sets one child watch on the directory and one data watch per member, so joins,
/// departures and [`Member::update`]s are all seen; changes between two calls are coalesced.
#[derive(Clone)]
pub struct MemberWatch {
    session: Arc<dyn Session>,
    dir: String,
    last: Option<Vec<MemberEntry>>,
}

impl std::fmt::Debug for MemberWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberWatch")
            .field("dir", &self.dir)
            .finish()
    }
}

impl MemberWatch {
    /// A follower of the group in `dir` (see [`Membership::watch`]).
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(session: Arc<dyn Session>, dir: impl Into<String>) -> Result<MemberWatch> {
        Ok(Membership::new(session, dir)?.watch())
    }

    /// The list last returned by [`next`](MemberWatch::next), if any.
    pub fn last(&self) -> Option<&[MemberEntry]> {
        self.last.as_deref()
    }

    /// Waits until the member list differs from the one returned last, and returns it (at once
    /// on the first call). Connection losses are waited out (and the list re-read).
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error once the session has ended.
    ///
    /// # Cancellation safety
    /// Safe: nothing is consumed until a list is returned.
    pub async fn next(&mut self) -> Result<Vec<MemberEntry>> {
        let s = self.session.as_ref();
        loop {
            let read = match self.read_watched().await {
                Ok(r) => r,
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, None).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (list, mut watches) = read;
            if self.last.as_ref() != Some(&list) {
                self.last = Some(list.clone());
                return Ok(list);
            }
            let event = std::future::poll_fn(|cx| {
                for w in watches.iter_mut() {
                    if let Poll::Ready(e) = Pin::new(w).poll(cx) {
                        return Poll::Ready(e);
                    }
                }
                Poll::Pending
            })
            .await;
            if event.event_type == EventType::Session && event.state.is_terminal() {
                return Err(Error::Coord(
                    event.state.to_error().unwrap_or(CoordError::SessionExpired),
                ));
            }
        }
    }

    async fn read_watched(&self) -> Result<(Vec<MemberEntry>, Vec<OneshotWatch>)> {
        let s = self.session.as_ref();
        match s.get_children_watch(&self.dir).await {
            Ok((children, _, dir_watch)) => {
                let (list, mut watches) = read_members(s, &self.dir, children, true).await?;
                watches.push(dir_watch);
                Ok((list, watches))
            }
            Err(CoordError::NoNode) => {
                let (stat, w) = s.exists_watch(&self.dir).await?;
                if stat.is_some() {
                    // Created meanwhile: read again, now with a child watch.
                    return Box::pin(self.read_watched()).await;
                }
                Ok((Vec::new(), vec![w]))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Where a [`Registration`] gets a session: at the start, and again after each expiry. Each call
/// should return a session that is usable now (a new one when the last expired).
///
/// Closures `Fn() -> impl Future<Output = Result<Arc<dyn Session>>>` (returning `'static`
/// futures) are sources.
#[async_trait]
pub trait SessionSource: Send + Sync {
    /// A live session.
    ///
    /// # Notable errors
    /// Any: the registration logs it and asks again after a back-off.
    async fn session(&self) -> Result<Arc<dyn Session>>;
}

#[async_trait]
impl<F, Fut> SessionSource for F
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = Result<Arc<dyn Session>>> + Send + 'static,
{
    async fn session(&self) -> Result<Arc<dyn Session>> {
        (self)().await
    }
}

/// Where a [`Registration`] stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Getting a session, or creating the member node.
    Joining,
    /// Registered: the member node exists, owned by `session`.
    Registered {
        /// The session that owns the node.
        session: SessionId,
    },
    /// The connection of `session` is lost; the node exists as long as the session lives.
    Suspended {
        /// The session that owns the node.
        session: SessionId,
    },
    /// The id's node exists but belongs to `owner`: either this registration's previous,
    /// expired session whose node the service has not deleted yet, or a conflicting member
    /// elsewhere. Waiting (one exist watch) for it to go.
    Blocked {
        /// The node's owner.
        owner: SessionId,
    },
    /// Stopped by the shutdown signal; the member has left.
    Stopped,
    /// Stopped by an error that retrying cannot cure (an invalid id, no permission).
    Failed(Error),
}

/// Keeps a member registered for as long as it runs: joins with a session from a
/// [`SessionSource`], and when that session expires (or the node is deleted), joins again, on
/// a new session if needed — waiting out a node of the old session the service has not yet
/// deleted. Its state is a `tokio::sync::watch` channel ([`state`](Registration::state)).
///
/// Drive it with [`run`](Registration::run) (borrowing the source, ending on a shutdown future
/// of the caller's) or [`spawn`](Registration::spawn) (a task, stopped through the handle).
///
/// Sessions from the source are not closed by the registration: they belong to the source.
pub struct Registration {
    dir: String,
    id: String,
    data: watch::Sender<Vec<u8>>,
    state: watch::Sender<RegistrationState>,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("dir", &self.dir)
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Registration {
    /// A registration of `id` with `data` in the group `dir` (not yet running).
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root or an `id`
    /// that is not a single node name.
    pub fn new(dir: impl Into<String>, id: impl Into<String>, data: Vec<u8>) -> Result<Self> {
        let dir = dir.into();
        let id = id.into();
        validate_dir(&dir)?;
        validate_id(&dir, &id)?;
        Ok(Registration {
            dir,
            id,
            data: watch::channel(data).0,
            state: watch::channel(RegistrationState::Joining).0,
        })
    }

    /// A follower of the registration's state.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.subscribe()
    }

    /// Replaces the member's data: written now if registered, and used by every later join.
    pub fn set_data(&self, data: Vec<u8>) {
        self.data.send_replace(data);
    }

    fn set_state(&self, next: RegistrationState) {
        self.state.send_if_modified(|s| {
            if *s == next {
                false
            } else {
                *s = next;
                true
            }
        });
    }

    /// Keeps the member registered until `shutdown` resolves, then leaves (deletes the node,
    /// waiting) and returns `Ok`.
    ///
    /// # Notable errors
    /// Only errors retrying cannot cure (for example `Coord(NoAuth)` on the directory); the
    /// state is then [`RegistrationState::Failed`]. Session expiries, connection losses, a
    /// failing source (retried with back-off) and conflicting nodes (waited out) are not errors.
    ///
    /// # Cancellation safety
    /// Dropping the future drops the current member, which leaves in the background.
    pub async fn run(
        &self,
        source: &dyn SessionSource,
        shutdown: impl Future<Output = ()>,
    ) -> Result<()> {
        let mut slot: Option<Member> = None;
        let outcome = tokio::select! {
            biased;
            _ = shutdown => Ok(()),
            e = self.keep(source, &mut slot) => Err(e),
        };
        if let Some(member) = slot.take()
            && let Err(e) = member.leave().await
        {
            tracing::warn!(dir = %self.dir, id = %self.id, error = %e, "could not leave on stop");
        }
        match outcome {
            Ok(()) => {
                self.set_state(RegistrationState::Stopped);
                Ok(())
            }
            Err(e) => {
                self.set_state(RegistrationState::Failed(e.clone()));
                Err(e)
            }
        }
    }

    /// Runs the registration in a task until the handle is stopped or dropped.
    pub fn spawn(self, source: Arc<dyn SessionSource>) -> RegistrationHandle {
        let (stop, stopped) = oneshot::channel::<()>();
        let registration = Arc::new(self);
        let state = registration.state();
        let task = tokio::spawn({
            let registration = registration.clone();
            async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                registration.run(source.as_ref(), shutdown).await
            }
        });
        RegistrationHandle {
            registration,
            state,
            stop: Some(stop),
            task,
        }
    }

    /// Joins and rejoins for ever; returns only a non-retryable error.
    async fn keep(&self, source: &dyn SessionSource, slot: &mut Option<Member>) -> Error {
        let mut backoff = BACKOFF_MIN;
        let node = path::join(&self.dir, &self.id);
        loop {
            self.set_state(RegistrationState::Joining);
            let session = match source.session().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(dir = %self.dir, id = %self.id, error = %e, "no session for a registration");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            // Join (and rejoin) on this session until it ends.
            loop {
                let data = self.data.borrow().clone();
                match join_member(&session, &self.dir, &self.id, &data).await {
                    Ok(m) => *slot = Some(m),
                    Err(Error::Occupied { owner, .. }) => {
                        self.set_state(RegistrationState::Blocked { owner });
                        match wait_absent(session.as_ref(), &node).await {
                            Ok(()) => continue,
                            Err(e) if e.is_session_fatal() => break,
                            Err(e) => return e,
                        }
                    }
                    Err(e) if e.is_session_fatal() => break,
                    Err(e) => return e,
                }
                let Some(member) = slot.as_ref() else {
                    break;
                };
                backoff = BACKOFF_MIN;
                let mut held = member.monitor.subscribe();
                let mut data = self.data.subscribe();
                let reason = loop {
                    let now = *held.borrow_and_update();
                    match now {
                        HoldState::Held => self.set_state(RegistrationState::Registered {
                            session: session.session_id(),
                        }),
                        HoldState::Suspended => self.set_state(RegistrationState::Suspended {
                            session: session.session_id(),
                        }),
                        HoldState::Lost(r) => break r,
                    }
                    tokio::select! {
                        changed = held.changed() => if changed.is_err() {
                            break LostReason::SessionEnded;
                        },
                        changed = data.changed() => if changed.is_ok() {
                            let d = data.borrow_and_update().clone();
                            if let Err(e) = member.update(&d).await {
                                tracing::warn!(dir = %self.dir, id = %self.id, error = %e, "could not update member data");
                            }
                        },
                    }
                };
                *slot = None;
                tracing::info!(dir = %self.dir, id = %self.id, %reason, "member lost; joining again");
                if reason == LostReason::SessionEnded || session.state().is_terminal() {
                    break;
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Waits until `path` does not exist (one exist watch per wake), through connection losses.
async fn wait_absent(s: &dyn Session, path: &str) -> Result<()> {
    loop {
        match line::retrying(s, None, || line::wait_gone(s, path, None)).await? {
            line::Waited::Changed => {}
            line::Waited::TimedOut => {}
        }
        let gone =
            line::retrying(s, None, || async { Ok(s.exists(path).await?.is_none()) }).await?;
        if gone {
            return Ok(());
        }
    }
}

/// A [`Registration`] running in a task. Dropping the handle stops it (the member leaves in
/// the background); [`stop`](RegistrationHandle::stop) stops it and waits.
#[derive(Debug)]
pub struct RegistrationHandle {
    registration: Arc<Registration>,
    state: watch::Receiver<RegistrationState>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl RegistrationHandle {
    /// A follower of the registration's state.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Replaces the member's data (see [`Registration::set_data`]).
    pub fn set_data(&self, data: Vec<u8>) {
        self.registration.set_data(data);
    }

    /// Stops the registration and waits until the member has left.
    ///
    /// # Notable errors
    /// The error that stopped the registration earlier, if one did.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }
}

impl Drop for RegistrationHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_single_names() {
        assert!(validate_id("/g", "scheduler-1").is_ok());
        for bad in ["", "a/b", ".", "..", "x\0y"] {
            assert!(
                matches!(validate_id("/g", bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
