//! [`Counted`]: a [`Session`] wrapper that counts the requests sent through it, by kind — what a
//! piece of code costs the coordination service, measured where it is spent (the benchmarks'
//! requests per order, the idle cost of an instance). A multi counts as one request, as
//! ZooKeeper's own counters see it; a persistent watch's registration counts, its events do
//! not (they are pushed, not requested).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Acl, AddWatchMode, Capabilities, CreateOptions, MultiError, OneshotWatch, Op, OpResult,
    PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat,
};

/// Requests counted by [`Counted`], by kind. Cheap to share: the counters are atomics.
#[derive(Debug, Default)]
pub struct RequestCounts {
    reads: AtomicU64,
    writes: AtomicU64,
    multis: AtomicU64,
    other: AtomicU64,
}

/// A copy of [`RequestCounts`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestTally {
    /// `exists`, `get_data`, `get_children` (with or without a watch), `get_acl`.
    pub reads: u64,
    /// `create`, `set_data`, `delete`, `set_acl`.
    pub writes: u64,
    /// `multi` (one request however many operations).
    pub multis: u64,
    /// `sync`, `add_auth`, persistent watch registrations.
    pub other: u64,
}

impl RequestTally {
    /// Every request.
    pub fn total(&self) -> u64 {
        self.reads + self.writes + self.multis + self.other
    }

    /// What was counted between `earlier` and this tally.
    pub fn since(&self, earlier: &RequestTally) -> RequestTally {
        RequestTally {
            reads: self.reads.saturating_sub(earlier.reads),
            writes: self.writes.saturating_sub(earlier.writes),
            multis: self.multis.saturating_sub(earlier.multis),
            other: self.other.saturating_sub(earlier.other),
        }
    }
}

impl RequestCounts {
    /// The counts now.
    pub fn tally(&self) -> RequestTally {
        RequestTally {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            multis: self.multis.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }

    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A session that forwards every call to another and counts the requests into a shared
/// [`RequestCounts`] (several sessions may count into one).
pub struct Counted {
    inner: Arc<dyn Session>,
    counts: Arc<RequestCounts>,
}

impl Counted {
    /// `inner`, counting into `counts`.
    pub fn wrap(inner: Arc<dyn Session>, counts: Arc<RequestCounts>) -> Arc<dyn Session> {
        Arc::new(Counted { inner, counts })
    }

    fn read(&self) {
        RequestCounts::add(&self.counts.reads);
    }

    fn write(&self) {
        RequestCounts::add(&self.counts.writes);
    }
}

#[async_trait]
impl Session for Counted {
    fn session_id(&self) -> SessionId {
        self.inner.session_id()
    }
    fn session_timeout(&self) -> Duration {
        self.inner.session_timeout()
    }
    fn state(&self) -> SessionState {
        self.inner.state()
    }
    fn session_events(&self) -> SessionEvents {
        self.inner.session_events()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn create(&self, p: &str, d: &[u8], o: &CreateOptions) -> Result<(String, Stat)> {
        self.write();
        self.inner.create(p, d, o).await
    }
    async fn delete(&self, p: &str, v: i32) -> Result<()> {
        self.write();
        self.inner.delete(p, v).await
    }
    async fn exists(&self, p: &str) -> Result<Option<Stat>> {
        self.read();
        self.inner.exists(p).await
    }
    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        self.read();
        self.inner.exists_watch(p).await
    }
    async fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        self.read();
        self.inner.get_data(p).await
    }
    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        self.read();
        self.inner.get_data_watch(p).await
    }
    async fn set_data(&self, p: &str, d: &[u8], v: i32) -> Result<Stat> {
        self.write();
        self.inner.set_data(p, d, v).await
    }
    async fn get_children_with_stat(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        self.read();
        self.inner.get_children_with_stat(p).await
    }
    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        self.read();
        self.inner.get_children_watch(p).await
    }
    async fn get_acl(&self, p: &str) -> Result<(Vec<Acl>, Stat)> {
        self.read();
        self.inner.get_acl(p).await
    }
    async fn set_acl(&self, p: &str, a: &[Acl], v: i32) -> Result<Stat> {
        self.write();
        self.inner.set_acl(p, a, v).await
    }
    async fn watch(&self, p: &str, m: AddWatchMode) -> Result<PersistentWatch> {
        RequestCounts::add(&self.counts.other);
        self.inner.watch(p, m).await
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        RequestCounts::add(&self.counts.multis);
        self.inner.multi(ops).await
    }
    async fn sync(&self, p: &str) -> Result<()> {
        RequestCounts::add(&self.counts.other);
        self.inner.sync(p).await
    }
    async fn add_auth(&self, s: &str, a: &[u8]) -> Result<()> {
        RequestCounts::add(&self.counts.other);
        self.inner.add_auth(s, a).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
