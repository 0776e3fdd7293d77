//! `medkeeper bench coord`: the embedded engine's figures — durable creates/s with 1 and 64
//! writers, writes per fsync, get_data/s, latency percentiles, memory per znode and restart
//! time with a large tree.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
use medkeeper_embedded::{EmbeddedSession, Engine, EngineConfig, SessionOptions};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// The embedded coordination engine.
    Coord(CoordBench),
    /// One scenario of the side-by-side suite with Curator and kazoo (`scripts/bench`).
    Recipes(crate::bench_recipes::RecipesBench),
    /// Scenario e of the suite: the hospital's dispatch end to end (orders/s, enqueue →
    /// assigned latency).
    Dispatch(dispatch::DispatchBench),
    /// Scenario f of the suite: memory per znode, this engine's RSS or a ZooKeeper server's.
    Memory(memory::MemoryBench),
    /// The server's event streams: state change → event at the client, p50/p99.
    Sse(sse::SseBench),
    /// A running `medkeeper serve` through its HTTP API: concurrent clients create orders,
    /// orders/s and `POST /api/orders` → "called" on the patient's event stream, p50/p99.
    Api(api::ApiBench),
    /// Alarms: threshold crossed → alarm on an event stream, p50/p99, and the cost of one
    /// evaluation pass with every demo rule and many orders waiting.
    Alarms(alarms::AlarmsBench),
    /// Vital signs: observations ingested per second (durable), and a deteriorating
    /// patient's observations → the NEWS2 alarm on an event stream, p50/p99.
    Vitals(vitals::VitalsBench),
}

#[path = "bench_vitals.rs"]
mod vitals;

#[path = "bench_alarms.rs"]
mod alarms;

#[path = "bench_api.rs"]
mod api;
#[path = "bench_dispatch.rs"]
mod dispatch;
#[path = "bench_memory.rs"]
mod memory;
#[path = "bench_sse.rs"]
mod sse;

/// Options of `bench coord`.
#[derive(Args, Debug)]
pub struct CoordBench {
    /// Data directory to use (default: a fresh directory under the system temp dir, removed
    /// afterwards). Put it on the disk you want to measure.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Length of each throughput window, seconds (after a 1 s warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Znodes for the memory and restart measurements.
    #[arg(long, default_value_t = 1_000_000)]
    znodes: usize,
    /// Data bytes per znode for the memory and restart measurements.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
}

/// Runs a benchmark.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Coord(b) => coord(b).await,
        BenchCommand::Recipes(b) => crate::bench_recipes::run(b).await,
        BenchCommand::Dispatch(b) => dispatch::run(b).await,
        BenchCommand::Memory(b) => memory::run(b).await,
        BenchCommand::Sse(b) => sse::run(b).await,
        BenchCommand::Api(b) => api::run(b).await,
        BenchCommand::Alarms(b) => alarms::run(b).await,
        BenchCommand::Vitals(b) => vitals::run(b).await,
    }
}

