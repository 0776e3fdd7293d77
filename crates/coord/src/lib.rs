//! # medkeeper-coord: a coordination API with ZooKeeper's semantics
//!
//! This crate is the contract between medkeeper and its coordination backends: the embedded
//! engine (`medkeeper-embedded`, in-process and durable, the default) and real Apache ZooKeeper
//! (`medkeeper-zk`). Everything above it — recipes, the hospital domain, the server — is written
//! against [`Session`], usually as `Arc<dyn Session>`, and runs unchanged on either backend.
//!
//! Layout:
//! - [`Session`]: the trait (create, get/set data, delete, exists, children, ACLs, one-shot and
//!   persistent watches, multi, sessions). Its docs state the ordering, atomicity, durability and
//!   watch guarantees every backend must give.
//! - [`SessionExt`]: conveniences over it (`create_all`, `delete_recursive`, ...).
//! - [`Error`]: one error enum whose variants are ZooKeeper's error kinds.
//! - [`path`]: ZooKeeper's path rules and sequence formatting.
//! - `conformance` (feature `conformance`): backend-generic test cases every backend runs.
//! - [`Counted`]: a [`Session`] wrapper that counts the requests sent through it (benchmarks).
//! - [`DefaultAcl`]: a [`Session`] wrapper that gives nodes created without an ACL of their own a
//!   session-wide default (medkeeper's digest identity on a shared ensemble).
//!
//! ```no_run
//! # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_coord::Result<()> {
//! use medkeeper_coord::{CreateMode, CreateOptions, SessionExt};
//! session.ensure_path("/medical/resources/equipment/MRI/lock").await?;
//! let (path, stat) = session
//!     .create(
//!         "/medical/resources/equipment/MRI/lock/lock-",
//!         b"",
//!         &CreateOptions::new(CreateMode::EphemeralSequential),
//!     )
//!     .await?;
//! assert!(path.ends_with("lock-0000000000"));
//! assert_eq!(stat.ephemeral_owner, session.session_id().0);
//! # Ok(()) }
//! ```

pub mod counted;
pub mod default_acl;
mod error;
mod ext;
mod ops;
pub mod path;
mod session;
mod types;
mod watch;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use counted::{Counted, RequestCounts, RequestTally};
pub use default_acl::DefaultAcl;
pub use error::{Error, MultiError, Result};
pub use ext::SessionExt;
pub use ops::{ANY_VERSION, Op, OpResult};
pub use session::{Capabilities, Session};
pub use types::{
    Acl, CreateMode, CreateOptions, Id, MAX_TTL_MS, Perms, SessionId, Stat, Zxid, digest_id,
    digest_of_credentials,
};
pub use watch::{
    AddWatchMode, EventType, OneshotWatch, PersistentWatch, SessionEvents, SessionState,
    WatchGuard, WatchSource, WatchedEvent,
};
