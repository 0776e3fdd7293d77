//! A tree cache: a local, synchronously readable copy of a subtree, kept current by one
//! persistent recursive watch (Curator's `CuratorCache`).
//!
//! # How it stays current
//! [`TreeCache::start`] registers the recursive watch on the root *first*, then loads the
//! subtree (breadth first, data and children), so every change after the load's reads arrives
//! as an event. Events are applied in order: `NodeCreated` and `NodeDataChanged` re-read the
//! node (a `NodeCreated` also loads the node's children, which may have been created before the
//! read); `NodeDeleted` removes the node and everything cached below it. A read whose stat is not
//! newer than the cached one (same `czxid` and no larger `mzxid`, or an older `czxid`) is
//! ignored, so an event whose change an earlier read already saw produces no duplicate.
//!
//! The cache is eventually consistent: after the tree stops changing, it equals a fresh read of
//! the subtree. In between it may briefly hold a state newer than the event being applied
//! (reads return the current state, not the event's).
//!
//! # Events
//! [`TreeCache::subscribe`] gives a stream of [`CacheEvent`]s through a bounded broadcast
//! channel ([`EVENT_CAPACITY`]); the cache never waits for a slow subscriber. A subscriber that
//! falls behind gets [`CacheEvent::Lagged`] and should re-read [`TreeCache::snapshot`].
//! Events are sent while the change is applied, under the cache's lock, so
//! [`TreeCache::snapshot_and_subscribe`] gives a snapshot and exactly the events after it.
//!
//! # Connection loss and session expiry
//! On ZooKeeper, watch events can be lost across a reconnection (ZOOKEEPER-4698). After the
//! session is `Disconnected` and then `Connected` again (seen on the watch stream or the
//! session's states, or as a `ConnectionLoss` of the cache's own reads), the cache reloads the
//! whole subtree, emits the differences from what it held as `Added`/`Updated`/`Removed`, then
//! [`CacheEvent::Resynced`]. When the watch stream itself carries session events (ZooKeeper),
//! its own `Connected` is what triggers the reload: the backend passes it on only once the
//! watch is registered again, so the reload cannot run before the watch is back and miss a
//! change made in between. While disconnected its state is [`CacheState::Suspended`]: the
//! contents may be stale. When the session ends the cache emits [`CacheEvent::Ended`], its state
//! becomes [`CacheState::Ended`], and it stops; its contents stay readable, frozen.
//!
//! # Cancellation safety
//! [`TreeCache::start`] is cancellation-safe (dropping it drops the watch). Dropping a
//! [`TreeCache`] (or [`close`](TreeCache::close)) stops its task and unregisters the watch.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use medkeeper_coord::{
    AddWatchMode, Error as CoordError, EventType, PersistentWatch, Session, SessionState, Stat,
    WatchedEvent, path,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::line;
use crate::{Error, Result};

/// How many events a subscriber may fall behind before it gets [`CacheEvent::Lagged`].
pub const EVENT_CAPACITY: usize = 1024;

/// One cached node: its data and its stat as last read. The stat's data fields (`czxid`,
/// `mzxid`, `version`, `data_length`) are current; its child fields (`num_children`,
/// `cversion`, `pzxid`) are as of that read, since a recursive watch reports no child events —
/// use [`TreeCache::children`] for the children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedNode {
    /// The node's data.
    pub data: Vec<u8>,
    /// The node's stat.
    pub stat: Stat,
}

/// A change of the cache's contents.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// A node appeared in the cache.
    Added {
        /// The node's path.
        path: String,
        /// The node as read.
        node: CachedNode,
    },
    /// A cached node's data (or incarnation) changed.
    Updated {
        /// The node's path.
        path: String,
        /// The node as read now.
        node: CachedNode,
    },
    /// A node left the cache (deleted).
    Removed {
        /// The node's path.
        path: String,
    },
    /// A reload after a reconnection finished; the differences it found were sent before.
    Resynced,
    /// This subscriber fell behind and missed `missed` events: re-read the snapshot.
    Lagged {
        /// How many events were dropped for this subscriber.
        missed: u64,
    },
    /// The session ended (the state says how); the cache has stopped.
    Ended(SessionState),
}