/// A bare `fdatasync` on the disk holding `dir`, the way docs/benchmarks.md measures the
/// device: `n` rounds of a 4 KiB `pwrite` at offset 0 and `fdatasync`, in a scratch file that
/// is removed afterwards. Latencies in µs. Blocking: call it from `spawn_blocking`.
pub(crate) fn fsync_probe(dir: &Path, n: usize) -> std::io::Result<Histogram<u64>> {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!(".medkeeper-fsync-probe-{}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = [0x5au8; 4096];
    file.write_all_at(&block, 0)?;
    file.sync_all()?;
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let result = (|| {
        for _ in 0..n.max(1) {
            let t = Instant::now();
            file.write_all_at(&block, 0)?;
            file.sync_data()?;
            h.record(t.elapsed().as_micros().max(1) as u64).ok();
        }
        Ok(h)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// ZooKeeper's own counters (`mntr`), summed over the servers of a connect string: what the
/// servers saw, as opposed to what a client believes it sent.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ZkCounters {
    /// `zk_packets_received`: every request the servers received, session pings included.
    pub packets_received: u64,
    /// `zk_cnt_fsynctime`: transaction log fsyncs, all servers.
    pub fsyncs: u64,
    /// `zk_sum_fsynctime`: their total time, ms.
    pub fsync_ms: u64,
    /// The leader's (or the standalone server's) fsyncs alone: the ones a write waits for.
    pub leader_fsyncs: u64,
    /// The leader's fsync time, ms.
    pub leader_fsync_ms: u64,
}

impl ZkCounters {
    /// What was counted between `earlier` and these counters.
    pub fn since(&self, earlier: &ZkCounters) -> ZkCounters {
        ZkCounters {
            packets_received: self
                .packets_received
                .saturating_sub(earlier.packets_received),
            fsyncs: self.fsyncs.saturating_sub(earlier.fsyncs),
            fsync_ms: self.fsync_ms.saturating_sub(earlier.fsync_ms),
            leader_fsyncs: self.leader_fsyncs.saturating_sub(earlier.leader_fsyncs),
            leader_fsync_ms: self.leader_fsync_ms.saturating_sub(earlier.leader_fsync_ms),
        }
    }
}

/// The servers of a plain `zk:` connect string (`None` for `embedded:` and `zk+tls:`).
pub(crate) fn zk_servers(connect: &str) -> Option<Vec<String>> {
    if connect.starts_with("embedded:") || connect.starts_with("zk+tls:") {
        return None;
    }
    let hosts = connect.strip_prefix("zk:").unwrap_or(connect);
    let hosts = hosts.split('/').next().unwrap_or("");
    let list: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .collect();
    (!list.is_empty()).then_some(list)
}

/// Reads `mntr` from every server; `None` if any does not answer.
pub(crate) async fn zk_counters(servers: &[String]) -> Option<ZkCounters> {
    let servers = servers.to_vec();
    tokio::task::spawn_blocking(move || zk_counters_blocking(&servers))
        .await
        .ok()
        .flatten()
}

/// [`zk_counters`] on the calling thread.
pub(crate) fn zk_counters_blocking(servers: &[String]) -> Option<ZkCounters> {
    use std::io::{Read, Write};
    let mut c = ZkCounters::default();
    for server in servers {
        let addr: std::net::SocketAddr = server.parse().ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"mntr").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let mut leader = false;
        let (mut fsyncs, mut fsync_ms) = (0, 0);
        for line in text.lines() {
            let mut kv = line.split_whitespace();
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            let n = v.parse::<f64>().unwrap_or(0.0) as u64;
            match k {
                "zk_packets_received" => c.packets_received += n,
                "zk_cnt_fsynctime" => fsyncs = n,
                "zk_sum_fsynctime" => fsync_ms = n,
                "zk_server_state" => leader = v == "leader" || v == "standalone",
                _ => {}
            }
        }
        c.fsyncs += fsyncs;
        c.fsync_ms += fsync_ms;
        if leader {
            c.leader_fsyncs += fsyncs;
            c.leader_fsync_ms += fsync_ms;
        }
    }
    Some(c)
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|pages| pages * 4096)
        .unwrap_or(0)
}

struct Row {
    metric: String,
    value: String,
}

fn row(rows: &mut Vec<Row>, metric: impl Into<String>, value: impl Into<String>) {
    let (metric, value) = (metric.into(), value.into());
    eprintln!("  {metric}: {value}");
    rows.push(Row { metric, value });
}

fn us(h: &Histogram<u64>, q: f64) -> String {
    format!("{:.0} µs", h.value_at_quantile(q) as f64 / 1000.0)
}

/// Runs `writers` tasks creating nodes until the window closes; returns ops, latency, elapsed.
async fn create_window(
    s: &Arc<EmbeddedSession>,
    base: &str,
    writers: usize,
    window: Duration,
) -> (u64, Histogram<u64>, Duration) {
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let s = s.clone();
        let prefix = format!("{base}/w{w}-");
        tasks.push(tokio::spawn(async move {
            let mut h = new_hist();
            let mut n = 0u64;
            let options = CreateOptions::new(CreateMode::PersistentSequential);
            while Instant::now() < deadline {
                let t = Instant::now();
                s.create(&prefix, b"0123456789", &options)
                    .await
                    .expect("create");
                h.record(t.elapsed().as_nanos() as u64).ok();
                n += 1;
            }
            (n, h)
        }));
    }
    let mut total = 0;
    let mut hist = new_hist();
    for t in tasks {
        let (n, h) = t.await.expect("writer task");
        total += n;
        hist.add(&h).ok();
    }
    (total, hist, start.elapsed())
}

