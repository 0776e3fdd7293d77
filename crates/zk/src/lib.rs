//! # medkeeper-zk: the coordination API over a real Apache ZooKeeper ensemble
//!
//! Where a hospital outgrows one machine it runs a ZooKeeper ensemble (three servers tolerate
//! one failure; ZAB replicates). This crate implements `medkeeper-coord`'s
//! [`Session`](medkeeper_coord::Session) over the `zookeeper-client` crate, so recipes and the
//! domain run unchanged on either backend; the same conformance suite runs against both.
//!
//! Layout:
//! - [`connect`] opens a [`ZkSession`] from [`ConnectOptions`]: a [`ConnectString`]
//!   (`[zk:|zk+tls:]HOST:PORT[,HOST:PORT...][/chroot]`), the session timeout, digest
//!   credentials, and [`TlsConfig`] (a CA, and a client certificate for mutual TLS).
//! - [`ZkSession`] implements the `Session` trait: every request maps to one ZooKeeper request,
//!   every ZooKeeper error to the API's [`Error`](medkeeper_coord::Error) kind, session states
//!   to [`SessionState`](medkeeper_coord::SessionState) (`Disconnected` — ephemerals may still be
//!   held — is kept apart from `Expired` — they are gone).
//! - [`ensure_chroot`]: creates a connect string's chroot if it does not exist (a session
//!   with a missing chroot connects, but every request fails with `NoNode`).
//! - [`kill_session`]: ends a session from outside, as a server-side expiry (for tests).
//!
//! What this backend guarantees beyond the trait:
//! - **Deterministic close.** `zookeeper-client` closes a session in the background once its last
//!   client is dropped; [`Session::close`](medkeeper_coord::Session::close) drops it and waits for
//!   the servers' answer, so ephemeral nodes are gone when it returns.
//! - **Watches are values.** Each watch polls `zookeeper-client`'s watcher directly (no task in
//!   between, so a watch event is seen before the reply of any later read, as ZooKeeper
//!   orders them); dropping the watch drops the watcher, which unregisters it. Persistent
//!   watches also pass on `Disconnected`/`Connected` session events: events during a
//!   reconnection can be lost (ZOOKEEPER-4698), so a consumer that must not miss one re-reads
//!   after a `Disconnected`. After a reconnection the backend registers each persistent watch
//!   again before passing the `Connected` on (`zookeeper-client` 0.11.2 resends only one-shot
//!   watches; without this a persistent watch went silent after the first connection loss).
//! - **Oversized data** (over `jute.maxbuffer`) makes the server drop the connection: the request
//!   fails with `ConnectionLoss` and the session reconnects
//!   ([`Capabilities::oversize_data_error`](medkeeper_coord::Capabilities)).
//! - In a multi, a create's stat is not reported (ZOOKEEPER-4026); the API's
//!   [`OpResult::Create`](medkeeper_coord::OpResult) carries only the path.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
//!
//! let options = medkeeper_zk::ConnectOptions::new("127.0.0.1:2181,127.0.0.1:2182/medkeeper")?
//!     .with_session_timeout(Duration::from_secs(6));
//! let session: Arc<dyn Session> = Arc::new(medkeeper_zk::connect(options).await?);
//! session.ensure_path("/medical/members").await?;
//! let (path, _stat) = session
//!     .create("/medical/members/instance-", b"", &CreateOptions::new(CreateMode::EphemeralSequential))
//!     .await?;
//! println!("registered as {path}");
//! session.close().await; // the member node is gone once this returns
//! # Ok(()) }
//! ```

mod connect;
mod convert;
mod session;

pub use connect::{
    ConnectError, ConnectOptions, ConnectString, DEFAULT_MAX_DATA_LEN, HostPort, TlsConfig,
};
pub use session::{
    MIN_REQUESTED_TIMEOUT, SessionCredentials, ZkSession, connect, ensure_chroot, kill_session,
};
