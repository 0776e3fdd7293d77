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
//! the run (`pwrite` of 4 KiB + `fdatasync`, 300 rounds each; the faster of the two). Idle: the requests sent in 2 s
//! with nothing waiting and nothing changing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_coord::{
    Acl, AddWatchMode, Capabilities, Counted, CreateOptions, MultiError, OneshotWatch, Op,
    OpResult, PersistentWatch, RequestCounts, RequestTally, Result as CoordResult, Session,
    SessionEvents, SessionExt, SessionId, SessionState, Stat,
};
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
    /// The clinical store on PostgreSQL instead: `postgres://USER@HOST:PORT/DB` (TLS as for
    /// `serve`; the password from `MEDKEEPER_STORE_PASSWORD`, else `PGPASSWORD`; use a fresh
    /// database per run).
    #[arg(long, value_name = "URL", conflicts_with = "store_file")]
    store: Option<String>,
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
    /// Calls into the clinical store.
    store: StoreCounts,
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

/// The clinical store, with every order creation and state change reported to the probe, and
/// every call counted: a mutating call is one store transaction (a commit: with the file store,
/// at least one fsync of its write-ahead log), a read is not.
struct ProbedStore {
    inner: Box<dyn ClinicalStore>,
    probe: Arc<Probe>,
}

impl ProbedStore {
    async fn write<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.probe.store.enter();
        let r = call.await;
        self.probe.store.leave();
        self.probe.store.writes.fetch_add(1, Ordering::Relaxed);
        r
    }

    async fn read<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.probe.store.enter();
        let r = call.await;
        self.probe.store.leave();
        self.probe.store.reads.fetch_add(1, Ordering::Relaxed);
        r
    }
}

/// Calls into the clinical store, counted by [`ProbedStore`].
#[derive(Debug, Default)]
struct StoreCounts {
    writes: AtomicU64,
    reads: AtomicU64,
    /// Calls in flight, since when there has been at least one, and the time there was.
    busy: StdMutex<(u32, Option<Instant>, u64)>,
}

impl StoreCounts {
    fn enter(&self) {
        let mut b = self.busy.lock().expect("store probe");
        if b.0 == 0 {
            b.1 = Some(Instant::now());
        }
        b.0 += 1;
    }

    fn leave(&self) {
        let mut b = self.busy.lock().expect("store probe");
        b.0 -= 1;
        if b.0 == 0
            && let Some(since) = b.1.take()
        {
            b.2 += since.elapsed().as_nanos() as u64;
        }
    }

    /// Nanoseconds with at least one call in the store, up to now.
    fn busy_ns(&self) -> u64 {
        let b = self.busy.lock().expect("store probe");
        b.2 + b.1.map_or(0, |s| s.elapsed().as_nanos() as u64)
    }
}

