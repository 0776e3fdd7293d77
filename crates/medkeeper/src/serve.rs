//! `medkeeper serve`: one medkeeper instance — the HTTP API, event streams and dashboard, the
//! dispatchers, cluster membership and leadership — over the embedded engine (the default: one
//! data directory) or a ZooKeeper ensemble (`--connect zk:…`).
//!
//! ## Configuration
//! Flags, then environment variables (`MEDKEEPER_*`, named in `--help`), then a TOML file
//! (`--config FILE`, keys as the long flags with `_`: `listen`, `data`, `connect`, `hospital`,
//! `instance`, `session_timeout_ms`, `max_in_flight`, `request_timeout_ms`,
//! `max_streams_per_token`, `log_format`, `metrics_listen`, `alertmanager`, `alertmanager_ca`,
//! `mllp_listen`, `token_max_ttl`, `store`, `store_password_file`, `trusted_proxies` — a list),
//! then defaults.
//!
//! Also in the file: the ZooKeeper connection's TLS, `zk_tls_ca`, `zk_tls_cert`, `zk_tls_key`
//! (`--zk-tls-ca`, …), and its credentials, `auth` or `auth_file` (`--auth-file`,
//! `MEDKEEPER_AUTH_FILE`; `--auth` wins); HTTPS, `tls_cert`, `tls_key`, `tls_client_ca`,
//! `tls_client_auth` (below).
//!
//! ## HTTPS
//! `--tls-cert FILE --tls-key FILE` serve the API, the dashboard and the event streams over
//! HTTPS (rustls; TLS 1.2 and 1.3): the URL printed is then `https://ADDR/`. `--tls-client-ca
//! FILE` asks clients for a certificate that chains to a CA in FILE; `--tls-client-auth
//! required|optional` (default `required`) says whether a client without one is taken (a
//! certificate that does not verify is refused either way). Bearer tokens apply either way: a
//! certificate decides who may connect, not what a request may do. The files are read again
//! when they change (looked at every 2 s) or on SIGHUP, without a restart; a set that does not
//! load is logged and the one in use kept ([`crate::https`]). `/metrics` and MLLP stay plain
//! (docs/security.md says why).
//!
//! ## Logs
//! On stderr through the process's subscriber ([`crate::logs`]): `RUST_LOG` filters (unset:
//! medkeeper's crates at `info`, the rest at `warn`), `--log-format human|json` picks the
//! format. The lines a script waits for (`listening on …`, `metrics on …`, `admin token: …`,
//! `dashboard: …`) are not log lines: they go to stdout as they are, each flushed at once.
//!
//! ## What an instance does
//! - Refuses to start, naming the holder's pid, if another process holds the embedded engine's
//!   data directory — before it listens or opens the clinical store (a second server on one
//!   directory would accept writes it cannot coordinate).
//! - Binds the listener first; prints `listening on http://ADDR/` once ready (a session, the
//!   hospital loaded), answering 503 `unavailable` until then. A ZooKeeper chroot that does
//!   not exist yet is created (with the same credentials and TLS).
//! - On first start (no token in the clinical store) creates an admin token and prints it once:
//!   `admin token: mkt_…` (lost? `medkeeper token create --data DIR --role admin`).
//! - Per coordination session: loads the hospital configuration (idempotent), repairs what a
//!   crash left ([`Hospital::reconcile`]), joins `/medical/members/<instance>` (ephemeral, with
//!   its URL), stands for leader at `/medical/leader`, and runs one dispatcher per pool (each
//!   while holding its pool's lock, so pools spread over instances). The leader runs the
//!   reconciler every [`RECONCILE_EVERY`]. If the session expires (the process was paused past
//!   its timeout), everything it held is gone; the instance opens a new session and does it
//!   all again, while the API answers 503 `unavailable` in between. The sessions' life is
//!   [`instance::run`], shared with `medkeeper dispatch`.
//! - With `--metrics-listen ADDR` (`metrics_listen` in the file), serves `GET /metrics` (the
//!   Prometheus text format, without a token: see [`medkeeper_server::metrics`]) on a second
//!   listener, and prints `metrics on http://ADDR/metrics` after the URL. The instance's
//!   dispatchers report each call to it ([`Instance::dispatch_observer`]), and over the
//!   embedded engine every session's engine records its fsyncs into one
//!   [`SyncStats`] it reads ([`ConnectArgs::sync_stats`]).
//! - With `--mllp-listen ADDR` (`mllp_listen` in the file), takes HL7 v2 ORU^R01 vital signs
//!   over MLLP ([`medkeeper_server::mllp`]) and prints `mllp on ADDR` after the URL; it stops
//!   with the rest, acknowledging the messages being stored.
//! - The leader evaluates the hospital file's alarm rules ([`medkeeper_hospital::alarms`]).
//!   With `--alertmanager URL` (`alertmanager` in the file) it delivers them to that
//!   Prometheus Alertmanager, and every instance its own health ([`crate::alerting`]).
//! - SIGTERM/SIGINT: stops accepting, ends the event streams, lets in-flight requests finish,
//!   releases the pool locks, leaves, and closes the session so its ephemerals go at once.
//!
//! [`Hospital::reconcile`]: medkeeper_hospital::orders::Hospital::reconcile
//! [`RECONCILE_EVERY`]: instance::RECONCILE_EVERY

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::serve::ListenerExt;
use clap::Args;
use medkeeper_embedded::{HistogramSnapshot, SyncStats};
use medkeeper_hospital::config::HospitalConfig;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{ClinicalStore, PostgresOptions, PostgresStore, SqliteStore};
use medkeeper_server::{
    EngineFigures, HistogramFigures, Limits, MemberInfo, Role, ServerState, issue_token_expiring,
};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::alerting::{self, Delivery};
use crate::alertmanager;
use crate::coord::{AUTH_FILE_ENV, ConnectArgs, read_auth_file};
use crate::https::{ClientAuth, HttpsListener, TlsFiles};
use crate::instance::{self, Duties, Instance, OnError, default_instance, stopped};
use crate::logs::{self, LogFormat};

