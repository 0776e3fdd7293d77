//! Opens a session on either backend from a target string, for the examples:
//! `embedded:DIR` (the embedded engine; one process per directory) or
//! `zk:HOST:PORT[,HOST:PORT...][/chroot]` (a ZooKeeper ensemble).

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::Session;

/// A session and, for the embedded engine, the engine that serves it.
pub struct Connected {
    /// The session.
    pub session: Arc<dyn Session>,
    _engine: Option<medkeeper_embedded::Engine>,
}

/// Connects to `target` with a 6 s session timeout.
pub async fn connect(target: &str) -> Result<Connected, Box<dyn std::error::Error>> {
    let timeout = Duration::from_secs(6);
    if let Some(dir) = target.strip_prefix("embedded:") {
        let engine = medkeeper_embedded::Engine::open(medkeeper_embedded::EngineConfig::new(dir))?;
        let session = engine
            .connect(medkeeper_embedded::SessionOptions { timeout })
            .await;
        return Ok(Connected {
            session: Arc::new(session),
            _engine: Some(engine),
        });
    }
    if target.starts_with("zk:") {
        let options = medkeeper_zk::ConnectOptions::new(target)?.with_session_timeout(timeout);
        let session = medkeeper_zk::connect(options).await?;
        return Ok(Connected {
            session: Arc::new(session),
            _engine: None,
        });
    }
    Err(format!("expected embedded:DIR or zk:HOST:PORT[,...][/chroot], got {target:?}").into())
}

/// The target from the first argument, or an embedded engine in a temporary-looking default.
pub fn target_from_args() -> String {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "embedded:./medkeeper-data/examples".to_string())
}
