//! [`ZkSession`]: the coordination API's [`Session`] over one `zookeeper-client` session.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{
    Acl, AddWatchMode, Capabilities, CreateMode, CreateOptions, Error, MultiError, OneshotWatch,
    Op, OpResult, PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat,
    WatchSource, WatchedEvent, path,
};
use tokio::sync::watch;
use zookeeper_client as zk;

use crate::connect::{ConnectError, ConnectOptions};
use crate::convert;

/// Opens a session with the ensemble named by `options`.
///
/// Returns once the session is established (the servers are tried in turn for up to the
/// session timeout). The session then reconnects by itself after a connection loss, within
/// the session timeout; its states are followed with [`Session::session_events`].
///
/// # Notable errors
/// - `ConnectString`, `DigestCredentials`, `Tls`: the options are unusable.
/// - `Session(ConnectionLoss)`: no server answered within the session timeout (wrong port, TLS
///   handshake refused — the cause is in the `tracing` output).
/// - `Session(AuthFailed)`: the server rejected the credentials.
pub async fn connect(options: ConnectOptions) -> Result<ZkSession, ConnectError> {
    let client = open_client(&options, None).await?;
    let (tx, rx) = watch::channel(convert::state(client.state()));
    let mut states = client.state_watcher();
    // Forwards the client's states until a terminal one; ends (dropping `tx`) after it.
    tokio::spawn(async move {
        let _ = tx.send(convert::state(states.peek_state()));
        loop {
            let s = states.changed().await;
            let _ = tx.send(convert::state(s));
            if s.is_terminated() {
                break;
            }
        }
    });
    let caps = options.capabilities();
    Ok(ZkSession {
        id: SessionId(client.session_id().0),
        timeout: client.session_timeout(),
        credentials: SessionCredentials(client.session().clone()),
        client: Arc::new(RwLock::new(Some(client))),
        events: rx,
        options,
        caps,
    })
}

/// Creates the chroot of `options`' connect string, with any missing ancestors, if it does not
/// exist (as Apache Curator's namespaces do); returns true if it created it. A session whose
/// chroot does not exist connects, but every request below its `/` fails with `NoNode`.
///
/// Works through a second session without the chroot but with the same credentials and TLS,
/// closed before this returns. The chroot is only read (`exists` needs no permission) when it
/// exists, so credentials that may not write above it are fine then. Missing nodes are created
/// empty and persistent: the chroot itself with [`ConnectOptions::digest_acl`] when the
/// options carry digest credentials (only they may then read it, list it or create below
/// it), open to anyone otherwise; missing ancestors open to anyone, since they may be shared
/// with other tenants (`/tenants` in `/tenants/medkeeper`).
///
/// # Notable errors
/// - as [`connect`];
/// - `Session(NoAuth)`: the credentials may not create a missing node (an ancestor's ACL).
///
/// # Cancellation safety
/// Dropping the future may leave some of the missing ancestors created, which is harmless: a
/// later call creates the rest.
pub async fn ensure_chroot(options: &ConnectOptions) -> Result<bool, ConnectError> {
    let Some(chroot) = options.connect.chroot.clone() else {
        return Ok(false);
    };
    let mut above = options.clone();
    above.connect.chroot = None;
    let root = connect(above).await?;
    let own = CreateOptions::new(CreateMode::Persistent)
        .with_acls(options.digest_acl().unwrap_or_else(Acl::open_unsafe));
    let created = match root.exists(&chroot).await {
        Ok(Some(_)) => Ok(false),
        Ok(None) => create_chroot(&root, &chroot, &own)
            .await
            .map_err(ConnectError::Session),
        Err(e) => Err(ConnectError::Session(e)),
    };
    root.close().await;
    created
}