/// How long start-up waits for the first session before printing the URL anyway.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

/// `medkeeper serve` arguments.
#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "MEDKEEPER_CONFIG")]
    config: Option<PathBuf>,
    /// The data directory: the embedded engine (`DIR/coord`) and the clinical store
    /// (`DIR/clinical.sqlite`). Default `./medkeeper-data`.
    #[arg(long, env = "MEDKEEPER_DATA")]
    data: Option<PathBuf>,
    /// Where to listen (loopback by default; port 0 picks a free one). Default
    /// `127.0.0.1:8080`.
    #[arg(long, env = "MEDKEEPER_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where to serve `GET /metrics` for Prometheus, without a token (so keep it on loopback
    /// or a monitoring network; docs/api.md), e.g. `127.0.0.1:9464`. Default: not served.
    #[arg(long, env = "MEDKEEPER_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Where to take HL7 v2 ORU^R01 vital signs over MLLP (bedside monitors, gateways), e.g.
    /// `127.0.0.1:2575`; there is no authentication, so keep it on a device network.
    /// Default: not served.
    #[arg(long, env = "MEDKEEPER_MLLP_LISTEN")]
    mllp_listen: Option<BoxedAddr>,
    /// A Prometheus Alertmanager to deliver alarms to (API v2), e.g. `http://127.0.0.1:9093`:
    /// the leader sends the cluster's alarms, every instance its own health. Default: none.
    #[arg(long, env = "MEDKEEPER_ALERTMANAGER")]
    alertmanager: Option<String>,
    /// For an `https://` Alertmanager: the PEM certificate of the CA that signed its
    /// certificate (the only CA trusted for it).
    #[arg(long, value_name = "FILE", env = "MEDKEEPER_ALERTMANAGER_CA")]
    alertmanager_ca: Option<PathBuf>,
    /// The coordination service: `zk:HOST:PORT[,HOST:PORT...][/chroot]` (`zk+tls:` for TLS;
    /// the `zk:` may be left out), or `embedded:DIR`. Default: the embedded engine in the data
    /// directory.
    #[arg(long, visible_alias = "zookeeper", env = "MEDKEEPER_CONNECT")]
    connect: Option<String>,
    /// ZooKeeper credentials, `digest:user:password` (visible in `ps`: prefer `--auth-file`).
    #[arg(long, env = "MEDKEEPER_AUTH", hide_env_values = true)]
    auth: Option<String>,
    /// A file holding the ZooKeeper credentials, `digest:user:password` (one line; refused if
    /// others may read it: `chmod 600 FILE`). `--auth` wins if both are given.
    #[arg(long, env = AUTH_FILE_ENV)]
    auth_file: Option<PathBuf>,
    /// CA certificate (PEM) for `zk+tls:`.
    #[arg(long, env = "MEDKEEPER_ZK_TLS_CA")]
    zk_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to ZooKeeper.
    #[arg(long, env = "MEDKEEPER_ZK_TLS_CERT")]
    zk_tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS to ZooKeeper.
    #[arg(long, env = "MEDKEEPER_ZK_TLS_KEY")]
    zk_tls_key: Option<PathBuf>,
    /// Serve the API, dashboard and event streams over HTTPS with this certificate chain
    /// (PEM, leaf first); reloaded when the file changes or on SIGHUP. Needs `--tls-key`.
    #[arg(long, env = "MEDKEEPER_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The HTTPS certificate's private key (PEM; keep it `chmod 600`).
    #[arg(long, env = "MEDKEEPER_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Ask HTTPS clients for a certificate that chains to a CA in this file (PEM). Tokens are
    /// still needed on every request.
    #[arg(long, env = "MEDKEEPER_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// With `--tls-client-ca`: `required` (a client without a certificate is refused) or
    /// `optional` (taken; a certificate that does not verify is still refused). Default
    /// required.
    #[arg(long, value_enum, env = "MEDKEEPER_TLS_CLIENT_AUTH")]
    tls_client_auth: Option<ClientAuth>,
    /// Session timeout in milliseconds. Default 10000.
    #[arg(long, env = "MEDKEEPER_SESSION_TIMEOUT_MS")]
    session_timeout_ms: Option<u64>,
    /// The hospital configuration (TOML); the demo hospital if absent.
    #[arg(long, env = "MEDKEEPER_HOSPITAL")]
    hospital: Option<PathBuf>,
    /// This instance's id (members, lock nodes, order history). Default `<hostname>-<pid>`.
    #[arg(long, env = "MEDKEEPER_INSTANCE")]
    instance: Option<String>,
    /// The clinical store: a SQLite file, or PostgreSQL as `postgres://USER@HOST:PORT/DB`
    /// (several instances share it; the password never on the command line: see
    /// `--store-password-file`). Default `DATA/clinical.sqlite`.
    #[arg(long, env = "MEDKEEPER_STORE")]
    store: Option<PathBuf>,
    /// A file holding the PostgreSQL store's password (one line). Without it, the password
    /// comes from the environment: `MEDKEEPER_STORE_PASSWORD`, else `PGPASSWORD`.
    #[arg(long, env = "MEDKEEPER_STORE_PASSWORD_FILE")]
    store_password_file: Option<PathBuf>,
    /// Requests in flight before new ones are shed with 503. Default 256.
    #[arg(long, env = "MEDKEEPER_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// A request's deadline in milliseconds (503 `timeout` after it). Default 10000.
    #[arg(long, env = "MEDKEEPER_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Event streams one token may hold open before its next gets 429. Default 8.
    #[arg(long, env = "MEDKEEPER_MAX_STREAMS_PER_TOKEN")]
    max_streams_per_token: Option<usize>,
    /// The longest lifetime an API token may be given (`12h`, `30d`), also the lifetime of a
    /// staff token issued without one (and at most a patient token's 7 days). Default: no
    /// limit, and staff tokens issued without a lifetime do not expire.
    #[arg(long, value_name = "DURATION", env = "MEDKEEPER_TOKEN_MAX_TTL")]
    token_max_ttl: Option<String>,
    /// A load balancer or proxy (an address or a network, `10.0.0.0/8`; repeat the flag, or
    /// separate with commas) whose `X-Forwarded-For` names the client: failed authentications
    /// are then counted per client, not per balancer. The header is ignored from anyone else.
    /// Default: none (the client is the TCP peer).
    #[arg(
        long = "trusted-proxy",
        value_name = "CIDR",
        env = "MEDKEEPER_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<String>,
    /// Log lines on stderr: `human` or `json` (one object a line); `RUST_LOG` filters them.
    /// Default human.
    #[arg(long, value_enum, env = "MEDKEEPER_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// How often the leader records each pool's figures for the dashboard's charts (`30s`,
    /// `1s` in tests). Default 1m.
    #[arg(
        long,
        value_name = "DURATION",
        env = "MEDKEEPER_HISTORY_EVERY",
        hide = true
    )]
    history_every: Option<String>,
}