async fn coord(b: CoordBench) -> anyhow::Result<ExitCode> {
    let (dir, remove) = match &b.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("medkeeper-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir)?;
    let result = coord_in(&b, &dir).await;
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn coord_in(b: &CoordBench, dir: &Path) -> anyhow::Result<ExitCode> {
    let window = Duration::from_secs(b.seconds.max(1));
    let mut rows = Vec::new();
    eprintln!(
        "medkeeper bench coord: {} cores, data dir {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        dir.display()
    );

    // --- durable creates -------------------------------------------------------------------
    let engine = Engine::open(EngineConfig::new(dir.join("throughput")))?;
    let s = Arc::new(engine.connect(SessionOptions::default()).await);
    s.ensure_path("/bench/c1").await?;
    s.ensure_path("/bench/c64").await?;
    create_window(&s, "/bench/c1", 1, Duration::from_secs(1)).await; // warm-up
    let (n, h, el) = create_window(&s, "/bench/c1", 1, window).await;
    row(
        &mut rows,
        "durable creates/s, 1 writer",
        format!("{:.0}", n as f64 / el.as_secs_f64()),
    );
    row(
        &mut rows,
        "create latency, 1 writer, p50 / p99",
        format!("{} / {}", us(&h, 0.5), us(&h, 0.99)),
    );

    create_window(&s, "/bench/c64", 64, Duration::from_secs(1)).await; // warm-up
    let before = engine.stats();
    let (n, h, el) = create_window(&s, "/bench/c64", 64, window).await;
    let after = engine.stats();
    row(
        &mut rows,
        "durable creates/s, 64 writers",
        format!("{:.0}", n as f64 / el.as_secs_f64()),
    );
    row(
        &mut rows,
        "create latency, 64 writers, p50 / p99",
        format!("{} / {}", us(&h, 0.5), us(&h, 0.99)),
    );
    let fsyncs = (after.fsyncs - before.fsyncs).max(1);
    row(
        &mut rows,
        "writes per fsync, 64 writers",
        format!(
            "{:.1}",
            (after.txns_logged - before.txns_logged) as f64 / fsyncs as f64
        ),
    );

    // --- reads -------------------------------------------------------------------------------
    for i in 0..1000 {
        s.create_all(
            &format!("/bench/read/n{i}"),
            &[7u8; 100],
            &CreateOptions::new(CreateMode::Persistent),
        )
        .await?;
    }
    let readers = 4;
    let deadline = Instant::now() + window;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..readers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = new_hist();
            let mut n = 0u64;
            let paths: Vec<String> = (0..1000).map(|i| format!("/bench/read/n{i}")).collect();
            let mut i = r * 250;
            while Instant::now() < deadline {
                for _ in 0..64 {
                    let t = Instant::now();
                    let (d, _) = s.get_data(&paths[i % 1000]).await.expect("get_data");
                    h.record(t.elapsed().as_nanos().max(1) as u64).ok();
                    debug_assert_eq!(d.len(), 100);
                    i += 1;
                    n += 1;
                }
            }
            (n, h)
        }));
    }
    let mut total = 0;
    let mut hist = new_hist();
    for t in tasks {
        let (n, h) = t.await?;
        total += n;
        hist.add(&h).ok();
    }
    let el = start.elapsed();
    row(
        &mut rows,
        format!("get_data/s, {readers} readers, 100 B"),
        format!("{:.0}", total as f64 / el.as_secs_f64()),
    );
    row(
        &mut rows,
        "get_data latency p50 / p99",
        format!(
            "{:.2} µs / {:.2} µs",
            hist.value_at_quantile(0.5) as f64 / 1000.0,
            hist.value_at_quantile(0.99) as f64 / 1000.0
        ),
    );
    s.close().await;
    drop(s);
    engine.shutdown();
    drop(engine);

    // --- memory per znode and restart time -----------------------------------------------------
    let big = dir.join("big");
    let engine = Engine::open(EngineConfig::new(&big))?;
    let s = Arc::new(engine.connect(SessionOptions::default()).await);
    let parents = 1000.min(b.znodes.max(1));
    for p in 0..parents {
        s.create_all(
            &format!("/m/p{p}"),
            b"",
            &CreateOptions::new(CreateMode::Persistent),
        )
        .await?;
    }
    let rss0 = rss_bytes();
    let per_writer = b.znodes.div_ceil(64);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let s = s.clone();
        let data = vec![b'x'; b.data_bytes];
        let count = per_writer.min(b.znodes.saturating_sub(w * per_writer));
        tasks.push(tokio::spawn(async move {
            let options = CreateOptions::new(CreateMode::Persistent);
            for i in 0..count {
                let k = w * per_writer + i;
                s.create(&format!("/m/p{}/n{k}", k % parents), &data, &options)
                    .await
                    .expect("create");
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let fill = t0.elapsed();
    let rss1 = rss_bytes();
    let count = engine.stats().node_count;
    row(
        &mut rows,
        format!(
            "fill {} znodes of {} B (64 writers)",
            b.znodes, b.data_bytes
        ),
        format!("{:.1} s", fill.as_secs_f64()),
    );
    let per = (rss1.saturating_sub(rss0)) as f64 / b.znodes as f64;
    row(
        &mut rows,
        "RSS per znode (total / beyond its data)",
        format!("{per:.0} B / {:.0} B", per - b.data_bytes as f64),
    );
    s.close().await;
    drop(s);
    engine.shutdown();
    drop(engine);

    let t0 = Instant::now();
    let engine = Engine::open(EngineConfig::new(&big))?;
    let restart = t0.elapsed();
    let rec = engine.recovery().clone();
    anyhow::ensure!(engine.stats().node_count == count, "restart lost znodes");
    row(
        &mut rows,
        format!("restart with {count} znodes"),
        format!(
            "{:.2} s (snapshot {}, {} log records replayed)",
            restart.as_secs_f64(),
            rec.snapshot_zxid
                .map(|z| format!("{z:#x}"))
                .unwrap_or_else(|| "none".into()),
            rec.replayed
        ),
    );
    engine.shutdown();

    println!("| metric | value |\n|---|---|");
    for r in &rows {
        println!("| {} | {} |", r.metric, r.value);
    }
    Ok(ExitCode::SUCCESS)
}
