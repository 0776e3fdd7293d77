//! `medkeeper dispatch`: one medkeeper instance's dispatchers, as a process of its own.
//!
//! Opens a coordination session and the clinical store (an SQLite file several processes on one
//! machine may share: WAL mode and a busy timeout serialise their writes; or a PostgreSQL
//! database, `--store postgres://…`, shared from any machine), loads the hospital
//! configuration (idempotent), repairs what a crash left ([`Hospital::reconcile`]; what it left
//! for being too recent once that is due) and runs one [`Dispatcher`] per pool until SIGTERM or
//! SIGINT. Each dispatcher waits in its pool's lock line and dispatches while it holds the
//! lock, so pools spread over instances and pass to the next instance in line when one dies
//! (kill -9) or is paused past its session timeout. The session's life is
//! [`instance::run`](crate::instance::run), shared with `medkeeper serve`.
//!
//! On SIGTERM/SIGINT the dispatchers release their locks and the session is closed, so the
//! next instance in line takes over at once. If the session expires (the process was paused
//! past its timeout), everything it held is gone — its lock nodes, so its fenced writes fail —
//! and the instance opens a new session, reconciles, and queues up again. If the first connect
//! fails, or the hospital configuration cannot be loaded, it exits with status 1.
//!
//! Status lines in the log (stderr, [`crate::logs`]: `RUST_LOG`, `--log-format human|json`) say
//! who dispatches what: `dispatching MRI as NAME` when this instance becomes the holder of a
//! pool's lock, `stopped dispatching MRI as NAME` when it stops.
//!
//! [`Hospital::reconcile`]: medkeeper_hospital::orders::Hospital::reconcile
//! [`Dispatcher`]: medkeeper_hospital::dispatch::Dispatcher

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use medkeeper_hospital::config::HospitalConfig;
use medkeeper_hospital::store::ClinicalStore;
use tokio::signal::unix::{SignalKind, signal};

use crate::coord::ConnectArgs;
use crate::instance::{self, Duties, Instance, OnError, default_instance};
use crate::logs::{self, LogFormat};
use crate::serve::StoreTarget;

/// `medkeeper dispatch` arguments.
#[derive(Args, Debug)]
pub struct DispatchArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The clinical store: an SQLite file (created if missing; shareable by several processes
    /// on one machine), or `postgres://USER@HOST:PORT/DB` (TLS as for `serve`; the password
    /// from `MEDKEEPER_STORE_PASSWORD`, else `PGPASSWORD`).
    #[arg(long)]
    store: PathBuf,
    /// The hospital configuration (TOML); the demo hospital if absent.
    #[arg(long)]
    hospital: Option<PathBuf>,
    /// This instance's name, in the lock nodes and in the order history
    /// (`dispatcher:<NAME>`). Defaults to `<hostname>-<pid>`.
    #[arg(long)]
    instance: Option<String>,
    /// Log lines on stderr: `human` or `json` (one object a line); `RUST_LOG` filters them.
    #[arg(long, value_enum, env = "MEDKEEPER_LOG_FORMAT", default_value_t)]
    log_format: LogFormat,
}

/// Runs the dispatchers until SIGTERM or SIGINT; exit status 0 after a graceful stop.
pub async fn run(args: DispatchArgs) -> anyhow::Result<ExitCode> {
    logs::init(args.log_format, logs::SERVICE_FILTER)?;
    let id = args.instance.clone().unwrap_or_else(default_instance);
    let hospital = match &args.hospital {
        Some(path) => HospitalConfig::from_file(path)
            .with_context(|| format!("cannot load the hospital file {}", path.display()))?,
        None => HospitalConfig::demo(),
    };
    let store: Arc<dyn ClinicalStore> =
        StoreTarget::parse(args.store.clone(), None)?.open().await?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let instance = Instance {
        id: id.clone(),
        connect: args.connect,
        hospital,
        store,
        duties: Duties::default(),
        on_error: OnError::Exit,
        dispatch_observer: None,
    };
    instance::run(instance, shutdown).await?;
    tracing::info!("stopped {id}");
    Ok(ExitCode::SUCCESS)
}
