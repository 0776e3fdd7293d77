//! What every case gets: sessions on one backend, a way to expire one, a fresh base path, and
//! a forwarding [`Session`] wrapper that counts watch notifications and loses replies on
//! request ([`Faulty`], from `medkeeper_coord::faulty`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
pub use medkeeper_coord::faulty::Faulty;
use medkeeper_coord::{Error, Session, SessionState};
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
