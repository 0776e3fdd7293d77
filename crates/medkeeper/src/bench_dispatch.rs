//! `medkeeper bench dispatch`: scenario e of the suite (issue 7) — the real hospital domain
//! on one coordination target: the demo hospital loaded, an in-memory SQLite clinical store,
//! one [`Dispatcher`] per pool running, a producer creating orders (random FHIR priorities, on
//! MRI, CT and XRAY in proportion to their units: 2, 3 and 1 in the demo) and technicians that
//! start and complete every called order at once.
//!
//! The demo CT's stat reserve is turned off (see [`measure`]). Reports orders/s end to end (orders completed inside the measured window) and the latency
//! from the order's creation (its insert into the clinical store, just before its queue item
//! is written) to its assignment (the dispatcher's `called` transition), HdrHistogram p50/p99;
//! also created → completed. The producer keeps `--in-flight` orders in the system (created,
//! not yet completed), so the figures measure the dispatch path, not an unbounded queue.
//!
//! The clinical store is wrapped so that every state change is seen where it happens: the
//! `called` transition both timestamps the assignment and hands the order to a technician.
//!
//! What an order costs, per order completed in the window (issue 13): coordination requests
//! (a [`Counted`] session, split into the way to "called" — creation, dispatchers, read
//! models — and the technicians' start and complete after it); store transactions (every
//! mutating call of the wrapped store: one commit each, and with `--store-file` at least one
//! fsync of SQLite's write-ahead log) and reads, and the time the store had a call in its one
//! connection; the embedded engine's log fsyncs (`Engine::stats`); on ZooKeeper, the servers'
//! own counters (`mntr`: packets received, the leader's fsyncs). Each is turned into the
//! throughput it allows, with a bare `fdatasync` of the same disk measured before and after
//! the run (`pwrite` of 4 KiB + `fdatasync`, 300 rounds each). Idle: the requests sent in 2 s
//! with nothing waiting and nothing changing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_coord::{Counted, RequestCounts, RequestTally, Session, SessionExt};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::Dispatcher;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{
    AuditQuery, AuditRecord, ClinicalStore, ExamResult, Patient, SqliteStore, StoreError,
    TokenRecord,
};
use medkeeper_hospital::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::coord::{self, ConnectArgs};

/// Options of `bench dispatch`.
#[derive(Args, Debug)]
pub struct DispatchBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Orders in the system at once (created and not yet completed).
    #[arg(long, default_value_t = 16)]
    in_flight: usize,
    /// Print one JSON line on stdout (otherwise a human-readable line).
    #[arg(long)]
    json: bool,
    /// The clinical store: a SQLite file (WAL, `synchronous=FULL`, as `serve` uses; created
    /// if missing; use a fresh file per run) instead of an in-memory database.
    #[arg(long)]
    store_file: Option<std::path::PathBuf>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// What the wrapped store saw, shared with the producer.
struct Probe {
    /// Creation instant of every order in the system, by order id.
    created: StdMutex<HashMap<String, Instant>>,
    /// The measured window, once it is set (nothing counts before).
    window: OnceLock<(Instant, Instant)>,
    /// created → called, µs (assignments inside the window).
    called: StdMutex<Histogram<u64>>,
    /// created → completed, µs (completions inside the window).
    done: StdMutex<Histogram<u64>>,
    completed: AtomicU64,
    /// Free places in the system for the producer.
    room: Semaphore,
    /// Called orders, for the technicians.
    calls: mpsc::UnboundedSender<OrderId>,
}

impl Probe {
    fn in_window(&self, t: Instant) -> bool {
        self.window
            .get()
            .is_some_and(|&(start, end)| t >= start && t <= end)
    }

    fn on_transition(&self, t: &Transition) {
        let now = Instant::now();
        let key = t.order.to_string();
        match t.to {
            OrderState::Called => {
                let created = self.created.lock().expect("probe").get(&key).copied();
                if let Some(c) = created
                    && self.in_window(now)
                {
                    let us = (now - c).as_micros().max(1) as u64;
                    self.called.lock().expect("probe").record(us).ok();
                }
                let _ = self.calls.send(t.order.clone());
            }
            OrderState::Completed => {
                let created = self.created.lock().expect("probe").remove(&key);
                if let Some(c) = created
                    && self.in_window(now)
                {
                    let us = (now - c).as_micros().max(1) as u64;
                    self.done.lock().expect("probe").record(us).ok();
                    self.completed.fetch_add(1, Ordering::Relaxed);
                }
                self.room.add_permits(1);
            }
            _ => {}
        }
    }
}

