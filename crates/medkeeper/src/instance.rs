//! One instance's coordination life, shared by `medkeeper serve` and `medkeeper dispatch`:
//! coordination sessions one after another until a shutdown future resolves ([`run`]).
//!
//! Per session: load the hospital configuration (idempotent), repair what a crash left
//! ([`Hospital::reconcile_with_grace`] with [`startup_grace`]), then run the session's duties
//! until the session ends or the shutdown:
//! - one dispatcher per pool, each while holding its pool's lock (so pools spread over
//!   instances), with a status line in the log when this instance starts or stops holding one:
//!   `dispatching MRI as NAME`, `stopped dispatching MRI as NAME`;
//! - a follow-up repair once what the start-up repair left for being too recent is due;
//! - for `serve` ([`Duties`]): membership in `/medical/members` and leadership at
//!   `/medical/leader`, the leader running the reconciler every [`RECONCILE_EVERY`], the
//!   alarm evaluator (one per cluster, [`medkeeper_hospital::alarms`]) and the sampler of the
//!   dashboard charts' history ([`medkeeper_hospital::history`]).
//!
//! A session that ends (expired: the process was paused past its timeout) took everything it
//! held with it — its lock nodes, so its fenced writes fail — and the instance opens a new
//! session and does it all again (`session Expired: NAME opens a new session`). On shutdown
//! the duties release the locks, leave and resign, and the session is closed, so its
//! ephemerals go at once and the next instance in line takes over.
//!
//! # Tasks
//! Every task of a session belongs to that session's [`SessionTasks`]. Before the session is
//! closed they are told to stop, given [`STOP_GRACE`] to let go of what they hold, aborted if
//! still running, and awaited in every case: nothing of one session runs beside the next, and
//! nothing runs after [`run`] returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use medkeeper_coord::{Session, SessionState};
use medkeeper_hospital::alarms::Evaluator;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::{DispatchObserver, Dispatcher};
use medkeeper_hospital::orders::{Hospital, RECONCILE_GRACE};
use medkeeper_hospital::store::ClinicalStore;
use medkeeper_hospital::{Pool, history, tree};
use medkeeper_recipes::{Election, Membership, Mutex};
use medkeeper_server::MemberInfo;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::coord::{ConnectArgs, Connection, connect};

/// How often the leader runs the reconciler.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How long a failed connect, session start or duty waits before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// How often the status task looks at who holds each pool's lock.
const HOLDER_POLL: Duration = Duration::from_millis(200);
/// How long a session's tasks get to release their locks, leave and resign before they are
/// aborted.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// One instance: who it is, where it connects, what it serves and what it does per session.
pub struct Instance {
    /// The instance id (lock nodes, members, order history `dispatcher:<id>`).
    pub id: String,
    /// The coordination service.
    pub connect: ConnectArgs,
    /// The hospital configuration, loaded into every new session.
    pub hospital: HospitalConfig,
    /// The clinical store.
    pub store: Arc<dyn ClinicalStore>,
    /// What a session does besides dispatching.
    pub duties: Duties,
    /// What an error does.
    pub on_error: OnError,
    /// Told of every call this instance's dispatchers make (`serve`: the server's metrics).
    pub dispatch_observer: Option<Arc<dyn DispatchObserver>>,
}

/// What an instance does in each session besides dispatching every pool.
#[derive(Default)]
pub struct Duties {
    /// Joins `/medical/members` as this member.
    pub member: Option<MemberInfo>,
    /// Stands for leader at `/medical/leader`; the leader runs the reconciler and the alarm
    /// evaluator.
    pub lead: bool,
    /// Where the leader delivers the cluster's alarms ([`crate::alerting::deliver_alarms`]).
    pub alerts: Option<crate::alerting::Delivery>,
    /// How often the leader samples the pools for the charts' history; `None`:
    /// [`history::SAMPLE_EVERY`].
    pub history_every: Option<Duration>,
    /// Told each session's hospital once it is loaded and repaired, and `None` once the
    /// session ends, before it is closed.
    pub on_hospital: Option<HospitalChanged>,
}

/// Told a session's hospital when it is ready, `None` when the session ends.
pub type HospitalChanged = Box<dyn Fn(Option<Arc<Hospital>>) + Send + Sync>;

