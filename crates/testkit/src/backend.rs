//! The two coordination backends a test runs on, behind one [`Backend`] trait: the embedded
//! engine in a temporary directory, and the real ZooKeeper `MEDKEEPER_ZK_CONNECT` names
//! (`scripts/test-zk` starts one and sets it; unset, the ZooKeeper tests print a skip line and
//! pass).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use medkeeper_coord::{Error, Session, SessionState};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_zk::{ConnectError, ConnectOptions, SessionCredentials};

/// A coordination backend for a test case: sessions on one service, a way to expire one as the
/// service would, and fresh paths so that cases can share a server.
#[async_trait]
pub trait Backend: Send + Sync {
    /// A new session with (about) this timeout; the service may clamp it into its bounds.
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session>;

    /// The timeout of [`session`](Backend::session).
    fn session_timeout(&self) -> Duration;

    /// A new session with the backend's [`session_timeout`](Backend::session_timeout).
    async fn session(&self) -> Arc<dyn Session> {
        self.connect(self.session_timeout()).await
    }

    /// Expires `session` as the service would if its client stopped heartbeating; returns once
    /// the session knows it is over. Only for sessions this backend opened.
    async fn expire(&self, session: &dyn Session);

    /// A fresh, unique, not yet existing path for one case: `/tests/<case>-<unique>`.
    fn base(&self, case: &str) -> String {
        format!("/tests/{}", unique_name(case))
    }

    /// "embedded" or "zk".
    fn name(&self) -> &'static str;
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// `<prefix>-<pid>-<time>-<counter>`: unique on this machine, across runs and processes.
pub fn unique_name(prefix: &str) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{t:x}-{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// `MEDKEEPER_ZK_CONNECT`, if set and not empty.
pub fn zk_connect_string() -> Option<String> {
    std::env::var("MEDKEEPER_ZK_CONNECT")
        .ok()
        .filter(|s| !s.is_empty())
}

/// Says that `test` did not run for want of a ZooKeeper.
pub fn skip(test: &str) {
    println!("SKIP {test}: MEDKEEPER_ZK_CONNECT is not set (run scripts/test-zk)");
}

/// The embedded engine, one per case in its own temporary directory (removed after the
/// engine has stopped).
pub struct Embedded {
    engine: Engine,
    timeout: Duration,
    _dir: tempfile::TempDir,
}

impl Default for Embedded {
    fn default() -> Self {
        Embedded::new()
    }
}

impl Embedded {
    /// A fresh engine with the ZooKeeper test servers' timings (tick 200 ms, so sessions of
    /// 400 ms to 4 s; containers and TTL nodes reaped every 200 ms) and sessions of 4 s.
    pub fn new() -> Embedded {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = EngineConfig::new(dir.path());
        config.tick = Duration::from_millis(200);
        config.reap_interval = Duration::from_millis(200);
        config.segment_size = 1 << 20;
        let engine = Engine::open(config).expect("open engine");
        Embedded {
            engine,
            timeout: Duration::from_secs(4),
            _dir: dir,
        }
    }

    /// [`Backend::session`] opens sessions with this timeout.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Embedded {
        self.timeout = timeout;
        self
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

#[async_trait]
impl Backend for Embedded {
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session> {
        Arc::new(self.engine.connect(SessionOptions { timeout }).await)
    }

    fn session_timeout(&self) -> Duration {
        self.timeout
    }

    async fn expire(&self, session: &dyn Session) {
        self.engine.expire_session(session.session_id()).await;
    }

    fn name(&self) -> &'static str {
        "embedded"
    }
}

/// Real ZooKeeper at `MEDKEEPER_ZK_CONNECT`. Expiry is forced with [`kill_session`], so the
/// backend remembers the credentials of every session it opens.
pub struct Zk {
    hosts: Vec<String>,
    chroot: String,
    first_member_only: bool,
    timeout: Duration,
    credentials: Mutex<HashMap<i64, SessionCredentials>>,
}

impl Zk {
    /// The server or ensemble `MEDKEEPER_ZK_CONNECT` names, if set; sessions connect to it as
    /// the string says (any member) and time out after 4 s.
    pub fn from_env() -> Option<Zk> {
        let connect = zk_connect_string()?;
        let (hosts, chroot) = match connect.find('/') {
            Some(i) => connect.split_at(i),
            None => (connect.as_str(), ""),
        };
        Some(Zk {
            hosts: hosts.split(',').map(str::to_string).collect(),
            chroot: chroot.to_string(),
            first_member_only: false,
            timeout: Duration::from_secs(4),
            credentials: Mutex::new(HashMap::new()),
        })
    }

    /// [`from_env`](Zk::from_env) in a fresh chroot below `parent` (see
    /// [`in_fresh_chroot`](Zk::in_fresh_chroot)).
    pub async fn from_env_in_fresh_chroot(parent: &str) -> Option<Zk> {
        Some(Zk::from_env()?.in_fresh_chroot(parent).await)
    }

    /// Every session connects to the ensemble's first member, and an expiry is forced from
    /// the others. A case's assertions read what its other sessions wrote, which ZooKeeper
    /// guarantees on one member (a member applies commits in order) but across members only
    /// after a `sync`; and on one server the killer's connection and the victim's reconnection
    /// could take the session from each other.
    pub fn on_first_member(mut self) -> Zk {
        self.first_member_only = true;
        self
    }

    /// Roots every session in a new chroot `<parent>/<unique>` (created here, with its
    /// ancestors), so that tests sharing a server do not share paths such as `/medical`.
    pub async fn in_fresh_chroot(mut self, parent: &str) -> Zk {
        self.chroot = format!("{}{parent}/{}", self.chroot, unique_name("t"));
        medkeeper_zk::ensure_chroot(&self.options())
            .await
            .expect("create the test's chroot");
        self
    }

    /// [`Backend::session`] opens sessions with this timeout.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Zk {
        self.timeout = timeout;
        self
    }

    /// The connect string sessions use: hosts and chroot, without a `zk:` prefix.
    pub fn connect_string(&self) -> String {
        let hosts = if self.first_member_only {
            &self.hosts[..1]
        } else {
            &self.hosts[..]
        };
        format!("{}{}", hosts.join(","), self.chroot)
    }

    /// The options sessions are opened with (before their timeout is set).
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new(&self.connect_string()).expect("MEDKEEPER_ZK_CONNECT is valid")
    }