/// The state of a [`TreeCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheState {
    /// Following changes.
    Live,
    /// The connection is lost: the contents may be stale until the reload after reconnecting.
    Suspended,
    /// The session ended (or the cache was closed): the contents are frozen.
    Ended(SessionState),
}

type Nodes = BTreeMap<String, CachedNode>;

/// A stream of [`CacheEvent`]s from a [`TreeCache`].
#[derive(Debug)]
pub struct CacheEvents {
    rx: broadcast::Receiver<CacheEvent>,
}

impl CacheEvents {
    /// The next event; `None` once the cache has stopped and every event was delivered.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn next(&mut self) -> Option<CacheEvent> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(CacheEvent::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event if one is queued.
    pub fn try_next(&mut self) -> Option<CacheEvent> {
        match self.rx.try_recv() {
            Ok(e) => Some(e),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                Some(CacheEvent::Lagged { missed })
            }
            Err(_) => None,
        }
    }
}

/// The shared part: contents and the event channel, changed together under the lock.
struct Shared {
    nodes: RwLock<Nodes>,
    events: broadcast::Sender<CacheEvent>,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Nodes> {
        self.nodes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Nodes> {
        self.nodes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, event: CacheEvent) {
        // No subscriber is fine.
        let _ = self.events.send(event);
    }

    /// Stores a node read now, unless the cache holds the same or a newer version of it.
    fn offer(&self, path: &str, node: CachedNode) {
        let mut nodes = self.write();
        let event = match nodes.get(path) {
            Some(old) if !is_newer(&node.stat, &old.stat) => return,
            Some(_) => CacheEvent::Updated {
                path: path.to_string(),
                node: node.clone(),
            },
            None => CacheEvent::Added {
                path: path.to_string(),
                node: node.clone(),
            },
        };
        nodes.insert(path.to_string(), node);
        self.send(event);
    }

    /// Removes `path` and every cached node below it.
    fn remove(&self, path: &str) {
        let mut nodes = self.write();
        let below: Vec<String> = nodes
            .range(descendants_from(path)..)
            .skip_while(|(p, _)| p.as_str() == path)
            .take_while(|(p, _)| is_below(p, path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below.iter().rev() {
            nodes.remove(p);
            self.send(CacheEvent::Removed { path: p.clone() });
        }
        if nodes.remove(path).is_some() {
            self.send(CacheEvent::Removed {
                path: path.to_string(),
            });
        }
    }

    /// Replaces the contents with `fresh`, sending the differences; returns how many.
    fn replace(&self, fresh: Nodes) -> usize {
        let mut nodes = self.write();
        let changes = diff(&nodes, &fresh);
        let n = changes.len();
        for event in changes {
            self.send(event);
        }
        *nodes = fresh;
        n
    }
}

/// True if a node read with stat `new` is a later state than one cached with `old`: a later
/// incarnation (larger `czxid`), or the same incarnation modified later.
fn is_newer(new: &Stat, old: &Stat) -> bool {
    if new.czxid != old.czxid {
        return new.czxid > old.czxid;
    }
    new.mzxid > old.mzxid || (new.mzxid == old.mzxid && new.version > old.version)
}

/// True if two reads of a node saw the same data change of the same incarnation (the child
/// fields of their stats may differ: the cache does not follow them).
fn same_version(a: &CachedNode, b: &CachedNode) -> bool {
    a.stat.czxid == b.stat.czxid
        && a.stat.mzxid == b.stat.mzxid
        && a.stat.version == b.stat.version
        && a.data == b.data
}

/// The first key that can be below `path` in a `BTreeMap`'s order.
fn descendants_from(path: &str) -> String {
    if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    }
}

/// True if `p` is strictly below `root`.
fn is_below(p: &str, root: &str) -> bool {
    if root == "/" {
        p.len() > 1 && p.starts_with('/')
    } else {
        p.len() > root.len() + 1 && p.starts_with(root) && p.as_bytes()[root.len()] == b'/'
    }
}

/// The events that turn `old` into `new`: `Removed` for nodes only in `old` (deepest first),
/// `Added` for nodes only in `new` (parents first), `Updated` for nodes whose data, incarnation
/// or version differs.
pub(crate) fn diff(old: &Nodes, new: &Nodes) -> Vec<CacheEvent> {
    let mut out: Vec<CacheEvent> = old
        .keys()
        .rev()
        .filter(|p| !new.contains_key(*p))
        .map(|p| CacheEvent::Removed { path: p.clone() })
        .collect();
    for (p, node) in new {
        match old.get(p) {
            None => out.push(CacheEvent::Added {
                path: p.clone(),
                node: node.clone(),
            }),
            Some(o) if !same_version(o, node) => out.push(CacheEvent::Updated {
                path: p.clone(),
                node: node.clone(),
            }),
            Some(_) => {}
        }
    }
    out
}

/// A cache of the subtree at a root path. See the [module docs](self).
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::cache::{CacheEvent, TreeCache};
/// let cache = TreeCache::start(session, "/medical/resources").await?;
/// let (units, mut events) = cache.snapshot_and_subscribe();
/// println!("{} nodes", units.len());
/// while let Some(event) = events.next().await {
///     if let CacheEvent::Updated { path, node } = event {
///         println!("{path} is now {}", String::from_utf8_lossy(&node.data));
///     }
/// }
/// # Ok(()) }
/// ```
pub struct TreeCache {
    root: String,
    shared: Arc<Shared>,
    state: watch::Receiver<CacheState>,
    settles: mpsc::UnboundedSender<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for TreeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeCache")
            .field("root", &self.root)
            .field("state", &self.state())
            .finish()
    }
}

impl TreeCache {
    /// Registers the watch on `root`, loads the subtree and starts following it; returns once
    /// the initial load is in the cache. A missing root is an empty cache that fills when the
    /// root is created. Connection losses during the load are waited out.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; a session-fatal `Coord` error if the session
    /// has ended; `Coord(NoAuth)` if a node of the subtree cannot be read.
    ///
    /// # Cancellation safety
    /// Safe: nothing is left registered.
    pub async fn start(session: Arc<dyn Session>, root: impl Into<String>) -> Result<TreeCache> {
        let root = root.into();
        path::validate_path(&root, false)?;
        let s = session.as_ref();
        let watch = line::retrying(s, None, || async {
            Ok(s.watch(&root, AddWatchMode::PersistentRecursive).await?)
        })
        .await?;
        let initial = line::retrying(s, None, || load(s, &root)).await?;
        let shared = Arc::new(Shared {
            nodes: RwLock::new(initial),
            events: broadcast::channel(EVENT_CAPACITY).0,
        });
        let (state_tx, state) = watch::channel(CacheState::Live);
        let (settles, settle_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(follow(
            session.clone(),
            root.clone(),
            watch,
            shared.clone(),
            state_tx,
            settle_rx,
        ));
        Ok(TreeCache {
            root,
            shared,
            state,
            settles,
            task,
        })
    }

    /// Returns once every watch event this client has received so far is applied to the
    /// cache. A session's watch events arrive before the replies to its later requests, so
    /// after `settle` the cache shows every change this session made (and every change whose
    /// event had arrived) — a cheap way to read one's own writes from the cache; it sends no
    /// request. Returns at once if the cache has stopped.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.settles.send(tx).is_ok() {
            let _ = rx.await;
        }
    }

