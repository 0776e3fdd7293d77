//! TLS to PostgreSQL with libpq's `sslmode` semantics, over rustls (the rustls 0.23 with
//! aws-lc-rs that medkeeper already carries for ZooKeeper's TLS; `tokio-rustls` glues it to
//! tokio).
//!
//! tokio-postgres itself knows only `disable`, `prefer` and `require`, and no certificate
//! files; [`split_url`] takes libpq's TLS parameters out of the URL (or key=value string)
//! before tokio-postgres reads the rest, and [`PgTls`] connects as libpq would:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it, else plain | not checked; with a root CA file, the chain is checked and a failed handshake falls back to plain, as libpq does |
//! | `require` | always | **not checked** (encryption only: an active attacker can pose as the server); with a root CA file, the chain is checked as for `verify-ca` (libpq's backward-compatible rule) |
//! | `verify-ca` | always | signed by the CA in `sslrootcert` |
//! | `verify-full` | always | signed by that CA **and** valid for the host name connected to (subjectAltName DNS name or IP address) |
//!
//! The root CA file is `sslrootcert=FILE`, else libpq's default `~/.postgresql/root.crt` if it
//! exists. `sslcert=FILE` and `sslkey=FILE` (PEM) present a client certificate. Differences
//! from libpq, on purpose: `allow` and `sslrootcert=system` are refused (use `prefer`; give the
//! CA's file); a certificate file given but missing is an error under every mode (libpq quietly
//! skips verification under `require`); host names are matched against subjectAltName only,
//! never the subject's CN (as webpki does, and RFC 6125 advises); `sslcrl`, `sslpassword`
//! (encrypted keys) and libpq's default client certificate `~/.postgresql/postgresql.crt` are
//! not supported.
//!
//! With TLS, SCRAM authentication uses channel binding (`SCRAM-SHA-256-PLUS`,
//! `tls-server-end-point`, RFC 5929): the password exchange is tied to the certificate the
//! client saw, so a man in the middle cannot relay it even under `require`.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use tokio_postgres::{Client, Config, NoTls, Socket};

use crate::store::StoreError;

/// libpq's `sslmode`, less `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS if the server offers it (the default).
    Prefer,
    /// TLS always; the certificate unchecked unless a root CA file exists.
    Require,
    /// TLS always; the certificate's chain checked against the root CA file.
    VerifyCa,
    /// TLS always; the chain checked and the host name matched.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, StoreError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(invalid(
                    "sslmode=allow is not supported (use prefer, or better require or verify-full)",
                ));
            }
            other => {
                return Err(invalid(&format!(
                    "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                )));
            }
        })
    }

    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

fn invalid(what: &str) -> StoreError {
    StoreError::Backend(format!("invalid PostgreSQL URL: {what}"))
}

/// The TLS parameters [`split_url`] took out of a connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsParams {
    /// `sslmode`; `prefer` if absent, as in libpq.
    pub mode: SslMode,
    /// `sslrootcert`.
    pub root_cert: Option<PathBuf>,
    /// `sslcert`.
    pub cert: Option<PathBuf>,
    /// `sslkey`.
    pub key: Option<PathBuf>,
}

const TLS_KEYS: &[&str] = &["sslmode", "sslrootcert", "sslcert", "sslkey"];
const REFUSED_KEYS: &[&str] = &["sslcrl", "sslcrldir", "sslpassword", "sslsni", "requiressl"];