#[async_trait::async_trait]
impl ClinicalStore for ProbedStore {
    async fn insert_token(
        &self,
        token: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.write(self.inner.insert_token(token, audit)).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read(self.inner.token_by_hash(hash)).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.read(self.inner.tokens()).await
    }
    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.read(self.inner.token_by_id(id)).await
    }
    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        self.write(self.inner.rotate_token(old, old_expires_ms, new, audit))
            .await
    }
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.write(self.inner.revoke_token(id, at_ms, audit)).await
    }
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        self.write(self.inner.append_audit(record)).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(self.inner.audit(query)).await
    }
    async fn record_alarm_events(
        &self,
        events: &[medkeeper_hospital::store::AlarmEvent],
    ) -> Result<usize, StoreError> {
        self.inner.record_alarm_events(events).await
    }
    async fn alarm_events(
        &self,
        query: &medkeeper_hospital::store::AlarmQuery,
    ) -> Result<Vec<medkeeper_hospital::store::AlarmEvent>, StoreError> {
        self.read(self.inner.alarm_events(query)).await
    }
    async fn write_observations(
        &self,
        observations: &[(
            medkeeper_hospital::vitals::Observation,
            medkeeper_hospital::store::Revision,
        )],
        raw: &medkeeper_hospital::store::RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.inner
            .write_observations(observations, raw, audit)
            .await
    }
    async fn observations(
        &self,
        query: &medkeeper_hospital::store::ObservationQuery,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.inner.observations(query).await
    }
    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        self.inner.patient_by_identifier(system, value).await
    }
    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner
            .set_identifier(patient, system, value, audit)
            .await
    }
    async fn patient_settings(
        &self,
        patient: &PatientId,
    ) -> Result<medkeeper_hospital::store::PatientSettings, StoreError> {
        self.inner.patient_settings(patient).await
    }
    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        settings: &medkeeper_hospital::store::PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner
            .set_patient_settings(patient, settings, audit)
            .await
    }
    async fn insert_news2(
        &self,
        record: &medkeeper_hospital::store::News2Record,
    ) -> Result<bool, StoreError> {
        self.inner.insert_news2(record).await
    }
    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<medkeeper_hospital::store::News2Record>, StoreError> {
        self.inner.news2_scores(patient, since_ms, limit).await
    }
    async fn insert_pool_samples(
        &self,
        samples: &[medkeeper_hospital::store::PoolSample],
    ) -> Result<usize, StoreError> {
        self.inner.insert_pool_samples(samples).await
    }
    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&medkeeper_hospital::Pool>,
    ) -> Result<Vec<medkeeper_hospital::store::PoolSample>, StoreError> {
        self.inner.pool_samples(since_ms, until_ms, pool).await
    }
    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.inner.prune_pool_samples(before_ms).await
    }
    async fn insert_patient(
        &self,
        patient: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.write(self.inner.insert_patient(patient, audit)).await
    }
    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError> {
        self.write(self.inner.upsert_patient(patient)).await
    }

    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        self.read(self.inner.patient(id)).await
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
        self.write(self.inner.insert_order(order, actor, audit))
            .await
    }

    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.read(self.inner.order(id)).await
    }

    async fn transition(
        &self,
        t: &Transition,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        let changed = self.write(self.inner.transition(t, audit)).await?;
        if changed {
            self.probe.on_transition(t);
        }
        Ok(changed)
    }

    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.write(self.inner.set_priority(id, priority, at_ms, audit))
            .await
    }

    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.read(self.inner.orders_updated(since_ms, before_ms, after, limit))
            .await
    }

    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        self.read(self.inner.reconciled_until()).await
    }

    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        self.write(self.inner.set_reconciled_until(ms)).await
    }

    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        self.read(self.inner.transitions(id)).await
    }

    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        self.read(self.inner.orders_in(states)).await
    }

    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError> {
        self.read(self.inner.orders_of(patient)).await
    }

    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError> {
        self.write(self.inner.put_result(result)).await
    }

    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        self.read(self.inner.result(id)).await
    }
}

tokio::task_local! {
    /// Set while a technician starts and completes a called order: the requests sent inside
    /// count as the order's life after "called"; everything else (the order's creation, the
    /// dispatchers, the read models' upkeep) as its way to "called".
    static AFTER_CALL: ();
}

/// Routes every request to one of two counting sessions over the same session: `after`
/// inside [`AFTER_CALL`], `before` otherwise. A request sent from a task the hospital spawns
/// counts as `before`.
struct PhaseSplit {
    before: Arc<dyn Session>,
    after: Arc<dyn Session>,
}

impl PhaseSplit {
    fn pick(&self) -> &dyn Session {
        if AFTER_CALL.try_with(|_| ()).is_ok() {
            self.after.as_ref()
        } else {
            self.before.as_ref()
        }
    }
}

