//! # medkeeper-recipes: coordination recipes on the medkeeper-coord API
//!
//! The building blocks of medkeeper's resource scheduling (seed §4.3), written once against
//! [`medkeeper_coord::Session`] and so running unchanged on the embedded engine and on a real
//! ZooKeeper ensemble. Apache Curator, kazoo and etcd's concurrency package are the anchors;
//! node layouts follow Curator's where one exists, so mixed fleets interoperate.
//!
//! | recipe | what it gives |
//! |---|---|
//! | [`Mutex`] | the fair lock of seed §4.3, Curator- and kazoo-compatible, with fencing |
//! | [`RwLock`] | Curator's read-write lock (`__READ__` / `__WRIT__`), FIFO-fair |
//! | [`Election`] | leader election (Curator `LeaderLatch` layout), leadership-lost signal |
//! | [`semaphore`] | leases on N identical units, each lease naming its unit |
//! | [`queue`] | a durable priority queue with ageing and crash-safe takes |
//! | [`membership`] | ephemeral members with JSON data, live member list |
//! | [`cache`] | a tree cache fed by persistent recursive watches |
//! | [`barrier`] | barrier and double barrier |
//! | [`counter`] | a shared counter (version compare-and-set) |
//!
//! Common ground:
//! - **Holds are guards.** A held lock, lease or leadership releases on drop (in the background)
//!   and offers an awaitable `release`. Each has a [`HoldState`] and a `lost()` future.
//! - **Connection loss is not expiry.** A connection loss suspends a hold (or ends it, by
//!   [`ConnectionPolicy`]); an expiry always ends it, because the session's ephemeral nodes are
//!   gone.
//! - **Cancellation safety.** Dropping an acquire's future leaves no node behind.
//! - **Fencing.** Locks expose a [`FencingToken`] (the holder node's czxid) and make
//!   coordination writes conditional on still holding.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use medkeeper_coord::Session;
//! use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
//! use medkeeper_recipes::Mutex;
//!
//! let engine = Engine::open(EngineConfig::new("/var/lib/medkeeper/coord"))?;
//! let session: Arc<dyn Session> = Arc::new(engine.connect(SessionOptions::default()).await);
//! let mri = Mutex::new(session.clone(), "/medical/resources/equipment/MRI/lock")?;
//! let guard = mri.acquire().await?;
//! // ... use the scanner; fence coordination writes with guard.write(&ops) ...
//! guard.release().await?;
//! session.close().await;
//! # Ok(()) }
//! ```

mod error;
mod hold;
mod line;
mod lock;

pub mod barrier;
pub mod cache;
pub mod counter;
pub mod election;
pub mod membership;
pub mod queue;
pub mod rwlock;
pub mod semaphore;

pub use barrier::{Barrier, DoubleBarrier, Entered};
pub use cache::{CacheEvent, CacheEvents, CacheState, CachedNode, TreeCache};
pub use counter::{Counter, CounterValue, CounterWatch};
pub use election::{Election, Leadership};
pub use error::{Error, LostReason, Result};
pub use hold::{ConnectionPolicy, FencingToken, HoldState};
pub use line::sequence_of;
pub use lock::{KAZOO_LOCK_MARKER, LOCK_MARKER, LockGuard, LockOptions, Mutex};
pub use membership::{
    Member, MemberWatch, Membership, Registration, RegistrationHandle, RegistrationState,
    SessionSource,
};
pub use queue::{Claim, ItemId, ItemInfo, PriorityQueue, QueueConfig};
pub use rwlock::{ReadGuard, RwLock, WriteGuard};
pub use semaphore::{Lease, LeaseHolder, Semaphore, SemaphoreOptions};
