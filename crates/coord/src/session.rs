//! The contract: [`Session`].

use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Acl, AddWatchMode, CreateOptions, Error, MultiError, OneshotWatch, Op, OpResult,
    PersistentWatch, Result, SessionEvents, SessionId, SessionState, Stat,
};

/// What a backend can and cannot do, where backends legitimately differ. The conformance suite
/// reads these instead of forking tests per backend.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// TTL nodes are accepted (ZooKeeper needs `zookeeper.extendedTypesEnabled=true`, otherwise
    /// creates fail with `Unimplemented`).
    pub ttl_nodes: bool,
    /// How often empty containers and expired TTL nodes are reaped (ZooKeeper's
    /// `znode.container.checkIntervalMs`).
    pub reap_interval: Duration,
    /// The largest node data accepted, in bytes (ZooKeeper's `jute.maxbuffer`, 1 MiB default).
    pub max_data_len: usize,
    /// The limit on a whole request, where the backend limits requests rather than data:
    /// ZooKeeper refuses a request whose encoding (after its 4-byte length prefix) exceeds
    /// `jute.maxbuffer` (0xfffff bytes by default), so the data a request can carry depends on
    /// its path. `None`: only `max_data_len` applies. See
    /// [`max_set_data_len`](Capabilities::max_set_data_len).
    pub max_request_len: Option<usize>,
    /// The error a create or set with data over `max_data_len` gets. ZooKeeper closes the
    /// connection (the client sees `ConnectionLoss`); the embedded engine answers
    /// `BadArguments` and keeps the session.
    pub oversize_data_error: Error,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            ttl_nodes: true,
            reap_interval: Duration::from_secs(60),
            max_data_len: 1024 * 1024,
            max_request_len: None,
            oversize_data_error: Error::BadArguments("data exceeds the maximum length"),
        }
    }
}

impl Capabilities {
    /// The most data a `set_data` of `path` can carry: with a request limit, that limit less
    /// set_data's framing (request header 8 bytes, path 4 + its length, data length 4, version
    /// 4); otherwise `max_data_len`. `max_data_len` itself is safe for any path up to 1,000
    /// bytes on either kind of backend.
    pub fn max_set_data_len(&self, path: &str) -> usize {
        match self.max_request_len {
            Some(limit) => limit.saturating_sub(20 + path.len()),
            None => self.max_data_len,
        }
    }
}

/// A session with a ZooKeeper-semantics coordination service: the one contract medkeeper's
/// recipes and domain are written against, implemented by the embedded engine and by the real
/// ZooKeeper backend. Use it as `Arc<dyn Session>`.
///
/// # Guarantees every backend gives (ZooKeeper's)
/// - **Total order.** Every change gets a zxid; zxids strictly increase; all sessions observe
///   changes in zxid order. A session's own requests are applied in the order it issued them.
/// - **Atomicity.** A [`multi`](Session::multi) applies all its operations as one change (one
///   zxid), or none; a failed multi reports the index of the failing operation.
/// - **Durability.** A change is acknowledged only once it will survive a crash.
/// - **Watches.** A one-shot watch fires at most once, with the first matching change after the
///   read that set it; the event reaches the session before the session can read the changed
///   state. Triggers, as on ZooKeeper:
///   - create of `p`: `NodeCreated` on exist watches of `p`; `NodeChildrenChanged` on child
///     watches of `parent(p)`;
///   - set_data of `p`: `NodeDataChanged` on data and exist watches of `p`;
///   - delete of `p`: `NodeDeleted` on data, exist and child watches of `p`;
///     `NodeChildrenChanged` on child watches of `parent(p)`;
///   - set_acl fires nothing.
///
///   Persistent watches get the same events for their node without being consumed; recursive
///   ones get created/deleted/data events for the node and all descendants and no child events.
/// - **Sessions.** A session that is closed, or that fails to reach the service within its
///   timeout, ends; its ephemeral nodes are deleted (firing watches) and every request on it
///   fails with a session-fatal error ([`Error::is_session_fatal`]). A connection loss alone
///   (state `Disconnected`) is not an expiry: ephemerals are still held.
/// - **Sequence numbers.** A sequential node's suffix is the number of children created under
///   the parent before it (deletes do not count), formatted `%010d`. The reported `cversion`
///   counts creates and deletes (ZooKeeper reports `2 * creates - numChildren`).
/// - **ACLs** are checked per node, never inherited: READ for get_data/get_children, WRITE for
///   set_data, CREATE/DELETE on the parent for create/delete, ADMIN for set_acl.
#[async_trait]
pub trait Session: Send + Sync {
    /// The session id.
    fn session_id(&self) -> SessionId;

