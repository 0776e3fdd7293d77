//! `medkeeper dispatch`: one medkeeper instance's dispatchers, as a process of its own.
//!
//! Opens a coordination session and the clinical store (an SQLite file several processes on one
//! machine may share: WAL mode and a busy timeout serialise their writes), loads the hospital
//! configuration (idempotent), repairs what a crash left ([`Hospital::reconcile`]) and runs one
//! [`Dispatcher`] per pool until SIGTERM or SIGINT. Each dispatcher waits in its pool's lock
//! line and dispatches while it holds the lock, so pools spread over instances and pass to the
//! next instance in line when one dies (kill -9) or is paused past its session timeout.
//!
//! On SIGTERM/SIGINT the dispatchers release their locks and the session is closed, so the
//! next instance in line takes over at once. If the session expires (the process was paused
//! past its timeout), everything it held is gone — its lock nodes, so its fenced writes fail —
//! and the instance opens a new session, reconciles, and queues up again.
//!
//! Status lines on stderr say who dispatches what: `dispatching MRI as NAME` when this instance
//! becomes the holder of a pool's lock, `stopped dispatching MRI as NAME` when it stops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use medkeeper_coord::{Session, SessionState};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::Dispatcher;
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
use medkeeper_hospital::{Pool, tree};
use medkeeper_recipes::Mutex;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::coord::{ConnectArgs, connect};

/// How often the status task looks at who holds each pool's lock.
const HOLDER_POLL: Duration = Duration::from_millis(200);
/// How long a dispatcher that failed for a reason other than the session's end waits before
/// queueing up again.
const RETRY: Duration = Duration::from_secs(1);
/// How long shutdown waits for the dispatchers to release their locks.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// `medkeeper dispatch` arguments.
#[derive(Args, Debug)]
pub struct DispatchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The clinical store, an SQLite file (created if missing; shareable by several processes
    /// on one machine).
    #[arg(long)]
    store: PathBuf,
    /// The hospital configuration (TOML); the demo hospital if absent.
    #[arg(long)]
    hospital: Option<PathBuf>,
    /// This instance's name, in the lock nodes and in the order history
    /// (`dispatcher:<NAME>`). Defaults to `<hostname>-<pid>`.
    #[arg(long)]
    instance: Option<String>,
}

/// Runs the dispatchers until SIGTERM or SIGINT; exit status 0 after a graceful stop.
pub async fn run(args: DispatchArgs) -> anyhow::Result<ExitCode> {
    let instance = args.instance.clone().unwrap_or_else(default_instance);
    let config = match &args.hospital {
        Some(path) => HospitalConfig::from_file(path)
            .with_context(|| format!("cannot load the hospital file {}", path.display()))?,
        None => HospitalConfig::demo(),
    };
    let store: Arc<dyn ClinicalStore> = Arc::new(
        SqliteStore::open(&args.store)
            .with_context(|| format!("cannot open the clinical store {}", args.store.display()))?,
    );
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let mut first = true;
    loop {
        let conn = match connect(&args.connect).await {
            Ok(c) => c,
            Err(e) if first => return Err(e),
            Err(e) => {
                // A new session after an expiry: the service may be briefly unreachable.
                eprintln!("warning: {instance}: {e:#}");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = stopped(stop.clone()) => break,
                }
            }
        };
        first = false;
        let session = conn.session.clone();
        let outcome = serve(
            session.clone(),
            conn.sole_writer(),
            store.clone(),
            config.clone(),
            &instance,
            stop.clone(),
        )
        .await;
        conn.close().await;
        match outcome {
            Ok(None) => break,
            Ok(Some(state)) => eprintln!("session {state:?}: {instance} opens a new session"),
            Err(e) if session.state().is_terminal() => {
                eprintln!("warning: {instance}: {e:#}; session {:?}", session.state());
            }
            Err(e) => return Err(e),
        }
        if *stop.borrow() {
            break;
        }
    }
    eprintln!("stopped {instance}");
    Ok(ExitCode::SUCCESS)
}