/// Creates `chroot` with `own`, and its missing ancestors open; false if it existed.
async fn create_chroot(root: &ZkSession, chroot: &str, own: &CreateOptions) -> Result<bool> {
    use medkeeper_coord::SessionExt;
    if let Some(parent) = path::parent(chroot)
        && parent != "/"
    {
        root.ensure_path(parent).await?;
    }
    match root.create(chroot, b"", own).await {
        Ok(_) => Ok(true),
        Err(Error::NodeExists) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The smallest session timeout asked of the servers: a smaller request is sent as this (the
/// servers' own minimum, 2 × tickTime, is normally larger anyway).
pub const MIN_REQUESTED_TIMEOUT: Duration = Duration::from_millis(500);

async fn open_client(
    options: &ConnectOptions,
    session: Option<zk::SessionInfo>,
) -> Result<zk::Client, ConnectError> {
    // zookeeper-client uses the requested timeout also as its deadline for establishing the
    // session, so a tiny request (the server would raise it to 2 × tickTime anyway) cannot
    // connect reliably, least of all through a follower that forwards to the leader.
    let requested = options.session_timeout.max(MIN_REQUESTED_TIMEOUT);
    let mut connector = zk::Client::connector().with_session_timeout(requested);
    if session.is_some() {
        // Attaching to a live session: try each server once, the caller retries.
        connector = connector.with_fail_eagerly();
    }
    if let Some(t) = options.connection_timeout {
        connector = connector.with_connection_timeout(t);
    }
    for (scheme, auth) in &options.auth {
        connector = connector.with_auth(scheme, auth);
    }
    if let Some(s) = session {
        connector = connector.with_session(s);
    }
    let cluster = options.connect.to_client_string();
    let connected = if options.tls.is_some() || options.connect.tls {
        let tls = options.tls.as_ref().ok_or_else(|| {
            ConnectError::Tls("a zk+tls: connect string needs a TLS configuration (CA file)".into())
        })?;
        connector
            .with_tls(tls.to_client_options()?)
            .secure_connect(&cluster)
            .await
    } else {
        connector.connect(&cluster).await
    };
    connected.map_err(|e| {
        ConnectError::Session(match e {
            // The client's "no session within the timeout": nothing answered.
            zk::Error::Timeout | zk::Error::NoHosts => Error::ConnectionLoss,
            e => convert::error(e),
        })
    })
}

/// What identifies a live session to the servers: its id and password. Whoever holds these can
/// attach to the session, so they are not printed.
#[derive(Clone)]
pub struct SessionCredentials(zk::SessionInfo);

impl SessionCredentials {
    /// The session id.
    pub fn session_id(&self) -> SessionId {
        SessionId(self.0.id().0)
    }
}

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionCredentials({})", self.session_id())
    }
}

/// Ends the session `credentials` name by closing it from a second connection (Apache Curator's
/// `KillSession` technique): attach to the session with its id and password, then close that
/// connection. The session's own client then finds it expired on its next (re)connection:
/// its ephemeral nodes are gone and it reports [`SessionState::Expired`].
///
/// Returns once the servers answer an attach to the session with "expired": the session and its
/// ephemeral nodes are gone. Also succeeds if the session had already ended. For tests and
/// operators.
///
/// # Notable errors
/// `Session(OperationTimeout)` if the session could not be ended within twice its timeout
/// (plus 5 s); `Session(ConnectionLoss)` is retried meanwhile.
pub async fn kill_session(
    options: &ConnectOptions,
    credentials: &SessionCredentials,
) -> Result<(), ConnectError> {
    let deadline =
        tokio::time::Instant::now() + options.session_timeout * 2 + Duration::from_secs(5);
    let kill = async {
        // The session's own client reattaches as soon as the server drops its connection for
        // ours, and each attach drops the other's connection; a close sent on a connection that
        // is dropped meanwhile is lost. So: attach, close, and repeat until the servers answer
        // an attach with "session expired" — the proof the session is gone.
        loop {
            match open_client(options, Some(credentials.0.clone())).await {
                Ok(client) => {
                    let mut states = client.state_watcher();
                    drop(client);
                    while !states.changed().await.is_terminated() {}
                }
                Err(ConnectError::Session(Error::SessionExpired)) => return Ok(()),
                Err(ConnectError::Session(Error::ConnectionLoss)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout_at(deadline, kill)
        .await
        .map_err(|_| ConnectError::Session(Error::OperationTimeout))?
}

/// A session with a ZooKeeper ensemble, implementing the coordination API's [`Session`].
///
/// It owns one `zookeeper-client` session. Requests are sent in the order they are issued
/// and may be pipelined (issue several, then await them together). Watches are values:
/// dropping an [`OneshotWatch`] or [`PersistentWatch`] unregisters it at the server.
///
/// Dropping a `ZkSession` closes the session in the background; [`Session::close`] closes it
/// and waits until the servers have ended it, so its ephemeral nodes are gone on return.
pub struct ZkSession {
    /// Shared (weakly) with the session's persistent watches, which re-register themselves
    /// after a reconnection; `None` once closed.
    client: Arc<RwLock<Option<zk::Client>>>,
    id: SessionId,
    timeout: Duration,
    credentials: SessionCredentials,
    events: watch::Receiver<SessionState>,
    options: ConnectOptions,
    caps: Capabilities,
}

impl std::fmt::Debug for ZkSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZkSession")
            .field("id", &self.id)
            .field("connect", &self.options.connect.to_string())
            .field("state", &*self.events.borrow())
            .finish()
    }
}

impl ZkSession {
    /// The session's id and password, for [`kill_session`].
    pub fn credentials(&self) -> SessionCredentials {
        self.credentials.clone()
    }

    /// The options the session was opened with.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    fn client(&self) -> Result<zk::Client> {
        self.client
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(Error::ClientClosed)
    }
}

/// A one-shot watch polled straight from `zookeeper-client`'s watcher, with no task in between:
/// the client delivers a watch event before the reply of any later read, and a forwarding task
/// could lose that order (a read resolved while the event still waited for the task to run).
/// Dropping the watch drops the watcher, which unregisters it.
fn oneshot_watch(watcher: zk::OneshotWatcher) -> OneshotWatch {
    OneshotWatch::from_future(async move { convert::event(watcher.changed().await) })
}

/// A persistent watch read straight from `zookeeper-client`'s watcher (no task in between, so
/// events keep their order relative to replies, as one-shot watches do). The watcher must not
/// be asked again after a terminal session event (it would panic), so the source ends there.
/// Dropping the watch drops the watcher, which unregisters it.
///
/// **Re-registered after every reconnection.** `zookeeper-client` 0.11.2 resends only the
/// one-shot watches when it reconnects: its `SetWatches` request is cut to the data, exist and
/// child lists (the index that should select `SetWatches2` with the persistent lists never
/// grows), so without help a persistent watch delivers nothing after the first connection loss
/// — the cause of the dispatch stall of docs/reliability.md. So after a `Disconnected`, the
/// source holds back the following `Connected` event, adds the watch again (`AddWatch` on the
/// same path and mode: idempotent at the server), swaps the new watcher in, and only then
/// passes the `Connected` on. A consumer that reloads on `Connected` (as ZOOKEEPER-4698 asks:
/// events during the disconnection are lost either way) therefore reads after the watch is
/// back, and misses nothing.
fn persistent_watch(
    client: Weak<RwLock<Option<zk::Client>>>,
    path: &str,
    mode: zk::AddWatchMode,
    watcher: zk::PersistentWatcher,
) -> PersistentWatch {
    PersistentWatch::from_source(PersistentSource {
        client,
        path: path.to_string(),
        mode,
        watcher: Some(watcher),
        cut: false,
        rewatch: None,
    })
}

type Rewatch = Pin<Box<dyn Future<Output = Result<zk::PersistentWatcher>> + Send>>;

struct PersistentSource {
    client: Weak<RwLock<Option<zk::Client>>>,
    path: String,
    mode: zk::AddWatchMode,
    watcher: Option<zk::PersistentWatcher>,
    /// A `Disconnected` was seen and the watch not yet added again.
    cut: bool,
    /// The re-registration in flight with the `Connected` event it holds back; kept here so a
    /// dropped `next` future loses neither.
    rewatch: Option<(Rewatch, zk::WatchedEvent)>,
}

/// Adds the watch again, retrying until it is in place or the session is gone. Holds a client
/// only for one attempt at a time, so a closed session is not kept open by a watch.
async fn rewatch(
    client: Weak<RwLock<Option<zk::Client>>>,
    path: String,
    mode: zk::AddWatchMode,
) -> Result<zk::PersistentWatcher> {
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = client
            .upgrade()
            .and_then(|c| c.read().unwrap_or_else(|e| e.into_inner()).clone());
        let Some(attempt) = attempt else {
            return Err(Error::ClientClosed);
        };
        match attempt.watch(&path, mode).await.map_err(convert::error) {
            Ok(w) => return Ok(w),
            Err(e) if e.is_session_fatal() => return Err(e),
            Err(e) => {
                drop(attempt);
                tracing::debug!(%path, error = %e, "re-adding a persistent watch; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

impl WatchSource for PersistentSource {
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<WatchedEvent>> + Send + '_>> {
        Box::pin(async move {
            // Cancellation-safe: the watcher's queue loses nothing when this future is dropped,
            // and a re-registration in flight stays in `self.rewatch`.
            loop {
                if let Some((pending, _)) = self.rewatch.as_mut() {
                    let added = pending.await;
                    let (_, connected) = self.rewatch.take().expect("set above");
                    match added {
                        Ok(w) => {
                            // The old watcher goes with whatever it queued meanwhile: the
                            // consumer reloads on the `Connected` passed on now. Dropping it
                            // sends no removal (the path still has the new watcher).
                            self.watcher = Some(w);
                            self.cut = false;
                            return Some(convert::event(connected));
                        }
                        // The session is gone: the old watcher delivers its terminal event.
                        Err(e) => tracing::debug!(path = %self.path, error = %e,
                            "persistent watch not added again"),
                    }
                }
                let watcher = self.watcher.as_mut()?;
                let event = watcher.changed().await;
                if event.event_type == zk::EventType::Session {
                    match event.session_state {
                        s if s.is_terminated() => self.watcher = None,
                        zk::SessionState::Disconnected => self.cut = true,
                        zk::SessionState::SyncConnected if self.cut => {
                            let fut = rewatch(self.client.clone(), self.path.clone(), self.mode);
                            self.rewatch = Some((Box::pin(fut), event));
                            continue;
                        }
                        _ => {}
                    }
                }
                return Some(convert::event(event));
            }
        })
    }
}

fn zk_acls(acls: &[Acl]) -> Vec<zk::Acl> {
    acls.iter().map(convert::acl_to_zk).collect()
}

/// ZooKeeper's create mode and TTL for the API's options.
fn zk_mode(options: &CreateOptions) -> (zk::CreateMode, Option<Duration>) {
    match options.mode {
        CreateMode::Persistent => (zk::CreateMode::Persistent, None),
        CreateMode::PersistentSequential => (zk::CreateMode::PersistentSequential, None),
        CreateMode::Ephemeral => (zk::CreateMode::Ephemeral, None),
        CreateMode::EphemeralSequential => (zk::CreateMode::EphemeralSequential, None),
        CreateMode::Container => (zk::CreateMode::Container, None),
        CreateMode::PersistentWithTtl => (zk::CreateMode::Persistent, options.ttl),
        CreateMode::PersistentSequentialWithTtl => {
            (zk::CreateMode::PersistentSequential, options.ttl)
        }
    }
}

/// The checks the Java client makes before sending a create: path rules, mode/TTL, a non-empty
/// ACL.
fn check_create(path: &str, options: &CreateOptions) -> Result<()> {
    path::validate_path(path, options.mode.is_sequential())?;
    options.validate()?;
    if options.acls.is_empty() {
        return Err(Error::InvalidAcl);
    }
    Ok(())
}

fn version(v: i32) -> Option<i32> {
    (v != medkeeper_coord::ANY_VERSION).then_some(v)
}

#[async_trait]
impl Session for ZkSession {
    fn session_id(&self) -> SessionId {
        self.id
    }

    fn session_timeout(&self) -> Duration {
        self.timeout
    }

    fn state(&self) -> SessionState {
        *self.events.borrow()
    }

    fn session_events(&self) -> SessionEvents {
        SessionEvents::new(self.events.clone())
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn create(
        &self,
        path: &str,
        data: &[u8],
        options: &CreateOptions,
    ) -> Result<(String, Stat)> {
        check_create(path, options)?;
        if path == "/" {
            // What the server answers; zookeeper-client refuses it locally as BadArguments.
            return Err(Error::NodeExists);
        }
        let client = self.client()?;
        let acls = zk_acls(&options.acls);
        let (mode, ttl) = zk_mode(options);
        let mut zk_options = mode.with_acls(zk::Acls::new(&acls));
        if let Some(ttl) = ttl {
            zk_options = zk_options.with_ttl(ttl);
        }
        let (stat, sequence) = client
            .create(path, data, &zk_options)
            .await
            .map_err(convert::error)?;
        let created = if options.mode.is_sequential() {
            format!("{path}{sequence}")
        } else {
            path.to_string()
        };
        Ok((created, convert::stat(&stat)))
    }

    async fn delete(&self, path: &str, version: i32) -> Result<()> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        client
            .delete(path, self::version(version))
            .await
            .map_err(convert::error)
    }

    async fn exists(&self, path: &str) -> Result<Option<Stat>> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let stat = client.check_stat(path).await.map_err(convert::error)?;
        Ok(stat.as_ref().map(convert::stat))
    }

    async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (stat, watcher) = client
            .check_and_watch_stat(path)
            .await
            .map_err(convert::error)?;
        Ok((stat.as_ref().map(convert::stat), oneshot_watch(watcher)))
    }

    async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (data, stat) = client.get_data(path).await.map_err(convert::error)?;
        Ok((data, convert::stat(&stat)))
    }

    async fn get_data_watch(&self, path: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (data, stat, watcher) = client
            .get_and_watch_data(path)
            .await
            .map_err(convert::error)?;
        Ok((data, convert::stat(&stat), oneshot_watch(watcher)))
    }

    async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let stat = client
            .set_data(path, data, self::version(version))
            .await
            .map_err(convert::error)?;
        Ok(convert::stat(&stat))
    }

    async fn get_children_with_stat(&self, path: &str) -> Result<(Vec<String>, Stat)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (children, stat) = client.get_children(path).await.map_err(convert::error)?;
        Ok((children, convert::stat(&stat)))
    }

    async fn get_children_watch(&self, path: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (children, stat, watcher) = client
            .get_and_watch_children(path)
            .await
            .map_err(convert::error)?;
        Ok((children, convert::stat(&stat), oneshot_watch(watcher)))
    }

    async fn get_acl(&self, path: &str) -> Result<(Vec<Acl>, Stat)> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let (acls, stat) = client.get_acl(path).await.map_err(convert::error)?;
        Ok((
            acls.iter().map(convert::acl_from_zk).collect(),
            convert::stat(&stat),
        ))
    }

    async fn set_acl(&self, path: &str, acls: &[Acl], aversion: i32) -> Result<Stat> {
        path::validate_path(path, false)?;
        if acls.is_empty() {
            return Err(Error::InvalidAcl);
        }
        let client = self.client()?;
        let acls = zk_acls(acls);
        let stat = client
            .set_acl(path, &acls, self::version(aversion))
            .await
            .map_err(convert::error)?;
        Ok(convert::stat(&stat))
    }

    async fn watch(&self, path: &str, mode: AddWatchMode) -> Result<PersistentWatch> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        let mode = match mode {
            AddWatchMode::Persistent => zk::AddWatchMode::Persistent,
            AddWatchMode::PersistentRecursive => zk::AddWatchMode::PersistentRecursive,
        };
        let watcher = client.watch(path, mode).await.map_err(convert::error)?;
        Ok(persistent_watch(
            Arc::downgrade(&self.client),
            path,
            mode,
            watcher,
        ))
    }

    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().map_err(MultiError::whole)?;
        let mut writer = client.new_multi_writer();
        for (i, op) in ops.iter().enumerate() {
            let added = match op {
                Op::Create {
                    path,
                    data,
                    options,
                } => {
                    check_create(path, options).map_err(|e| MultiError::at(i, e))?;
                    let acls = zk_acls(&options.acls);
                    let (mode, ttl) = zk_mode(options);
                    let mut zk_options = mode.with_acls(zk::Acls::new(&acls));
                    if let Some(ttl) = ttl {
                        zk_options = zk_options.with_ttl(ttl);
                    }
                    writer.add_create(path, data, &zk_options)
                }
                Op::Delete { path, version } => {
                    path::validate_path(path, false).map_err(|e| MultiError::at(i, e))?;
                    writer.add_delete(path, self::version(*version))
                }
                Op::SetData {
                    path,
                    data,
                    version,
                } => {
                    path::validate_path(path, false).map_err(|e| MultiError::at(i, e))?;
                    writer.add_set_data(path, data, self::version(*version))
                }
                Op::Check { path, version } => {
                    path::validate_path(path, false).map_err(|e| MultiError::at(i, e))?;
                    writer.add_check_version(path, *version)
                }
            };
            added.map_err(|e| MultiError::at(i, convert::error(e)))?;
        }
        let results = writer.commit().await.map_err(|e| match e {
            zk::MultiWriteError::RequestFailed { source } => {
                MultiError::whole(convert::error(source))
            }
            zk::MultiWriteError::OperationFailed { index, source } => {
                MultiError::at(index, convert::error(source))
            }
        })?;
        results
            .into_iter()
            .map(|r| match r {
                zk::MultiWriteResult::Check => Ok(OpResult::Check),
                zk::MultiWriteResult::Delete => Ok(OpResult::Delete),
                zk::MultiWriteResult::Create { path, .. } => Ok(OpResult::Create { path }),
                zk::MultiWriteResult::SetData { stat } => Ok(OpResult::SetData {
                    stat: convert::stat(&stat),
                }),
                #[allow(unreachable_patterns)]
                _ => Err(MultiError::whole(Error::SystemError)),
            })
            .collect()
    }

    async fn sync(&self, path: &str) -> Result<()> {
        path::validate_path(path, false)?;
        let client = self.client()?;
        client.sync(path).await.map_err(convert::error)
    }

    async fn add_auth(&self, scheme: &str, auth: &[u8]) -> Result<()> {
        let client = self.client()?;
        client.auth(scheme, auth).await.map_err(convert::error)
    }

    async fn close(&self) {
        // The session closes once the last clone of the client is gone: in-flight requests on
        // other tasks finish first.
        drop(
            self.client
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        let mut events = self.session_events();
        let closed = events.wait_for(SessionState::is_terminal);
        // Bounded: an unreachable ensemble expires the session within its timeout.
        if tokio::time::timeout(self.timeout * 2 + Duration::from_secs(2), closed)
            .await
            .is_err()
        {
            tracing::warn!(session = %self.id, "session did not close in time");
        }
    }
}