    /// The session timeout the service granted (within its bounds).
    fn session_timeout(&self) -> Duration;

    /// The current session state.
    fn state(&self) -> SessionState;

    /// A follower of the session's states.
    fn session_events(&self) -> SessionEvents;

    /// What this backend can and cannot do.
    fn capabilities(&self) -> Capabilities;

    /// Creates a node; returns its path (with the sequence suffix for sequential modes) and stat.
    ///
    /// # Notable errors
    /// `NodeExists`, `NoNode` (no parent), `NoChildrenForEphemerals`, `NoAuth` (no CREATE on the
    /// parent), `InvalidAcl`, `BadArguments` (path rules, TTL), `Unimplemented` (TTL disabled).
    async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)>;

    /// Deletes a node if `version` matches (`-1`: any).
    ///
    /// # Notable errors
    /// `NoNode`, `BadVersion`, `NotEmpty`, `NoAuth` (no DELETE on the parent).
    async fn delete(&self, path: &str, version: i32) -> Result<()>;

    /// The node's stat, or `None` if it does not exist.
    async fn exists(&self, path: &str) -> Result<Option<Stat>>;

    /// Like [`exists`](Session::exists), and sets a one-shot watch that fires on the node's
    /// creation, data change or deletion — set even when the node does not exist.
    async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneshotWatch)>;

    /// The node's data and stat.
    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat)>;

    /// Like [`get_data`](Session::get_data), and sets a one-shot watch for the node's data
    /// change or deletion. No watch is set if the node does not exist (`NoNode`).
    async fn get_data_watch(&self, path: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)>;

    /// Sets the node's data if `version` matches (`-1`: any); returns the new stat.
    async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat>;

    /// The names of the node's children (in no particular order).
    async fn get_children(&self, path: &str) -> Result<Vec<String>> {
        Ok(self.get_children_with_stat(path).await?.0)
    }

    /// The names of the node's children and the node's stat.
    async fn get_children_with_stat(&self, path: &str) -> Result<(Vec<String>, Stat)>;

    /// Like [`get_children_with_stat`](Session::get_children_with_stat), and sets a one-shot
    /// watch for a child's creation or deletion, or the node's deletion.
    async fn get_children_watch(&self, path: &str) -> Result<(Vec<String>, Stat, OneshotWatch)>;

    /// The node's ACL and stat.
    async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)>;

    /// Sets the node's ACL if its `aversion` matches (`-1`: any).
    async fn set_acl(&self, path: &str, acls: &[Acl], aversion: i32) -> Result<Stat>;

    /// Adds a persistent (or persistent-recursive) watch on `path`, which need not exist.
    async fn watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatch>;

    /// Applies `ops` atomically: all or nothing, one zxid.
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError>;

    /// Waits until this session's view is as recent as the leader's (ZooKeeper's `sync`).
    async fn sync(&self, path: &str) -> Result<()>;

    /// Adds an identity to the session (`digest` with `user:password`).
    ///
    /// # Notable errors
    /// `AuthFailed` for an unknown scheme or malformed credentials.
    async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()>;

    /// Closes the session and returns once the service has ended it: its ephemeral nodes are
    /// gone when this returns. Idempotent.
    async fn close(&self);
}
