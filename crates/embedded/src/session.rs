//! [`EmbeddedSession`]: a session on the embedded engine, implementing the coordination
//! contract.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{
    Acl, AddWatchMode, Capabilities, CreateOptions, Error, MultiError, OneshotWatch, Op, OpResult,
    Perms, PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat, Zxid,
    path,
};
use tokio::sync::oneshot;

use crate::acl;
use crate::engine::{Engine, Inner, Outcome, Request, SessionShared, WriteOp};
use crate::tree::DataTree;
use crate::watches::Kind;

/// Options for a new session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Requested session timeout; the engine clamps it into its bounds.
    pub timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            timeout: Duration::from_secs(10),
        }
    }
}

/// A session on an [`Engine`]. Heartbeats run on the tokio runtime it was opened on; if they
/// stop for longer than the session timeout (a blocked runtime, a paused process) the engine
/// expires the session, as ZooKeeper would. Dropping the handle closes the session in the
/// background; [`Session::close`] closes it and waits.
pub struct EmbeddedSession {
    inner: Arc<Inner>,
    shared: Arc<SessionShared>,
    heartbeat: tokio::task::AbortHandle,
}

impl std::fmt::Debug for EmbeddedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EmbeddedSession({})", SessionId(self.shared.id))
    }
}

/// Unregisters a watch when its value is dropped.
struct Registration {
    inner: Weak<Inner>,
    kind: Kind,
    path: String,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade()
            && let Ok(mut w) = inner.watches.lock()
        {
            w.remove(self.kind, &self.path, self.id);
        }
    }
}

impl Engine {
    /// Opens a session. Must be called within a tokio runtime (the heartbeat runs on it).
    pub async fn connect(&self, options: SessionOptions) -> EmbeddedSession {
        let shared = self.inner.new_session(options.timeout);
        let weak = Arc::downgrade(&shared);
        let inner = Arc::downgrade(&self.inner);
        let period = shared.timeout / 3;
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let (Some(s), Some(i)) = (weak.upgrade(), inner.upgrade()) else {
                    return;
                };
                if s.ended().is_some() {
                    return;
                }
                s.last_heard.store(i.elapsed_ms(), Ordering::Relaxed);
            }
        })
        .abort_handle();
        EmbeddedSession {
            inner: self.inner.clone(),
            shared,
            heartbeat,
        }
    }
}

impl Drop for EmbeddedSession {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.shared.ended().is_none() {
            let _ = self.inner.send(Request::CloseSession {
                session: self.shared.clone(),
                state: SessionState::Closed,
                reply: None,
            });
        }
    }
}

impl EmbeddedSession {
    fn alive(&self) -> Result<()> {
        if let Some(state) = self.shared.ended() {
            return Err(state.to_error().unwrap_or(Error::SessionExpired));
        }
        if self.inner.failed.load(Ordering::Acquire) {
            return Err(Error::SystemError);
        }
        self.shared
            .last_heard
            .store(self.inner.elapsed_ms(), Ordering::Relaxed);
        Ok(())
    }

    async fn submit(&self, ops: Vec<WriteOp>) -> Result<Vec<Outcome>, MultiError> {
        self.alive().map_err(MultiError::whole)?;
        let (tx, rx) = oneshot::channel();
        self.inner
            .send(Request::Write {
                session: self.shared.clone(),
                ops,
                reply: tx,
            })
            .map_err(MultiError::whole)?;
        rx.await
            .unwrap_or(Err(MultiError::whole(Error::ClientClosed)))
    }

    async fn submit_one(&self, op: WriteOp) -> Result<Outcome> {
        let mut v = self.submit(vec![op]).await?;
        v.pop().ok_or(Error::SystemError)
    }

    /// Runs a read of node `p` against the tree and answers once what it can have observed
    /// is durable ([`DataTree::observed_zxid`]): a read never waits for other nodes' writes.
    async fn read_node<T>(
        &self,
        p: &str,
        f: impl FnOnce(&DataTree, &SessionShared) -> Result<T>,
    ) -> Result<T> {
        self.read_until(p, f, |t| t.observed_zxid(p)).await
    }

    /// Runs a read against the tree and answers once everything applied so far is durable.
    async fn read<T>(
        &self,
        p: &str,
        f: impl FnOnce(&DataTree, &SessionShared) -> Result<T>,
    ) -> Result<T> {
        self.read_until(p, f, |t| t.zxid).await
    }

