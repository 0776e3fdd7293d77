//! # medkeeper-testkit: what medkeeper's test suites share
//!
//! Unpublished (`publish = false`) and only ever a dev-dependency. It depends on
//! `medkeeper-coord`, `medkeeper-embedded` and `medkeeper-zk` (and, with the `clinical-store`
//! feature, `medkeeper-hospital`), so the crates it serves are the ones above those: recipes,
//! the hospital domain, the server, the binary. The backends' own tests (`medkeeper-embedded`,
//! `medkeeper-zk`) keep their harnesses beside the conformance suite they run.
//!
//! Layout:
//! - [`Backend`]: a coordination backend for a test — sessions, forced expiry, a fresh base
//!   path. [`Embedded`] (an engine in a temporary directory) and [`Zk`] (the ZooKeeper
//!   `MEDKEEPER_ZK_CONNECT` names, optionally in a fresh chroot per test). [`backend_tests!`]
//!   makes one test per case per backend (`embedded::<case>`, `zk::<case>`).
//! - [`kill_session`]: Curator's KillSession on real ZooKeeper, waiting until the victim knows.
//! - [`Faulty`]: a session that loses the reply to an applied `create` or `multi`, or counts
//!   the watch notifications delivered through it.
//! - [`session`]: [`SessionHooks`](session::SessionHooks), a forwarding [`Session`] wrapper
//!   where a test writes only the methods it changes.
//! - `store` (feature `clinical-store`): the same for the clinical store.
//!
//! ```no_run
//! use medkeeper_testkit::Backend;
//!
//! async fn two_sessions_see_one_tree(b: &dyn Backend) {
//!     let (a, c) = (b.session().await, b.session().await);
//!     // ... a case written once, run on both backends
//! #   let _ = (a, c);
//! }
//!
//! medkeeper_testkit::backend_tests!(two_sessions_see_one_tree);
//! # fn main() {}
//! ```
//!
//! [`Session`]: medkeeper_coord::Session

mod backend;
mod faulty;
pub mod fuzz;
pub mod session;
#[cfg(feature = "clinical-store")]
pub mod store;

pub use backend::{Backend, Embedded, Zk, kill_session, skip, unique_name, zk_connect_string};
pub use faulty::Faulty;
