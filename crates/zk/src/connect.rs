//! Where and how to connect: the connect string, session options, digest auth and TLS.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use medkeeper_coord::{Acl, Capabilities, Id, Perms, digest_of_credentials};

/// A failure to open a session: the options were unusable, or the ensemble could not be reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The connect string does not have the shape `[zk:|zk+tls:]HOST:PORT[,HOST:PORT...][/chroot]`.
    #[error("invalid connect string {input:?}: {reason}")]
    ConnectString {
        /// The string given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Digest credentials that are not `user:password`.
    #[error("invalid digest credentials: expected user:password")]
    DigestCredentials,
    /// The TLS files could not be read or parsed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The ensemble refused or never answered: `ConnectionLoss` when no server could be reached
    /// (the cause is in the `tracing` output), `SessionExpired`, `AuthFailed`, ...
    #[error("could not open a ZooKeeper session: {0}")]
    Session(#[from] medkeeper_coord::Error),
}

/// One server of the ensemble.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// Host name or IP address.
    pub host: String,
    /// Client port (the secure client port for TLS).
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed connect string: `HOST:PORT[,HOST:PORT...][/chroot]`, optionally prefixed `zk:` (plain)
/// or `zk+tls:` (every server over TLS, as medkeeper's CLI writes it).
///
/// The chroot, if any, is prepended to every path this session sends and stripped from every
/// path it receives, so the session sees the chroot as its `/`. It must exist before nodes are
/// created below it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnectString {
    /// The servers, tried in turn.
    pub hosts: Vec<HostPort>,
    /// The chroot (`/medkeeper`), if any.
    pub chroot: Option<String>,
    /// True when the string said `zk+tls:`.
    pub tls: bool,
}

impl ConnectString {
    /// Parses a connect string.
    ///
    /// ```
    /// let cs = medkeeper_zk::ConnectString::parse("zk:10.0.0.1:2181,10.0.0.2:2181/medkeeper").unwrap();
    /// assert_eq!(cs.hosts.len(), 2);
    /// assert_eq!(cs.chroot.as_deref(), Some("/medkeeper"));
    /// assert!(!cs.tls);
    /// ```
    pub fn parse(input: &str) -> Result<ConnectString, ConnectError> {
        let bad = |reason| ConnectError::ConnectString {
            input: input.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(r) = input.strip_prefix("zk+tls:") {
            (true, r)
        } else if let Some(r) = input.strip_prefix("zk:") {
            (false, r)
        } else {
            (false, input)
        };
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        let (hosts_part, chroot) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        let chroot = match chroot {
            None | Some("/") => None,
            Some(c) => {
                medkeeper_coord::path::validate_path(c, false)
                    .map_err(|_| bad("invalid chroot"))?;
                Some(c.to_string())
            }
        };
        let mut hosts = Vec::new();
        for hp in hosts_part.split(',') {
            let hp = hp.trim();
            if hp.is_empty() {
                return Err(bad("empty server address"));
            }
            let (host, port) = if let Some(r) = hp.strip_prefix('[') {
                let end = r
                    .find(']')
                    .ok_or_else(|| bad("unclosed [ in IPv6 address"))?;
                let port = r[end + 1..]
                    .strip_prefix(':')
                    .ok_or_else(|| bad("missing :PORT"))?;
                (&r[..end], port)
            } else {
                hp.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?
            };
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| bad("port is not a number 1-65535"))?;
            if port == 0 {
                return Err(bad("port is not a number 1-65535"));
            }
            hosts.push(HostPort {
                host: host.to_string(),
                port,
            });
        }
        Ok(ConnectString { hosts, chroot, tls })
    }

    /// The string in `zookeeper-client`'s syntax (`host:port,...[/chroot]`, no scheme).
    pub(crate) fn to_client_string(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(HostPort::to_string).collect();
        format!(
            "{}{}",
            hosts.join(","),
            self.chroot.as_deref().unwrap_or("")
        )
    }
}

impl fmt::Display for ConnectString {
    /// The canonical form, with `zk:` or `zk+tls:`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "zk+tls:" } else { "zk:" };
        write!(f, "{scheme}{}", self.to_client_string())
    }
}

impl std::str::FromStr for ConnectString {
    type Err = ConnectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnectString::parse(s)
    }
}