    /// Runs `f` against the tree and answers once the zxid `seen` names is durable.
    async fn read_until<T>(
        &self,
        p: &str,
        f: impl FnOnce(&DataTree, &SessionShared) -> Result<T>,
        seen: impl FnOnce(&DataTree) -> Zxid,
    ) -> Result<T> {
        self.alive()?;
        path::validate_path(p, false)?;
        let (res, zxid): (Result<T>, Zxid) = {
            let tree = self.inner.tree.read().map_err(|_| Error::SystemError)?;
            (f(&tree, &self.shared), seen(&tree))
        };
        self.inner.wait_durable(zxid).await?;
        res
    }

    /// Ends the session with `state` and waits until that is durable.
    async fn end(&self, state: SessionState) {
        self.heartbeat.abort();
        if self.shared.ended().is_some() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .inner
            .send(Request::CloseSession {
                session: self.shared.clone(),
                state,
                reply: Some(tx),
            })
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    fn register(
        &self,
        kind: Kind,
        p: &str,
    ) -> (
        oneshot::Receiver<medkeeper_coord::WatchedEvent>,
        Registration,
    ) {
        let mut w = self.inner.watches.lock().expect("watch lock");
        let (id, rx) = w.add_once(kind, p, self.shared.id);
        (rx, self.registration(kind, p, id))
    }

    fn registration(&self, kind: Kind, p: &str, id: u64) -> Registration {
        Registration {
            inner: Arc::downgrade(&self.inner),
            kind,
            path: p.to_string(),
            id,
        }
    }
}

/// Checks `perm` on `node` for the session; the session's identities are only looked at when
/// the ACL is not open to world:anyone.
fn permitted(
    tree: &DataTree,
    node: &crate::tree::Node,
    perm: Perms,
    session: &SessionShared,
) -> Result<()> {
    let acl = tree.acl_of(node);
    if acl
        .iter()
        .any(|a| a.perms.intersects(perm) && a.id.scheme == "world" && a.id.id == "anyone")
    {
        return Ok(());
    }
    acl::check(acl, perm, &session.ids())
}

fn readable(tree: &DataTree, node: &crate::tree::Node, session: &SessionShared) -> Result<()> {
    permitted(tree, node, Perms::READ, session)
}

#[async_trait]
impl Session for EmbeddedSession {
    fn session_id(&self) -> SessionId {
        SessionId(self.shared.id)
    }

    fn session_timeout(&self) -> Duration {
        self.shared.timeout
    }

    fn state(&self) -> SessionState {
        *self.shared.state_tx.borrow()
    }

    fn session_events(&self) -> SessionEvents {
        SessionEvents::new(self.shared.state_tx.subscribe())
    }

    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::default();
        c.ttl_nodes = true;
        c.reap_interval = self.inner.config.reap_interval;
        c.max_data_len = self.inner.config.max_data_len;
        c
    }

    async fn create(
        &self,
        p: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)> {
        let op = Op::Create {
            path: p.to_string(),
            data: data.to_vec(),
            options: options.clone(),
        };
        match self.submit_one(WriteOp::Op(op)).await? {
            Outcome::Created(path, stat) => Ok((path, stat)),
            _ => Err(Error::SystemError),
        }
    }

    async fn delete(&self, p: &str, version: i32) -> Result<()> {
        self.submit_one(WriteOp::Op(Op::delete(p, version)))
            .await
            .map(|_| ())
    }

