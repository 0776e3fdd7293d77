//! # medkeeper-embedded: the embedded coordination engine
//!
//! An in-process, durable, single-node ZooKeeper: the default backend of medkeeper, so it runs
//! on a fresh machine with no JVM and no server. It implements the [`medkeeper_coord::Session`]
//! contract and passes the same conformance suite as real ZooKeeper.
//!
//! ## How it works
//! - **Tree in memory** ([`tree`](crate) module): every znode with ZooKeeper's stat fields;
//!   reads are served from it under a read lock.
//! - **Write-ahead log** (`log.<zxid>` segments): every change is a checksummed record,
//!   written and `fdatasync`ed before anyone sees it — the reply, a watch event, or another
//!   session's read. **Group commit**: requests are validated and applied (on the caller's
//!   thread when nothing is queued, else by the apply thread a batch at a time) while the sync
//!   thread writes and flushes the ones before them, so concurrent writers share one write
//!   and one fsync.
//!   [`EngineStats`] counts the fsyncs; [`SyncStats`] keeps each one's duration and group
//!   size (transactions made durable) as histograms, in atomic counters the sync thread
//!   alone updates.
//! - **Snapshots** every `snapshot_every` transactions (or, in a larger tree, every half as
//!   many transactions as it has nodes) bound restart time; the two newest are kept with the log
//!   needed after the older one.
//! - **Recovery** loads the newest snapshot that verifies, replays the contiguous, checksummed
//!   log after it, and discards a torn tail (never acknowledged). Zxids are contiguous and
//!   continue across restarts. Ephemeral nodes of the previous process are deleted at open.
//! - **Sessions** heartbeat from the runtime that opened them; a ticker thread expires silent
//!   ones, deletes their ephemerals and fires watches. It also reaps empty containers and
//!   expired TTL nodes as ZooKeeper's `ContainerManager` does.
//! - An exclusive lock on the data directory keeps a second process out, naming the holder.
//!
//! **Why our own log rather than an embedded store:** the semantics needed are exactly
//! ZooKeeper's transaction log plus snapshots (append-only, replay in zxid order, fuzzy-free
//! snapshots at a zxid), which is a few hundred lines with `crc32fast` as the only dependency;
//! a general-purpose key-value store would add write amplification and a second recovery
//! protocol without removing the need for zxid ordering or the watch pipeline.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use medkeeper_coord::{CreateMode, CreateOptions, Session};
//! use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
//! let engine = Engine::open(EngineConfig::new("/var/lib/medkeeper/coord"))?;
//! let session = engine.connect(SessionOptions::default()).await;
//! session.create("/medical", b"", &CreateOptions::new(CreateMode::Persistent)).await?;
//! session.close().await;
//! # Ok(()) }
//! ```

mod acl;
mod codec;
mod engine;
mod log;
mod session;
mod sync_stats;
mod tree;
mod txn;
mod watches;

pub use engine::{Engine, EngineConfig, EngineStats, OpenError, RecoveryReport};
pub use session::{EmbeddedSession, SessionOptions};
pub use sync_stats::{
    FSYNC_SECONDS_BUCKETS, FSYNC_TRANSACTIONS_BUCKETS, HistogramSnapshot, SyncStats,
};