impl TlsParams {
    fn set(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        match key {
            "sslmode" => self.mode = SslMode::parse(value)?,
            "sslrootcert" if value == "system" => {
                return Err(invalid(
                    "sslrootcert=system is not supported: give the CA's certificate file",
                ));
            }
            "sslrootcert" => self.root_cert = Some(value.into()),
            "sslcert" => self.cert = Some(value.into()),
            "sslkey" => self.key = Some(value.into()),
            _ => unreachable!("only TLS_KEYS"),
        }
        Ok(())
    }
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of `url` (a `postgres://` or
/// `postgresql://` URL, or a libpq key=value string); returns what is left, for
/// tokio-postgres, and the TLS parameters.
pub fn split_url(url: &str) -> Result<(String, TlsParams), StoreError> {
    let mut params = TlsParams {
        mode: SslMode::Prefer,
        root_cert: None,
        cert: None,
        key: None,
    };
    let check = |key: &str| -> Result<bool, StoreError> {
        if REFUSED_KEYS.contains(&key) {
            return Err(invalid(&format!("{key} is not supported")));
        }
        Ok(TLS_KEYS.contains(&key))
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((head, query)) = url.split_once('?') else {
            return Ok((url.to_string(), params));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            if check(&key)? {
                params.set(&key, &percent_decode(v)?)?;
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            head.to_string()
        } else {
            format!("{head}?{}", kept.join("&"))
        };
        return Ok((rest, params));
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        if check(&key)? {
            params.set(&key, &value)?;
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            kept.push(format!("{key}='{quoted}'"));
        }
    }
    Ok((kept.join(" "), params))
}

fn percent_decode(s: &str) -> Result<String, StoreError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| invalid("a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid("a %-escape that is not UTF-8"))
}

/// libpq's `key = value` pairs: values unquoted up to a space, or in single quotes; `\`
/// escapes the next character either way.
fn key_values(s: &str) -> Result<Vec<(String, String)>, StoreError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(invalid(&format!("`{key}` without `=value`")));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(invalid("an unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// How connections are made: the driver's settings and, unless `sslmode=disable`, a rustls
/// configuration built once from the certificate files.
#[derive(Clone)]
pub struct PgTls {
    mode: SslMode,
    /// `None` under `disable`.
    connector: Option<MakeRustls>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls")
            .field("mode", &self.mode)
            .field("verify", &self.connector.as_ref().map(|c| c.verify))
            .finish()
    }
}

/// What a connection checks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

impl PgTls {
    /// Reads the certificate files `params` names and sets `config`'s driver-level TLS mode.
    ///
    /// # Notable errors
    /// `Backend` if a file is missing or holds no certificate or key, or `verify-ca` /
    /// `verify-full` has no root CA file.
    pub fn new(params: &TlsParams, config: &mut Config) -> Result<PgTls, StoreError> {
        config.ssl_mode(match params.mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            _ => DriverSslMode::Require,
        });
        if params.mode == SslMode::Disable {
            return Ok(PgTls {
                mode: params.mode,
                connector: None,
            });
        }
        let root_file = match &params.root_cert {
            Some(f) => Some(f.clone()),
            None => std::env::var_os("HOME")
                .map(|h| Path::new(&h).join(".postgresql/root.crt"))
                .filter(|f| f.is_file()),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verify = match (params.mode, &root_file) {
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                return Err(StoreError::Backend(format!(
                    "sslmode={} needs the CA's certificate: sslrootcert=FILE (libpq's default \
                     ~/.postgresql/root.crt does not exist)",
                    params.mode.as_str()
                )));
            }
            (SslMode::VerifyFull, Some(_)) => Verify::ChainAndName,
            (_, Some(_)) => Verify::Chain,
            (_, None) => Verify::Nothing,
        };
        let chain = match &root_file {
            None => None,
            Some(file) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(file, "sslrootcert")? {
                    roots.add(cert).map_err(|e| {
                        StoreError::Backend(format!(
                            "sslrootcert {}: not a usable CA certificate: {e}",
                            file.display()
                        ))
                    })?;
                }
                let v =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| {
                            StoreError::Backend(format!("sslrootcert {}: {e}", file.display()))
                        })?;
                Some(v)
            }
        };
        let verifier = Arc::new(Verifier {
            chain,
            check_name: verify == Verify::ChainAndName,
            provider: provider.clone(),
        });
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Backend(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut tls = match (&params.cert, &params.key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let certs = read_certs(cert, "sslcert")?;
                let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    StoreError::Backend(format!(
                        "sslkey {}: no unencrypted PEM private key ({e})",
                        key.display()
                    ))
                })?;
                builder
                    .with_client_auth_cert(certs, key_der)
                    .map_err(|e| StoreError::Backend(format!("sslcert/sslkey: {e}")))?
            }
            _ => {
                return Err(invalid(
                    "sslcert and sslkey go together (libpq's default files are not read)",
                ));
            }
        };
        // What libpq 17 sends, and PostgreSQL 17's direct TLS negotiation requires.
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls {
            mode: params.mode,
            connector: Some(MakeRustls {
                config: Arc::new(tls),
                verify,
                root_file: root_file.map(|f| f.display().to_string()),
            }),
        })
    }

    /// The `sslmode` in effect.
    pub fn mode(&self) -> SslMode {
        self.mode
    }

    /// Opens one connection; its connection task runs on the tokio runtime until the client
    /// is dropped or the connection breaks (`on_lost` is then called with the error).
    /// Under `prefer`, a failed TLS handshake is retried in plain TCP, as libpq does.
    pub async fn connect(
        &self,
        config: &Config,
        on_lost: impl FnOnce(tokio_postgres::Error) + Send + 'static,
    ) -> Result<Client, tokio_postgres::Error> {
        let Some(tls) = &self.connector else {
            let (client, conn) = config.connect(NoTls).await?;
            spawn(conn, on_lost);
            return Ok(client);
        };
        match config.connect(tls.clone()).await {
            Ok((client, conn)) => {
                spawn(conn, on_lost);
                Ok(client)
            }
            Err(e) if self.mode == SslMode::Prefer && is_handshake_failure(&e) => {
                let mut plain = config.clone();
                plain.ssl_mode(DriverSslMode::Disable);
                let (client, conn) = plain.connect(NoTls).await?;
                spawn(conn, on_lost);
                Ok(client)
            }
            Err(e) => Err(e),
        }
    }
}