/// What a failure to connect or to start a session does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Warn and try again after [`RETRY`] (`serve`: its API stays up and answers 503
    /// meanwhile).
    Retry,
    /// [`run`] returns the error — if the first connect fails, or a session start fails while
    /// the session is alive (a configuration the tree refuses) — so a process of its own exits
    /// with a failure status. A start that failed because the session ended is retried.
    Exit,
}

/// Runs the instance's sessions one after another until `shutdown` resolves; returns once
/// the last session's tasks have let go of what they held and the session is closed.
///
/// # Notable errors
/// Only with [`OnError::Exit`]: the first connect's error, or a session start's error while
/// the session was alive.
pub async fn run(instance: Instance, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    let id = &instance.id;
    let exit_on_error = instance.on_error == OnError::Exit;
    let mut first = true;
    loop {
        let connected = tokio::select! {
            biased;
            _ = shutdown.as_mut() => return Ok(()),
            c = connect(&instance.connect) => c,
        };
        let conn = match connected {
            Ok(c) => c,
            Err(e) if first && exit_on_error => return Err(e),
            // Another process took the data directory (two servers started at once, or one
            // started while this one was between sessions): it is that one's now; retrying
            // would keep this process up without one, accepting writes it cannot coordinate.
            Err(e) if crate::coord::held_by_another_process(&instance.connect).is_some() => {
                return Err(e);
            }
            Err(e) => {
                tracing::warn!("{id}: {e:#}; retrying");
                if pause(RETRY, shutdown.as_mut()).await {
                    return Ok(());
                }
                continue;
            }
        };
        first = false;
        let outcome = one_session(&instance, &conn, shutdown.as_mut()).await;
        if let Some(tell) = &instance.duties.on_hospital {
            tell(None);
        }
        let state = conn.session.state();
        conn.close().await;
        match outcome {
            Ok(Ended::Shutdown) => return Ok(()),
            Ok(Ended::Session(st)) => tracing::warn!("session {st:?}: {id} opens a new session"),
            Err(e) if exit_on_error && !state.is_terminal() => return Err(e),
            Err(e) => {
                tracing::warn!("{id}: {e:#} (session {state:?}); starting again");
                if pause(RETRY, shutdown.as_mut()).await {
                    return Ok(());
                }
            }
        }
    }
}

/// How a session's life ended.
enum Ended {
    /// The shutdown future resolved.
    Shutdown,
    /// The session reached this terminal state.
    Session(SessionState),
}