/// An address on the heap: [`ServeArgs`] is a variant of the CLI's command enum, and each
/// inline address adds 32 bytes to every command.
#[derive(Debug, Clone)]
struct BoxedAddr(Box<SocketAddr>);

impl std::str::FromStr for BoxedAddr {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(|a| BoxedAddr(Box::new(a)))
    }
}

/// The settings a `--config` file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    mllp_listen: Option<SocketAddr>,
    alertmanager: Option<String>,
    alertmanager_ca: Option<PathBuf>,
    connect: Option<String>,
    auth: Option<String>,
    auth_file: Option<PathBuf>,
    zk_tls_ca: Option<PathBuf>,
    zk_tls_cert: Option<PathBuf>,
    zk_tls_key: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_client_auth: Option<ClientAuth>,
    session_timeout_ms: Option<u64>,
    hospital: Option<PathBuf>,
    instance: Option<String>,
    store: Option<PathBuf>,
    store_password_file: Option<PathBuf>,
    max_in_flight: Option<usize>,
    request_timeout_ms: Option<u64>,
    max_streams_per_token: Option<usize>,
    token_max_ttl: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    log_format: Option<LogFormat>,
}

/// Settings after flags, environment, file and defaults.
struct Settings {
    data: PathBuf,
    listen: SocketAddr,
    https: Option<TlsFiles>,
    metrics_listen: Option<SocketAddr>,
    mllp_listen: Option<SocketAddr>,
    /// Alertmanager's URL, with TLS for an `https://` one.
    alertmanager: Option<(String, Option<ureq::tls::TlsConfig>)>,
    connect: ConnectArgs,
    hospital: Option<PathBuf>,
    instance: String,
    store: StoreTarget,
    limits: Limits,
    log_format: LogFormat,
}