    fn killer(&self) -> ConnectOptions {
        if self.first_member_only && self.hosts.len() > 1 {
            ConnectOptions::new(&format!("{}{}", self.hosts[1..].join(","), self.chroot))
                .expect("MEDKEEPER_ZK_CONNECT is valid")
        } else {
            self.options()
        }
    }
}

#[async_trait]
impl Backend for Zk {
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session> {
        let options = self.options().with_session_timeout(timeout);
        let session = medkeeper_zk::connect(options).await.expect("connect");
        self.credentials
            .lock()
            .unwrap()
            .insert(session.session_id().0, session.credentials());
        Arc::new(session)
    }

    fn session_timeout(&self) -> Duration {
        self.timeout
    }

    async fn expire(&self, session: &dyn Session) {
        let credentials = self
            .credentials
            .lock()
            .unwrap()
            .get(&session.session_id().0)
            .cloned()
            .expect("session opened by this backend");
        kill_session(&self.killer(), session, &credentials).await;
    }

    fn name(&self) -> &'static str {
        "zk"
    }
}

/// Expires a ZooKeeper session by Curator's KillSession technique (a second connection with
/// its credentials, closed), then waits up to 30 s until `session` itself knows it is over.
/// Returns the state it ended in (`Expired` when the server told it so).
pub async fn kill_session(
    killer: &ConnectOptions,
    session: &dyn Session,
    credentials: &SessionCredentials,
) -> SessionState {
    match medkeeper_zk::kill_session(killer, credentials).await {
        Ok(()) | Err(ConnectError::Session(Error::SessionExpired)) => {}
        Err(e) => panic!("kill_session: {e}"),
    }
    let mut events = session.session_events();
    tokio::time::timeout(
        Duration::from_secs(30),
        events.wait_for(SessionState::is_terminal),
    )
    .await
    .expect("the session learns it expired")
}

/// Generates, for each case `async fn case(b: &dyn Backend)` of the enclosing module, a test
/// `embedded::case` and a test `zk::case` (which prints a skip line and passes without
/// `MEDKEEPER_ZK_CONNECT`).
///
/// By default the backends are [`Embedded::new()`] and [`Zk::from_env()`] on its first
/// member ([`Zk::on_first_member`]). Other ones are named first; the `zk` expression yields an
/// `Option` and may `.await`:
///
/// ```ignore
/// medkeeper_testkit::backend_tests!(
///     embedded: Embedded::new().with_session_timeout(Duration::from_secs(2)),
///     zk: Zk::from_env_in_fresh_chroot("/hospital-tests").await;
///     lifecycle, failover,
/// );
/// ```
#[macro_export]
macro_rules! backend_tests {
    (embedded: $embedded:expr, zk: $zk:expr; $($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $embedded;
                    super::$case(&backend).await;
                }
            )*
        }
        mod zk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = $zk else {
                        $crate::skip(stringify!($case));
                        return;
                    };
                    super::$case(&backend).await;
                }
            )*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::backend_tests!(
            embedded: $crate::Embedded::new(),
            zk: $crate::Zk::from_env().map($crate::Zk::on_first_member);
            $($case),*
        );
    };
}
