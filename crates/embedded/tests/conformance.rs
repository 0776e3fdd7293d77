//! The backend-generic conformance suite of `medkeeper-coord`, run on the embedded engine.
//! Each case gets its own engine in its own temporary directory.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::Session;
use medkeeper_coord::conformance::Harness;
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};

struct Embedded {
    engine: Engine,
    _dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Embedded {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = EngineConfig::new(dir.path());
        // Like the ZooKeeper test servers: tickTime 200 ms (sessions 400 ms..4 s), fast reaping.
        config.tick = Duration::from_millis(200);
        config.reap_interval = Duration::from_millis(200);
        config.segment_size = 1 << 20;
        let engine = Engine::open(config).expect("open engine");
        Embedded { engine, _dir: dir }
    }
}

#[async_trait]
impl Harness for Embedded {
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session> {
        Arc::new(self.engine.connect(SessionOptions { timeout }).await)
    }

    async fn expire(&self, session: &dyn Session) {
        self.engine.expire_session(session.session_id()).await;
    }

    fn base_path(&self, case: &str) -> String {
        format!("/conformance/{case}")
    }
}

medkeeper_coord::conformance_tests!(Embedded::new());
