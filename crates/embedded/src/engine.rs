//! The engine: recovery, the apply stage, the group-commit sync stage, and the ticker that
//! expires sessions and reaps containers and TTL nodes.
//!
//! ```text
//!  sessions ──requests──▶ apply stage ──batches──▶ sync thread ──▶ watch events, replies
//!                         (validate, apply to the     (write the records, one fdatasync
//!                          tree, frame the records)    for everything queued, publish)
//! ```
//! The apply stage runs on the caller's thread when it is free and nothing is queued, and
//! otherwise on the apply thread, which takes whatever has queued as one batch (and serializes
//! snapshots, so a caller never waits for one). It holds the tree's write lock only while
//! applying; readers run concurrently. A reader that saw state newer than what is durable
//! waits for the sync stage before answering, so nobody ever observes a change that a crash
//! could take back; replies (errors included) and watch events likewise leave only after the
//! fsync that covers them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medkeeper_coord::{
    Acl, CreateMode, Error, Id, MultiError, Op, Perms, SessionState, Stat, Zxid, path,
};
use tokio::sync::{oneshot, watch};

use crate::acl;
use crate::codec::Dec;
use crate::log::{self, DirLock, LogWriter};
use crate::sync_stats::SyncStats;
use crate::tree::{CONTAINER_OWNER, Change, DataTree, OwnerKind, TTL_MASK, Undo, owner_kind};
use crate::txn::{Record, Txn};
use crate::watches::{Delivery, WatchTable};

/// How the engine is set up. `EngineConfig::new(dir)` gives ZooKeeper's defaults.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The data directory (created if missing).
    pub dir: PathBuf,
    /// ZooKeeper's `tickTime`: session timeouts are granted within `[2, 20]` ticks unless
    /// overridden below. Default 2 s.
    pub tick: Duration,
    /// Smallest session timeout granted (default `2 * tick`).
    pub min_session_timeout: Option<Duration>,
    /// Largest session timeout granted (default `20 * tick`).
    pub max_session_timeout: Option<Duration>,
    /// Largest node data accepted (ZooKeeper's `jute.maxbuffer`). Default 1 MiB.
    pub max_data_len: usize,
    /// Take a snapshot after this many logged transactions (ZooKeeper's `snapCount`), or
    /// after half as many transactions as the tree has nodes, whichever is more. Writing a
    /// snapshot costs time in proportion to the tree, and writers wait while the tree is
    /// serialized; scaling the interval with the tree keeps that cost at most two nodes per
    /// transaction however large the tree grows, while the log a restart replays stays
    /// shorter than the snapshot it starts from. Default 100,000.
    pub snapshot_every: u64,
    /// How often empty containers and expired TTL nodes are reaped
    /// (`znode.container.checkIntervalMs`). Default 60 s.
    pub reap_interval: Duration,
    /// Size each log segment is preallocated to. Default 64 MiB.
    pub segment_size: u64,
    /// Where the sync stage records its fsync histograms. Default (`None`): a fresh
    /// [`SyncStats`] for this engine. A process that opens engines one after another (a new
    /// one per session) passes the same one to each, so its figures only ever grow.
    pub sync_stats: Option<Arc<SyncStats>>,
}

impl EngineConfig {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EngineConfig {
            dir: dir.into(),
            tick: Duration::from_secs(2),
            min_session_timeout: None,
            max_session_timeout: None,
            max_data_len: 1024 * 1024,
            snapshot_every: 100_000,
            reap_interval: Duration::from_secs(60),
            segment_size: 64 * 1024 * 1024,
            sync_stats: None,
        }
    }

    pub(crate) fn session_bounds(&self) -> (Duration, Duration) {
        (
            self.min_session_timeout.unwrap_or(self.tick * 2),
            self.max_session_timeout.unwrap_or(self.tick * 20),
        )
    }
}

/// Why an engine could not open its data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or engine) holds the directory.
    #[error("{0}")]
    Locked(String),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The files on disk are not a state this engine can recover.
    #[error("corrupt data directory: {0}")]
    Corrupt(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> OpenError {
    let context = context.into();
    move |source| OpenError::Io { context, source }
}

/// Counters the engine keeps (for benchmarks and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Zxid of the last applied change.
    pub zxid: Zxid,
    /// Zxid of the last durable change.
    pub durable_zxid: Zxid,
    /// Number of znodes, including `/` and `/zookeeper`'s.
    pub node_count: usize,
    /// Transactions written to the log since the engine opened.
    pub txns_logged: u64,
    /// fdatasync calls since the engine opened (their durations and group sizes:
    /// [`Engine::sync_stats`]).
    pub fsyncs: u64,
    /// Snapshots written since the engine opened.
    pub snapshots: u64,
    /// Open sessions.
    pub sessions: usize,
    /// Registered watches.
    pub watches: usize,
}

/// What happened when the engine opened its directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Zxid of the snapshot loaded, if any.
    pub snapshot_zxid: Option<Zxid>,
    /// Log records replayed after it.
    pub replayed: u64,
    /// A torn or corrupt log tail that was discarded (never acknowledged), if any.
    pub discarded_tail: Option<String>,
    /// Sessions of the previous process whose ephemeral nodes were deleted.
    pub stale_sessions: usize,
    /// Time the recovery took.
    pub duration: Duration,
}

/// A session as the engine tracks it.
pub(crate) struct SessionShared {
    pub(crate) id: i64,
    pub(crate) timeout: Duration,
    pub(crate) last_heard: AtomicU64,
    /// 0 = open, else the terminal state code.
    ended: AtomicU8,
    pub(crate) state_tx: watch::Sender<SessionState>,
    pub(crate) auth: Mutex<Arc<[Id]>>,
}

