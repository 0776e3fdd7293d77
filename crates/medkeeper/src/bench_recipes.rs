//! `medkeeper bench recipes`: one scenario of the side-by-side suite (issue 7) — medkeeper's
//! recipes and the raw operations beneath them, run for a window against one target, reported
//! as one JSON line. `scripts/bench` runs the same scenarios with Apache Curator and kazoo
//! (`crates/medkeeper/bench/`) on the same ZooKeeper and assembles docs/benchmarks.md.
//!
//! Throughput scenarios run their workers through a warm-up, then count only the operations
//! that start and finish inside the measured window; each contender has its own session.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_recipes::queue::{PriorityQueue, QueueConfig, ROUTINE};
use medkeeper_recipes::semaphore::Semaphore;
use medkeeper_recipes::{Election, Mutex};
use tokio::sync::mpsc;

use crate::coord::{self, ConnectArgs};

/// The scenarios, named alike for every participant of the suite.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Sequential create + delete pairs from one session.
    RawPairs,
    /// Persistent-sequential creates with 64 in flight on one session.
    #[value(name = "raw-creates-64")]
    RawCreates64,
    /// get_data of 100 B nodes with 64 in flight on one session.
    #[value(name = "raw-gets-64")]
    RawGets64,
    /// Sequential get_children of a directory of 16 children, one session.
    RawChildren,
    /// One session: acquire + release cycles of one lock.
    LockUncontended,
    /// 4 sessions on one lock: hand-offs (acquisitions) per second.
    #[value(name = "lock-contended-4")]
    LockContended4,
    /// 16 sessions on one lock: hand-offs (acquisitions) per second.
    #[value(name = "lock-contended-16")]
    LockContended16,
    /// 64 sessions, each on its own lock: total cycles per second.
    #[value(name = "lock-independent-64")]
    LockIndependent64,
    /// 8 sessions taking and returning 1 of 4 units.
    SemaphorePermits,
    /// One session: enqueue + take + complete with 10,000 items queued.
    #[value(name = "queue-depth-10000")]
    QueueDepth10000,
    /// 3 candidates; the leader's session is closed; time until every remaining candidate
    /// knows the new leader.
    ElectionFailover,
}

/// Options of `bench recipes`.
#[derive(Args, Debug)]
pub struct RecipesBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The scenario to run.
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print one JSON line on stdout (otherwise a human-readable line).
    #[arg(long)]
    json: bool,
    /// Lock scenarios: each worker keeps its lock and hands it on with `Mutex::requeue`
    /// (release and re-join in one request) instead of `release` + `acquire`. Reported as the
    /// participant `medkeeper-requeue`.
    #[arg(long)]
    requeue: bool,
}

/// Where sessions come from: one embedded engine shared by every session, or one ZooKeeper
/// connection per session.
struct Target {
    args: ConnectArgs,
    engine: Option<Engine>,
    sessions: Vec<Arc<dyn Session>>,
}

impl Target {
    fn open(args: &ConnectArgs) -> anyhow::Result<Target> {
        let engine = match args.connect.strip_prefix("embedded:") {
            Some("") => bail!("--connect embedded: needs a directory"),
            Some(dir) => Some(
                Engine::open(EngineConfig::new(dir))
                    .with_context(|| format!("cannot open the embedded engine at {dir}"))?,
            ),
            None => None,
        };
        Ok(Target {
            args: args.clone(),
            engine,
            sessions: Vec::new(),
        })
    }

    /// A new session (closed by [`Target::close`] unless closed before).
    async fn session(&mut self) -> anyhow::Result<Arc<dyn Session>> {
        let s: Arc<dyn Session> = match &self.engine {
            Some(engine) => Arc::new(
                engine
                    .connect(SessionOptions {
                        timeout: Duration::from_millis(self.args.session_timeout_ms),
                    })
                    .await,
            ),
            None => coord::connect(&self.args).await?.session,
        };
        self.sessions.push(s.clone());
        Ok(s)
    }