/// The clinical store, with every order creation and state change reported to the probe.
struct ProbedStore {
    inner: SqliteStore,
    probe: Arc<Probe>,
}

#[async_trait::async_trait]
impl ClinicalStore for ProbedStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner.insert_token(token, audit).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.token_by_hash(hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.tokens().await
    }
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.inner.revoke_token(id, at_ms, audit).await
    }
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        self.inner.append_audit(record).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner.audit(query).await
    }
    async fn insert_patient(
        &self,
        patient: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner.insert_patient(patient, audit).await
    }
    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError> {
        self.inner.upsert_patient(patient).await
    }

    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        self.inner.patient(id).await
    }

    async fn insert_order(
        &self,
        order: &Order,
        actor: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.probe
            .created
            .lock()
            .expect("probe")
            .insert(order.id.to_string(), Instant::now());
        self.inner.insert_order(order, actor, audit).await
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.inner.order(id).await
    }

    async fn transition(
        &self,
        t: &Transition,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let changed = self.inner.transition(t, audit).await?;
        if changed {
            self.probe.on_transition(t);
        }
        Ok(changed)
    }

    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.inner.set_priority(id, priority, audit).await
    }

    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.inner
            .orders_updated(since_ms, before_ms, after, limit)
            .await
    }

    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        self.inner.reconciled_until().await
    }

    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        self.inner.set_reconciled_until(ms).await
    }

    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        self.inner.transitions(id).await
    }

    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        self.inner.orders_in(states).await
    }

    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError> {
        self.inner.orders_of(patient).await
    }

    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError> {
        self.inner.put_result(result).await
    }

    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        self.inner.result(id).await
    }
}

/// A fresh place to run a hospital benchmark on: the embedded engine in the directory given,
/// or a fresh chroot on ZooKeeper (deleted by [`Target::finish`]).
pub(super) struct Target {
    /// A session on it.
    pub session: Arc<dyn Session>,
    engine: Option<Engine>,
    chroot: Option<String>,
    root: ConnectArgs,
}

impl Target {
    /// Opens `connect` for the benchmark `name`.
    pub async fn open(connect: &ConnectArgs, name: &str) -> anyhow::Result<Target> {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (engine, chroot, args) = match connect.connect.strip_prefix("embedded:") {
            Some("") => anyhow::bail!("--connect embedded: needs a directory"),
            Some(dir) => (
                Some(
                    Engine::open(EngineConfig::new(dir))
                        .with_context(|| format!("cannot open the embedded engine at {dir}"))?,
                ),
                None,
                connect.clone(),
            ),
            None => {
                let chroot = format!("/medkeeper-bench/{name}-{}-{stamp}", std::process::id());
                let root = coord::connect(connect).await?.session;
                root.ensure_path(&chroot).await?;
                root.close().await;
                let mut args = connect.clone();
                args.connect = format!("{}{chroot}", connect.connect);
                (None, Some(chroot), args)
            }
        };
        let session: Arc<dyn Session> = match &engine {
            Some(e) => Arc::new(
                e.connect(SessionOptions {
                    timeout: Duration::from_millis(args.session_timeout_ms),
                })
                .await,
            ),
            None => coord::connect(&args).await?.session,
        };
        Ok(Target {
            session,
            engine,
            chroot,
            root: connect.clone(),
        })
    }

    /// Closes the session, deletes the chroot, stops the engine.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.session.close().await;
        if let Some(chroot) = self.chroot {
            let root = coord::connect(&self.root).await?.session;
            if let Err(e) = crate::bench_recipes::delete_tree(&root, &chroot).await {
                eprintln!("medkeeper bench: could not delete {chroot}: {e:#}");
            }
            root.close().await;
        }
        if let Some(e) = self.engine {
            e.shutdown();
        }
        Ok(())
    }
}