#[async_trait::async_trait]
impl Session for PhaseSplit {
    fn session_id(&self) -> SessionId {
        self.before.session_id()
    }
    fn session_timeout(&self) -> Duration {
        self.before.session_timeout()
    }
    fn state(&self) -> SessionState {
        self.before.state()
    }
    fn session_events(&self) -> SessionEvents {
        self.before.session_events()
    }
    fn capabilities(&self) -> Capabilities {
        self.before.capabilities()
    }
    async fn create(&self, p: &str, d: &[u8], o: &CreateOptions) -> CoordResult<(String, Stat)> {
        self.pick().create(p, d, o).await
    }
    async fn delete(&self, p: &str, v: i32) -> CoordResult<()> {
        self.pick().delete(p, v).await
    }
    async fn exists(&self, p: &str) -> CoordResult<Option<Stat>> {
        self.pick().exists(p).await
    }
    async fn exists_watch(&self, p: &str) -> CoordResult<(Option<Stat>, OneshotWatch)> {
        self.pick().exists_watch(p).await
    }
    async fn get_data(&self, p: &str) -> CoordResult<(Vec<u8>, Stat)> {
        self.pick().get_data(p).await
    }
    async fn get_data_watch(&self, p: &str) -> CoordResult<(Vec<u8>, Stat, OneshotWatch)> {
        self.pick().get_data_watch(p).await
    }
    async fn set_data(&self, p: &str, d: &[u8], v: i32) -> CoordResult<Stat> {
        self.pick().set_data(p, d, v).await
    }
    async fn get_children_with_stat(&self, p: &str) -> CoordResult<(Vec<String>, Stat)> {
        self.pick().get_children_with_stat(p).await
    }
    async fn get_children_watch(&self, p: &str) -> CoordResult<(Vec<String>, Stat, OneshotWatch)> {
        self.pick().get_children_watch(p).await
    }
    async fn get_acl(&self, p: &str) -> CoordResult<(Vec<Acl>, Stat)> {
        self.pick().get_acl(p).await
    }
    async fn set_acl(&self, p: &str, a: &[Acl], v: i32) -> CoordResult<Stat> {
        self.pick().set_acl(p, a, v).await
    }
    async fn watch(&self, p: &str, m: AddWatchMode) -> CoordResult<PersistentWatch> {
        self.pick().watch(p, m).await
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        self.pick().multi(ops).await
    }
    async fn sync(&self, p: &str) -> CoordResult<()> {
        self.pick().sync(p).await
    }
    async fn add_auth(&self, s: &str, a: &[u8]) -> CoordResult<()> {
        self.pick().add_auth(s, a).await
    }
    async fn close(&self) {
        self.before.close().await
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
    // The device alone first: a bare fdatasync where the data lives (the store file's
    // directory, the engine's directory, or the temp directory for ZooKeeper's client side).
    let probe_dir = match (&b.store_file, b.connect.connect.strip_prefix("embedded:")) {
        (Some(f), _) => f
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| ".".into(), std::path::Path::to_path_buf),
        (None, Some(dir)) => dir.into(),
        (None, None) => std::env::temp_dir(),
    };
    let probe = |dir: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || super::fsync_probe(&dir, 300))
            .await
            .context("the fsync probe panicked")?
            .context("the fsync probe")
    };
    let before = probe(probe_dir.clone()).await?;
    let zk = super::zk_servers(&b.connect.connect);
    let result = measure(&b, &target, zk.as_deref()).await;
    target.finish().await?;
    let o = result?;
    // And again after the run. The disk is shared and its flushes vary over seconds (other
    // work on the machine): the probe with the lower p50 is the device at its best, which is
    // what a bound takes.
    let after = probe(probe_dir).await?;
    let fsync = if after.value_at_quantile(0.5) < before.value_at_quantile(0.5) {
        after
    } else {
        before
    };
    let l = Limits::of(&o, &fsync, b.store_file.is_some());
    let rate = o.completed as f64 / o.seconds;
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    let store = if b.store_file.is_some() {
        "file"
    } else if b.store.is_some() {
        "postgres"
    } else {
        "memory"
    };
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
        line["store"] = store.into();
        let total = o.to_called.total() + o.after_called.total();
        line["requests_per_order"] = o.per(total).into();
        line["requests_to_called_per_order"] = o.per(o.to_called.total()).into();
        line["requests_after_called_per_order"] = o.per(o.after_called.total()).into();
        line["reads_per_order"] = o.per(o.to_called.reads + o.after_called.reads).into();
        line["writes_per_order"] = o
            .per(
                o.to_called.writes
                    + o.to_called.multis
                    + o.after_called.writes
                    + o.after_called.multis,
            )
            .into();
        line["idle_requests_per_s"] = o.idle_per_s().into();
        line["store_txns_per_order"] = o.per(o.store.writes).into();
        line["store_reads_per_order"] = o.per(o.store.reads).into();
        line["store_ms_per_order"] = round2(l.store_ms_per_order).into();
        line["store_bound_rate"] = round1(l.store_bound).into();
        line["cpu_ms_per_order"] = round2(l.cpu_ms_per_order).into();
        line["cpu_bound_rate"] = l.cpu_bound.map(round1).into();
        line["fsync_p50_us"] = q(&fsync, 0.5).into();
        line["fsync_p99_us"] = q(&fsync, 0.99).into();
        if let Some(f) = o.engine_fsyncs {
            line["engine_fsyncs_per_order"] = o.per2(f).into();
            line["engine_fsyncs_per_s"] = round1(f as f64 / o.seconds).into();
            line["engine_fsync_bound_rate"] = l.engine_fsync_bound.map(round1).into();
        }
        if let Some(b) = l.store_fsync_bound {
            line["store_fsync_bound_rate"] = round1(b).into();
        }
        if let Some(b) = l.device_bound {
            line["fsync_bound_rate"] = round1(b).into();
        }
        if let Some(z) = &o.zk {
            line["zk_packets_per_order"] = o.per(z.packets_received).into();
            line["zk_leader_fsyncs_per_order"] = o.per2(z.leader_fsyncs).into();
            line["zk_fsyncs_per_order"] = o.per2(z.fsyncs).into();
            line["zk_fsync_ms_mean"] = l.zk_fsync_ms_mean.map(round2).into();
            line["zk_fsync_bound_rate"] = l.zk_fsync_bound.map(round1).into();
        }
        if let Some(z) = &o.zk_idle {
            line["zk_idle_packets_per_s"] =
                round1(z.packets_received as f64 / o.idle_seconds).into();
        }
        println!("{line}");
    } else {
        println!(
            "medkeeper dispatch ({store} store): {} orders completed in {:.2} s = {rate:.1}/s; \
             created → called p50 {} µs, p99 {} µs; created → completed p50 {} µs, p99 {} µs",
            o.completed,
            o.seconds,
            q(&o.called, 0.5),
            q(&o.called, 0.99),
            q(&o.done, 0.5),
            q(&o.done, 0.99),
        );
        println!(
            "  coordination requests per order: {:.1} to \"called\" + {:.1} after = {:.1} \
             ({:.1} reads, {:.1} writes and multis); idle (nothing waiting, nothing changing): \
             {:.1} requests/s",
            o.per(o.to_called.total()),
            o.per(o.after_called.total()),
            o.per(o.to_called.total() + o.after_called.total()),
            o.per(o.to_called.reads + o.after_called.reads),
            o.per(
                o.to_called.writes
                    + o.to_called.multis
                    + o.after_called.writes
                    + o.after_called.multis
            ),
            o.idle_per_s(),
        );
        println!(
            "  store per order: {:.1} transactions, {:.1} reads, {:.2} ms with a call in the \
             store (one connection) → at most {:.0} orders/s",
            o.per(o.store.writes),
            o.per(o.store.reads),
            l.store_ms_per_order,
            l.store_bound,
        );
        println!(
            "  this process's CPU per order: {:.2} ms → at most {} orders/s on {} cores",
            l.cpu_ms_per_order,
            l.cpu_bound
                .map_or_else(|| "?".into(), |v| format!("{v:.0}")),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        );
        let mut fs = format!(
            "  bare fdatasync here: p50 {} µs, p99 {} µs",
            q(&fsync, 0.5),
            q(&fsync, 0.99)
        );
        if let (Some(f), Some(bound)) = (o.engine_fsyncs, l.engine_fsync_bound) {
            fs += &format!(
                "; engine log fsyncs per order {:.2} ({:.0}/s) → at most {bound:.0} orders/s",
                o.per2(f),
                f as f64 / o.seconds
            );
        }
        if let Some(bound) = l.store_fsync_bound {
            fs += &format!("; store commits (≥ 1 fsync each) → at most {bound:.0} orders/s");
        }
        if let Some(bound) = l.device_bound {
            fs += &format!("; both on one disk → at most {bound:.0} orders/s");
        }
        println!("{fs}");
        if let Some(z) = &o.zk {
            println!(
                "  ZooKeeper's counters per order: {:.1} packets received (pings included), \
                 {:.2} leader fsyncs ({:.2} all servers), its mean fsync {} ms; at the bare fsync → at most {} \
                 orders/s; idle {:.1} packets/s",
                o.per(z.packets_received),
                o.per2(z.leader_fsyncs),
                o.per2(z.fsyncs),
                l.zk_fsync_ms_mean
                    .map_or_else(|| "?".into(), |v| format!("{v:.2}")),
                l.zk_fsync_bound
                    .map_or_else(|| "?".into(), |v| format!("{v:.0}")),
                o.zk_idle
                    .map_or(0.0, |z| z.packets_received as f64 / o.idle_seconds),
            );
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The throughput each measured resource allows at the cost per order measured.
struct Limits {
    /// Time with a call in the clinical store, per order (its one connection: reads and
    /// writes wait for each other; the time to reach the blocking pool is included, so this
    /// is an upper bound of the connection's own time), ms.
    store_ms_per_order: f64,
    /// 1 / that: the store busy all the time.
    store_bound: f64,
    /// This process's CPU time per order (with the embedded engine: the engine, the store,
    /// the dispatchers; on ZooKeeper: the client side only), ms.
    cpu_ms_per_order: f64,
    /// The machine's cores / that: this process alone on every core.
    cpu_bound: Option<f64>,
    /// The engine's one sync thread, fsyncing back to back at the bare fsync's p50.
    engine_fsync_bound: Option<f64>,
    /// The store's commits (one WAL fsync each with `synchronous=FULL`), back to back.
    store_fsync_bound: Option<f64>,
    /// Both on one disk, if its flushes do not overlap.
    device_bound: Option<f64>,
    /// ZooKeeper leader's mean fsync, ms (its own counter).
    zk_fsync_ms_mean: Option<f64>,
    /// The leader's one sync thread, fsyncing back to back at the bare fsync's p50.
    zk_fsync_bound: Option<f64>,
}

impl Limits {
    fn of(o: &Measured, fsync: &Histogram<u64>, file_store: bool) -> Limits {
        let orders = o.completed.max(1) as f64;
        let fsync_s = fsync.value_at_quantile(0.5) as f64 / 1e6;
        let store_s = o.store.busy_ns as f64 / 1e9 / orders;
        let bound = |per_order: f64, each_s: f64| {
            (per_order > 0.0 && each_s > 0.0).then(|| 1.0 / (per_order * each_s))
        };
        let engine = o.engine_fsyncs.map(|f| f as f64 / orders);
        let store_fsyncs = file_store.then(|| o.store.writes as f64 / orders);
        let device = match (engine, store_fsyncs) {
            (None, None) => None,
            (e, s) => Some(e.unwrap_or(0.0) + s.unwrap_or(0.0)),
        };
        let zk_mean =
            o.zk.filter(|z| z.leader_fsyncs > 0)
                .map(|z| z.leader_fsync_ms as f64 / z.leader_fsyncs as f64);
        let cpu_s = o.cpu_ticks as f64 / 100.0 / orders;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Limits {
            cpu_ms_per_order: cpu_s * 1000.0,
            cpu_bound: (cpu_s > 0.0).then(|| cores / cpu_s),
            store_ms_per_order: store_s * 1000.0,
            store_bound: if store_s > 0.0 { 1.0 / store_s } else { 0.0 },
            engine_fsync_bound: engine.and_then(|e| bound(e, fsync_s)),
            store_fsync_bound: store_fsyncs.and_then(|s| bound(s, fsync_s)),
            device_bound: device.and_then(|d| bound(d, fsync_s)),
            zk_fsync_ms_mean: zk_mean,
            // ZooKeeper records each fsync in whole milliseconds, so its mean reads low below
            // 1 ms: the bound takes the bare fsync of the same disk.
            zk_fsync_bound: o
                .zk
                .and_then(|z| bound(z.leader_fsyncs as f64 / orders, fsync_s)),
        }
    }
}

/// The clinical store's calls in a window.
#[derive(Debug, Clone, Copy, Default)]
struct StoreTally {
    writes: u64,
    reads: u64,
    /// Time with at least one call in the store (its one connection, or waiting for it), ns.
    busy_ns: u64,
}

/// Every counter at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Snapshot {
    to_called: RequestTally,
    after_called: RequestTally,
    store: StoreTally,
    engine_fsyncs: Option<u64>,
    zk: Option<super::ZkCounters>,
    /// This process's CPU time (user + system), clock ticks.
    cpu_ticks: u64,
}

/// This process's CPU time so far (user + system), in clock ticks of 10 ms (Linux's USER_HZ).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12) // utime and stime: fields 14 and 15 of the whole line
}

