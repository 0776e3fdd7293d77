//! Backend-generic conformance cases: one suite that every backend runs unchanged (the pattern
//! of object_store's `integration.rs`).
//!
//! A backend's test binary implements [`Harness`] and expands [`conformance_tests!`], which
//! generates one `#[tokio::test]` per case, so every case is its own test:
//!
//! ```ignore
//! medkeeper_coord::conformance_tests!(my_backend_tests::harness().await);
//! ```
//!
//! Each case works below its own fresh base path (from [`Harness::base_path`]), so cases can run
//! in parallel against one shared server. A real difference between backends is read from
//! [`Capabilities`](crate::Capabilities), never a forked case.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::Session;

/// What a backend gives the conformance suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens a new session with (about) the requested timeout; the backend may clamp it into its
    /// bounds, as ZooKeeper does.
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session>;

    /// Ends `session` by expiry, as if its client had stopped heartbeating (ZooKeeper:
    /// Curator's KillSession technique). Returns once the service has expired it.
    async fn expire(&self, session: &dyn Session);

    /// A fresh, unique, not yet existing path for one case (e.g. `/conformance/<case>-<nonce>`).
    fn base_path(&self, case: &str) -> String;
}

/// Generates one `#[tokio::test]` per conformance case. `$harness` is an expression (it may use
/// `.await`) evaluated in each test, yielding something that implements [`Harness`].
#[macro_export]
macro_rules! conformance_tests {
    (@cases $harness:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            create_and_get,
        );
    };
}

/// A persistent node can be created and read back with the stat ZooKeeper gives it.
pub async fn create_and_get(h: &dyn Harness) {
    use crate::{CreateMode, CreateOptions, SessionExt};
    let s = h.connect(Duration::from_secs(10)).await;
    let base = h.base_path("create_and_get");
    s.ensure_path(&base).await.unwrap();
    let p = format!("{base}/a");
    let (path, stat) = s
        .create(&p, b"hello", &CreateOptions::new(CreateMode::Persistent))
        .await
        .unwrap();
    assert_eq!(path, p);
    assert_eq!(stat.version, 0);
    assert_eq!(stat.data_length, 5);
    assert_eq!(stat.czxid, stat.mzxid);
    let (data, st2) = s.get_data(&p).await.unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(st2, stat);
    s.close().await;
}