    async fn sessions(&mut self, n: usize) -> anyhow::Result<Vec<Arc<dyn Session>>> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.session().await?);
        }
        Ok(v)
    }

    async fn close(self) {
        for s in &self.sessions {
            s.close().await;
        }
        drop(self.sessions);
        if let Some(engine) = self.engine {
            engine.shutdown();
        }
    }
}

/// What one scenario measured.
struct Outcome {
    ops: u64,
    seconds: f64,
    hist: Histogram<u64>,
    sessions: usize,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Runs one task per worker, each repeating its operation until the window closes; counts the
/// operations that started and finished inside the window, with their latency (µs).
///
/// The window is kept by the clock, not by timers: an operation that completes without ever
/// suspending (an embedded-engine read) would otherwise starve the timer of its worker threads.
async fn run_window<F, Fut>(
    workers: Vec<F>,
    warmup: Duration,
    window: Duration,
    sessions: usize,
) -> anyhow::Result<Outcome>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now() + warmup;
    let end = start + window;
    let mut tasks = Vec::new();
    for mut op in workers {
        tasks.push(tokio::spawn(async move {
            let mut hist = new_hist();
            let mut ops = 0u64;
            let mut n = 0u32;
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                op().await?;
                let done = Instant::now();
                if t >= start && done <= end {
                    hist.record(((done - t).as_micros() as u64).max(1)).ok();
                    ops += 1;
                }
                n = n.wrapping_add(1);
                if n.is_multiple_of(16) {
                    tokio::task::yield_now().await; // fairness among workers of one thread
                }
            }
            anyhow::Ok((ops, hist))
        }));
    }
    let mut hist = new_hist();
    let mut ops = 0;
    for t in tasks {
        let (n, h) = t.await.context("worker panicked")??;
        ops += n;
        hist.add(&h).ok();
    }
    Ok(Outcome {
        ops,
        seconds: window.as_secs_f64(),
        hist,
        sessions,
    })
}