/// TLS to the servers' secure client port: the CA that signed the servers' certificates and,
/// for mutual TLS (`ssl.clientAuth=need`), this client's certificate and key. Files are PEM.
///
/// The server certificate's subject alternative names must match the host of the connect
/// string (`IP:127.0.0.1` for loopback), and a leaf certificate must say `CA:FALSE`: rustls
/// rejects a CA certificate used as a leaf.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsConfig {
    /// The CA certificate(s) that sign the servers' certificates.
    pub ca_file: PathBuf,
    /// This client's certificate chain and its private key (PKCS#8, PKCS#1 or SEC1), for mutual
    /// TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl TlsConfig {
    /// Server authentication only.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        TlsConfig {
            ca_file: ca_file.into(),
            identity: None,
        }
    }

    /// Adds a client identity, for mutual TLS.
    pub fn with_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.identity = Some((cert_file.into(), key_file.into()));
        self
    }

    pub(crate) fn to_client_options(&self) -> Result<zookeeper_client::TlsOptions, ConnectError> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p)
                .map_err(|e| ConnectError::Tls(format!("cannot read {}: {e}", p.display())))
        };
        let ca = read(&self.ca_file)?;
        let mut options = zookeeper_client::TlsOptions::new()
            .with_pem_ca(&ca)
            .map_err(|e| ConnectError::Tls(format!("CA {}: {e}", self.ca_file.display())))?;
        if let Some((cert, key)) = &self.identity {
            options = options
                .with_pem_identity(&read(cert)?, &read(key)?)
                .map_err(|e| {
                    ConnectError::Tls(format!("client identity {}: {e}", cert.display()))
                })?;
        }
        Ok(options)
    }
}

/// Everything [`connect`](crate::connect) needs.
///
/// ```
/// use std::time::Duration;
/// let options = medkeeper_zk::ConnectOptions::new("127.0.0.1:2181/medkeeper")
///     .unwrap()
///     .with_session_timeout(Duration::from_secs(6))
///     .with_digest("scheduler:secret")
///     .unwrap();
/// assert_eq!(options.connect.chroot.as_deref(), Some("/medkeeper"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Where to connect.
    pub connect: ConnectString,
    /// The session timeout asked for; the servers clamp it into `[2, 20] × tickTime`.
    pub session_timeout: Duration,
    /// How long a connection may stay silent before it is declared lost (default: 2/5 of the
    /// session timeout, as the Java client does).
    pub connection_timeout: Option<Duration>,
    /// Identities added when the session is established (and again on every reconnection):
    /// `(scheme, credentials)`, e.g. `("digest", b"user:password")`.
    pub auth: Vec<(String, Vec<u8>)>,
    /// TLS settings; required when the connect string says `zk+tls:`, and when given every
    /// server is reached over TLS.
    pub tls: Option<TlsConfig>,
    /// Whether the ensemble accepts TTL nodes (`-Dzookeeper.extendedTypesEnabled=true`). Only
    /// reported in [`Capabilities`]; the server decides.
    pub ttl_nodes: bool,
    /// The ensemble's `znode.container.checkIntervalMs` (60 s by default). Only reported in
    /// [`Capabilities`].
    pub reap_interval: Duration,
    /// The ensemble's `jute.maxbuffer` minus request framing: the largest node data accepted.
    /// Only reported in [`Capabilities`].
    pub max_data_len: usize,
}

impl ConnectOptions {
    /// Options for `connect` (see [`ConnectString`]) with a 10 s session timeout, no
    /// credentials, no TLS (unless the string says `zk+tls:`, which then needs
    /// [`with_tls`](Self::with_tls)), and ZooKeeper's default server settings.
    pub fn new(connect: &str) -> Result<ConnectOptions, ConnectError> {
        Ok(ConnectOptions {
            connect: ConnectString::parse(connect)?,
            session_timeout: Duration::from_secs(10),
            connection_timeout: None,
            auth: Vec::new(),
            tls: None,
            ttl_nodes: false,
            reap_interval: Duration::from_secs(60),
            max_data_len: DEFAULT_MAX_DATA_LEN,
        })
    }