fn settings(args: ServeArgs) -> anyhow::Result<Settings> {
    let file = match &args.config {
        None => FileSettings::default(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the config file {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("invalid config file {}", p.display()))?
        }
    };
    let data = args
        .data
        .or(file.data)
        .unwrap_or_else(|| PathBuf::from("./medkeeper-data"));
    let connect = args
        .connect
        .or(file.connect)
        .map(|c| {
            if c.starts_with("embedded:") || c.starts_with("zk:") || c.starts_with("zk+tls:") {
                c
            } else {
                format!("zk:{c}")
            }
        })
        .unwrap_or_else(|| format!("embedded:{}", data.join("coord").display()));
    let mut limits = Limits::default();
    if let Some(n) = args.max_in_flight.or(file.max_in_flight) {
        if n == 0 {
            bail!("max_in_flight must be at least 1");
        }
        limits.max_in_flight = n;
    }
    if let Some(ms) = args.request_timeout_ms.or(file.request_timeout_ms) {
        limits.request_timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = args.max_streams_per_token.or(file.max_streams_per_token) {
        if n == 0 {
            bail!("max_streams_per_token must be at least 1");
        }
        limits.max_streams_per_token = n;
    }
    if let Some(t) = args.token_max_ttl.or(file.token_max_ttl) {
        match medkeeper_server::auth::parse_ttl(&t) {
            Some(d) if !d.is_zero() => limits.tokens.max_ttl = Some(d),
            _ => bail!("token_max_ttl {t:?}: a duration such as 12h or 30d"),
        }
    }
    let proxies = if args.trusted_proxies.is_empty() {
        file.trusted_proxies.unwrap_or_default()
    } else {
        args.trusted_proxies
    };
    limits.trusted_proxies = medkeeper_server::TrustedProxies::parse(&proxies)
        .map_err(|e| anyhow::anyhow!("--trusted-proxy {e}"))?;
    // Credentials: `--auth`, `--auth-file`, then the config file's `auth`, `auth_file`.
    let auth = match (args.auth, args.auth_file, file.auth, file.auth_file) {
        (Some(a), ..) => Some(a),
        (None, Some(f), ..) => Some(read_auth_file(&f)?),
        (None, None, Some(_), Some(_)) => bail!("the config file has both auth and auth_file"),
        (None, None, Some(a), None) => Some(a),
        (None, None, None, Some(f)) => Some(read_auth_file(&f)?),
        (None, None, None, None) => None,
    };
    let zk_tls_cert = args.zk_tls_cert.or(file.zk_tls_cert);
    let zk_tls_key = args.zk_tls_key.or(file.zk_tls_key);
    if zk_tls_cert.is_some() != zk_tls_key.is_some() {
        bail!("--zk-tls-cert and --zk-tls-key go together (mutual TLS to ZooKeeper)");
    }
    let client_ca = args.tls_client_ca.or(file.tls_client_ca);
    let client_auth = args.tls_client_auth.or(file.tls_client_auth);
    if client_auth.is_some() && client_ca.is_none() {
        bail!("--tls-client-auth needs --tls-client-ca (the CA client certificates chain to)");
    }
    let https = match (
        args.tls_cert.or(file.tls_cert),
        args.tls_key.or(file.tls_key),
    ) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert,
            key,
            client_ca,
            client_auth: client_auth.unwrap_or_default(),
        }),
        (None, None) if client_ca.is_some() => {
            bail!("--tls-client-ca needs --tls-cert and --tls-key (HTTPS on the API's listener)")
        }
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together (HTTPS on the API's listener)"),
    };
    // The embedded engines of every session record into one, for `/metrics`.
    let sync_stats = connect
        .starts_with("embedded:")
        .then(|| Arc::new(SyncStats::default()));
    Ok(Settings {
        listen: args
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080))),
        https,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        mllp_listen: args.mllp_listen.map(|a| *a.0).or(file.mllp_listen),
        alertmanager: match (
            args.alertmanager.or(file.alertmanager),
            args.alertmanager_ca.or(file.alertmanager_ca),
        ) {
            (Some(u), _) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                bail!("--alertmanager {u:?}: an http:// URL, e.g. http://127.0.0.1:9093")
            }
            (Some(u), None) if u.starts_with("https://") => bail!(
                "--alertmanager {u} is https://: pass --alertmanager-ca FILE, the PEM \
                 certificate of the CA that signed Alertmanager's certificate"
            ),
            (Some(u), Some(ca)) if u.starts_with("https://") => {
                let tls = alertmanager::tls_trusting(&ca)?;
                Some((u, Some(tls)))
            }
            (Some(u), Some(_)) => {
                bail!("--alertmanager {u} is plain http://, but --alertmanager-ca is set")
            }
            (Some(u), None) => Some((u, None)),
            (None, Some(_)) => bail!("--alertmanager-ca without --alertmanager"),
            (None, None) => None,
        },
        connect: ConnectArgs {
            connect,
            auth,
            zk_tls_ca: args.zk_tls_ca.or(file.zk_tls_ca),
            zk_tls_cert,
            zk_tls_key,
            session_timeout_ms: args
                .session_timeout_ms
                .or(file.session_timeout_ms)
                .unwrap_or(10_000),
            create_chroot: true,
            sync_stats,
        },
        hospital: args.hospital.or(file.hospital),
        instance: args
            .instance
            .or(file.instance)
            .unwrap_or_else(default_instance),
        store: StoreTarget::parse(
            args.store
                .or(file.store)
                .unwrap_or_else(|| data.join("clinical.sqlite")),
            args.store_password_file.or(file.store_password_file),
        )?,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        data,
        limits,
    })
}