fn spawn<F>(conn: F, on_lost: impl FnOnce(tokio_postgres::Error) + Send + 'static)
where
    F: Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            on_lost(e);
        }
    });
}

fn is_handshake_failure(e: &tokio_postgres::Error) -> bool {
    std::error::Error::source(e).is_some_and(|s| s.is::<HandshakeError>())
}

fn read_certs(file: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::Backend(format!("{what} {}: {e}", file.display())))?;
    if certs.is_empty() {
        return Err(StoreError::Backend(format!(
            "{what} {}: no PEM certificate in it",
            file.display()
        )));
    }
    Ok(certs)
}

/// Checks what the mode asks and no more: nothing (`prefer`/`require` without a root CA
/// file), the chain (`verify-ca`, and `require` with one), or the chain and the name.
/// The handshake's own signatures are always checked.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // webpki checks the chain first and the name last: a name error means the chain held.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// tokio-postgres's TLS hook: one [`RustlsConnect`] per host connected to.
#[derive(Clone)]
struct MakeRustls {
    config: Arc<ClientConfig>,
    verify: Verify,
    /// For messages.
    root_file: Option<String>,
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, HandshakeError> {
        let name = ServerName::try_from(domain.to_string()).map_err(|_| HandshakeError {
            message: format!("`{domain}` is neither a DNS name nor an IP address"),
        })?;
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.config.clone()),
            name,
            host: domain.to_string(),
            verify: self.verify,
            root_file: self.root_file.clone(),
        })
    }
}

struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
    host: String,
    verify: Verify,
    root_file: Option<String>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, HandshakeError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            match self.connector.connect(self.name, stream).await {
                Ok(s) => Ok(RustlsStream(Box::new(s))),
                Err(e) => Err(HandshakeError::new(
                    &e,
                    &self.host,
                    self.verify,
                    self.root_file.as_deref(),
                )),
            }
        })
    }
}

