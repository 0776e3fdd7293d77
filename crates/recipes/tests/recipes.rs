//! The recipes with real contending clients, on both backends: every case runs once on the
//! embedded engine (`<recipe>::embedded::<case>`) and once on real ZooKeeper
//! (`<recipe>::zk::<case>`).
//!
//! The ZooKeeper runs need `MEDKEEPER_ZK_CONNECT` (set by `scripts/test-zk`, which starts the
//! servers); without it they print a skip line and pass.

use medkeeper_testkit::backend_tests;

#[path = "cases/lock.rs"]
mod lock;

#[path = "cases/rwlock.rs"]
mod rwlock;

#[path = "cases/election.rs"]
mod election;

#[path = "cases/semaphore.rs"]
mod semaphore;

#[path = "cases/membership.rs"]
mod membership;
#[path = "cases/queue.rs"]
mod queue;

#[path = "cases/cache.rs"]
mod cache;

#[path = "cases/barrier.rs"]
mod barrier;

#[path = "cases/counter.rs"]
mod counter;