    async fn exists(&self, p: &str) -> Result<Option<Stat>> {
        self.read_node(p, |t, _| Ok(t.get(p).map(|n| n.stat())))
            .await
    }

    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        let mut reg = None;
        let stat = self
            .read_node(p, |t, _| {
                reg = Some(self.register(Kind::Data, p));
                Ok(t.get(p).map(|n| n.stat()))
            })
            .await?;
        let (rx, guard) = reg.ok_or(Error::SystemError)?;
        Ok((stat, OneshotWatch::new(rx, Some(Box::new(guard)))))
    }

    async fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        self.read_node(p, |t, ids| {
            let n = t.get(p).ok_or(Error::NoNode)?;
            readable(t, n, ids)?;
            Ok((n.data.to_vec(), n.stat()))
        })
        .await
    }

    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        let mut reg = None;
        let (data, stat) = self
            .read_node(p, |t, ids| {
                let n = t.get(p).ok_or(Error::NoNode)?;
                readable(t, n, ids)?;
                reg = Some(self.register(Kind::Data, p));
                Ok((n.data.to_vec(), n.stat()))
            })
            .await?;
        let (rx, guard) = reg.ok_or(Error::SystemError)?;
        Ok((data, stat, OneshotWatch::new(rx, Some(Box::new(guard)))))
    }

    async fn set_data(&self, p: &str, data: &[u8], version: i32) -> Result<Stat> {
        match self
            .submit_one(WriteOp::Op(Op::set_data(p, data, version)))
            .await?
        {
            Outcome::Set(stat) => Ok(stat),
            _ => Err(Error::SystemError),
        }
    }

    async fn get_children_with_stat(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        self.read_node(p, |t, ids| {
            let n = t.get(p).ok_or(Error::NoNode)?;
            readable(t, n, ids)?;
            Ok((n.children.keys().map(|k| k.to_string()).collect(), n.stat()))
        })
        .await
    }

    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        let mut reg = None;
        let (children, stat) = self
            .read_node(p, |t, ids| {
                let n = t.get(p).ok_or(Error::NoNode)?;
                readable(t, n, ids)?;
                reg = Some(self.register(Kind::Child, p));
                Ok((n.children.keys().map(|k| k.to_string()).collect(), n.stat()))
            })
            .await?;
        let (rx, guard) = reg.ok_or(Error::SystemError)?;
        Ok((children, stat, OneshotWatch::new(rx, Some(Box::new(guard)))))
    }

    async fn get_acl(&self, p: &str) -> Result<(Vec<Acl>, Stat)> {
        self.read(p, |t, ids| {
            let n = t.get(p).ok_or(Error::NoNode)?;
            permitted(t, n, Perms::READ | Perms::ADMIN, ids)?;
            let mut acl = t.acl_of(n).to_vec();
            // Without ADMIN, digest hashes are masked as `user:x`, as ZooKeeper does.
            if permitted(t, n, Perms::ADMIN, ids).is_err() {
                for a in acl.iter_mut().filter(|a| a.id.scheme == "digest") {
                    let user = a.id.id.split(':').next().unwrap_or_default().to_string();
                    a.id.id = format!("{user}:x");
                }
            }
            Ok((acl, n.stat()))
        })
        .await
    }

    async fn set_acl(&self, p: &str, acls: &[Acl], aversion: i32) -> Result<Stat> {
        let op = WriteOp::SetAcl {
            path: p.to_string(),
            acl: acls.to_vec(),
            version: aversion,
        };
        match self.submit_one(op).await? {
            Outcome::Set(stat) => Ok(stat),
            _ => Err(Error::SystemError),
        }
    }

    async fn watch(&self, p: &str, mode: AddWatchMode) -> Result<PersistentWatch> {
        let kind = match mode {
            AddWatchMode::Persistent => Kind::Persistent,
            AddWatchMode::PersistentRecursive => Kind::Recursive,
        };
        let mut reg = None;
        self.read(p, |_, _| {
            let mut w = self.inner.watches.lock().expect("watch lock");
            let (id, rx) = w.add_stream(kind, p, self.shared.id);
            reg = Some((rx, self.registration(kind, p, id)));
            Ok(())
        })
        .await?;
        let (rx, guard) = reg.ok_or(Error::SystemError)?;
        Ok(PersistentWatch::new(rx, Some(Box::new(guard))))
    }

    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        if ops.is_empty() {
            self.alive().map_err(MultiError::whole)?;
            return Ok(Vec::new());
        }
        let outcomes = self
            .submit(ops.iter().cloned().map(WriteOp::Op).collect())
            .await?;
        Ok(outcomes
            .into_iter()
            .map(|o| match o {
                Outcome::Created(path, _) => OpResult::Create { path },
                Outcome::Deleted => OpResult::Delete,
                Outcome::Set(stat) => OpResult::SetData { stat },
                Outcome::Checked => OpResult::Check,
            })
            .collect())
    }

    async fn sync(&self, p: &str) -> Result<()> {
        self.read(p, |_, _| Ok(())).await
    }

    async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        self.alive()?;
        let id = match acl::authenticate(scheme, auth) {
            Ok(id) => id,
            Err(e) => {
                // As on ZooKeeper, rejected credentials end the session (state AuthFailed).
                self.end(SessionState::AuthFailed).await;
                return Err(e);
            }
        };
        let mut ids = self.shared.auth.lock().map_err(|_| Error::SystemError)?;
        if !ids.contains(&id) {
            let mut v = ids.to_vec();
            v.push(id);
            *ids = Arc::from(v);
        }
        Ok(())
    }

    async fn close(&self) {
        self.end(SessionState::Closed).await;
    }
}
