//! `medkeeper lock`: run a command while holding a fair lock (as `etcdctl lock` does), so
//! maintenance scripts on a scanner are serialised across machines.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use medkeeper_recipes::{ConnectionPolicy, Error, Mutex};
use tokio::signal::unix::{SignalKind, signal};

use crate::coord::{ConnectArgs, connect};

/// `medkeeper lock` arguments.
#[derive(Args, Debug)]
pub struct LockArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Give up if the lock is not acquired within this many milliseconds (exit status 2).
    #[arg(long)]
    timeout: Option<u64>,
    /// What a connection loss while holding does: `session` waits for the connection to come
    /// back (the lock is lost only if the session expires); `standard` treats it as lost.
    #[arg(long, value_enum, default_value_t = Policy::Session)]
    policy: Policy,
    /// The lock directory, e.g. /medical/resources/equipment/MRI/lock.
    path: String,
    /// The command to run while holding the lock, and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum Policy {
    Session,
    Standard,
}

/// Acquires the lock, runs the command with `MEDKEEPER_FENCING_TOKEN` and `MEDKEEPER_LOCK_NODE`
/// in its environment, releases the lock when the command exits and returns its exit status.
/// If the lock is lost while the command runs (the session expired), the command is killed
/// (SIGKILL: it no longer holds exclusivity) and the status is 2. SIGTERM and SIGINT are passed
/// on to the command; the lock is released once it exits.
pub async fn run(args: LockArgs) -> anyhow::Result<ExitCode> {
    let conn = connect(&args.connect).await?;
    let policy = match args.policy {
        Policy::Session => ConnectionPolicy::Session,
        Policy::Standard => ConnectionPolicy::Standard,
    };
    let mutex = Mutex::with_options(
        conn.session.clone(),
        &args.path,
        medkeeper_recipes::LockOptions {
            data: format!("medkeeper-lock pid {}", std::process::id()).into_bytes(),
            policy,
        },
    );
    let mutex = match mutex {
        Ok(m) => m,
        Err(e) => {
            conn.close().await;
            return Ok(report(&args.path, &e));
        }
    };
    let acquired = match args.timeout {
        Some(ms) => mutex.acquire_timeout(Duration::from_millis(ms)).await,
        None => mutex.acquire().await,
    };
    let guard = match acquired {
        Ok(g) => g,
        Err(e) => {
            conn.close().await;
            return Ok(report(&args.path, &e));
        }
    };
    let mut child = tokio::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("MEDKEEPER_FENCING_TOKEN", guard.fencing_token().to_string())
        .env("MEDKEEPER_LOCK_NODE", guard.path())
        .spawn();
    let child = match child.as_mut() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot run {:?}: {e}", args.command[0]);
            let _ = guard.release().await;
            conn.close().await;
            anyhow::bail!(msg);
        }
    };
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let code = loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.context("waiting for the command")?;
                break match (status.code(), status.signal()) {
                    (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
                    (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
                    _ => ExitCode::FAILURE,
                };
            }
            reason = guard.lost() => {
                eprintln!("Lost: {}: the lock was lost ({reason}); the command is killed", args.path);
                let _ = child.start_kill();
                let _ = child.wait().await;
                break ExitCode::from(2);
            }
            _ = term.recv() => forward(child, "TERM").await,
            _ = int.recv() => forward(child, "INT").await,
        }
    };
    if let Err(e) = guard.release().await {
        eprintln!("warning: releasing {}: {e}", args.path);
    }
    conn.close().await;
    Ok(code)
}

/// Passes a signal on to the command (by the `kill` utility: this crate has no unsafe code).
async fn forward(child: &mut tokio::process::Child, sig: &str) {
    if let Some(pid) = child.id() {
        let _ = tokio::process::Command::new("kill")
            .args(["-s", sig, &pid.to_string()])
            .status()
            .await;
    }
}

/// Prints a recipe error as `Kind: path: message` and returns exit status 2.
fn report(path: &str, e: &Error) -> ExitCode {
    let kind = match e {
        Error::Timeout => "Timeout",
        Error::Lost(_) => "Lost",
        Error::InvalidArgument(_) => "BadArguments",
        e => e.coord().map_or("Error", |c| c.kind_name()),
    };
    eprintln!("{kind}: {path}: {e}");
    ExitCode::from(2)
}