impl SessionShared {
    pub(crate) fn ended(&self) -> Option<SessionState> {
        match self.ended.load(Ordering::Acquire) {
            0 => None,
            1 => Some(SessionState::Expired),
            3 => Some(SessionState::AuthFailed),
            _ => Some(SessionState::Closed),
        }
    }

    fn end(&self, state: SessionState) -> bool {
        let code = match state {
            SessionState::Expired => 1,
            SessionState::AuthFailed => 3,
            _ => 2,
        };
        self.ended
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The session's identities (its address and every credential it added).
    pub(crate) fn ids(&self) -> Arc<[Id]> {
        self.auth.lock().expect("auth lock").clone()
    }
}

/// One requested change inside a write request.
pub(crate) enum WriteOp {
    Op(Op),
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
}

/// The outcome of one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Created(String, Stat),
    Deleted,
    Set(Stat),
    Checked,
}

type WriteReply = oneshot::Sender<Result<Vec<Outcome>, MultiError>>;

pub(crate) enum Request {
    Write {
        session: Arc<SessionShared>,
        ops: Vec<WriteOp>,
        /// A multi reports the failing index; a single operation does too (index 0).
        reply: WriteReply,
    },
    CloseSession {
        session: Arc<SessionShared>,
        state: SessionState,
        reply: Option<oneshot::Sender<()>>,
    },
    Reap {
        path: String,
    },
    /// Take a snapshot if one is due (sent by a request applied on its caller's thread, so that
    /// the serialization runs here rather than on the caller's).
    Snapshot,
}

enum Reply {
    Write(WriteReply, Result<Vec<Outcome>, MultiError>),
    Closed(oneshot::Sender<()>),
}

struct Batch {
    zxid: Zxid,
    /// The batch's framed log records, written by the sync stage.
    records: Vec<u8>,
    /// Start a new log segment at this zxid before writing `records` (after a snapshot).
    roll: Option<Zxid>,
    /// How many transactions `records` holds.
    txns: u64,
    deliveries: Vec<Delivery>,
    ended: Vec<(Arc<SessionShared>, SessionState)>,
    replies: Vec<Reply>,
}

#[derive(Default)]
struct SyncQueue {
    batches: Vec<Batch>,
    shutdown: bool,
    /// The sync thread is waiting for batches (only then does a new batch wake it).
    idle: bool,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) tree: RwLock<DataTree>,
    pub(crate) watches: Mutex<WatchTable>,
    requests: Mutex<Option<mpsc::Sender<Request>>>,
    /// The apply stage's state; whoever applies (the apply thread, or a caller) holds it.
    applier: Mutex<Applier>,
    /// Requests sent to the apply thread and not yet applied. While any are, every request
    /// goes the same way (so each session's requests stay in the order it sent them).
    queued: AtomicU64,
    /// Set (under `applier`) when the engine stops: nothing is applied after it.
    closed: AtomicBool,
    pub(crate) durable: AtomicI64,
    durable_tx: watch::Sender<Zxid>,
    pub(crate) failed: AtomicBool,
    pub(crate) sessions: Mutex<HashMap<i64, Arc<SessionShared>>>,
    next_session: AtomicI64,
    started: Instant,
    sync_queue: Mutex<SyncQueue>,
    sync_cv: Condvar,
    ticker: (Mutex<bool>, Condvar),
    txns_logged: AtomicU64,
    fsyncs: AtomicU64,
    snapshots: AtomicU64,
    sync_stats: Arc<SyncStats>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub(crate) fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Submits a request: applied at once on the caller's thread when the apply stage is free
    /// and nothing is queued before it, otherwise queued for the apply thread. Either way the
    /// reply comes from the sync stage once the request is durable. Applying on the caller's
    /// thread saves waking the apply thread, a round trip that dominates a write's latency
    /// on a small machine; `try_lock` keeps a caller (an async runtime's thread) from ever
    /// waiting on a long batch or a snapshot's serialization.
    pub(crate) fn send(&self, req: Request) -> Result<(), Error> {
        if self.failed.load(Ordering::Acquire) {
            return Err(Error::SystemError);
        }
        if self.queued.load(Ordering::Acquire) == 0 {
            let mut a = match self.applier.try_lock() {
                Ok(a) => a,
                Err(std::sync::TryLockError::WouldBlock) => return self.enqueue(req),
                // An apply panicked: the tree may be half-changed, nothing more is applied.
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    self.failed.store(true, Ordering::Release);
                    return Err(Error::SystemError);
                }
            };
            if self.queued.load(Ordering::Acquire) != 0 {
                drop(a);
                return self.enqueue(req);
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(Error::ClientClosed);
            }
            if a.process(self, vec![req]) {
                drop(a);
                // A snapshot is due: the apply thread serializes it.
                let _ = self.enqueue(Request::Snapshot);
            }
            return Ok(());
        }
        self.enqueue(req)
    }

    fn enqueue(&self, req: Request) -> Result<(), Error> {
        match &*self.requests.lock().expect("requests lock") {
            Some(tx) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                tx.send(req).map_err(|_| {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                    Error::ClientClosed
                })
            }
            None => Err(Error::ClientClosed),
        }
    }

    /// Waits until everything up to `zxid` is durable.
    pub(crate) async fn wait_durable(&self, zxid: Zxid) -> Result<(), Error> {
        if self.durable.load(Ordering::Acquire) >= zxid {
            return Ok(());
        }
        let mut rx = self.durable_tx.subscribe();
        let ok = rx
            .wait_for(|d| *d >= zxid || self.failed.load(Ordering::Acquire))
            .await
            .is_ok();
        if ok && self.durable.load(Ordering::Acquire) >= zxid {
            Ok(())
        } else {
            Err(Error::SystemError)
        }
    }

    pub(crate) fn new_session(&self, requested: Duration) -> Arc<SessionShared> {
        let (min, max) = self.config.session_bounds();
        let timeout = requested.clamp(min, max);
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (state_tx, _) = watch::channel(SessionState::Connected);
        let s = Arc::new(SessionShared {
            id,
            timeout,
            last_heard: AtomicU64::new(self.elapsed_ms()),
            ended: AtomicU8::new(0),
            state_tx,
            auth: Mutex::new(Arc::from(vec![Id::new("ip", "127.0.0.1")])),
        });
        self.sessions
            .lock()
            .expect("sessions lock")
            .insert(id, s.clone());
        s
    }

    pub(crate) fn stats(&self) -> EngineStats {
        let tree = self.tree.read().expect("tree lock");
        EngineStats {
            zxid: tree.zxid,
            durable_zxid: self.durable.load(Ordering::Acquire),
            node_count: tree.node_count,
            txns_logged: self.txns_logged.load(Ordering::Relaxed),
            fsyncs: self.fsyncs.load(Ordering::Relaxed),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            sessions: self.sessions.lock().expect("sessions lock").len(),
            watches: self.watches.lock().expect("watch lock").len(),
        }
    }
}

