//! HTTPS for `medkeeper serve`'s API listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`):
//! rustls on aws-lc-rs, certificates reloaded from disk without a restart.
//!
//! ## How connections are taken
//! [`HttpsListener`] is an [`axum::serve::Listener`], so the API is served by the same
//! `axum::serve` (graceful shutdown, HTTP/1.1 keep-alive, the router's own limits) as over plain
//! HTTP. Behind it, one task accepts TCP connections and hands each to a task of its own for the
//! TLS handshake, bounded by [`HANDSHAKE_TIMEOUT`] and [`MAX_HANDSHAKES`] in progress (past that
//! a new connection is closed at once): a client that never finishes its handshake, or fails
//! it, holds up no one else. Only connections whose handshake succeeded reach axum. Each
//! carries its peer's address as `axum::extract::ConnectInfo<SocketAddr>`, as over plain HTTP.
//!
//! ## Certificate reload
//! The certificate chain, key and client CA are read at start (a bad file stops the start)
//! and again when they change: [`reload`] looks at the files every [`POLL_EVERY`] (modification
//! time, size, inode) and acts on a change once the files have stayed the same for one more look,
//! so a certificate and key written one after the other are read together. `SIGHUP` reloads at
//! once. A new set that does not load (unreadable, not PEM, a key that does not match the
//! certificate, a CA file without a certificate) is logged and the one in use kept. New
//! connections get the new certificate; established ones keep the one they were made with.
//!
//! ## Client certificates
//! With `--tls-client-ca FILE`, a client certificate must chain to a CA in FILE:
//! [`ClientAuth::Required`] (the default) refuses a handshake without one;
//! [`ClientAuth::Optional`] takes a client without a certificate too (browsers), but still
//! refuses one whose certificate does not verify. Either way this only decides who may connect:
//! every request still needs its bearer token, and the certificate gives no role.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has for its TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; a connection beyond it is closed unanswered.
pub const MAX_HANDSHAKES: usize = 256;
/// How often the certificate files are looked at for a change.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Whether a client must present a certificate (with `--tls-client-ca`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// A handshake without a client certificate is refused.
    #[default]
    Required,
    /// A client without a certificate is taken; one with a certificate that does not chain to
    /// the CA is refused.
    Optional,
}

/// The files HTTPS is served from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs (PEM) client certificates must chain to; none: no client certificates asked for.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required (with `client_ca`).
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    fn paths(&self) -> Vec<&Path> {
        let mut paths = vec![self.cert.as_path(), self.key.as_path()];
        paths.extend(self.client_ca.as_deref());
        paths
    }

    /// Reads the files into a server configuration.
    ///
    /// # Errors
    /// A file that cannot be read or holds no certificate or key, a key that does not match the
    /// certificate, a CA file rustls cannot use.
    pub fn load(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = read_certs(&self.cert, "--tls-cert")?;
        let key_pem = std::fs::read(&self.key).with_context(|| {
            format!("cannot read the TLS key {} (--tls-key)", self.key.display())
        })?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            anyhow::anyhow!("no private key in {} (--tls-key): {e}", self.key.display())
        })?;
        warn_if_readable(&self.key);
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(self.client_verifier(ca, provider)?),
        };
        let mut config = builder.with_single_cert(chain, key).with_context(|| {
            format!(
                "the TLS key {} does not fit the certificate {}",
                self.key.display(),
                self.cert.display()
            )
        })?;
        // axum serves HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn client_verifier(
        &self,
        ca: &Path,
        provider: Arc<CryptoProvider>,
    ) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(ca, "--tls-client-ca")? {
            roots.add(cert).with_context(|| {
                format!(
                    "a certificate in {} (--tls-client-ca) is not usable as a CA",
                    ca.display()
                )
            })?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = match self.client_auth {
            ClientAuth::Required => builder,
            ClientAuth::Optional => builder.allow_unauthenticated(),
        };
        builder
            .build()
            .with_context(|| format!("--tls-client-ca {}", ca.display()))
    }

    /// What identifies the files' current contents: a change in any is a reason to reload.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64, u64)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len(), m.ino()))
            })
            .collect()
    }
}

/// Every certificate in a PEM file, at least one.
fn read_certs(path: &Path, flag: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("cannot read {} ({flag})", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{} ({flag}) is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {} ({flag})", path.display());
    }
    Ok(certs)
}

fn warn_if_readable(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(key)
        && m.permissions().mode() & 0o004 != 0
    {
        tracing::warn!(
            "the TLS key {} has mode {:03o}: other users may read it; `chmod 600` it (640 \
             with a service group)",
            key.display(),
            m.permissions().mode() & 0o777
        );
    }
}

/// Keeps `config` up to date with `files` (see the module docs) until every receiver of it is
/// gone.
pub async fn reload(files: TlsFiles, config: watch::Sender<Arc<ServerConfig>>) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP handler ({e}): TLS certificates reload on change only");
            None
        }
    };
    let mut loaded = files.stamps();
    let mut seen = loaded.clone();
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let forced = tokio::select! {
            _ = config.closed() => return,
            _ = tick.tick() => false,
            Some(()) = async {
                match hangup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        let now = files.stamps();
        // A change is read once the files have stood still for one look (a certificate and
        // its key are seldom written at the same instant).
        let settled = now == seen;
        seen = now.clone();
        if !forced && (!settled || now == loaded) {
            continue;
        }
        loaded = now;
        match files.load() {
            Ok(new) => {
                config.send_replace(new);
                tracing::info!(
                    cert = %files.cert.display(),
                    "TLS certificate reloaded; new connections use it"
                );
            }
            Err(e) => tracing::warn!(
                "TLS certificate not reloaded, still serving the previous one: {e:#}"
            ),
        }
    }
}

/// A listener that serves TLS: see the module docs.
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::AbortHandle,
}

impl HttpsListener {
    /// Takes connections on `tcp`, handshaking with the configuration `config` holds when each
    /// arrives.
    pub fn new(
        tcp: TcpListener,
        config: watch::Receiver<Arc<ServerConfig>>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept(tcp, config, tx)).abort_handle();
        Ok(HttpsListener {
            ready,
            local,
            accepting,
        })
    }
}

impl Drop for HttpsListener {
    fn drop(&mut self) {
        // Closes the port at once (axum drops its listener when shutting down).
        self.accepting.abort();
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task ended (it only does when aborted): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept(
    tcp: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = tokio::select! {
            _ = ready.closed() => return,
            accepted = tcp.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "{MAX_HANDSHAKES} TLS handshakes in progress; connection closed");
            continue;
        };
        let acceptor = TlsAcceptor::from(config.borrow().clone());
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake not done in {HANDSHAKE_TIMEOUT:?}"),
            }
        });
    }
}

/// As axum's own listener: a connection's own error is skipped; anything else (out of file
/// descriptors) is logged and waited out for a second.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accept error: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
