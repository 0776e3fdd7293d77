//! What every case gets: sessions on one backend, a way to expire one, a fresh base path, and
//! a forwarding [`Session`] wrapper that counts watch notifications and loses replies on
//! request ([`Faulty`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{
    Acl, AddWatchMode, Capabilities, CreateOptions, Error, MultiError, OneshotWatch, Op, OpResult,
    PersistentWatch, Result, Session, SessionEvents, SessionId, SessionState, Stat,
};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_zk::{ConnectError, ConnectOptions, SessionCredentials};

/// A backend for the recipe cases.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new session with about this timeout.
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session>;
    /// A new session with the default timeout of the cases (4 s).
    async fn session(&self) -> Arc<dyn Session> {
        self.connect(Duration::from_secs(4)).await
    }
    /// Expires `session` as the service would if its client stopped heartbeating; returns once
    /// it is expired.
    async fn expire(&self, session: &dyn Session);
    /// A fresh, unique, non-existing path for one case.
    fn base(&self, case: &str) -> String;
    /// "embedded" or "zk".
    #[allow(dead_code)]
    fn name(&self) -> &'static str;
}

static NONCE: AtomicU64 = AtomicU64::new(0);

fn unique(case: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "/recipes/{case}-{}-{t:x}-{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// The embedded engine, one per case in its own directory.
pub struct Embedded {
    /// The engine.
    pub engine: Engine,
    _dir: tempfile::TempDir,
}

impl Default for Embedded {
    fn default() -> Self {
        Embedded::new()
    }
}

impl Embedded {
    /// A fresh engine with ZooKeeper-test-like timings (tick 200 ms, fast reaping).
    pub fn new() -> Embedded {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = EngineConfig::new(dir.path());
        config.tick = Duration::from_millis(200);
        config.reap_interval = Duration::from_millis(200);
        config.segment_size = 1 << 20;
        let engine = Engine::open(config).expect("open engine");
        Embedded { engine, _dir: dir }
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session> {
        Arc::new(self.engine.connect(SessionOptions { timeout }).await)
    }

    async fn expire(&self, session: &dyn Session) {
        self.engine.expire_session(session.session_id()).await;
    }

    fn base(&self, case: &str) -> String {
        unique(case)
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// Real ZooKeeper at `MEDKEEPER_ZK_CONNECT`.
pub struct Zk {
    /// Options every session is opened with.
    pub options: ConnectOptions,
    /// Options a forced expiry connects with.
    killer: ConnectOptions,
    credentials: Mutex<HashMap<i64, SessionCredentials>>,
}

impl Zk {
    /// The server `MEDKEEPER_ZK_CONNECT` names, if set. On an ensemble every session of the
    /// cases connects to its first member: a case's assertions read what its other sessions
    /// wrote, which ZooKeeper guarantees on one member (a member applies commits in order) but
    /// across members only after a `sync`. The recipes themselves need no such thing (their
    /// reads follow their own writes and watches); cross-member ordering is the conformance
    /// suite's, and leader failover the zk crate's tests'.
    pub fn from_env() -> Option<Zk> {
        let connect = std::env::var("MEDKEEPER_ZK_CONNECT")
            .ok()
            .filter(|s| !s.is_empty())?;
        let (hosts, chroot) = match connect.find('/') {
            Some(i) => connect.split_at(i),
            None => (connect.as_str(), ""),
        };
        let mut all = hosts.split(',');
        let first = all.next().unwrap_or(hosts);
        let others: Vec<&str> = all.collect();
        let options = ConnectOptions::new(&format!("{first}{chroot}"))
            .expect("MEDKEEPER_ZK_CONNECT is valid");
        // An expiry is forced from another member (on one server the killer's connection and
        // the victim's reconnection can take the session from each other).
        let killer = if others.is_empty() {
            options.clone()
        } else {
            ConnectOptions::new(&format!("{}{chroot}", others.join(",")))
                .expect("MEDKEEPER_ZK_CONNECT is valid")
        };
        Some(Zk {
            options,
            killer,
            credentials: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl Backend for Zk {
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session> {
        let options = self.options.clone().with_session_timeout(timeout);
        let session = medkeeper_zk::connect(options).await.expect("connect");
        self.credentials
            .lock()
            .unwrap()
            .insert(session.session_id().0, session.credentials());
        Arc::new(session)
    }

    async fn expire(&self, session: &dyn Session) {
        let creds = self
            .credentials
            .lock()
            .unwrap()
            .get(&session.session_id().0)
            .cloned()
            .expect("session opened by this backend");
        match medkeeper_zk::kill_session(&self.killer, &creds).await {
            Ok(()) | Err(ConnectError::Session(Error::SessionExpired)) => {}
            Err(e) => panic!("kill_session: {e}"),
        }
        let mut events = session.session_events();
        tokio::time::timeout(
            Duration::from_secs(30),
            events.wait_for(SessionState::is_terminal),
        )
        .await
        .expect("the session learns it expired");
    }

    fn base(&self, case: &str) -> String {
        unique(case)
    }

    fn name(&self) -> &'static str {
        "zk"
    }
}

/// Generates, for each case `async fn case(b: &dyn Backend)` of the enclosing module, a test
/// `embedded::case` and a test `zk::case`.
#[macro_export]
macro_rules! backend_tests {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $crate::harness::Embedded::new();
                    super::$case(&backend).await;
                }
            )*
        }
        mod zk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = $crate::harness::Zk::from_env() else {
                        println!("SKIP {}: MEDKEEPER_ZK_CONNECT is not set (run scripts/test-zk)", stringify!($case));
                        return;
                    };
                    super::$case(&backend).await;
                }
            )*
        }
    };
}

