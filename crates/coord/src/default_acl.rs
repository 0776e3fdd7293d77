//! [`DefaultAcl`]: a [`Session`] wrapper that gives every node created without an ACL of its
//! own a session-wide default — Apache Curator's `ACLProvider`, for this API.
//!
//! medkeeper's code creates its nodes with [`CreateOptions::new`], which asks for ZooKeeper's
//! `OPEN_ACL_UNSAFE` (world:anyone, every permission). On an ensemble shared with other
//! tenants that lets anyone who can reach it read and change the hospital's tree. Wrapped in a
//! `DefaultAcl` holding medkeeper's own digest identity, the same code creates every node
//! readable and writable only by sessions authenticated as medkeeper, on either backend, with
//! no change to the code that creates them.
//!
//! The rule: a create (alone or in a [`multi`](Session::multi)) whose ACL is exactly
//! [`Acl::open_unsafe`] — what [`CreateOptions::new`] gives, i.e. "no ACL said" — gets the
//! default instead; any other ACL is kept as given. So under a `DefaultAcl` a node open to
//! anyone is made by creating it and then [`set_acl`](Session::set_acl) (nothing in medkeeper
//! does). Nothing else is changed: reads, `set_acl`, watches and session states are forwarded
//! as they are.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Acl, AddWatchMode, Capabilities, CreateOptions, MultiError, OneshotWatch, Op, OpResult,
    PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat,
};

/// A session that forwards every call to another, giving creates that ask for the open ACL the
/// default ACL instead (see the [module docs](self)).
pub struct DefaultAcl {
    inner: Arc<dyn Session>,
    acl: Vec<Acl>,
}

impl DefaultAcl {
    /// `inner`, with `acl` for every node created without an ACL of its own. `acl` must be one
    /// the service accepts for this session (a digest entry, or [`Acl::creator_all`] once the
    /// session has authenticated), or those creates fail with `InvalidAcl`.
    pub fn wrap(inner: Arc<dyn Session>, acl: Vec<Acl>) -> Arc<dyn Session> {
        Arc::new(DefaultAcl { inner, acl })
    }

    /// The ACL a create with `options` is sent with.
    fn options(&self, options: &CreateOptions) -> Option<CreateOptions> {
        (options.acls == Acl::open_unsafe()).then(|| options.clone().with_acls(self.acl.clone()))
    }
}

impl std::fmt::Debug for DefaultAcl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ACL names identities, not secrets (a digest id is a hash).
        f.debug_struct("DefaultAcl")
            .field("session", &self.inner.session_id())
            .field("acl", &self.acl)
            .finish()
    }
}

#[async_trait]
impl Session for DefaultAcl {
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
        match self.options(o) {
            Some(o) => self.inner.create(p, d, &o).await,
            None => self.inner.create(p, d, o).await,
        }
    }
    async fn delete(&self, p: &str, v: i32) -> Result<()> {
        self.inner.delete(p, v).await
    }
    async fn exists(&self, p: &str) -> Result<Option<Stat>> {
        self.inner.exists(p).await
    }
    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        self.inner.exists_watch(p).await
    }
    async fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        self.inner.get_data(p).await
    }
    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        self.inner.get_data_watch(p).await
    }
    async fn set_data(&self, p: &str, d: &[u8], v: i32) -> Result<Stat> {
        self.inner.set_data(p, d, v).await
    }
    async fn get_children_with_stat(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        self.inner.get_children_with_stat(p).await
    }
    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        self.inner.get_children_watch(p).await
    }
    async fn get_acl(&self, p: &str) -> Result<(Vec<Acl>, Stat)> {
        self.inner.get_acl(p).await
    }
    async fn set_acl(&self, p: &str, a: &[Acl], v: i32) -> Result<Stat> {
        self.inner.set_acl(p, a, v).await
    }
    async fn watch(&self, p: &str, m: AddWatchMode) -> Result<PersistentWatch> {
        self.inner.watch(p, m).await
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        if !ops
            .iter()
            .any(|op| matches!(op, Op::Create { options, .. } if self.options(options).is_some()))
        {
            return self.inner.multi(ops).await;
        }
        let ops: Vec<Op> = ops
            .iter()
            .map(|op| match op {
                Op::Create {
                    path,
                    data,
                    options,
                } => Op::Create {
                    path: path.clone(),
                    data: data.clone(),
                    options: self.options(options).unwrap_or_else(|| options.clone()),
                },
                other => other.clone(),
            })
            .collect();
        self.inner.multi(&ops).await
    }
    async fn sync(&self, p: &str) -> Result<()> {
        self.inner.sync(p).await
    }
    async fn add_auth(&self, s: &str, a: &[u8]) -> Result<()> {
        self.inner.add_auth(s, a).await
    }
    async fn close(&self) {
        self.inner.close().await
    }
}