/// Runs `medkeeper bench dispatch`.
pub async fn run(b: DispatchBench) -> anyhow::Result<std::process::ExitCode> {
    let target = Target::open(&b.connect, "dispatch").await?;
    let result = measure(&b, target.session.clone()).await;
    target.finish().await?;
    let o = result?;
    let rate = o.completed as f64 / o.seconds;
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    if b.json {
        let mut line = serde_json::json!({
            "participant": "medkeeper",
            "scenario": "dispatch",
            "ops": o.completed,
            "seconds": (o.seconds * 1000.0).round() / 1000.0,
            "rate": (rate * 10.0).round() / 10.0,
            "sessions": 1,
            "in_flight": b.in_flight,
            "created": o.created,
        });
        if !o.called.is_empty() {
            line["p50_us"] = q(&o.called, 0.5).into();
            line["p99_us"] = q(&o.called, 0.99).into();
        }
        if !o.done.is_empty() {
            line["e2e_p50_us"] = q(&o.done, 0.5).into();
            line["e2e_p99_us"] = q(&o.done, 0.99).into();
        }
        line["store"] = if b.store_file.is_some() {
            "file"
        } else {
            "memory"
        }
        .into();
        line["requests_per_order"] = o.per_order().into();
        line["reads_per_order"] = o.per(o.requests.reads).into();
        line["writes_per_order"] = o.per(o.requests.writes + o.requests.multis).into();
        line["idle_requests_per_s"] = o.idle_per_s().into();
        println!("{line}");
    } else {
        println!(
            "medkeeper dispatch: {} orders completed in {:.2} s = {rate:.1}/s; created → called \
             p50 {} µs, p99 {} µs; created → completed p50 {} µs, p99 {} µs",
            o.completed,
            o.seconds,
            q(&o.called, 0.5),
            q(&o.called, 0.99),
            q(&o.done, 0.5),
            q(&o.done, 0.99),
        );
        println!(
            "  coordination requests per order (created → completed, {} store): {:.1} \
             ({:.1} reads, {:.1} writes and multis); idle (nothing waiting, nothing changing): \
             {:.1} requests/s",
            if b.store_file.is_some() {
                "file"
            } else {
                "in-memory"
            },
            o.per_order(),
            o.per(o.requests.reads),
            o.per(o.requests.writes + o.requests.multis),
            o.idle_per_s(),
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

struct Measured {
    completed: u64,
    created: u64,
    seconds: f64,
    called: Histogram<u64>,
    done: Histogram<u64>,
    /// Coordination requests sent in the measured window (every session of the hospital).
    requests: RequestTally,
    /// Requests sent while idle: nothing waiting, nothing changing.
    idle: RequestTally,
    idle_seconds: f64,
}

impl Measured {
    /// `n` per order completed in the window (one decimal).
    fn per(&self, n: u64) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        (n as f64 / self.completed as f64 * 10.0).round() / 10.0
    }

    fn per_order(&self) -> f64 {
        self.per(self.requests.total())
    }

    fn idle_per_s(&self) -> f64 {
        if self.idle_seconds <= 0.0 {
            return 0.0;
        }
        (self.idle.total() as f64 / self.idle_seconds * 10.0).round() / 10.0
    }
}

async fn measure(b: &DispatchBench, session: Arc<dyn Session>) -> anyhow::Result<Measured> {
    let warmup = Duration::from_secs_f64(b.warmup.max(0.0));
    let window = Duration::from_secs_f64(b.seconds.max(0.1));
    // The technicians here finish every exam at once, so the time model of the demo CT's stat
    // reserve (a busy unit is expected to free an exam's duration after its call) does not
    // hold: with it on, the last free CT would wait for stat orders that the producer sends
    // at 5 %, and the figures would measure that policy, not the dispatch path.
    let mut hospital_config = HospitalConfig::demo();
    for p in &mut hospital_config.pools {
        p.reserve_for_stat = false;
    }
    config::load(session.as_ref(), &hospital_config).await?;
    let (calls_tx, mut calls_rx) = mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        created: StdMutex::new(HashMap::new()),
        window: OnceLock::new(),
        called: StdMutex::new(new_hist()),
        done: StdMutex::new(new_hist()),
        completed: AtomicU64::new(0),
        room: Semaphore::new(b.in_flight.max(1)),
        calls: calls_tx,
    });
    let inner = match &b.store_file {
        Some(path) => SqliteStore::open(path)
            .with_context(|| format!("cannot open the clinical store {}", path.display()))?,
        None => SqliteStore::in_memory()?,
    };
    let store = Arc::new(ProbedStore {
        inner,
        probe: probe.clone(),
    });
    let counts = Arc::new(RequestCounts::default());
    let session = Counted::wrap(session, counts.clone());
    let pools: Vec<Pool> = hospital_config
        .pools
        .iter()
        .map(|p| p.pool.clone())
        .collect();
    let hospital = Arc::new(Hospital::new(session, store, hospital_config)?);

    // One dispatcher per pool.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut dispatchers = Vec::new();
    for pool in &pools {
        let d = Dispatcher::new(hospital.clone(), pool.clone(), "bench");
        let mut stop = stop_rx.clone();
        dispatchers.push(tokio::spawn(async move {
            d.run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        }));
    }
    // Technicians: every called order is started and completed at once.
    let h = hospital.clone();
    let technicians = tokio::spawn(async move {
        let mut running = tokio::task::JoinSet::new();
        while let Some(id) = calls_rx.recv().await {
            let h = h.clone();
            running.spawn(async move {
                h.start(&id, "tech").await?;
                h.complete(&id, "tech").await?;
                anyhow::Ok(())
            });
            while let Some(r) = running.try_join_next() {
                r.context("technician panicked")??;
            }
        }
        while let Some(r) = running.join_next().await {
            r.context("technician panicked")??;
        }
        anyhow::Ok(())
    });

    // Let every dispatcher take its pool's lock before the clock starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now() + warmup;
    let end = start + window;
    let _ = probe.window.set((start, end));
    // The window's coordination requests, counted from its start to its end.
    let window_requests = {
        let counts = counts.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let first = counts.tally();
            tokio::time::sleep_until(end.into()).await;
            counts.tally().since(&first)
        })
    };

    // The producer: a random unit of MRI, CT and XRAY picks the pool (so each pool gets orders
    // in proportion to its units and no single-unit pool bounds the whole run), a random
    // priority, a new patient each time (a patient is never in two exams at once);
    // `in_flight` orders in the system.
    let kinds: Vec<Pool> = ["MRI", "CT", "XRAY"]
        .iter()
        .map(|k| Pool::Equipment((*k).into()))
        .flat_map(|p| {
            let units = hospital.config().pool(&p).map_or(0, |c| c.units.len());
            std::iter::repeat_n(p, units)
        })
        .collect();
    anyhow::ensure!(
        !kinds.is_empty(),
        "the demo hospital has no MRI, CT or XRAY unit"
    );
    let priorities = [
        Priority::Routine,
        Priority::Urgent,
        Priority::Asap,
        Priority::Stat,
    ];
    let mut rng = SmallRng::from_os_rng();
    let mut created = 0u64;
    let produced: anyhow::Result<()> = async {
        while Instant::now() < end {
            let permit = tokio::select! {
                p = probe.room.acquire() => p.context("the producer's semaphore closed")?,
                _ = tokio::time::sleep_until(end.into()) => break,
            };
            permit.forget(); // given back by the order's completion
            let pool = kinds[rng.random_range(..kinds.len())].clone();
            let priority = priorities[rng.random_range(..priorities.len())];
            hospital
                .create_order(
                    NewOrder {
                        patient: PatientId::generate(),
                        pool,
                        capabilities: vec![],
                        priority,
                        reason: "benchmark".into(),
                    },
                    "bench",
                )
                .await?;
            if Instant::now() >= start {
                created += 1;
            }
            if technicians.is_finished() {
                break; // it failed: its error is reported below
            }
        }
        Ok(())
    }
    .await;

    // Drain: the orders still in the system finish (they no longer count), then stop.
    let drain = Instant::now() + Duration::from_secs(10);
    while probe.room.available_permits() < b.in_flight.max(1)
        && Instant::now() < drain
        && !technicians.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let requests = window_requests.await.context("the request counter")?;
    // Idle: nothing waiting, nothing changing; only the dispatchers' own upkeep is sent.
    let idle_window = Duration::from_secs(2);
    let first = counts.tally();
    tokio::time::sleep(idle_window).await;
    let idle = counts.tally().since(&first);
    let _ = stop_tx.send(true);
    for d in dispatchers {
        match tokio::time::timeout(Duration::from_secs(10), d).await {
            Ok(r) => r.context("dispatcher panicked")??,
            Err(_) => anyhow::bail!("a dispatcher did not stop within 10 s"),
        }
    }
    drop(hospital);
    // The technicians wait for calls forever (the probe holds the sender); a finished task
    // means an error.
    if technicians.is_finished() {
        technicians.await.context("technicians panicked")??;
    } else {
        technicians.abort();
    }
    produced?;
    let called = probe.called.lock().expect("probe").clone();
    let done = probe.done.lock().expect("probe").clone();
    Ok(Measured {
        completed: probe.completed.load(Ordering::Relaxed),
        created,
        seconds: window.as_secs_f64(),
        called,
        done,
        requests,
        idle,
        idle_seconds: idle_window.as_secs_f64(),
    })
}