/// Sleeps `d`; true if `shutdown` resolved first.
async fn pause<F: Future<Output = ()>>(d: Duration, shutdown: Pin<&mut F>) -> bool {
    tokio::select! {
        biased;
        _ = shutdown => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// One session's life: set up, run the duties until the session ends or the shutdown, stop
/// them. The caller closes the session.
async fn one_session<F: Future<Output = ()>>(
    instance: &Instance,
    conn: &Connection,
    mut shutdown: Pin<&mut F>,
) -> anyhow::Result<Ended> {
    let id = &instance.id;
    let session = conn.session.clone();
    // Loading and reconciling need the coordination service: a shutdown meanwhile wins.
    let setup = async {
        let loaded = config::load(session.as_ref(), &instance.hospital)
            .await
            .context("loading the hospital configuration")?;
        if !loaded.orphaned.is_empty() {
            tracing::warn!(
                units = ?loaded.orphaned,
                "{id}: units in the tree that the hospital file no longer declares: kept for \
                 whoever is inside, given no one new (remove them with `medkeeper coord` once \
                 free)"
            );
        }
        let hospital = Arc::new(Hospital::new(
            session.clone(),
            instance.store.clone(),
            instance.hospital.clone(),
        )?);
        // Until one run is done: another instance's run holding the lock is no reason to
        // dispatch on a tree this run may have to repair first (a unit the store has in use
        // that the tree shows free: `ReconcileReport::restored_units`).
        let report = loop {
            let report = hospital
                .reconcile_with_grace(startup_grace(conn.sole_writer()))
                .await
                .context("reconciling")?;
            if !report.busy {
                break report;
            }
            tracing::info!("{id}: waiting for another instance's reconciler run to end");
        };
        anyhow::Ok((hospital, report))
    };
    let (hospital, report) = tokio::select! {
        biased;
        _ = shutdown.as_mut() => return Ok(Ended::Shutdown),
        r = setup => r?,
    };
    if !report.is_clean() {
        tracing::info!(
            "{id}: reconciled {}",
            serde_json::to_string(&report).unwrap_or_default()
        );
    }
    if let Some(tell) = &instance.duties.on_hospital {
        tell(Some(hospital.clone()));
    }
    let mut tasks = SessionTasks::new();
    for pool in instance.hospital.pools.iter().map(|p| &p.pool) {
        let observer = instance.dispatch_observer.clone();
        tasks.spawn(|done| {
            dispatch_pool(hospital.clone(), pool.clone(), id.clone(), observer, done)
        });
        tasks.spawn(|done| announce(session.clone(), pool.clone(), id.clone(), done));
    }
    if let Some(me) = &instance.duties.member {
        tasks.spawn(|done| membership(session.clone(), me.clone(), done));
    }
    // What the start-up repair left for being too recent is repaired once it is due, not at
    // the leader's next periodic run (or, without a leader, never in this session).
    tasks.spawn(|done| reconcile_when_due(hospital.clone(), id.clone(), report.next_due_ms, done));
    if instance.duties.lead {
        let alerts = instance.duties.alerts.clone();
        let every = instance
            .duties
            .history_every
            .unwrap_or(history::SAMPLE_EVERY);
        tasks.spawn(|done| lead(hospital.clone(), id.clone(), alerts, every, done));
    }
    let mut events = session.session_events();
    let ended = tokio::select! {
        biased;
        _ = shutdown.as_mut() => Ended::Shutdown,
        st = events.wait_for(SessionState::is_terminal) => Ended::Session(st),
    };
    tasks.stop().await;
    Ok(ended)
}

/// The tasks of one session. [`stop`](SessionTasks::stop) tells them the session is ending,
/// gives them [`STOP_GRACE`] to release what they hold, aborts the rest and awaits them all.
/// Dropped without `stop` (only if the lifecycle itself is dropped), it aborts them.
struct SessionTasks {
    done: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl SessionTasks {
    fn new() -> SessionTasks {
        SessionTasks {
            done: watch::channel(false).0,
            tasks: JoinSet::new(),
        }
    }

    /// Spawns `task`, handing it the signal that the session is ending ([`stopped`]).
    fn spawn<F>(&mut self, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.done.subscribe()));
    }

    async fn stop(mut self) {
        let _ = self.done.send(true);
        let graceful = tokio::time::timeout(STOP_GRACE, async {
            while let Some(joined) = self.tasks.join_next().await {
                log_panic(joined);
            }
        })
        .await;
        if graceful.is_err() {
            self.tasks.abort_all();
            while let Some(joined) = self.tasks.join_next().await {
                log_panic(joined);
            }
        }
    }
}

fn log_panic(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined
        && e.is_panic()
    {
        tracing::error!("a session task panicked: {e}");
    }
}

/// Resolves once `stop` says so (or its sender is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `<hostname>-<pid>`, the default instance id.
pub fn default_instance() -> String {
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

/// The grace of the start-up repair: none when this process alone writes the coordination
/// data (nothing can be between two writes: repair at once), else [`RECONCILE_GRACE`]
/// (another instance's operation may be; what is left is repaired when due, see
/// [`reconcile_when_due`]).
pub fn startup_grace(sole_writer: bool) -> Duration {
    if sole_writer {
        Duration::ZERO
    } else {
        RECONCILE_GRACE
    }
}

/// Runs the reconciler once and logs what it repaired. Returns how long until it should run
/// again: when the first repair it left for being too recent becomes due, at most
/// [`RECONCILE_EVERY`].
async fn reconcile_logged(hospital: &Hospital, id: &str) -> Duration {
    match hospital.reconcile().await {
        Ok(r) => {
            if !r.is_clean() {
                tracing::info!(
                    "{id}: reconciled {}",
                    serde_json::to_string(&r).unwrap_or_default()
                );
            }
            due_in(hospital, r.next_due_ms)
        }
        Err(e) => {
            tracing::warn!("{id}: reconciling: {e}");
            RECONCILE_EVERY
        }
    }
}

/// How long until `due_ms` by the hospital's clock (a little after, so it is past), at most
/// [`RECONCILE_EVERY`]; `RECONCILE_EVERY` if nothing is due.
fn due_in(hospital: &Hospital, due_ms: Option<i64>) -> Duration {
    match due_ms {
        Some(due) => {
            let ms = due.saturating_sub(hospital.now_ms()).max(0) as u64 + 20;
            Duration::from_millis(ms).min(RECONCILE_EVERY)
        }
        None => RECONCILE_EVERY,
    }
}

/// After a start-up repair that left something for being too recent (due at `due_ms`):
/// runs the reconciler when it is due, again while runs leave something due before the
/// leader's next periodic run would come, until `done`.
async fn reconcile_when_due(
    hospital: Arc<Hospital>,
    id: String,
    due_ms: Option<i64>,
    done: watch::Receiver<bool>,
) {
    if due_ms.is_none() {
        return;
    }
    let mut wait = due_in(&hospital, due_ms);
    while wait < RECONCILE_EVERY {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(done.clone()) => return,
        }
        wait = reconcile_logged(&hospital, &id).await;
    }
}

/// Runs the pool's dispatcher until `done`, queueing up again after a failure that is not
/// the session's end (after which [`run`] opens a new session).
async fn dispatch_pool(
    hospital: Arc<Hospital>,
    pool: Pool,
    instance: String,
    observer: Option<Arc<dyn DispatchObserver>>,
    done: watch::Receiver<bool>,
) {
    loop {
        let mut dispatcher = Dispatcher::new(hospital.clone(), pool.clone(), instance.clone());
        if let Some(o) = &observer {
            dispatcher = dispatcher.with_observer(o.clone());
        }
        match dispatcher.run(stopped(done.clone())).await {
            Ok(()) => return,
            Err(e) => {
                if hospital.session().state().is_terminal() {
                    return;
                }
                tracing::warn!("{instance}: dispatching {}: {e}", pool.name());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(done.clone()) => return,
        }
    }
}

/// Logs a status line whenever this session starts or stops holding the pool's lock.
async fn announce(
    session: Arc<dyn Session>,
    pool: Pool,
    instance: String,
    done: watch::Receiver<bool>,
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
                tracing::info!("dispatching {} as {instance}", pool.name());
            } else {
                tracing::info!("stopped dispatching {} as {instance}", pool.name());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(HOLDER_POLL) => {}
            _ = stopped(done.clone()) => return,
        }
    }
}