/// A failed TLS handshake, in words: which check refused the server and why.
#[derive(Debug)]
pub struct HandshakeError {
    message: String,
}

impl HandshakeError {
    fn new(e: &io::Error, host: &str, verify: Verify, root_file: Option<&str>) -> HandshakeError {
        let rustls_error = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        let root = root_file.unwrap_or("-");
        let message = match rustls_error {
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => format!(
                "the server's certificate is not valid for the host name `{host}` \
                 (sslmode=verify-full matches it against the certificate's subjectAltName)"
            ),
            Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
                "the server's certificate is not signed by the CA in sslrootcert {root} \
                 (unknown issuer)"
            ),
            Some(rustls::Error::InvalidCertificate(c)) => {
                format!(
                    "the server's certificate was refused ({verify:?} checked against {root}): {c:?}"
                )
            }
            Some(other) => format!("TLS: {other}"),
            None => format!("TLS handshake: {e}"),
        };
        HandshakeError { message }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HandshakeError {}

/// A TLS connection to PostgreSQL.
struct RustlsStream(Box<tokio_rustls::client::TlsStream<Socket>>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        self.0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| tls_server_end_point(cert))
            .map(ChannelBinding::tls_server_end_point)
            .unwrap_or_else(ChannelBinding::none)
    }
}

/// RFC 5929's `tls-server-end-point`: the server certificate's hash, with the hash of its
/// signature algorithm (SHA-256 for MD5 and SHA-1). `None` for an algorithm without one
/// (Ed25519) or one not known here: SCRAM then goes without channel binding.
fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest;
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE, signatureAlgorithm SEQUENCE { OID, .. }, .. }
    let (cert_body, _) = der(cert, 0x30)?;
    let (_, after_tbs) = der(cert_body, 0x30)?;
    let (alg, _) = der(after_tbs, 0x30)?;
    let (oid, alg_params) = der(alg, 0x06)?;
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let bits = match oid {
        [rest @ .., last] if rest == RSA => match last {
            4 | 5 | 11 | 14 => 256, // md5, sha1, sha256, sha224 with RSA
            12 => 384,
            13 => 512,
            10 => pss_hash(alg_params)?,
            _ => return None,
        },
        [rest @ .., 1] if rest == ECDSA => 256, // ecdsa-with-SHA1
        [rest @ .., 3, last] if rest == ECDSA => match last {
            1 | 2 => 256,
            3 => 384,
            4 => 512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match bits {
        256 => sha2::Sha256::digest(cert).to_vec(),
        384 => sha2::Sha384::digest(cert).to_vec(),
        _ => sha2::Sha512::digest(cert).to_vec(),
    })
}

/// RSASSA-PSS parameters' hash algorithm: `[0] EXPLICIT AlgorithmIdentifier`, SHA-1 if absent.
fn pss_hash(params: &[u8]) -> Option<u32> {
    const SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02];
    let (seq, _) = der(params, 0x30)?;
    let Some((hash, _)) = der(seq, 0xa0) else {
        return Some(256);
    };
    let (alg, _) = der(hash, 0x30)?;
    let (oid, _) = der(alg, 0x06)?;
    match oid {
        [rest @ .., 1] if rest == SHA2 => Some(256),
        [rest @ .., 2] if rest == SHA2 => Some(384),
        [rest @ .., 3] if rest == SHA2 => Some(512),
        [0x2b, 0x0e, 0x03, 0x02, 0x1a] => Some(256), // SHA-1
        _ => None,
    }
}