/// Runs `medkeeper bench recipes`.
pub async fn run(b: RecipesBench) -> anyhow::Result<std::process::ExitCode> {
    let mut target = Target::open(&b.connect)?;
    let warmup = Duration::from_secs_f64(b.warmup.max(0.0));
    let window = Duration::from_secs_f64(b.seconds.max(0.1));
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let name = b
        .scenario
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    let root = format!("/medkeeper-bench/{name}-{}-{stamp}", std::process::id());
    let result = scenario(&mut target, b.scenario, &root, warmup, window, b.requeue).await;
    // Leave the server as found: later runs must not pay for this run's znodes (a 10,000-item
    // queue or a raw-creates window leaves tens of thousands). An embedded target is a fresh
    // directory per run and is simply dropped.
    if target.engine.is_none() {
        let cleaned = match target.session().await {
            Ok(s) => delete_tree(&s, &root).await,
            Err(e) => Err(e),
        };
        if let Err(e) = cleaned {
            eprintln!("medkeeper bench: could not delete {root}: {e:#}");
        }
    }
    target.close().await;
    let o = result?;
    let rate = o.ops as f64 / o.seconds;
    let q = |q: f64| o.hist.value_at_quantile(q);
    if b.json {
        let mut line = serde_json::json!({
            "participant": if b.requeue { "medkeeper-requeue" } else { "medkeeper" },
            "scenario": name,
            "ops": o.ops,
            "seconds": (o.seconds * 1000.0).round() / 1000.0,
            "rate": (rate * 10.0).round() / 10.0,
            "sessions": o.sessions,
        });
        if o.ops > 0 {
            line["p50_us"] = q(0.5).into();
            line["p99_us"] = q(0.99).into();
        }
        println!("{line}");
    } else {
        println!(
            "medkeeper {name}: {} ops in {:.2} s = {rate:.1}/s, p50 {} µs, p99 {} µs",
            o.ops,
            o.seconds,
            q(0.5),
            q(0.99)
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

async fn scenario(
    target: &mut Target,
    scenario: Scenario,
    root: &str,
    warmup: Duration,
    window: Duration,
    requeue: bool,
) -> anyhow::Result<Outcome> {
    let first = target.session().await?;
    first.ensure_path(root).await?;
    let persistent = CreateOptions::new(CreateMode::Persistent);
    match scenario {
        Scenario::RawPairs => {
            let s = first;
            let dir = format!("{root}/pairs");
            s.ensure_path(&dir).await?;
            let mut i = 0u64;
            let op = move || {
                i += 1;
                let (s, p, o) = (s.clone(), format!("{dir}/n{i}"), persistent.clone());
                async move {
                    s.create(&p, b"0123456789", &o).await?;
                    s.delete(&p, -1).await?;
                    Ok(())
                }
            };
            run_window(vec![op], warmup, window, 1).await
        }
        Scenario::RawCreates64 => {
            let dir = format!("{root}/creates");
            first.ensure_path(&dir).await?;
            let workers = (0..64)
                .map(|w| {
                    let (s, prefix) = (first.clone(), format!("{dir}/w{w}-"));
                    let o = CreateOptions::new(CreateMode::PersistentSequential);
                    move || {
                        let (s, p, o) = (s.clone(), prefix.clone(), o.clone());
                        async move {
                            s.create(&p, b"0123456789", &o).await?;
                            Ok(())
                        }
                    }
                })
                .collect();
            run_window(workers, warmup, window, 1).await
        }
        Scenario::RawGets64 => {
            let dir = format!("{root}/gets");
            first.ensure_path(&dir).await?;
            let mut workers = Vec::new();
            for w in 0..64 {
                let p = format!("{dir}/n{w}");
                first.create(&p, &[7u8; 100], &persistent).await?;
                let s = first.clone();
                workers.push(move || {
                    let (s, p) = (s.clone(), p.clone());
                    async move {
                        s.get_data(&p).await?;
                        Ok(())
                    }
                });
            }
            run_window(workers, warmup, window, 1).await
        }
        Scenario::RawChildren => {
            let dir = format!("{root}/children");
            first.ensure_path(&dir).await?;
            for i in 0..16 {
                let p = format!("{dir}/_c_00000000-0000-0000-0000-{i:012}-lock-{i:010}");
                first.create(&p, b"", &persistent).await?;
            }
            let s = first;
            let op = move || {
                let (s, d) = (s.clone(), dir.clone());
                async move {
                    s.get_children(&d).await?;
                    Ok(())
                }
            };
            run_window(vec![op], warmup, window, 1).await
        }
        Scenario::LockUncontended => {
            let m = Mutex::new(first, format!("{root}/lock"))?;
            run_window(vec![lock_cycle(m, requeue)], warmup, window, 1).await
        }
        Scenario::LockContended4 | Scenario::LockContended16 => {
            let n = if scenario == Scenario::LockContended4 {
                4
            } else {
                16
            };
            let mut workers = vec![lock_cycle(
                Mutex::new(first, format!("{root}/lock"))?,
                requeue,
            )];
            for s in target.sessions(n - 1).await? {
                workers.push(lock_cycle(Mutex::new(s, format!("{root}/lock"))?, requeue));
            }
            run_window(workers, warmup, window, n).await
        }
        Scenario::LockIndependent64 => {
            let mut workers = vec![lock_cycle(
                Mutex::new(first, format!("{root}/lock0"))?,
                requeue,
            )];
            for (i, s) in target.sessions(63).await?.into_iter().enumerate() {
                workers.push(lock_cycle(
                    Mutex::new(s, format!("{root}/lock{}", i + 1))?,
                    requeue,
                ));
            }
            run_window(workers, warmup, window, 64).await
        }
        Scenario::SemaphorePermits => {
            let units: Vec<String> = (0..4).map(|u| format!("unit{u}")).collect();
            let dir = format!("{root}/semaphore");
            let mut sessions = vec![first];
            sessions.extend(target.sessions(7).await?);
            let mut workers = Vec::new();
            for s in sessions {
                let sem = Semaphore::new(s, dir.clone(), units.clone())?;
                workers.push(move || {
                    let sem = sem.clone();
                    async move {
                        let lease = sem.acquire(1).await?;
                        lease.release().await?;
                        Ok(())
                    }
                });
            }
            run_window(workers, warmup, window, 8).await
        }
        Scenario::QueueDepth10000 => {
            let q = PriorityQueue::new(first, format!("{root}/queue"), QueueConfig::fhir())?;
            // Fill with 64 enqueuers in flight.
            let fill = (0..64).map(|w| {
                let q = q.clone();
                tokio::spawn(async move {
                    for i in (w..10_000).step_by(64) {
                        q.enqueue(ROUTINE, format!("fill-{i}").as_bytes()).await?;
                    }
                    anyhow::Ok(())
                })
            });
            for t in fill.collect::<Vec<_>>() {
                t.await??;
            }
            let op = move || {
                let q = q.clone();
                async move {
                    q.enqueue(ROUTINE, b"order").await?;
                    q.take().await?.complete().await?;
                    Ok(())
                }
            };
            run_window(vec![op], warmup, window, 1).await
        }
        Scenario::ElectionFailover => election_failover(target, first, root, window).await,
    }
}

/// Deletes `root` and everything below it, `in_flight` requests at a time: lists the tree
/// level by level, then deletes the deepest level first (a node's children are all one level
/// deeper). Nodes already gone are fine. Much faster than a sequential recursive delete on a
/// remote server (10,000 queue items: ~1 s instead of ~10 s).
pub(crate) async fn delete_tree(session: &Arc<dyn Session>, root: &str) -> anyhow::Result<()> {
    const IN_FLIGHT: usize = 256;
    let mut levels: Vec<Vec<String>> = vec![vec![root.to_string()]];
    loop {
        let last = levels.last().expect("one level at least");
        let mut next = Vec::new();
        for chunk in last.chunks(IN_FLIGHT) {
            let mut set = tokio::task::JoinSet::new();
            for p in chunk {
                let (s, p) = (session.clone(), p.clone());
                set.spawn(async move {
                    match s.get_children(&p).await {
                        Ok(c) => Ok(c
                            .into_iter()
                            .map(|c| format!("{}/{c}", p.trim_end_matches('/')))
                            .collect()),
                        Err(medkeeper_coord::Error::NoNode) => Ok(Vec::new()),
                        Err(e) => Err(anyhow::Error::from(e).context(format!("listing {p}"))),
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                next.extend(r.context("lister panicked")??);
            }
        }
        if next.is_empty() {
            break;
        }
        levels.push(next);
    }
    for level in levels.iter().rev() {
        for chunk in level.chunks(IN_FLIGHT) {
            let mut set = tokio::task::JoinSet::new();
            for p in chunk {
                let (s, p) = (session.clone(), p.clone());
                set.spawn(async move {
                    match s.delete(&p, -1).await {
                        Ok(()) | Err(medkeeper_coord::Error::NoNode) => Ok(()),
                        Err(e) => Err(anyhow::Error::from(e).context(format!("deleting {p}"))),
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                r.context("deleter panicked")??;
            }
        }
    }
    Ok(())
}

type Worker =
    Box<dyn FnMut() -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send>;

/// One cycle per call: acquire and release; or, with `requeue`, hand the held lock on with
/// [`Mutex::requeue`] (the first call only acquires).
fn lock_cycle(m: Mutex, requeue: bool) -> Worker {
    if !requeue {
        return Box::new(move || {
            let m = m.clone();
            Box::pin(async move {
                let g = m.acquire().await?;
                g.release().await?;
                Ok(())
            })
        });
    }
    let held: Arc<tokio::sync::Mutex<Option<medkeeper_recipes::LockGuard>>> = Arc::default();
    Box::new(move || {
        let (m, held) = (m.clone(), held.clone());
        Box::pin(async move {
            let mut slot = held.lock().await;
            let g = match slot.take() {
                None => m.acquire().await?,
                Some(g) => m.requeue(g).await?,
            };
            *slot = Some(g);
            Ok(())
        })
    })
}

/// A candidate that won: its index among the candidates and the moment it knew.
type Won = (usize, medkeeper_recipes::Leadership, Instant);

fn campaign(i: usize, e: Election, won: mpsc::UnboundedSender<anyhow::Result<Won>>) {
    tokio::spawn(async move {
        let r = e.campaign().await.map(|l| (i, l, Instant::now()));
        // A candidate whose session is closed before it wins ends with an error nobody awaits.
        let _ = won.send(r.map_err(Into::into));
    });
}

/// 3 candidates, each its own session. Repeatedly: close the leader's session and time until
/// the new leader's campaign has returned and every other remaining candidate's
/// `leader_change` has reported it; then add a fresh candidate. Runs for `window` (at least 3
/// failovers).
async fn election_failover(
    target: &mut Target,
    first: Arc<dyn Session>,
    root: &str,
    window: Duration,
) -> anyhow::Result<Outcome> {
    let dir = format!("{root}/election");
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut candidates: Vec<Option<(Arc<dyn Session>, Election)>> = Vec::new();
    let mut sessions = vec![first];
    sessions.extend(target.sessions(2).await?);
    for s in sessions {
        let i = candidates.len();
        let e = Election::new(s.clone(), dir.clone(), format!("c{i}"))?;
        campaign(i, e.clone(), tx.clone());
        candidates.push(Some((s, e)));
    }
    let (mut leader, mut leadership, _) = rx.recv().await.context("no leader")??;
    let mut hist = new_hist();
    let mut ops = 0u64;
    let start = Instant::now();
    while start.elapsed() < window || ops < 3 {
        let known = {
            let (_, e) = candidates[leader].as_ref().context("leader gone")?;
            e.leader().await?.context("no leader recorded")?
        };
        // Every other live candidate follows the leader.
        let mut watchers = Vec::new();
        for (i, c) in candidates.iter().enumerate() {
            if let (Some((_, e)), true) = (c, i != leader) {
                let (e, known) = (e.clone(), known.clone());
                watchers.push(tokio::spawn(async move {
                    let new = e.leader_change(Some(&known)).await?;
                    anyhow::Ok((new, Instant::now()))
                }));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // let the watches be set
        let (s, _) = candidates[leader].take().context("leader gone")?;
        let t0 = Instant::now();
        s.close().await;
        drop(leadership);
        let (next, next_leadership, mut done) = rx.recv().await.context("no new leader")??;
        for w in watchers {
            let (new, t) = w.await??;
            anyhow::ensure!(
                new.as_ref().map(|p| p.node.as_str()) == Some(next_leadership.path()),
                "a follower saw {new:?}, not the new leader {}",
                next_leadership.path()
            );
            done = done.max(t);
        }
        hist.record((done - t0).as_micros().max(1) as u64).ok();
        ops += 1;
        leader = next;
        leadership = next_leadership;
        // A fresh candidate takes the closed one's place.
        let s = target.session().await?;
        let i = candidates.len();
        let e = Election::new(s.clone(), dir.clone(), format!("c{i}"))?;
        campaign(i, e.clone(), tx.clone());
        candidates.push(Some((s, e)));
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(leadership);
    Ok(Outcome {
        ops,
        seconds,
        hist,
        sessions: 3,
    })
}
