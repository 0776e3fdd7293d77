//! `medkeeper bench sse`: how long a state change takes to reach a client of the server's
//! event streams — the latency the dashboard and a waiting patient see.
//!
//! Runs the real HTTP server (the router `medkeeper serve` runs) on a loopback port over the
//! target (the embedded engine, or a fresh chroot on ZooKeeper), opens two event streams over
//! plain TCP, and measures, HdrHistogram p50/p99/max:
//! - **unit**: a unit's status is changed through the library (one version-checked
//!   `set_data`), timed from just before the change to the first `unit` event showing it;
//! - **queue**: an order is created through the library (store insert, patient node, queue
//!   item), timed from just before the call to the first `pool` event whose queue holds it.
//!
//! Both paths are the production ones: a persistent recursive watch fires, the feed takes the
//! events that have arrived, recomputes the view and sends it.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
use medkeeper_hospital::{PatientId, Pool, Priority, UnitStatus};
use medkeeper_server::{Limits, MemberInfo, Role, ServerState, issue_token};
use tokio::sync::mpsc;

use super::dispatch::Target;
use crate::coord::ConnectArgs;

/// Options of `bench sse`.
#[derive(Args, Debug)]
pub struct SseBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Changes measured per stream.
    #[arg(long, default_value_t = 200)]
    changes: u32,
}

/// Reads an event stream: sends every `data:` line with the instant it was read.
pub(super) fn read_stream(
    addr: std::net::SocketAddr,
    path: String,
    token: String,
    tx: mpsc::UnboundedSender<(Instant, String)>,
) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "GET {path}?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        // Chunked transfer: chunk-size lines and blank lines are skipped; `data:` lines are
        // whole within a chunk (one event per chunk).
        if let Some(d) = line.trim_end().strip_prefix("data: ")
            && tx.send((Instant::now(), d.to_string())).is_err()
        {
            return Ok(());
        }
    }
}

pub(super) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `medkeeper bench sse`.
pub async fn run(b: SseBench) -> anyhow::Result<std::process::ExitCode> {
    let target = Target::open(&b.connect, "sse").await?;
    let result = measure(&b, &target).await;
    target.finish().await?;
    let (unit, queue) = result?;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    for (name, h) in [
        ("unit status → unit event", &unit),
        ("order created → pool event", &queue),
    ] {
        println!(
            "medkeeper sse ({}): {name}: n {}, p50 {} µs, p99 {} µs, max {} µs",
            b.connect.connect,
            h.len(),
            us(h, 0.5),
            us(h, 0.99),
            h.max()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn measure(
    b: &SseBench,
    target: &Target,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let session = target.session.clone();
    let cfg = HospitalConfig::demo();
    config::load(session.as_ref(), &cfg).await?;
    let dir = tempfile_dir()?;
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::open(dir.join("clinical.sqlite"))?);
    let hospital = Arc::new(Hospital::new(session.clone(), store.clone(), cfg)?);
    let state = ServerState::new(
        MemberInfo {
            id: "bench".into(),
            url: String::new(),
            started_ms: 0,
        },
        store.clone(),
        Limits::default(),
    );
    state.set_hospital(Some(hospital.clone()));
    let (_, token) = issue_token(store.as_ref(), Role::Admin, None, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server =
        tokio::spawn(axum::serve(listener, medkeeper_server::router(state.clone())).into_future());

    let mri = Pool::Equipment("MRI".into());
    // Keep the dispatcher's assignments out of the picture: no dispatcher runs; MRI-2 is
    // put in maintenance so the queue only grows.
    let (unit_tx, mut unit_rx) = mpsc::unbounded_channel();
    let (pool_tx, mut pool_rx) = mpsc::unbounded_channel();
    let t = token.clone();
    std::thread::spawn(move || {
        read_stream(addr, "/api/pools/MRI/units/MRI-1/events".into(), t, unit_tx)
    });
    let t = token.clone();
    std::thread::spawn(move || read_stream(addr, "/api/pools/MRI/events".into(), t, pool_tx));
    // The first event of each stream is its snapshot.
    for rx in [&mut unit_rx, &mut pool_rx] {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no snapshot event within 10 s")?
            .context("the stream ended")?;
    }

    let mut unit = hist();
    for i in 0..b.changes {
        let status = if i % 2 == 0 {
            UnitStatus::Maintenance
        } else {
            UnitStatus::Available
        };
        let want = format!("\"status\":\"{status}\"");
        let t0 = Instant::now();
        hospital.set_unit_status(&mri, "MRI-1", status).await?;
        loop {
            let (at, data) = tokio::time::timeout(Duration::from_secs(10), unit_rx.recv())
                .await
                .context("no unit event within 10 s")?
                .context("the unit stream ended")?;
            if data.contains(&want) {
                unit.record((at - t0).as_micros().max(1) as u64).ok();
                break;
            }
        }
    }

    let mut queue = hist();
    for _ in 0..b.changes {
        let new = NewOrder {
            patient: PatientId::generate(),
            pool: mri.clone(),
            capabilities: Vec::new(),
            priority: Priority::Routine,
            reason: String::new(),
        };
        let t0 = Instant::now();
        let order = hospital.create_order(new, "bench").await?;
        let id = format!("\"{}\"", order.id);
        loop {
            let (at, data) = tokio::time::timeout(Duration::from_secs(10), pool_rx.recv())
                .await
                .context("no pool event within 10 s")?
                .context("the pool stream ended")?;
            if data.contains(&id) {
                queue.record((at - t0).as_micros().max(1) as u64).ok();
                break;
            }
        }
    }
    state.shut_down();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if unit.is_empty() || queue.is_empty() {
        bail!("nothing measured");
    }
    Ok((unit, queue))
}

/// A fresh directory for the clinical store.
pub(super) fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "medkeeper-bench-sse-{}-{}",
        std::process::id(),
        medkeeper_hospital::model::now_ms()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
