//! `medkeeper bench memory`: scenario f of the suite (issue 7) — memory per znode, the
//! embedded engine's RSS against ZooKeeper's JVM for the same tree.
//!
//! Creates `--znodes` persistent znodes of `--data-bytes` bytes (64 creates in flight, spread
//! over 1,000 parents so that no directory is too large for ZooKeeper's 1 MB reply limit),
//! and reads the resident set size (VmRSS) of the process that holds the tree before and
//! after: this process for `embedded:`, the server's process (`--server-pid`, a JVM) for
//! `zk:`. For a JVM it also runs a full GC (`jcmd PID GC.run`) before each reading and
//! reports the live heap after it (`jcmd PID GC.heap_info`), which is the tree's own size
//! without the collector's slack. The tree is deleted afterwards on ZooKeeper.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};

use crate::coord::{self, ConnectArgs};

/// Options of `bench memory`.
#[derive(Args, Debug)]
pub struct MemoryBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Znodes to create.
    #[arg(long, default_value_t = 200_000)]
    znodes: usize,
    /// Data bytes per znode.
    #[arg(long, default_value_t = 100)]
    data_bytes: usize,
    /// The ZooKeeper server's process id (a JVM on this machine), for `zk:` targets; a
    /// standalone server, so that one process holds the whole tree.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON line on stdout (otherwise a human-readable line).
    #[arg(long)]
    json: bool,
}

/// VmRSS of `pid` (or of this process), bytes.
fn rss(pid: Option<u32>) -> anyhow::Result<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .with_context(|| format!("no VmRSS in {path}"))
}

/// Runs a full GC in the JVM `pid` and returns its used heap after it, bytes (`None` without
/// `jcmd`).
fn jvm_live_heap(pid: u32) -> Option<u64> {
    let run = |args: &[&str]| {
        std::process::Command::new("jcmd")
            .arg(pid.to_string())
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    run(&["GC.run"])?;
    let info = run(&["GC.heap_info"])?;
    // Serial GC: " def new generation   total 9792K, used 1234K [...]" and " tenured generation
    // total ..., used ...K"; the metaspace lines are not heap.
    let mut used = 0;
    for line in info.lines().filter(|l| l.contains("generation")) {
        let kb = line
            .split("used ")
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u64>()
            .ok()?;
        used += kb * 1024;
    }
    (used > 0).then_some(used)
}

struct Reading {
    rss: u64,
    heap: Option<u64>,
}

fn read(pid: Option<u32>) -> anyhow::Result<Reading> {
    let heap = pid.and_then(jvm_live_heap);
    if pid.is_none() {
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(Reading {
        rss: rss(pid)?,
        heap,
    })
}

/// Runs `medkeeper bench memory`.
pub async fn run(b: MemoryBench) -> anyhow::Result<std::process::ExitCode> {
    let embedded = b.connect.connect.starts_with("embedded:");
    anyhow::ensure!(
        embedded || b.server_pid.is_some(),
        "a zk: target needs --server-pid (the standalone server's JVM)"
    );
    let pid = if embedded { None } else { b.server_pid };
    let before_open = rss(None)?;
    let (engine, s): (Option<Engine>, Arc<dyn Session>) =
        match b.connect.connect.strip_prefix("embedded:") {
            Some("") => anyhow::bail!("--connect embedded: needs a directory"),
            Some(dir) => {
                let e = Engine::open(EngineConfig::new(dir))
                    .with_context(|| format!("cannot open the embedded engine at {dir}"))?;
                let s = e.connect(SessionOptions::default()).await;
                (Some(e), Arc::new(s))
            }
            None => (None, coord::connect(&b.connect).await?.session),
        };
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let root = format!("/medkeeper-bench/memory-{}-{stamp}", std::process::id());
    let parents = 1000.min(b.znodes.max(1));
    let persistent = CreateOptions::new(CreateMode::Persistent);
    s.ensure_path(&root).await?;
    for p in 0..parents {
        s.create(&format!("{root}/p{p}"), b"", &persistent).await?;
    }
    let r0 = read(pid)?;
    let t0 = Instant::now();
    let writers = 64;
    let per = b.znodes.div_ceil(writers);
    let mut set = tokio::task::JoinSet::new();
    for w in 0..writers {
        let (s, root, data) = (s.clone(), root.clone(), vec![b'x'; b.data_bytes]);
        let count = per.min(b.znodes.saturating_sub(w * per));
        let o = persistent.clone();
        set.spawn(async move {
            for i in 0..count {
                let k = w * per + i;
                s.create(&format!("{root}/p{}/n{k}", k % parents), &data, &o)
                    .await
                    .with_context(|| format!("creating znode {k}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r.context("writer panicked")??;
    }
    let fill = t0.elapsed();
    let r1 = read(pid)?;
    let per_znode = |a: u64, b0: u64| (a as f64 - b0 as f64) / b.znodes.max(1) as f64;
    let rss_per = per_znode(r1.rss, r0.rss);
    let heap_per = match (r0.heap, r1.heap) {
        (Some(h0), Some(h1)) => Some(per_znode(h1, h0)),
        _ => None,
    };
    if embedded {
        // The directory is the caller's; the engine is dropped with it.
        s.close().await;
    } else {
        let t = Instant::now();
        if let Err(e) = crate::bench_recipes::delete_tree(&s, &root).await {
            eprintln!("medkeeper bench: could not delete {root}: {e:#}");
        }
        eprintln!(
            "medkeeper bench memory: deleted the tree in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        s.close().await;
    }
    if let Some(e) = engine {
        e.shutdown();
    }
    let who = if embedded { "medkeeper" } else { "zookeeper" };
    if b.json {
        let mut line = serde_json::json!({
            "participant": who,
            "scenario": "memory",
            "znodes": b.znodes,
            "data_bytes": b.data_bytes,
            "fill_seconds": (fill.as_secs_f64() * 1000.0).round() / 1000.0,
            "rss_before": r0.rss,
            "rss_after": r1.rss,
            "rss_per_znode": rss_per.round(),
            "rate": (b.znodes as f64 / fill.as_secs_f64()).round(),
        });
        if embedded {
            line["rss_process_start"] = before_open.into();
        }
        if let (Some(h0), Some(h1), Some(hp)) = (r0.heap, r1.heap, heap_per) {
            line["heap_before"] = h0.into();
            line["heap_after"] = h1.into();
            line["heap_per_znode"] = hp.round().into();
        }
        println!("{line}");
    } else {
        println!(
            "{who} memory: {} znodes of {} B in {:.1} s; RSS {:.1} → {:.1} MiB = {rss_per:.0} B per znode{}",
            b.znodes,
            b.data_bytes,
            fill.as_secs_f64(),
            r0.rss as f64 / 1048576.0,
            r1.rss as f64 / 1048576.0,
            heap_per
                .map(|h| format!("; live heap after full GC {h:.0} B per znode"))
                .unwrap_or_default()
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}
