//! A forwarding [`Session`] wrapper with hooks: a test implements [`SessionHooks`] for its own
//! type, overriding only the calls it changes (delays a watch, loses a reply, counts something);
//! every other call goes to [`SessionHooks::inner`] unchanged.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use medkeeper_coord::{Result, Session, Stat};
//! use medkeeper_testkit::session::SessionHooks;
//!
//! /// Counts `set_data` calls; forwards everything.
//! struct CountsWrites {
//!     inner: Arc<dyn Session>,
//!     writes: AtomicUsize,
//! }
//!
//! #[async_trait::async_trait]
//! impl SessionHooks for CountsWrites {
//!     fn inner(&self) -> &dyn Session {
//!         self.inner.as_ref()
//!     }
//!     async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat> {
//!         self.writes.fetch_add(1, Ordering::Relaxed);
//!         self.inner.set_data(path, data, version).await
//!     }
//! }
//! # fn wrap(inner: Arc<dyn Session>) -> Arc<dyn Session> {
//! CountsWrites { inner, writes: AtomicUsize::new(0) }.into_session()
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{
    Acl, AddWatchMode, Capabilities, CreateOptions, MultiError, OneshotWatch, Op, OpResult,
    PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat,
};

/// The calls of a [`Session`], each forwarded to [`inner`](SessionHooks::inner) unless
/// overridden. [`HookedSession`] (or [`into_session`](SessionHooks::into_session)) makes the
/// implementor a session. `get_children` is not a hook: the session's default builds it on
/// [`get_children_with_stat`](SessionHooks::get_children_with_stat), so it passes through that
/// hook.
#[async_trait]
#[allow(missing_docs)] // each method is the `Session` method of the same name
pub trait SessionHooks: Send + Sync + 'static {
    /// The session every call not overridden goes to.
    fn inner(&self) -> &dyn Session;

    /// This wrapper as a session.
    fn into_session(self) -> Arc<dyn Session>
    where
        Self: Sized,
    {
        Arc::new(HookedSession(self))
    }

    fn session_id(&self) -> SessionId {
        self.inner().session_id()
    }
    fn session_timeout(&self) -> Duration {
        self.inner().session_timeout()
    }
    fn state(&self) -> SessionState {
        self.inner().state()
    }
    fn session_events(&self) -> SessionEvents {
        self.inner().session_events()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner().capabilities()
    }
    async fn create(&self, path: &str, data: &[u8], o: &CreateOptions) -> Result<(String, Stat)> {
        self.inner().create(path, data, o).await
    }
    async fn delete(&self, path: &str, version: i32) -> Result<()> {
        self.inner().delete(path, version).await
    }
    async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        self.inner().exists(path).await
    }
    async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        self.inner().exists_watch(path).await
    }
    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat)> {
        self.inner().get_data(path).await
    }
    async fn get_data_watch(&self, path: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        self.inner().get_data_watch(path).await
    }
    async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat> {
        self.inner().set_data(path, data, version).await
    }
    async fn get_children_with_stat(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        self.inner().get_children_with_stat(path).await
    }
    async fn get_children_watch(&self, path: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        self.inner().get_children_watch(path).await
    }
    async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        self.inner().get_acl(path).await
    }
    async fn set_acl(&self, path: &str, acls: &[Acl], aversion: i32) -> Result<Stat> {
        self.inner().set_acl(path, acls, aversion).await
    }
    async fn watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatch> {
        self.inner().watch(path, mode).await
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        self.inner().multi(ops).await
    }
    async fn sync(&self, path: &str) -> Result<()> {
        self.inner().sync(path).await
    }
    async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        self.inner().add_auth(scheme, auth).await
    }
    async fn close(&self) {
        self.inner().close().await
    }
}

/// `H` as a [`Session`]: every call goes to the hook of the same name. Dereferences to `H`, so
/// a test keeps reaching its wrapper's own fields.
pub struct HookedSession<H>(pub H);

impl<H> std::ops::Deref for HookedSession<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.0
    }
}

#[async_trait]
impl<H: SessionHooks> Session for HookedSession<H> {
    fn session_id(&self) -> SessionId {
        self.0.session_id()
    }
    fn session_timeout(&self) -> Duration {
        self.0.session_timeout()
    }
    fn state(&self) -> SessionState {
        self.0.state()
    }
    fn session_events(&self) -> SessionEvents {
        self.0.session_events()
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    async fn create(&self, p: &str, d: &[u8], o: &CreateOptions) -> Result<(String, Stat)> {
        self.0.create(p, d, o).await
    }
    async fn delete(&self, p: &str, v: i32) -> Result<()> {
        self.0.delete(p, v).await
    }
    async fn exists(&self, p: &str) -> Result<Option<Stat>> {
        self.0.exists(p).await
    }
    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        self.0.exists_watch(p).await
    }
    async fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        self.0.get_data(p).await
    }
    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        self.0.get_data_watch(p).await
    }
    async fn set_data(&self, p: &str, d: &[u8], v: i32) -> Result<Stat> {
        self.0.set_data(p, d, v).await
    }
    async fn get_children_with_stat(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        self.0.get_children_with_stat(p).await
    }
    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        self.0.get_children_watch(p).await
    }
    async fn get_acl(&self, p: &str) -> Result<(Vec<Acl>, Stat)> {
        self.0.get_acl(p).await
    }
    async fn set_acl(&self, p: &str, a: &[Acl], v: i32) -> Result<Stat> {
        self.0.set_acl(p, a, v).await
    }
    async fn watch(&self, p: &str, m: AddWatchMode) -> Result<PersistentWatch> {
        self.0.watch(p, m).await
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        self.0.multi(ops).await
    }
    async fn sync(&self, p: &str) -> Result<()> {
        self.0.sync(p).await
    }
    async fn add_auth(&self, s: &str, a: &[u8]) -> Result<()> {
        self.0.add_auth(s, a).await
    }
    async fn close(&self) {
        self.0.close().await
    }
}