/// The embedded coordination engine: one durable, in-process, single-node ZooKeeper.
/// Open it once per data directory; open sessions on it with [`Engine::connect`].
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    _lock: DirLock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.config.dir)
            .finish()
    }
}

impl Engine {
    /// The process holding the data directory `dir` now, by the pid its lock file names
    /// (`"unknown"` if it names none); `None` if no engine holds it. Takes no lock and creates
    /// nothing: for a server to refuse to start — before it listens or opens a store — where
    /// [`Engine::open`] would fail with [`OpenError::Locked`]. An engine of this process that
    /// is still closing holds it too (its pid is then [`std::process::id`]).
    pub fn holder(dir: &std::path::Path) -> Option<String> {
        DirLock::holder(dir)
    }

    /// Opens (or creates) the data directory, recovers its state, deletes the ephemeral nodes
    /// left by the previous process, and starts the engine's threads.
    ///
    /// # Errors
    /// [`OpenError::Locked`] if another process holds the directory (the message names its pid);
    /// [`OpenError::Corrupt`] if no snapshot verifies where one is needed, or the log is
    /// inconsistent before its tail; [`OpenError::Io`] for file system failures.
    pub fn open(config: EngineConfig) -> Result<Engine, OpenError> {
        let started = Instant::now();
        let dir = config.dir.clone();
        crate::log::create_dir(&dir).map_err(io_err(format!("create {}", dir.display())))?;
        let lock = DirLock::acquire(&dir).map_err(OpenError::Locked)?;
        let mut report = RecoveryReport::default();
        let (mut tree, snapshot_zxid) = load_snapshot(&dir, &mut report)?;
        let mut writer = replay_log(&dir, &config, &mut tree, snapshot_zxid, &mut report)?;

        // Sessions of the previous process are dead: delete their ephemerals, durably.
        let stale: Vec<i64> = tree.ephemerals.keys().copied().collect();
        report.stale_sessions = stale.len();
        if !stale.is_empty() {
            let mut buf = Vec::new();
            let time = now_ms();
            for session in stale {
                let zxid = tree.zxid + 1;
                let txn = Txn::CloseSession { session };
                tree.apply(&txn, zxid, time, &mut Vec::new(), &mut Vec::new())
                    .map_err(|e| OpenError::Corrupt(e.0))?;
                log::frame(&Record { zxid, time, txn }, &mut buf);
            }
            writer.append(&buf).map_err(io_err("append to log"))?;
            writer.file().sync_data().map_err(io_err("sync log"))?;
        }
        report.duration = started.elapsed();

        let zxid = tree.zxid;
        let sync_stats = config.sync_stats.clone().unwrap_or_default();
        let (tx, rx) = mpsc::channel();
        let (durable_tx, _) = watch::channel(zxid);
        let inner = Arc::new(Inner {
            config,
            tree: RwLock::new(tree),
            watches: Mutex::new(WatchTable::default()),
            requests: Mutex::new(Some(tx)),
            applier: Mutex::new(Applier {
                roll: None,
                since_snapshot: 0,
                snapshot_running: Arc::new(AtomicBool::new(false)),
            }),
            queued: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            durable: AtomicI64::new(zxid),
            durable_tx,
            failed: AtomicBool::new(false),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicI64::new(now_ms() << 16),
            started: Instant::now(),
            sync_queue: Mutex::new(SyncQueue::default()),
            sync_cv: Condvar::new(),
            ticker: (Mutex::new(false), Condvar::new()),
            txns_logged: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            snapshots: AtomicU64::new(0),
            sync_stats,
        });
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(io_err("spawn engine thread"))
        };
        let i = inner.clone();
        threads.push(spawn("mk-apply", Box::new(move || apply_loop(i, rx)))?);
        let i = inner.clone();
        threads.push(spawn("mk-sync", Box::new(move || sync_loop(i, writer)))?);
        let i = inner.clone();
        threads.push(spawn("mk-ticker", Box::new(move || ticker_loop(i)))?);
        Ok(Engine {
            inner,
            threads: Mutex::new(threads),
            recovery: report,
            _lock: lock,
        })
    }

    /// What recovery found when this engine opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.inner.stats()
    }

    /// The sync stage's histograms: each fdatasync's duration and how many transactions it
    /// made durable (cheap to read; see [`SyncStats`]).
    pub fn sync_stats(&self) -> Arc<SyncStats> {
        self.inner.sync_stats.clone()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.config.dir
    }

    /// Expires session `id` now, exactly as if its client had stopped heartbeating: its
    /// ephemerals are deleted and its watches get an `Expired` session event. Returns once the
    /// expiry is durable. Unknown or ended sessions are ignored.
    pub async fn expire_session(&self, id: medkeeper_coord::SessionId) {
        let session = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&id.0)
            .cloned();
        if let Some(session) = session {
            let (tx, rx) = oneshot::channel();
            if self
                .inner
                .send(Request::CloseSession {
                    session,
                    state: SessionState::Expired,
                    reply: Some(tx),
                })
                .is_ok()
            {
                let _ = rx.await;
            }
        }
    }

    /// Stops the engine: pending requests are finished and made durable, the threads exit,
    /// and open sessions see `Closed`. Their ephemerals are deleted at the next open.
    pub fn shutdown(&self) {
        {
            let _a = self
                .inner
                .applier
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            self.inner.closed.store(true, Ordering::Release);
        }
        self.inner.requests.lock().expect("requests lock").take();
        {
            let (m, cv) = &self.inner.ticker;
            *m.lock().expect("ticker lock") = true;
            cv.notify_all();
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
        let sessions: Vec<_> = self
            .inner
            .sessions
            .lock()
            .expect("sessions lock")
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in sessions {
            s.end(SessionState::Closed);
            s.state_tx.send_replace(SessionState::Closed);
        }
        self.inner.failed.store(true, Ordering::Release);
        self.inner.durable_tx.send_modify(|_| {});
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn load_snapshot(
    dir: &Path,
    report: &mut RecoveryReport,
) -> Result<(DataTree, Option<Zxid>), OpenError> {
    let snaps = log::list(dir, "snapshot.").map_err(io_err(format!("list {}", dir.display())))?;
    let mut last_err = None;
    for (zxid, p) in snaps.iter().rev() {
        match log::read_snapshot(p) {
            Ok(payload) => match DataTree::read_snapshot(&mut Dec::new(&payload)) {
                Ok(tree) if tree.zxid == *zxid => {
                    report.snapshot_zxid = Some(*zxid);
                    return Ok((tree, Some(*zxid)));
                }
                _ => last_err = Some(format!("{} does not decode", p.display())),
            },
            Err(e) => last_err = Some(e.to_string()),
        }
        tracing::warn!(snapshot = %p.display(), "skipping unreadable snapshot");
    }
    if let Some(e) = last_err {
        // A snapshot existed but none verifies: older log segments were pruned, so the state
        // cannot be rebuilt from the log alone.
        let has_base = log::list(dir, "log.")
            .map_err(io_err("list log"))?
            .first()
            .is_some_and(|(z, _)| *z <= 1);
        if !has_base {
            return Err(OpenError::Corrupt(e));
        }
    }
    Ok((DataTree::new(), None))
}

fn replay_log(
    dir: &Path,
    config: &EngineConfig,
    tree: &mut DataTree,
    snapshot_zxid: Option<Zxid>,
    report: &mut RecoveryReport,
) -> Result<LogWriter, OpenError> {
    let segments = log::list(dir, "log.").map_err(io_err("list log"))?;
    let mut last: Option<(Zxid, PathBuf, u64)> = None;
    // The newest zxid the log holds (in the segment `last`).
    let mut log_end = 0;
    let base = snapshot_zxid.unwrap_or(0);
    for (idx, (start, p)) in segments.iter().enumerate() {
        // Segments wholly covered by the snapshot are skipped.
        if let Some((next_start, _)) = segments.get(idx + 1)
            && *next_start <= base + 1
        {
            continue;
        }
        let read = log::read_segment(p).map_err(io_err(format!("read {}", p.display())))?;
        let mut stop: Option<(u64, String)> = read.torn.clone().map(|why| (read.valid_end, why));
        log_end = 0;
        for (offset, rec) in &read.records {
            if rec.zxid <= tree.zxid {
                log_end = rec.zxid;
                continue;
            }
            if rec.zxid != tree.zxid + 1 {
                stop = Some((
                    *offset,
                    format!(
                        "record at offset {offset} of {} skips from zxid {:#x} to {:#x}",
                        p.display(),
                        tree.zxid,
                        rec.zxid
                    ),
                ));
                break;
            }
            tree.apply(
                &rec.txn,
                rec.zxid,
                rec.time,
                &mut Vec::new(),
                &mut Vec::new(),
            )
            .map_err(|e| OpenError::Corrupt(format!("{}: {}", p.display(), e.0)))?;
            report.replayed += 1;
            log_end = rec.zxid;
        }
        match stop {
            Some((offset, why)) => {
                // The log's valid prefix ends here: nothing after it was acknowledged.
                log::zero_from(p, offset).map_err(io_err(format!("truncate {}", p.display())))?;
                for (_, later) in &segments[idx + 1..] {
                    std::fs::remove_file(later)
                        .map_err(io_err(format!("remove {}", later.display())))?;
                }
                report.discarded_tail = Some(why);
                tracing::warn!(segment = %p.display(), offset, "discarded a torn log tail");
                last = Some((*start, p.clone(), offset));
                break;
            }
            None => last = Some((*start, p.clone(), read.valid_end)),
        }
    }
    match last {
        // New records go to the newest segment only if it starts after the snapshot and holds
        // its newest record. The sync stage starts the segment after a snapshot with the next
        // batch it writes: a stop (or a crash) after the snapshot and before that batch leaves
        // the newest segment starting at or before the snapshot, and a power loss can leave
        // the snapshot ahead of the log. The next records then start a segment of their own,
        // as they would have, so pruning the segments before the snapshot keeps them.
        Some((start, p, pos))
            if log_end >= tree.zxid && (snapshot_zxid.is_none() || start > base) =>
        {
            LogWriter::reopen(dir, &p, pos, config.segment_size).map_err(io_err("open log"))
        }
        _ => {
            LogWriter::create(dir, tree.zxid + 1, config.segment_size).map_err(io_err("create log"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The apply stage.

struct Applier {
    /// A snapshot was taken at this zxid - 1: the next batch starts a new log segment.
    roll: Option<Zxid>,
    since_snapshot: u64,
    snapshot_running: Arc<AtomicBool>,
}

fn apply_loop(inner: Arc<Inner>, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut reqs = vec![first];
        while reqs.len() < 4096 {
            match rx.try_recv() {
                Ok(r) => reqs.push(r),
                Err(_) => break,
            }
        }
        let n = reqs.len() as u64;
        match inner.applier.lock() {
            Ok(mut a) => {
                if a.process(&inner, reqs) {
                    a.snapshot(&inner);
                }
            }
            // An apply panicked (on a caller's thread): fail the engine; the dropped replies
            // answer these requests' callers with an error.
            Err(_) => inner.failed.store(true, Ordering::Release),
        }
        // Under the lock: a caller that then finds nothing queued applies after these.
        inner.queued.fetch_sub(n, Ordering::AcqRel);
    }
    let (m, cv) = (&inner.sync_queue, &inner.sync_cv);
    m.lock().expect("sync lock").shutdown = true;
    cv.notify_all();
}

impl Applier {
    /// Applies `reqs` as one batch and queues it for the sync stage. Returns whether a
    /// snapshot is due.
    fn process(&mut self, inner: &Inner, reqs: Vec<Request>) -> bool {
        let mut buf = Vec::new();
        let mut batch = Batch {
            zxid: 0,
            records: Vec::new(),
            roll: self.roll.take(),
            txns: 0,
            deliveries: Vec::new(),
            ended: Vec::new(),
            replies: Vec::new(),
        };
        let mut logged = 0u64;
        let nodes;
        let failed = inner.failed.load(Ordering::Acquire);
        {
            let mut tree = inner.tree.write().expect("tree lock");
            let mut watches = inner.watches.lock().expect("watch lock");
            let time = now_ms();
            for req in reqs {
                let mut changes = Vec::new();
                let record = match req {
                    Request::Write {
                        session,
                        ops,
                        reply,
                    } => {
                        let res = if failed {
                            Err(MultiError::whole(Error::SystemError))
                        } else {
                            write(&mut tree, &inner.config, &session, &ops, time, &mut changes)
                        };
                        let (res, rec) = match res {
                            Ok((outcomes, rec)) => (Ok(outcomes), rec),
                            Err(e) => (Err(e), None),
                        };
                        batch.replies.push(Reply::Write(reply, res));
                        rec
                    }
                    Request::CloseSession {
                        session,
                        state,
                        reply,
                    } => {
                        let mut rec = None;
                        if session.end(state) {
                            inner
                                .sessions
                                .lock()
                                .expect("sessions lock")
                                .remove(&session.id);
                            if tree.ephemerals.contains_key(&session.id) {
                                let zxid = tree.zxid + 1;
                                let txn = Txn::CloseSession {
                                    session: session.id,
                                };
                                if tree
                                    .apply(&txn, zxid, time, &mut changes, &mut Vec::new())
                                    .is_ok()
                                {
                                    rec = Some(Record { zxid, time, txn });
                                }
                            }
                            for c in &changes {
                                watches.trigger(c, &can_read(&tree, inner), &mut batch.deliveries);
                            }
                            changes.clear();
                            watches.session_ended(session.id, state, &mut batch.deliveries);
                            batch.ended.push((session, state));
                        }
                        if let Some(r) = reply {
                            batch.replies.push(Reply::Closed(r));
                        }
                        rec
                    }
                    Request::Reap { path } => reap(&mut tree, &path, time, &mut changes),
                    Request::Snapshot => None,
                };
                for c in &changes {
                    watches.trigger(c, &can_read(&tree, inner), &mut batch.deliveries);
                }
                if let Some(rec) = record {
                    log::frame(&rec, &mut buf);
                    logged += 1;
                }
            }
            batch.zxid = tree.zxid;
            nodes = tree.node_count as u64;
        }
        inner.txns_logged.fetch_add(logged, Ordering::Relaxed);
        self.since_snapshot += logged;
        batch.records = buf;
        batch.txns = logged;
        let idle = {
            let mut q = inner.sync_queue.lock().expect("sync lock");
            q.batches.push(batch);
            q.idle
        };
        if idle {
            inner.sync_cv.notify_one();
        }
        self.since_snapshot >= inner.config.snapshot_every.max(nodes / 2)
            && !self.snapshot_running.load(Ordering::Acquire)
    }

    /// Serializes the tree (readers continue; writers wait), has the sync stage start a new
    /// log segment after it, and writes the snapshot file in the background.
    fn snapshot(&mut self, inner: &Arc<Inner>) {
        let (zxid, payload) = {
            let tree = inner.tree.read().expect("tree lock");
            let mut e = crate::codec::Enc::default();
            tree.write_snapshot(&mut e);
            (tree.zxid, e.buf)
        };
        // Every record up to `zxid` is in a batch already queued: the next batch's records,
        // from `zxid + 1` on, go to the new segment.
        self.roll = Some(zxid + 1);
        self.since_snapshot = 0;
        self.snapshot_running.store(true, Ordering::Release);
        let running = self.snapshot_running.clone();
        let inner = inner.clone();
        let dir = inner.config.dir.clone();
        std::thread::spawn(move || {
            // The snapshot is never ahead of the durable log: a crash after it is written
            // must not bring back a write that was never acknowledged, and the older snapshot
            // kept beside it must find the log contiguous after it.
            while inner.durable.load(Ordering::Acquire) < zxid {
                if inner.failed.load(Ordering::Acquire) {
                    running.store(false, Ordering::Release);
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            match log::write_snapshot(&dir, zxid, &payload) {
                Ok(_) => {
                    inner.snapshots.fetch_add(1, Ordering::Relaxed);
                    prune(&dir);
                }
                Err(e) => tracing::error!(error = %e, "snapshot failed; the log is kept"),
            }
            running.store(false, Ordering::Release);
        });
    }
}

/// Whether a session may read a node with ACL `acl` (for filtering recursive watch events).
fn can_read<'a>(tree: &'a DataTree, inner: &'a Inner) -> impl Fn(i64, u32) -> bool + 'a {
    move |session, acl| {
        let list = tree.acls.get(acl);
        if list.iter().any(|a| {
            a.perms.intersects(Perms::READ) && a.id.scheme == "world" && a.id.id == "anyone"
        }) {
            return true;
        }
        let ids = inner
            .sessions
            .lock()
            .expect("sessions lock")
            .get(&session)
            .map(|s| s.ids());
        ids.is_some_and(|ids| acl::check(list, Perms::READ, &ids).is_ok())
    }
}

/// Keeps the two newest snapshots and the log segments needed to recover from the older one:
/// a segment goes only when the next one starts at or before the first record after that
/// snapshot (so it holds nothing newer); the newest segment always stays.
fn prune(dir: &Path) {
    let Ok(snaps) = log::list(dir, "snapshot.") else {
        return;
    };
    if snaps.len() < 2 {
        return;
    }
    let keep_from = snaps[snaps.len() - 2].0;
    for (z, p) in &snaps[..snaps.len() - 2] {
        let _ = z;
        let _ = std::fs::remove_file(p);
    }
    if let Ok(segs) = log::list(dir, "log.") {
        for pair in segs.windows(2) {
            if pair[1].0 <= keep_from + 1 {
                let _ = std::fs::remove_file(&pair[0].1);
            }
        }
    }
}

fn reap(tree: &mut DataTree, p: &str, time: i64, changes: &mut Vec<Change>) -> Option<Record> {
    let due = tree.reapable(time).into_iter().any(|(q, _)| q == p);
    if !due {
        return None;
    }
    let zxid = tree.zxid + 1;
    let txn = Txn::Delete {
        path: p.to_string(),
    };
    tree.apply(&txn, zxid, time, changes, &mut Vec::new())
        .ok()?;
    Some(Record { zxid, time, txn })
}

/// Validates and applies a write request (one op, a multi, or a set_acl) as one transaction.
fn write(
    tree: &mut DataTree,
    config: &EngineConfig,
    session: &SessionShared,
    ops: &[WriteOp],
    time: i64,
    changes: &mut Vec<Change>,
) -> Result<(Vec<Outcome>, Option<Record>), MultiError> {
    if let Some(state) = session.ended() {
        return Err(MultiError::whole(
            state.to_error().unwrap_or(Error::SessionExpired),
        ));
    }
    let ids = session.ids();
    let prev_zxid = tree.zxid;
    let zxid = prev_zxid + 1;
    let mut undo: Vec<Undo> = Vec::new();
    let mut txns = Vec::new();
    let mut outcomes = Vec::with_capacity(ops.len());
    let mut local_changes = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let prepared = prepare(tree, config, session.id, &ids, op);
        let txn = match prepared {
            Ok(t) => t,
            Err(e) => {
                tree.undo(undo);
                tree.zxid = prev_zxid;
                return Err(MultiError::at(i, e));
            }
        };
        match txn {
            None => outcomes.push(Outcome::Checked),
            Some(txn) => {
                if let Err(e) = tree.apply(&txn, zxid, time, &mut local_changes, &mut undo) {
                    tracing::error!(error = %e.0, "a validated transaction did not apply");
                    tree.undo(undo);
                    tree.zxid = prev_zxid;
                    return Err(MultiError::at(i, Error::SystemError));
                }
                outcomes.push(match (&txn, op) {
                    (Txn::Create { path, .. }, _) => Outcome::Created(
                        path.clone(),
                        tree.get(path).map(|n| n.stat()).unwrap_or_default(),
                    ),
                    (Txn::Delete { .. }, _) => Outcome::Deleted,
                    (Txn::SetData { path, .. } | Txn::SetAcl { path, .. }, _) => {
                        Outcome::Set(tree.get(path).map(|n| n.stat()).unwrap_or_default())
                    }
                    _ => Outcome::Checked,
                });
                txns.push(txn);
            }
        }
    }
    if txns.is_empty() {
        return Ok((outcomes, None));
    }
    changes.extend(local_changes);
    let txn = if txns.len() == 1 && ops.len() == 1 {
        txns.pop().expect("one")
    } else {
        Txn::Multi(txns)
    };
    Ok((outcomes, Some(Record { zxid, time, txn })))
}

fn version_matches(expected: i32, actual: i32) -> Result<(), Error> {
    if expected == -1 || expected == actual {
        Ok(())
    } else {
        Err(Error::BadVersion)
    }
}

/// Checks one operation against the current tree (as ZooKeeper's `PrepRequestProcessor`, in
/// its order of checks) and resolves it into a transaction (`None` for a passing check).
fn prepare(
    tree: &DataTree,
    config: &EngineConfig,
    session: i64,
    ids: &[Id],
    op: &WriteOp,
) -> Result<Option<Txn>, Error> {
    match op {
        WriteOp::Op(Op::Create {
            path: p,
            data,
            options,
        }) => {
            let mode = options.mode;
            options.validate()?;
            path::validate_path(p, mode.is_sequential())?;
            if data.len() > config.max_data_len {
                return Err(Error::BadArguments("data exceeds the maximum length"));
            }
            let acl = acl::fixup(&options.acls, ids)?;
            let parent_path = if p == "/" { Some("/") } else { path::parent(p) };
            let parent_path = parent_path.ok_or(Error::BadArguments("cannot create /"))?;
            let parent = tree.get(parent_path).ok_or(Error::NoNode)?;
            acl::check(tree.acl_of(parent), Perms::CREATE, ids)?;
            let full = if mode.is_sequential() {
                format!("{p}{}", path::sequence_suffix(parent.cversion))
            } else {
                p.clone()
            };
            if full == "/" {
                return Err(Error::NodeExists);
            }
            path::validate_path(&full, false)?;
            if parent.children.contains_key(path::name(&full)) {
                return Err(Error::NodeExists);
            }
            if let OwnerKind::Ephemeral(_) = owner_kind(parent.ephemeral_owner) {
                return Err(Error::NoChildrenForEphemerals);
            }
            let ephemeral_owner = match mode {
                CreateMode::Ephemeral | CreateMode::EphemeralSequential => session,
                CreateMode::Container => CONTAINER_OWNER,
                CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl => {
                    TTL_MASK | options.ttl.map(|t| t.as_millis() as i64).unwrap_or(0)
                }
                CreateMode::Persistent | CreateMode::PersistentSequential => 0,
            };
            Ok(Some(Txn::Create {
                path: full,
                data: data.clone(),
                acl,
                ephemeral_owner,
            }))
        }
        WriteOp::Op(Op::Delete { path: p, version }) => {
            path::validate_path(p, false)?;
            if p == "/" {
                return Err(Error::BadArguments("cannot delete /"));
            }
            let parent = tree
                .get(path::parent(p).unwrap_or("/"))
                .ok_or(Error::NoNode)?;
            acl::check(tree.acl_of(parent), Perms::DELETE, ids)?;
            let node = parent.children.get(path::name(p)).ok_or(Error::NoNode)?;
            version_matches(*version, node.version)?;
            if !node.children.is_empty() {
                return Err(Error::NotEmpty);
            }
            Ok(Some(Txn::Delete { path: p.clone() }))
        }
        WriteOp::Op(Op::SetData {
            path: p,
            data,
            version,
        }) => {
            path::validate_path(p, false)?;
            if data.len() > config.max_data_len {
                return Err(Error::BadArguments("data exceeds the maximum length"));
            }
            let node = tree.get(p).ok_or(Error::NoNode)?;
            acl::check(tree.acl_of(node), Perms::WRITE, ids)?;
            version_matches(*version, node.version)?;
            Ok(Some(Txn::SetData {
                path: p.clone(),
                data: data.clone(),
            }))
        }
        WriteOp::Op(Op::Check { path: p, version }) => {
            path::validate_path(p, false)?;
            let node = tree.get(p).ok_or(Error::NoNode)?;
            acl::check(tree.acl_of(node), Perms::READ, ids)?;
            version_matches(*version, node.version)?;
            Ok(None)
        }
        WriteOp::SetAcl {
            path: p,
            acl: list,
            version,
        } => {
            path::validate_path(p, false)?;
            let fixed = acl::fixup(list, ids)?;
            let node = tree.get(p).ok_or(Error::NoNode)?;
            acl::check(tree.acl_of(node), Perms::ADMIN, ids)?;
            version_matches(*version, node.aversion)?;
            Ok(Some(Txn::SetAcl {
                path: p.clone(),
                acl: fixed,
            }))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sync stage: writes the queued batches' records to the log, one fdatasync for all of
// them, then publish. Writing here rather than in the apply stage takes a write system call
// per batch off the apply thread (the engine's busiest) and makes it one per group of batches.

fn sync_loop(inner: Arc<Inner>, mut writer: LogWriter) {
    loop {
        let batches = {
            let mut q = inner.sync_queue.lock().expect("sync lock");
            while q.batches.is_empty() && !q.shutdown {
                q.idle = true;
                q = inner.sync_cv.wait(q).expect("sync lock");
            }
            q.idle = false;
            if q.batches.is_empty() {
                return;
            }
            std::mem::take(&mut q.batches)
        };
        let mut ok = !inner.failed.load(Ordering::Acquire);
        let synced = |took: Duration, txns: u64| {
            inner.fsyncs.fetch_add(1, Ordering::Relaxed);
            inner.sync_stats.observe(took, txns);
        };
        if ok && let Err(e) = write_batches(&mut writer, &batches, synced) {
            tracing::error!(error = %e, "cannot write the log; the engine stops accepting writes");
            inner.failed.store(true, Ordering::Release);
            ok = false;
        }
        let zxid = batches.last().map(|b| b.zxid).unwrap_or(0);
        // Watch events first: a read that returns the new state (it waits for `durable`) must
        // find its session's watch already fired, as ZooKeeper guarantees.
        let mut batches = batches;
        if ok {
            for b in &mut batches {
                for d in b.deliveries.drain(..) {
                    d.send();
                }
            }
            inner.durable.store(zxid, Ordering::Release);
        }
        inner.durable_tx.send_replace(zxid);
        for b in batches {
            for (s, state) in b.ended {
                s.state_tx.send_replace(state);
            }
            for r in b.replies {
                match r {
                    Reply::Write(tx, res) => {
                        let _ = tx.send(if ok {
                            res
                        } else {
                            Err(MultiError::whole(Error::SystemError))
                        });
                    }
                    Reply::Closed(tx) => {
                        let _ = tx.send(());
                    }
                }
            }
        }
    }
}

/// Writes the batches' records in order, starting new segments where snapshots were taken,
/// and fdatasyncs every segment written to, telling `synced` each fdatasync's duration and
/// how many transactions it made durable.
fn write_batches(
    writer: &mut LogWriter,
    batches: &[Batch],
    mut synced: impl FnMut(Duration, u64),
) -> std::io::Result<()> {
    // Transactions written to the current segment and not yet synced.
    let mut unsynced = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    let mut sync = |writer: &LogWriter, txns: u64| -> std::io::Result<()> {
        let start = Instant::now();
        writer.file().sync_data()?;
        synced(start.elapsed(), txns);
        Ok(())
    };
    for b in batches {
        if let Some(first) = b.roll {
            if !pending.is_empty() {
                writer.append(&pending)?;
                pending.clear();
            }
            if unsynced > 0 {
                sync(writer, unsynced)?;
                unsynced = 0;
            }
            writer.roll(first)?;
        }
        if !b.records.is_empty() {
            if pending.is_empty() {
                pending = b.records.clone();
            } else {
                pending.extend_from_slice(&b.records);
            }
            unsynced += b.txns;
        }
    }
    if !pending.is_empty() {
        writer.append(&pending)?;
    }
    if unsynced > 0 {
        sync(writer, unsynced)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The ticker: session expiry and reaping.

fn ticker_loop(inner: Arc<Inner>) {
    let (min, _) = inner.config.session_bounds();
    let period = (min / 4).clamp(Duration::from_millis(5), Duration::from_millis(500));
    let mut last_reap = Instant::now();
    loop {
        {
            let (m, cv) = &inner.ticker;
            let stop = m.lock().expect("ticker lock");
            let (stop, _) = cv.wait_timeout(stop, period).expect("ticker lock");
            if *stop {
                return;
            }
        }
        let now = inner.elapsed_ms();
        let expired: Vec<Arc<SessionShared>> = inner
            .sessions
            .lock()
            .expect("sessions lock")
            .values()
            .filter(|s| s.ended().is_none())
            .filter(|s| {
                now.saturating_sub(s.last_heard.load(Ordering::Relaxed))
                    > s.timeout.as_millis() as u64
            })
            .cloned()
            .collect();
        for session in expired {
            tracing::info!(session = %medkeeper_coord::SessionId(session.id), "session expired");
            let _ = inner.send(Request::CloseSession {
                session,
                state: SessionState::Expired,
                reply: None,
            });
        }
        if last_reap.elapsed() >= inner.config.reap_interval {
            last_reap = Instant::now();
            let due = inner.tree.read().expect("tree lock").reapable(now_ms());
            for (p, _) in due {
                let _ = inner.send(Request::Reap { path: p });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use medkeeper_coord::{CreateOptions, Session};

    use super::*;
    use crate::SessionOptions;

    fn batch(txns: u64, roll: Option<Zxid>) -> Batch {
        Batch {
            zxid: 0,
            records: vec![0; 32 * txns as usize],
            roll,
            txns,
            deliveries: Vec::new(),
            ended: Vec::new(),
            replies: Vec::new(),
        }
    }

    #[test]
    fn a_group_is_one_fdatasync_observed_with_its_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::create(dir.path(), 1, 1 << 16).unwrap();
        let mut seen = Vec::new();
        let group = [batch(2, None), batch(0, None), batch(3, None)];
        write_batches(&mut writer, &group, |_, n| seen.push(n)).unwrap();
        assert_eq!(seen, [5]);

        // A snapshot's roll: the old segment is synced before the new one starts.
        seen.clear();
        let group = [batch(1, None), batch(4, Some(100)), batch(2, None)];
        write_batches(&mut writer, &group, |_, n| seen.push(n)).unwrap();
        assert_eq!(seen, [1, 6]);

        // Nothing to log (failed writes, closes without ephemerals): no fdatasync.
        seen.clear();
        write_batches(&mut writer, &[batch(0, None)], |_, n| seen.push(n)).unwrap();
        assert!(seen.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_fdatasync_is_observed_with_its_duration_and_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Arc::new(SyncStats::default());
        let mut config = EngineConfig::new(dir.path());
        config.sync_stats = Some(shared.clone());
        let engine = Engine::open(config.clone()).unwrap();
        assert!(Arc::ptr_eq(&engine.sync_stats(), &shared));
        let s = Arc::new(engine.connect(SessionOptions::default()).await);
        let persistent = CreateOptions::new(CreateMode::Persistent);
        s.create("/g", b"", &persistent).await.unwrap();
        let mut writers = Vec::new();
        for w in 0..16 {
            let (s, o) = (s.clone(), persistent.clone());
            writers.push(tokio::spawn(async move {
                for i in 0..10 {
                    s.create(&format!("/g/{w}-{i}"), b"", &o).await.unwrap();
                }
            }));
        }
        for w in writers {
            w.await.unwrap();
        }
        let stats = engine.stats();
        let secs = shared.fsync_seconds();
        let txns = shared.fsync_transactions();
        assert_eq!(stats.txns_logged, 1 + 16 * 10);
        assert_eq!(secs.count, stats.fsyncs);
        assert!(secs.sum > 0.0);
        assert_eq!(txns.count, stats.fsyncs);
        assert_eq!(txns.sum, stats.txns_logged as f64);

        // The next engine of the process adds to the same figures.
        drop(s);
        engine.shutdown();
        drop(engine);
        let engine = Engine::open(config).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        s.create("/h", b"", &persistent).await.unwrap();
        assert_eq!(shared.fsync_transactions().count, stats.fsyncs + 1);
        assert_eq!(
            shared.fsync_transactions().sum,
            stats.txns_logged as f64 + 1.0
        );
    }
}