/// One DER element of tag `tag` at the start of `b`: its content and what follows it.
fn der(b: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = b.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &byte| (acc << 8) | usize::from(byte));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parameters_are_taken_out_and_the_rest_kept() {
        let (rest, p) = split_url(
            "postgres://mk@db:5432/mk?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://mk@db:5432/mk?application_name=x&connect_timeout=3"
        );
        assert_eq!(p.mode, SslMode::VerifyFull);
        assert_eq!(p.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        let (rest, p) = split_url("postgresql://mk@db/mk?sslmode=require").unwrap();
        assert_eq!(rest, "postgresql://mk@db/mk");
        assert_eq!(p.mode, SslMode::Require);
        let (rest, p) = split_url("postgres://mk@db/mk").unwrap();
        assert_eq!(
            (rest.as_str(), p.mode),
            ("postgres://mk@db/mk", SslMode::Prefer)
        );
    }

    #[test]
    fn key_value_strings_are_read_like_libpq() {
        let (rest, p) = split_url(
            "host=db  user = mk sslmode=verify-ca sslrootcert='/a b/c\\'s.pem' options='-c x=1'",
        )
        .unwrap();
        assert_eq!(rest, "host='db' user='mk' options='-c x=1'");
        assert_eq!(p.mode, SslMode::VerifyCa);
        assert_eq!(p.root_cert, Some(PathBuf::from("/a b/c's.pem")));
        let config: Config = rest.parse().unwrap();
        assert_eq!(config.get_options(), Some("-c x=1"));
    }

    #[test]
    fn unsupported_settings_are_refused_in_words() {
        for (url, words) in [
            (
                "postgres://h/d?sslmode=allow",
                "sslmode=allow is not supported",
            ),
            ("postgres://h/d?sslmode=verify", "expected disable, prefer"),
            ("postgres://h/d?sslrootcert=system", "sslrootcert=system"),
            ("postgres://h/d?sslcrl=x", "sslcrl is not supported"),
            ("host=h sslmode", "without `=value`"),
        ] {
            let e = split_url(url).unwrap_err().to_string();
            assert!(e.contains(words), "{url}: {e}");
        }
    }

    #[test]
    fn verify_modes_need_a_root_certificate() {
        let mut config = Config::new();
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let params = TlsParams {
                mode,
                root_cert: None,
                cert: None,
                key: None,
            };
            // No HOME, so no libpq default file either.
            if std::env::var_os("HOME")
                .is_some_and(|h| Path::new(&h).join(".postgresql/root.crt").exists())
            {
                return;
            }
            let e = PgTls::new(&params, &mut config).unwrap_err().to_string();
            assert!(
                e.contains("needs the CA's certificate: sslrootcert=FILE"),
                "{e}"
            );
        }
        let missing = TlsParams {
            mode: SslMode::Require,
            root_cert: Some("/nonexistent/ca.pem".into()),
            cert: None,
            key: None,
        };
        let e = PgTls::new(&missing, &mut config).unwrap_err().to_string();
        assert!(e.contains("sslrootcert /nonexistent/ca.pem"), "{e}");
        let plain = TlsParams {
            mode: SslMode::Require,
            root_cert: None,
            cert: None,
            key: None,
        };
        if std::env::var_os("HOME")
            .is_none_or(|h| !Path::new(&h).join(".postgresql/root.crt").exists())
        {
            let tls = PgTls::new(&plain, &mut config).unwrap();
            assert_eq!(tls.connector.unwrap().verify, Verify::Nothing);
            assert_eq!(config.get_ssl_mode(), DriverSslMode::Require);
        }
    }

    #[test]
    fn der_reads_short_and_long_lengths() {
        assert_eq!(
            der(&[0x30, 2, 1, 2, 9], 0x30),
            Some((&[1u8, 2][..], &[9u8][..]))
        );
        let mut long = vec![0x04, 0x81, 200];
        long.extend([7u8; 200]);
        assert_eq!(der(&long, 0x04).map(|(c, _)| c.len()), Some(200));
        assert_eq!(der(&[0x30, 5, 1], 0x30), None);
        assert_eq!(der(&[0x31, 0], 0x30), None);
    }
}