/// The embedded engine's histograms, as the server's `/metrics` reads them.
fn engine_figures(stats: &SyncStats) -> EngineFigures {
    let figures = |h: HistogramSnapshot| HistogramFigures {
        buckets: h.buckets,
        count: h.count,
        sum: h.sum,
    };
    EngineFigures {
        fsync_seconds: figures(stats.fsync_seconds()),
        fsync_transactions: figures(stats.fsync_transactions()),
    }
}

/// Where the clinical store is: `--store`.
#[derive(Debug, Clone)]
pub enum StoreTarget {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database, `postgres://USER@HOST:PORT/DB`, and where its password comes
    /// from.
    Postgres {
        /// The URL (never with a password in it).
        url: String,
        /// The password file, if one was named.
        password_file: Option<PathBuf>,
    },
}

impl StoreTarget {
    /// `--store`'s value read: a `postgres://` or `postgresql://` URL, else a SQLite file.
    ///
    /// # Errors
    /// A URL with a password in it (it would show in `ps` and shell histories).
    pub fn parse(store: PathBuf, password_file: Option<PathBuf>) -> anyhow::Result<StoreTarget> {
        StoreTarget::parse_flag(store, password_file, "--store")
    }

    /// [`parse`](StoreTarget::parse) of the value of `flag` (`--to` for `store migrate`),
    /// whose password file flag is `<flag>-password-file`: the error names the flags the
    /// command at hand has.
    pub fn parse_flag(
        store: PathBuf,
        password_file: Option<PathBuf>,
        flag: &str,
    ) -> anyhow::Result<StoreTarget> {
        let text = store.to_string_lossy();
        let Some(rest) = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))
        else {
            return Ok(StoreTarget::Sqlite(store));
        };
        let userinfo = rest.split(['/', '?']).next().unwrap_or("");
        let has_password = userinfo
            .rsplit_once('@')
            .is_some_and(|(u, _)| u.contains(':'))
            || rest
                .split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|kv| kv.starts_with("password=")));
        if has_password {
            bail!(
                "{flag}: no password in the URL (it shows in `ps` and shell histories); use \
                 MEDKEEPER_STORE_PASSWORD, PGPASSWORD or {flag}-password-file"
            );
        }
        Ok(StoreTarget::Postgres {
            url: text.into_owned(),
            password_file,
        })
    }

    /// Opens the store: creates a SQLite file (and its directory) if needed; connects to
    /// PostgreSQL, migrating its schema. Either way the schema is brought to this build's.
    pub async fn open(&self) -> anyhow::Result<Arc<dyn ClinicalStore>> {
        match self {
            StoreTarget::Sqlite(path) => Ok(Arc::new(open_store(path)?)),
            StoreTarget::Postgres { url, password_file } => Ok(Arc::new(
                connect_postgres(url, password_file.as_deref()).await?,
            )),
        }
    }

    /// True for PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self, StoreTarget::Postgres { .. })
    }
}