/// A session that forwards every call to another, with the faults and counters a case switches
/// on: `Faulty::wrap(s).count_watches(fired).lose_next_create_reply().into_session()`.
pub struct Faulty {
    inner: Arc<dyn Session>,
    /// Where fired one-shot watch notifications are counted (node events only, not
    /// session-end events), if anywhere.
    fired: Option<Arc<AtomicUsize>>,
    /// The next `create` is applied but answered with `ConnectionLoss`.
    lose_create_reply: AtomicBool,
    /// The next multi that creates something is applied but answered with `ConnectionLoss`.
    lose_multi_reply: AtomicBool,
}

impl Faulty {
    /// `inner`, unchanged until a fault or counter is switched on.
    pub fn wrap(inner: Arc<dyn Session>) -> Faulty {
        Faulty {
            inner,
            fired: None,
            lose_create_reply: AtomicBool::new(false),
            lose_multi_reply: AtomicBool::new(false),
        }
    }

    /// Counts the one-shot watch notifications delivered through this session into `fired`.
    pub fn count_watches(mut self, fired: Arc<AtomicUsize>) -> Faulty {
        self.fired = Some(fired);
        self
    }

    /// Applies the next `create` but answers it with `ConnectionLoss`, as when the connection
    /// drops after the request was sent and before its reply arrived.
    pub fn lose_next_create_reply(self) -> Faulty {
        self.lose_create_reply.store(true, Ordering::SeqCst);
        self
    }

    /// Applies the next multi that creates something but answers it with `ConnectionLoss`.
    pub fn lose_next_multi_reply(self) -> Faulty {
        self.lose_multi_reply.store(true, Ordering::SeqCst);
        self
    }

    /// The wrapper as a session.
    pub fn into_session(self) -> Arc<dyn Session> {
        Arc::new(self)
    }

    fn count(&self, watch: OneshotWatch) -> OneshotWatch {
        let Some(fired) = self.fired.clone() else {
            return watch;
        };
        OneshotWatch::from_future(async move {
            let event = watch.await;
            if event.event_type != medkeeper_coord::EventType::Session {
                fired.fetch_add(1, Ordering::SeqCst);
            }
            event
        })
    }
}

#[async_trait]
impl Session for Faulty {
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
        let r = self.inner.create(p, d, o).await;
        if r.is_ok() && self.lose_create_reply.swap(false, Ordering::SeqCst) {
            return Err(Error::ConnectionLoss);
        }
        r
    }
    async fn delete(&self, p: &str, v: i32) -> Result<()> {
        self.inner.delete(p, v).await
    }
    async fn exists(&self, p: &str) -> Result<Option<Stat>> {
        self.inner.exists(p).await
    }
    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        let (s, w) = self.inner.exists_watch(p).await?;
        Ok((s, self.count(w)))
    }
    async fn get_data(&self, p: &str) -> Result<(Vec<u8>, Stat)> {
        self.inner.get_data(p).await
    }
    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        let (d, s, w) = self.inner.get_data_watch(p).await?;
        Ok((d, s, self.count(w)))
    }
    async fn set_data(&self, p: &str, d: &[u8], v: i32) -> Result<Stat> {
        self.inner.set_data(p, d, v).await
    }
    async fn get_children_with_stat(&self, p: &str) -> Result<(Vec<String>, Stat)> {
        self.inner.get_children_with_stat(p).await
    }
    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        let (c, s, w) = self.inner.get_children_watch(p).await?;
        Ok((c, s, self.count(w)))
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
        let r = self.inner.multi(ops).await;
        let creates = ops.iter().any(|o| matches!(o, Op::Create { .. }));
        if r.is_ok() && creates && self.lose_multi_reply.swap(false, Ordering::SeqCst) {
            return Err(MultiError::whole(Error::ConnectionLoss));
        }
        r
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