    /// Sets the session timeout asked for.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the connection (idle) timeout.
    pub fn with_connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = Some(timeout);
        self
    }

    /// Adds digest credentials, `user:password`.
    pub fn with_digest(mut self, user_password: &str) -> Result<Self, ConnectError> {
        match user_password.split_once(':') {
            Some((user, _)) if !user.is_empty() => {}
            _ => return Err(ConnectError::DigestCredentials),
        }
        self.auth
            .push(("digest".to_string(), user_password.as_bytes().to_vec()));
        Ok(self)
    }

    /// The ACL that gives every digest identity of these options (see
    /// [`with_digest`](Self::with_digest)) every permission — what ZooKeeper's
    /// `CREATOR_ALL_ACL` resolves to for a session authenticated with them — or `None` without
    /// digest credentials. medkeeper creates its nodes with it ([`ensure_chroot`] the chroot,
    /// `medkeeper_coord::DefaultAcl` the rest), so other tenants of a shared ensemble can
    /// neither read nor change them.
    ///
    /// [`ensure_chroot`]: crate::ensure_chroot
    ///
    /// ```
    /// use medkeeper_coord::{Acl, Perms};
    /// let options = medkeeper_zk::ConnectOptions::new("127.0.0.1:2181")
    ///     .unwrap()
    ///     .with_digest("medkeeper:secret")
    ///     .unwrap();
    /// assert_eq!(
    ///     options.digest_acl(),
    ///     Some(vec![Acl::digest(Perms::ALL, "medkeeper", "secret")])
    /// );
    /// ```
    pub fn digest_acl(&self) -> Option<Vec<Acl>> {
        let acl: Vec<Acl> = self
            .auth
            .iter()
            .filter(|(scheme, _)| scheme == "digest")
            .map(|(_, credentials)| {
                Acl::new(
                    Perms::ALL,
                    Id::new(
                        "digest",
                        digest_of_credentials(&String::from_utf8_lossy(credentials)),
                    ),
                )
            })
            .collect();
        (!acl.is_empty()).then_some(acl)
    }

    /// Connects over TLS.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Declares whether the ensemble has TTL nodes enabled.
    pub fn with_ttl_nodes(mut self, enabled: bool) -> Self {
        self.ttl_nodes = enabled;
        self
    }

    /// Declares the ensemble's container/TTL reaping interval.
    pub fn with_reap_interval(mut self, interval: Duration) -> Self {
        self.reap_interval = interval;
        self
    }

    /// What a session opened with these options reports as its [`Capabilities`].
    pub fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.ttl_nodes = self.ttl_nodes;
        caps.reap_interval = self.reap_interval;
        caps.max_data_len = self.max_data_len;
        caps.max_request_len = Some(JUTE_MAXBUFFER);
        caps.oversize_data_error = medkeeper_coord::Error::ConnectionLoss;
        caps
    }
}

/// ZooKeeper's default `jute.maxbuffer`: the largest request (after its length prefix) a server
/// reads; a longer one makes it drop the connection.
pub const JUTE_MAXBUFFER: usize = 0xfffff;

/// The largest data ZooKeeper 3.8 accepts with its default `jute.maxbuffer` (0xfffff bytes for
/// the whole request, of which the path, ACL and framing take a few dozen).
pub const DEFAULT_MAX_DATA_LEN: usize = 1024 * 1024 - 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_chroot_and_scheme() {
        let cs = ConnectString::parse("127.0.0.1:2181").unwrap();
        assert_eq!(
            cs.hosts,
            vec![HostPort {
                host: "127.0.0.1".into(),
                port: 2181
            }]
        );
        assert_eq!(cs.chroot, None);
        let cs = ConnectString::parse("zk+tls:a:1,b:2,[::1]:3/x/y").unwrap();
        assert!(cs.tls);
        assert_eq!(cs.hosts.len(), 3);
        assert_eq!(cs.hosts[2].host, "::1");
        assert_eq!(cs.chroot.as_deref(), Some("/x/y"));
        assert_eq!(cs.to_client_string(), "a:1,b:2,[::1]:3/x/y");
        assert_eq!(cs.to_string(), "zk+tls:a:1,b:2,[::1]:3/x/y");
        assert_eq!(ConnectString::parse("a:1/").unwrap().chroot, None);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "a", "a:", "a:x", ":1", "a:1,", "a:1/x/", "a:70000", "a:1//x",
        ] {
            assert!(
                matches!(
                    ConnectString::parse(bad),
                    Err(ConnectError::ConnectString { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn digest_needs_user_and_colon() {
        let o = ConnectOptions::new("a:1").unwrap();
        assert!(o.clone().with_digest("u:p").is_ok());
        assert!(o.clone().with_digest("u:").is_ok());
        assert_eq!(
            o.clone().with_digest("up").unwrap_err(),
            ConnectError::DigestCredentials
        );
        assert_eq!(
            o.with_digest(":p").unwrap_err(),
            ConnectError::DigestCredentials
        );
    }
}