/// Connects to the PostgreSQL clinical store at `url` (migrating its schema), the password
/// read from `password_file` if given, else from `MEDKEEPER_STORE_PASSWORD`, else
/// `PGPASSWORD`, else none.
pub async fn connect_postgres(
    url: &str,
    password_file: Option<&Path>,
) -> anyhow::Result<PostgresStore> {
    let password = match password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the store password file {}", f.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => std::env::var("MEDKEEPER_STORE_PASSWORD")
            .or_else(|_| std::env::var("PGPASSWORD"))
            .ok(),
    };
    let options = PostgresOptions {
        password,
        ..PostgresOptions::default()
    };
    let store = PostgresStore::connect(url, options)
        .await
        .with_context(|| format!("cannot open the clinical store {url}"))?;
    tracing::info!(store = %store.target(), "clinical store on PostgreSQL");
    Ok(store)
}

/// Opens (creating) the clinical store under the data directory.
pub fn open_store(path: &Path) -> anyhow::Result<SqliteStore> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    SqliteStore::open(path)
        .with_context(|| format!("cannot open the clinical store {}", path.display()))
}

/// Prints a line scripts wait for and flushes it at once: a script reading the output through a
/// pipe must see `listening on …` when it is true, not when a buffer fills.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs the instance until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let history_every = match args.history_every.as_deref() {
        None => None,
        Some(t) => match medkeeper_hospital::config::parse_duration(t) {
            Some(d) if d >= Duration::from_millis(100) => Some(d),
            _ => bail!("--history-every {t:?}: a duration of at least 100ms, such as 1m or 1s"),
        },
    };
    let s = settings(args)?;
    logs::init(s.log_format, logs::SERVICE_FILTER)?;
    medkeeper_hospital::model::validate_name("instance id", &s.instance)
        .map_err(|e| anyhow::anyhow!("--instance: {e}"))?;
    // A second server on a data directory in use would listen, answer /healthz, and write to
    // the shared clinical store while it waits for an engine it can never open: refuse it
    // before anything is bound or opened. (A race past this check ends in the instance's
    // first connect, which stops the server too.)
    if let Some((dir, pid)) = crate::coord::held_by_another_process(&s.connect) {
        bail!(
            "data directory {dir} is in use by another medkeeper process (pid {pid}); stop \
             it first, or give this server its own --data"
        );
    }
    crate::datadir::prepare(&s.data, &s.store)?; // 0700, refused if others may write it
    let config = match &s.hospital {
        Some(path) => HospitalConfig::from_file(path)
            .with_context(|| format!("cannot load the hospital file {}", path.display()))?,
        None => HospitalConfig::demo(),
    };
    let store: Arc<dyn ClinicalStore> = s.store.open().await?;
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("cannot listen on {}", s.listen))?;
    let addr = listener.local_addr().context("listener address")?;
    let metrics_listener = match s.metrics_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--metrics-listen)"))?,
        ),
        None => None,
    };
    let mllp_listener = match s.mllp_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--mllp-listen)"))?,
        ),
        None => None,
    };
    // HTTPS: the certificate is read now, so a bad one stops the start.
    let tls_config = match &s.https {
        Some(files) => Some(files.load().context("cannot serve HTTPS")?),
        None => None,
    };
    let scheme = if tls_config.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/");
    if !s.limits.trusted_proxies.is_empty() {
        tracing::info!(
            proxies = %s.limits.trusted_proxies,
            "the client's address is X-Forwarded-For's from these proxies"
        );
    }
    let state = ServerState::new(
        MemberInfo {
            id: s.instance.clone(),
            url: url.clone(),
            started_ms: now_ms(),
        },
        store.clone(),
        s.limits.clone(),
    );
    if let Some(stats) = s.connect.sync_stats.clone() {
        state.set_engine_figures(Arc::new(move || engine_figures(&stats)));
    }
    let hospital_name = config.name.clone();
    let first_token = if store.tokens().await.context("reading tokens")?.is_empty() {
        // Under --token-max-ttl the first admin token expires too (then issue another offline).
        let expires_ms = s
            .limits
            .tokens
            .expiry(Role::Admin, None, now_ms())
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        let (rec, token) =
            issue_token_expiring(store.as_ref(), Role::Admin, None, "first start", expires_ms)
                .await
                .map_err(|e| anyhow::anyhow!("cannot create the admin token: {}", e.message))?;
        Some((rec.id, token, expires_ms))
    } else {
        None
    };
    let data_dir = s.data.clone();
    let store_is_postgres = s.store.is_postgres();

    let (stop_tx, stop) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::spawn({
        let stop_tx = stop_tx.clone();
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            let _ = stop_tx.send(true);
        }
    });

    // Alerts to Alertmanager: the cluster's alarms from the leader, this instance's health.
    let delivery = s.alertmanager.as_ref().map(|(u, tls)| Delivery {
        options: alertmanager::Options {
            tls: tls.clone(),
            ..alertmanager::Options::new(u.clone())
        },
        base_url: url.clone(),
        hospital: hospital_name.clone(),
    });
    if let Some(d) = delivery.clone() {
        tokio::spawn(alerting::deliver_health(
            state.clone(),
            d,
            stopped(stop.clone()),
        ));
    }

    // The coordination side: sessions, dispatchers, membership, leadership.
    let instance = Instance {
        id: s.instance.clone(),
        connect: s.connect.clone(),
        hospital: config,
        store,
        duties: Duties {
            member: Some(state.me().clone()),
            lead: true,
            alerts: delivery,
            history_every,
            on_hospital: Some(Box::new({
                let state = state.clone();
                move |hospital| state.set_hospital(hospital)
            })),
        },
        on_error: OnError::Retry,
        dispatch_observer: Some(state.dispatch_observer()),
    };
    // The coordination side failing for good (another process holds the data directory) stops
    // the server: its error is the process's (returned after the drain below).
    let mut coordination = tokio::spawn({
        let stop = stopped(stop.clone());
        async move {
            let r = instance::run(instance, stop).await;
            if r.is_err() {
                let _ = stop_tx.send(true);
            }
            r
        }
    });

    // The HTTP side.
    let app = medkeeper_server::router(state.clone());
    let shutdown_state = state.clone();
    let mut stop_http = stop.clone();
    let shutdown = async move {
        let _ = stop_http.wait_for(|s| *s).await;
        shutdown_state.shut_down();
    };
    // Either way every request carries `ConnectInfo<SocketAddr>`, its peer's address.
    let mut served = match (tls_config, s.https) {
        (Some(config), Some(files)) => {
            let (config_tx, config_rx) = watch::channel(config);
            tokio::spawn(crate::https::reload(files, config_tx));
            let listener = HttpsListener::new(listener, config_rx)
                .context("HTTPS listener")?
                // Small writes (event stream lines) go out at once. Wrapped in `tap_io`, the
                // listener also gets axum's `ConnectInfo<SocketAddr>` for its connections.
                .tap_io(|tls| {
                    let _ = tls.get_ref().0.set_nodelay(true);
                });
            let server = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown);
            tokio::spawn(async move { server.await })
        }
        _ => {
            // SIGHUP reloads certificates; without them it must not end the process (its
            // default action), e.g. a `systemctl reload` on an instance without HTTPS.
            if let Ok(mut hangup) = signal(SignalKind::hangup()) {
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP: nothing to reload (no --tls-cert)");
                    }
                });
            }
            let server = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown);
            tokio::spawn(async move { server.await })
        }
    };
    // `/metrics` on its own listener; it stops accepting with the API and is not drained (a
    // scrape is short, and Prometheus retries).
    let metrics_url = match metrics_listener {
        Some(listener) => {
            let at = listener.local_addr().context("metrics listener address")?;
            let app = medkeeper_server::metrics_router(state.clone());
            let mut stop_metrics = stop.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_metrics.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!("metrics listener: {e}");
                }
            });
            Some(format!("http://{at}/metrics"))
        }
        None => None,
    };
    // HL7 v2 over MLLP on its own listener; it lets the messages being stored finish.
    let mut mllp = None;
    if let Some(listener) = mllp_listener {
        let at = listener.local_addr().context("mllp listener address")?;
        let task =
            medkeeper_server::mllp::serve_mllp(listener, state.clone(), stopped(stop.clone()));
        mllp = Some((at, tokio::spawn(task)));
    }
    // The URL is printed once the instance is ready (a session, the hospital loaded): a
    // script that waits for it can use the API at once. Requests before that get 503.
    let mut ready = state.hospitals();
    tokio::select! {
        _ = ready.wait_for(Option::is_some) => {}
        _ = tokio::time::sleep(READY_WAIT) => {
            tracing::warn!("no coordination session after {READY_WAIT:?}; serving 503 until there is one");
        }
        _ = stopped(stop.clone()) => {}
    }
    // Stopping already (a signal, or the coordination side failed): no "listening" line for a
    // script to act on.
    if !*stop.borrow() {
        say(format_args!(
            "medkeeper {} serving {hospital_name}",
            env!("CARGO_PKG_VERSION")
        ));
        say(format_args!("listening on {url}"));
        if let Some(m) = &metrics_url {
            say(format_args!("metrics on {m}"));
        }
        if let Some((at, _)) = &mllp {
            say(format_args!("mllp on {at}"));
        }
        if let Some((id, token, expires_ms)) = &first_token {
            say(format_args!("admin token: {token}"));
            // Under --token-max-ttl it does not last: say so where it is read.
            if let Some(at) = expires_ms {
                let ms = at.saturating_sub(now_ms()).max(0) as u64;
                let left = Duration::from_secs(ms.saturating_add(500) / 1000);
                say(format_args!(
                    "  (expires in {} under --token-max-ttl: issue the next before then)",
                    medkeeper_server::auth::format_duration(left)
                ));
            }
            if store_is_postgres {
                say(format_args!(
                    "  (shown once; id {id}; more with `medkeeper token create --server {url} \
                     --token <this token> --role ROLE`)"
                ));
            } else {
                say(format_args!(
                    "  (shown once; id {id}; more with `medkeeper token create --data {} --role \
                     ROLE`)",
                    data_dir.display()
                ));
            }
        }
        say(format_args!("dashboard: {url}#token=<token>"));
    }
    stopped(stop.clone()).await;
    tracing::info!("stopping: finishing in-flight requests");
    match tokio::time::timeout(DRAIN, &mut served).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!("HTTP server: {e}"),
        Ok(Err(e)) => tracing::warn!("HTTP server task: {e}"),
        Err(_) => {
            tracing::warn!("requests still in flight after {DRAIN:?}; stopping anyway");
            served.abort();
            let _ = served.await;
        }
    }
    if let Some((_, task)) = mllp
        && tokio::time::timeout(DRAIN, task).await.is_err()
    {
        tracing::warn!("mllp listener still stopping after {DRAIN:?}; stopping anyway");
    }
    // Releasing the locks, leaving and closing the session need the coordination service; if
    // it is unreachable, do not hang: the session then ends by expiry.
    match tokio::time::timeout(DRAIN, &mut coordination).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e),
        Ok(Err(e)) => bail!("coordination task: {e}"),
        Err(_) => {
            tracing::warn!(
                "the coordination service did not answer within {DRAIN:?}; stopping anyway (the \
                 session ends by expiry)"
            );
            coordination.abort();
            let _ = coordination.await;
        }
    }
    tracing::info!("stopped {}", state.me().id);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example configuration shipped under deploy/ is one `serve --config` takes.
    #[test]
    fn the_deploy_example_config_parses() {
        let text = include_str!("../../../deploy/medkeeper.toml");
        let file: FileSettings = toml::from_str(text).expect("deploy/medkeeper.toml parses");
        let proxies = file.trusted_proxies.clone().unwrap_or_default();
        let trusted = medkeeper_server::TrustedProxies::parse(&proxies).unwrap();
        assert!(trusted.trusts("10.0.1.10".parse().unwrap()));
        assert!(file.store.is_some() && file.connect.is_some());
    }
}