    /// The root path.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Live, suspended (connection lost: maybe stale) or ended.
    pub fn state(&self) -> CacheState {
        *self.state.borrow()
    }

    /// Resolves when the cache has stopped (the session ended), with the session's final state.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn ended(&self) -> SessionState {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| matches!(s, CacheState::Ended(_))).await {
            Ok(s) => match *s {
                CacheState::Ended(st) => st,
                _ => SessionState::Closed,
            },
            Err(_) => SessionState::Closed,
        }
    }

    /// The cached node at `path`.
    pub fn get(&self, path: &str) -> Option<CachedNode> {
        self.shared.read().get(path).cloned()
    }

    /// The names of the cached children of `path`, sorted.
    pub fn children(&self, path: &str) -> Vec<String> {
        let nodes = self.shared.read();
        nodes
            .range(descendants_from(path)..)
            .skip_while(|(p, _)| p.as_str() == path)
            .take_while(|(p, _)| is_below(p, path))
            .filter(|(p, _)| path::parent(p) == Some(path))
            .map(|(p, _)| path::name(p).to_string())
            .collect()
    }

    /// The number of cached nodes.
    pub fn len(&self) -> usize {
        self.shared.read().len()
    }

    /// True if nothing is cached (the root does not exist).
    pub fn is_empty(&self) -> bool {
        self.shared.read().is_empty()
    }

    /// A copy of the whole cache, by path.
    pub fn snapshot(&self) -> BTreeMap<String, CachedNode> {
        self.shared.read().clone()
    }

    /// A follower of the changes from now on.
    pub fn subscribe(&self) -> CacheEvents {
        CacheEvents {
            rx: self.shared.events.subscribe(),
        }
    }

    /// A snapshot and the events after it, with nothing missed or repeated between them.
    pub fn snapshot_and_subscribe(&self) -> (BTreeMap<String, CachedNode>, CacheEvents) {
        let nodes = self.shared.read();
        let rx = self.shared.events.subscribe();
        (nodes.clone(), CacheEvents { rx })
    }

    /// Stops following (the watch is unregistered); the contents stay as they are.
    pub fn close(&self) {
        self.task.abort();
    }
}