/// One session's life: loads the configuration, reconciles, and dispatches every pool until
/// `stop` (then the dispatchers release their locks; returns `None`) or the session's end
/// (expired: the process was paused past its timeout; returns its state).
async fn serve(
    session: Arc<dyn Session>,
    sole_writer: bool,
    store: Arc<dyn ClinicalStore>,
    config: HospitalConfig,
    instance: &str,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<SessionState>> {
    config::load(session.as_ref(), &config)
        .await
        .context("loading the hospital configuration")?;
    let pools: Vec<Pool> = config.pools.iter().map(|p| p.pool.clone()).collect();
    let hospital = Arc::new(Hospital::new(session.clone(), store, config)?);
    let report = hospital
        .reconcile_with_grace(crate::serve::startup_grace(sole_writer))
        .await
        .context("reconciling")?;
    if !report.is_clean() {
        eprintln!(
            "{instance}: reconciled {}",
            serde_json::to_string(&report).unwrap_or_default()
        );
    }
    let mut dispatchers = Dispatchers::start(&hospital, &pools, instance);
    let mut events = session.session_events();
    let ended = tokio::select! {
        state = events.wait_for(SessionState::is_terminal) => Some(state),
        _ = stopped(stop) => None,
    };
    dispatchers.stop().await;
    Ok(ended)
}

/// The running dispatchers and status tasks of one session. [`stop`](Dispatchers::stop) asks
/// them to release their locks and waits; dropping it without stopping stops them in the
/// background (the caller then closes the session, which drops the locks anyway).
pub(crate) struct Dispatchers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Dispatchers {
    pub(crate) fn start(hospital: &Arc<Hospital>, pools: &[Pool], instance: &str) -> Dispatchers {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for pool in pools {
            tasks.spawn(dispatch_pool(
                hospital.clone(),
                pool.clone(),
                instance.to_string(),
                stop.subscribe(),
            ));
            tasks.spawn(announce(
                hospital.session().clone(),
                pool.clone(),
                instance.to_string(),
                stop.subscribe(),
            ));
        }
        Dispatchers { stop, tasks }
    }

    pub(crate) async fn stop(&mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            self.tasks.abort_all();
        }
    }
}

impl Drop for Dispatchers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.tasks.detach_all();
    }
}

/// Resolves once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs the pool's dispatcher until told to stop, queueing up again after a failure that is
/// not the session's end (after which [`serve`] opens a new session).
async fn dispatch_pool(
    hospital: Arc<Hospital>,
    pool: Pool,
    instance: String,
    stop: watch::Receiver<bool>,
) {
    loop {
        let dispatcher = Dispatcher::new(hospital.clone(), pool.clone(), instance.clone());
        match dispatcher.run(stopped(stop.clone())).await {
            Ok(()) => return,
            Err(e) => {
                if hospital.session().state().is_terminal() {
                    return;
                }
                eprintln!("warning: {instance}: dispatching {}: {e}", pool.name());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

/// Prints a status line whenever this session starts or stops holding the pool's lock.
async fn announce(
    session: Arc<dyn Session>,
    pool: Pool,
    instance: String,
    stop: watch::Receiver<bool>,
) {
    let Ok(lock) = Mutex::new(session.clone(), tree::lock_path(&pool)) else {
        return;
    };
    let mut holding = false;
    loop {
        let ours = match lock.holder().await {
            Ok(Some((path, data))) => {
                data == instance.as_bytes()
                    && matches!(
                        session.exists(&path).await,
                        Ok(Some(st)) if st.ephemeral_owner == session.session_id().0
                    )
            }
            _ => false,
        };
        if ours != holding {
            holding = ours;
            if ours {
                eprintln!("dispatching {} as {instance}", pool.name());
            } else {
                eprintln!("stopped dispatching {} as {instance}", pool.name());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HOLDER_POLL) => {}
            _ = stopped(stop.clone()) => return,
        }
    }
}

pub(crate) fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "medkeeper".to_string()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}