impl Snapshot {
    fn since(&self, e: &Snapshot) -> Snapshot {
        Snapshot {
            to_called: self.to_called.since(&e.to_called),
            after_called: self.after_called.since(&e.after_called),
            store: StoreTally {
                writes: self.store.writes - e.store.writes,
                reads: self.store.reads - e.store.reads,
                busy_ns: self.store.busy_ns - e.store.busy_ns,
            },
            engine_fsyncs: self
                .engine_fsyncs
                .zip(e.engine_fsyncs)
                .map(|(a, b)| a.saturating_sub(b)),
            zk: self.zk.zip(e.zk).map(|(a, b)| a.since(&b)),
            cpu_ticks: self.cpu_ticks.saturating_sub(e.cpu_ticks),
        }
    }
}

struct Measured {
    completed: u64,
    created: u64,
    seconds: f64,
    called: Histogram<u64>,
    done: Histogram<u64>,
    /// Coordination requests sent in the measured window on the orders' way to "called":
    /// their creation, the dispatchers, the read models (every request but the technicians').
    to_called: RequestTally,
    /// The technicians' requests in the window: start and complete.
    after_called: RequestTally,
    /// The clinical store's calls in the window.
    store: StoreTally,
    /// The embedded engine's log fsyncs in the window.
    engine_fsyncs: Option<u64>,
    /// ZooKeeper's own counters over the window.
    zk: Option<super::ZkCounters>,
    /// This process's CPU time in the window, clock ticks (10 ms).
    cpu_ticks: u64,
    /// Requests sent while idle: nothing waiting, nothing changing.
    idle: RequestTally,
    zk_idle: Option<super::ZkCounters>,
    idle_seconds: f64,
}