/// Keeps this instance in `/medical/members` until `done`.
async fn membership(session: Arc<dyn Session>, me: MemberInfo, done: watch::Receiver<bool>) {
    let data = serde_json::to_vec(&me).unwrap_or_default();
    let group = match Membership::new(session.clone(), tree::MEMBERS) {
        Ok(g) => g,
        Err(e) => {
            tracing::warn!("{}: membership: {e}", me.id);
            return;
        }
    };
    loop {
        match group.join(&me.id, data.clone()).await {
            Ok(member) => {
                tokio::select! {
                    _ = member.lost() => {}
                    _ = stopped(done.clone()) => {
                        let _ = member.leave().await;
                        return;
                    }
                }
            }
            Err(_) if session.state().is_terminal() => return,
            Err(e) => tracing::warn!("{}: joining the members: {e}", me.id),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(done.clone()) => return,
        }
    }
}

/// Stands for leader until `done`; while leading, runs the reconciler every
/// [`RECONCILE_EVERY`] (or sooner when a run left a repair that becomes due before then) and,
/// beside it, the alarm evaluator ([`evaluate_alarms`]), the charts' history sampler
/// ([`history::run`], every `history_every`) and, with `alerts`, the alarms' delivery to
/// Alertmanager.
async fn lead(
    hospital: Arc<Hospital>,
    id: String,
    alerts: Option<crate::alerting::Delivery>,
    history_every: Duration,
    done: watch::Receiver<bool>,
) {
    let session = hospital.session().clone();
    let election = match Election::new(session.clone(), tree::LEADER, id.clone()) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("{id}: election: {e}");
            return;
        }
    };
    loop {
        let leadership = tokio::select! {
            l = election.campaign() => l,
            _ = stopped(done.clone()) => return,
        };
        match leadership {
            Ok(l) => {
                tracing::info!("leading as {id}");
                let reconciling = async {
                    let mut wait = RECONCILE_EVERY;
                    loop {
                        tokio::time::sleep(wait).await;
                        wait = reconcile_logged(&hospital, &id).await;
                    }
                };
                tokio::select! {
                    _ = l.lost() => tracing::info!("no longer leading as {id}"),
                    _ = stopped(done.clone()) => {
                        let _ = l.resign().await;
                        return;
                    }
                    () = reconciling => {}
                    () = evaluate_alarms(&hospital, &id) => {}
                    () = history::run(hospital.clone(), history_every, &id) => {}
                    () = async {
                        match alerts.clone() {
                            Some(d) => crate::alerting::deliver_alarms(hospital.clone(), d).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
            Err(_) if session.state().is_terminal() => return,
            Err(e) => tracing::warn!("{id}: campaigning: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stopped(done.clone()) => return,
        }
    }
}

/// The cluster's alarm evaluator ([`Evaluator::run`]), for as long as the future is polled
/// (the leader's term): started again after [`RETRY`] if it fails while the session lives.
async fn evaluate_alarms(hospital: &Arc<Hospital>, id: &str) {
    loop {
        let evaluator = Evaluator::new(hospital.clone(), id);
        match evaluator.run(std::future::pending()).await {
            Ok(()) => {}
            Err(_) if hospital.session().state().is_terminal() => {
                return std::future::pending().await;
            }
            Err(e) => tracing::warn!("{id}: alarm evaluator: {e}; starting again"),
        }
        tokio::time::sleep(RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use medkeeper_hospital::store::SqliteStore;

    use super::*;

    /// Tasks alive in this (current-thread) runtime.
    fn alive() -> usize {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    }

    /// Issue 13, item 4: every task a session starts is gone before its session is closed, and
    /// nothing is left once [`run`] returns. The session is ended from outside, as an expiry
    /// would; as it closes, and when the second session is ready, no more tasks are alive than
    /// when the first was ready (before its duties were spawned).
    #[tokio::test]
    async fn no_task_outlives_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("clinical.sqlite")).unwrap();
        let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel();
        let instance = Instance {
            id: "i-1".into(),
            connect: ConnectArgs {
                connect: format!("embedded:{}", dir.path().join("coord").display()),
                auth: None,
                zk_tls_ca: None,
                zk_tls_cert: None,
                zk_tls_key: None,
                session_timeout_ms: 10_000,
                create_chroot: false,
                sync_stats: None,
            },
            hospital: HospitalConfig::demo(),
            store: Arc::new(store),
            duties: Duties {
                member: Some(MemberInfo {
                    id: "i-1".into(),
                    url: "http://127.0.0.1:1/".into(),
                    started_ms: 0,
                }),
                lead: true,
                alerts: None,
                history_every: None,
                on_hospital: Some(Box::new(move |h| {
                    let _ = ready_tx.send((h, alive()));
                })),
            },
            on_error: OnError::Exit,
            dispatch_observer: None,
        };
        let before = alive();
        let (stop_tx, stop) = watch::channel(false);
        let driver = async {
            let (first, at_first) = ready.recv().await.unwrap();
            let first = first.expect("the first session's hospital");
            // The duties were spawned right after the hospital was told.
            assert!(
                alive() > at_first + 2,
                "{} tasks, {at_first} before",
                alive()
            );
            first.session().close().await;
            drop(first);
            let (gone, at_end) = ready.recv().await.unwrap();
            assert!(gone.is_none());
            assert!(
                at_end <= at_first,
                "{at_end} tasks as the session closes, {at_first} before its duties"
            );
            let (second, at_second) = ready.recv().await.unwrap();
            assert!(second.is_some());
            drop(second);
            assert_eq!(
                at_second, at_first,
                "tasks of the first session still alive"
            );
            stop_tx.send(true).unwrap();
            assert!(ready.recv().await.unwrap().0.is_none());
        };
        let (ran, ()) = tokio::join!(run(instance, stopped(stop)), driver);
        ran.unwrap();
        // Tasks aborted on drop (the recipes' monitors) are reaped on the runtime's next turns.
        for _ in 0..100 {
            if alive() == before {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(alive(), before, "tasks alive after run returned");
    }
}