impl Drop for TreeCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads the subtree at `root`, breadth first. Nodes that vanish during the read are skipped
/// (their deletion is an event still to come, or already applied).
async fn load(s: &dyn Session, root: &str) -> Result<Nodes> {
    let mut nodes = Nodes::new();
    load_into(s, root, &mut nodes).await?;
    Ok(nodes)
}

async fn load_into(s: &dyn Session, root: &str, nodes: &mut Nodes) -> Result<()> {
    let mut queue = VecDeque::from([root.to_string()]);
    while let Some(p) = queue.pop_front() {
        let (data, stat) = match s.get_data(&p).await {
            Ok(v) => v,
            Err(CoordError::NoNode) => continue,
            Err(e) => return Err(e.into()),
        };
        // A child created after this read is announced by an event, so a leaf need not be listed.
        if stat.num_children > 0 {
            match s.get_children(&p).await {
                Ok(mut children) => {
                    children.sort();
                    queue.extend(children.iter().map(|c| path::join(&p, c)));
                }
                Err(CoordError::NoNode) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        nodes.insert(p, CachedNode { data, stat });
    }
    Ok(())
}

/// What the follower task does next.
enum Step {
    Event(WatchedEvent),
    Session(SessionState),
    StreamEnded,
    /// A [`TreeCache::settle`] caller, answered once no event is waiting.
    Settle(oneshot::Sender<()>),
}

async fn follow(
    session: Arc<dyn Session>,
    root: String,
    mut watch: PersistentWatch,
    shared: Arc<Shared>,
    state: watch::Sender<CacheState>,
    mut settles: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let s = session.as_ref();
    let mut states = s.session_events();
    let mut disconnected = false;
    // The watch stream reported `Disconnected` and not yet `Connected` (backends whose watches
    // carry session events: ZooKeeper).
    let mut watch_cut = false;
    let end = |final_state: SessionState| {
        state.send_replace(CacheState::Ended(final_state));
        shared.send(CacheEvent::Ended(final_state));
    };
    loop {
        // Biased: a settle request is answered only when no event or state change is ready,
        // so every event received before it has been applied.
        let step = tokio::select! {
            biased;
            e = watch.next() => e.map_or(Step::StreamEnded, Step::Event),
            st = states.changed() => Step::Session(st),
            Some(done) = settles.recv() => Step::Settle(done),
        };
        let session_state = match step {
            Step::Settle(done) => {
                let _ = done.send(());
                None
            }
            Step::StreamEnded => {
                let st = s.state();
                return end(if st.is_terminal() {
                    st
                } else {
                    SessionState::Closed
                });
            }
            // While the watch stream itself reports a cut, its own `Connected` is what reloads:
            // the backend passes it on once the watch is in place again, and a reload before
            // that could miss a change made in between.
            Step::Session(SessionState::Connected) if watch_cut => None,
            Step::Session(st) => Some(st),
            Step::Event(e) if e.event_type == EventType::Session => {
                match e.state {
                    SessionState::Disconnected => watch_cut = true,
                    SessionState::Connected if watch_cut => {
                        watch_cut = false;
                        disconnected = true; // reload, even if the session's stream did already
                    }
                    _ => {}
                }
                Some(e.state)
            }
            Step::Event(e) => {
                if let Err(err) = apply(s, &shared, &e).await {
                    if let Some(st) = fatal_state(s, &err) {
                        return end(st);
                    }
                    // A read cut by a connection loss: the reload after reconnecting covers it.
                    disconnected = true;
                    state.send_replace(CacheState::Suspended);
                    match s.state() {
                        SessionState::Connected if watch_cut => None,
                        st => Some(st),
                    }
                } else {
                    None
                }
            }
        };
        let Some(st) = session_state else { continue };
        tracing::debug!(%root, state = ?st, disconnected, "tree cache: session state");
        match st {
            SessionState::Disconnected => {
                disconnected = true;
                state.send_replace(CacheState::Suspended);
            }
            SessionState::Connected if disconnected => {
                // Events may have been lost: reload and report the differences.
                match line::retrying(s, None, || load(s, &root)).await {
                    Ok(fresh) => {
                        disconnected = false;
                        let nodes = fresh.len();
                        let changes = shared.replace(fresh);
                        tracing::debug!(%root, nodes, changes, "tree cache: reloaded");
                        // Live before `Resynced`, so a subscriber that sees it sees Live.
                        state.send_replace(CacheState::Live);
                        shared.send(CacheEvent::Resynced);
                    }
                    Err(err) => {
                        if let Some(st) = fatal_state(s, &err) {
                            return end(st);
                        }
                        tracing::warn!(%root, error = %err, "tree cache reload failed; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
            SessionState::Connected => {}
            terminal => return end(terminal),
        }
    }
}

/// The session's final state if `err` means the session is gone.
fn fatal_state(s: &dyn Session, err: &Error) -> Option<SessionState> {
    if !err.is_session_fatal() {
        return None;
    }
    let st = s.state();
    Some(if st.is_terminal() {
        st
    } else {
        SessionState::Expired
    })
}

/// Applies one node event.
async fn apply(s: &dyn Session, shared: &Shared, event: &WatchedEvent) -> Result<()> {
    match event.event_type {
        EventType::NodeDeleted => shared.remove(&event.path),
        EventType::NodeDataChanged => match s.get_data(&event.path).await {
            Ok((data, stat)) => shared.offer(&event.path, CachedNode { data, stat }),
            Err(CoordError::NoNode) => {}
            Err(e) => return Err(e.into()),
        },
        EventType::NodeCreated => {
            // The node and whatever was created below it before this read.
            let mut fresh = Nodes::new();
            load_into(s, &event.path, &mut fresh).await?;
            for (p, node) in fresh {
                shared.offer(&p, node);
            }
        }
        EventType::NodeChildrenChanged | EventType::Session => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(data: &str, czxid: i64, mzxid: i64, version: i32) -> CachedNode {
        CachedNode {
            data: data.as_bytes().to_vec(),
            stat: Stat {
                czxid,
                mzxid,
                version,
                ..Stat::default()
            },
        }
    }

    fn tree(entries: &[(&str, CachedNode)]) -> Nodes {
        entries
            .iter()
            .map(|(p, n)| (p.to_string(), n.clone()))
            .collect()
    }

    #[test]
    fn diff_reports_removed_deepest_first_then_added_and_updated() {
        let old = tree(&[
            ("/r", node("", 1, 1, 0)),
            ("/r/a", node("a", 2, 2, 0)),
            ("/r/gone", node("", 3, 3, 0)),
            ("/r/gone/deep", node("", 4, 4, 0)),
            ("/r/same", node("s", 5, 5, 0)),
        ]);
        let new = tree(&[
            ("/r", node("", 1, 1, 0)),
            ("/r/a", node("a2", 2, 9, 1)),
            ("/r/new", node("n", 10, 10, 0)),
            ("/r/same", node("s", 5, 5, 0)),
        ]);
        assert_eq!(
            diff(&old, &new),
            vec![
                CacheEvent::Removed {
                    path: "/r/gone/deep".into()
                },
                CacheEvent::Removed {
                    path: "/r/gone".into()
                },
                CacheEvent::Updated {
                    path: "/r/a".into(),
                    node: node("a2", 2, 9, 1)
                },
                CacheEvent::Added {
                    path: "/r/new".into(),
                    node: node("n", 10, 10, 0)
                },
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn diff_of_a_recreated_node_is_an_update() {
        let old = tree(&[("/r", node("x", 1, 1, 0))]);
        let new = tree(&[("/r", node("x", 7, 7, 0))]);
        assert_eq!(
            diff(&old, &new),
            vec![CacheEvent::Updated {
                path: "/r".into(),
                node: node("x", 7, 7, 0)
            }]
        );
    }

    #[test]
    fn newer_reads_win_and_stale_reads_are_ignored() {
        let cached = node("", 5, 8, 2).stat;
        assert!(is_newer(&node("", 5, 9, 3).stat, &cached));
        assert!(!is_newer(&node("", 5, 8, 2).stat, &cached));
        assert!(!is_newer(&node("", 5, 7, 1).stat, &cached));
        assert!(is_newer(&node("", 6, 6, 0).stat, &cached), "re-created");
        assert!(
            !is_newer(&node("", 4, 9, 9).stat, &cached),
            "older incarnation"
        );
    }

    #[test]
    fn offer_and_remove_send_events() {
        let shared = Shared {
            nodes: RwLock::new(Nodes::new()),
            events: broadcast::channel(16).0,
        };
        let mut rx = shared.events.subscribe();
        shared.offer("/r", node("", 1, 1, 0));
        shared.offer("/r/a", node("a", 2, 2, 0));
        shared.offer("/r/a", node("a", 2, 2, 0));
        shared.offer("/r/a", node("b", 2, 3, 1));
        shared.offer("/r/ab", node("", 4, 4, 0));
        shared.offer("/r/a/x", node("", 5, 5, 0));
        shared.remove("/r/a");
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        let kinds: Vec<String> = got
            .iter()
            .map(|e| match e {
                CacheEvent::Added { path, .. } => format!("+{path}"),
                CacheEvent::Updated { path, .. } => format!("~{path}"),
                CacheEvent::Removed { path } => format!("-{path}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "+/r", "+/r/a", "~/r/a", "+/r/ab", "+/r/a/x", "-/r/a/x", "-/r/a"
            ]
        );
        let left: Vec<String> = shared.read().keys().cloned().collect();
        assert_eq!(left, ["/r", "/r/ab"]);
    }

    #[test]
    fn below_is_strict_and_segment_aware() {
        assert!(is_below("/a/b", "/a"));
        assert!(!is_below("/a", "/a"));
        assert!(!is_below("/ab", "/a"));
        assert!(is_below("/a", "/"));
        assert!(!is_below("/", "/"));
    }
}