impl Measured {
    /// `n` per order completed in the window (one decimal).
    fn per(&self, n: u64) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        round1(n as f64 / self.completed as f64)
    }

    /// `n` per order completed in the window (two decimals).
    fn per2(&self, n: u64) -> f64 {
        if self.completed == 0 {
            return 0.0;
        }
        round2(n as f64 / self.completed as f64)
    }

    fn idle_per_s(&self) -> f64 {
        if self.idle_seconds <= 0.0 {
            return 0.0;
        }
        round1(self.idle.total() as f64 / self.idle_seconds)
    }
}

async fn measure(
    b: &DispatchBench,
    target: &Target,
    zk: Option<&[String]>,
) -> anyhow::Result<Measured> {
    let session = target.session.clone();
    let engine = target.engine.as_ref();
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
        store: StoreCounts::default(),
    });
    let inner: Box<dyn ClinicalStore> = match (&b.store_file, &b.store) {
        (Some(path), _) => Box::new(
            SqliteStore::open(path)
                .with_context(|| format!("cannot open the clinical store {}", path.display()))?,
        ),
        (None, Some(url)) => Box::new(crate::serve::connect_postgres(url, None).await?),
        (None, None) => Box::new(SqliteStore::in_memory()?),
    };
    let store = Arc::new(ProbedStore {
        inner,
        probe: probe.clone(),
    });
    let to_called = Arc::new(RequestCounts::default());
    let after_called = Arc::new(RequestCounts::default());
    let session: Arc<dyn Session> = Arc::new(PhaseSplit {
        before: Counted::wrap(session.clone(), to_called.clone()),
        after: Counted::wrap(session, after_called.clone()),
    });
    let snapshot = || async {
        let c = &probe.store;
        Snapshot {
            to_called: to_called.tally(),
            after_called: after_called.tally(),
            store: StoreTally {
                writes: c.writes.load(Ordering::Relaxed),
                reads: c.reads.load(Ordering::Relaxed),
                busy_ns: c.busy_ns(),
            },
            engine_fsyncs: engine.map(|e| e.stats().fsyncs),
            zk: match zk {
                Some(servers) => super::zk_counters(servers).await,
                None => None,
            },
            cpu_ticks: cpu_ticks(),
        }
    };
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
            running.spawn(AFTER_CALL.scope((), async move {
                h.start(&id, "tech").await?;
                h.complete(&id, "tech").await?;
                anyhow::Ok(())
            }));
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
    // The window's counters, from its start to its end (beside the producer).
    let window_counts = async {
        tokio::time::sleep_until(start.into()).await;
        let first = snapshot().await;
        tokio::time::sleep_until(end.into()).await;
        snapshot().await.since(&first)
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
    let producer = async {
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
        anyhow::Ok(())
    };
    let (produced, counted) = tokio::join!(producer, window_counts);

    // Drain: the orders still in the system finish (they no longer count), then stop.
    let drain = Instant::now() + Duration::from_secs(10);
    while probe.room.available_permits() < b.in_flight.max(1)
        && Instant::now() < drain
        && !technicians.is_finished()
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Idle: nothing waiting, nothing changing; only the dispatchers' own upkeep is sent.
    let idle_window = Duration::from_secs(2);
    let first = snapshot().await;
    tokio::time::sleep(idle_window).await;
    let idle = snapshot().await.since(&first);
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
        to_called: counted.to_called,
        after_called: counted.after_called,
        store: counted.store,
        engine_fsyncs: counted.engine_fsyncs,
        zk: counted.zk,
        cpu_ticks: counted.cpu_ticks,
        idle: RequestTally {
            reads: idle.to_called.reads + idle.after_called.reads,
            writes: idle.to_called.writes + idle.after_called.writes,
            multis: idle.to_called.multis + idle.after_called.multis,
            other: idle.to_called.other + idle.after_called.other,
        },
        zk_idle: idle.zk,
        idle_seconds: idle_window.as_secs_f64(),
    })
}
