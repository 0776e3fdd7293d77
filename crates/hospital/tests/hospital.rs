//! The hospital domain end to end on a real coordination backend (the embedded engine, and
//! real ZooKeeper when `MEDKEEPER_ZK_CONNECT` is set) and a real SQLite store: orders through
//! their lifecycle, dispatch by priority, no double-booking with several dispatchers, failover
//! of the dispatch lock, and the reconciler repairing a crash between the two stores' writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{Session, SessionExt};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::Dispatcher;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
use medkeeper_hospital::tree::{self, UnitNode};
use medkeeper_hospital::{Error, OrderState, PatientId, Pool, Priority, UnitStatus};

/// A backend: the embedded engine in a temporary directory, or the ZooKeeper server named by
/// `MEDKEEPER_ZK_CONNECT` (with a fresh chroot per test, so tests do not share `/medical`).
enum Backend {
    Embedded(Engine, #[allow(dead_code)] tempfile::TempDir),
    Zk(String),
}

impl Backend {
    fn embedded() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::new(dir.path());
        cfg.tick = Duration::from_millis(200);
        Backend::Embedded(Engine::open(cfg).unwrap(), dir)
    }

    async fn zk() -> Option<Backend> {
        let connect = std::env::var("MEDKEEPER_ZK_CONNECT").ok()?;
        if connect.is_empty() {
            return None;
        }
        let chroot = format!(
            "/hospital-tests/{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let root = medkeeper_zk::connect(medkeeper_zk::ConnectOptions::new(&connect).unwrap())
            .await
            .unwrap();
        root.ensure_path(&chroot).await.unwrap();
        root.close().await;
        Some(Backend::Zk(format!("{connect}{chroot}")))
    }

    async fn session(&self) -> Arc<dyn Session> {
        let timeout = Duration::from_secs(2);
        match self {
            Backend::Embedded(e, _) => Arc::new(e.connect(SessionOptions { timeout }).await),
            Backend::Zk(c) => Arc::new(
                medkeeper_zk::connect(
                    medkeeper_zk::ConnectOptions::new(c)
                        .unwrap()
                        .with_session_timeout(timeout),
                )
                .await
                .unwrap(),
            ),
        }
    }
}

/// An instance of medkeeper: a session and a hospital over a shared store.
async fn instance(b: &Backend, store: Arc<dyn ClinicalStore>) -> Arc<Hospital> {
    let session = b.session().await;
    let config = HospitalConfig::demo();
    config::load(session.as_ref(), &config).await.unwrap();
    Arc::new(Hospital::new(session, store, config).unwrap())
}

fn mri() -> Pool {
    Pool::Equipment("MRI".into())
}

fn order(patient: &PatientId, priority: Priority) -> NewOrder {
    NewOrder {
        patient: patient.clone(),
        pool: mri(),
        capabilities: vec![],
        priority,
        reason: "suspected lesion".into(),
    }
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(&super::Backend::embedded()).await;
                }
            )*
        }
        mod zk {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(b) = super::Backend::zk().await else {
                        println!("SKIP {}: MEDKEEPER_ZK_CONNECT is not set", stringify!($case));
                        return;
                    };
                    super::$case(&b).await;
                }
            )*
        }
    };
}

both!(
    lifecycle_and_priority_order,
    illegal_transitions_change_nothing,
    capabilities_and_maintenance_are_respected,
    several_dispatchers_never_double_book,
    dispatch_fails_over_when_the_holder_expires,
    reconciler_repairs_a_crash_between_the_writes,
    requeued_no_show_keeps_its_priority_and_order_time,
);

async fn lifecycle_and_priority_order(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let h = instance(b, store.clone()).await;
    let (p1, p2, p3) = (
        PatientId::generate(),
        PatientId::generate(),
        PatientId::generate(),
    );
    let routine = h
        .create_order(order(&p1, Priority::Routine), "dr-a")
        .await
        .unwrap();
    let stat = h
        .create_order(order(&p2, Priority::Stat), "dr-a")
        .await
        .unwrap();
    let urgent = h
        .create_order(order(&p3, Priority::Urgent), "dr-a")
        .await
        .unwrap();
    let view = h.queue_view(&mri()).await.unwrap();
    let ids: Vec<_> = view.iter().map(|r| r.order.clone()).collect();
    assert_eq!(
        ids,
        [stat.id.clone(), urgent.id.clone(), routine.id.clone()]
    );

    // Two MRI units: the two most urgent are called.
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    let made = d.dispatch_once(&guard).await.unwrap();
    let called: HashSet<_> = made.iter().map(|a| a.order.clone()).collect();
    assert_eq!(called, HashSet::from([stat.id.clone(), urgent.id.clone()]));
    assert_eq!(h.order(&stat.id).await.unwrap().state, OrderState::Called);
    let stat_unit = h.order(&stat.id).await.unwrap().assigned.unwrap();
    // The patient sees where to go; the routine patient sees a position.
    let seen = h.patient_view(&p2).await.unwrap();
    assert_eq!(seen[0].called_to.as_deref(), Some(stat_unit.as_str()));
    assert_eq!(seen[0].state, OrderState::Called);
    assert_eq!(h.patient_view(&p1).await.unwrap()[0].position, Some(1));
    // No free unit: nothing more.
    assert!(d.dispatch_once(&guard).await.unwrap().is_empty());

    h.start(&stat.id, "tech-1").await.unwrap();
    h.complete(&stat.id, "tech-1").await.unwrap();
    // The freed unit goes to the routine order.
    let made = d.dispatch_once(&guard).await.unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].order, routine.id);
    assert_eq!(made[0].unit, stat_unit);
    h.report(&stat.id, "no lesion", "dr-b").await.unwrap();
    assert!(h.patient_view(&p2).await.unwrap()[0].results_ready);
    assert_eq!(
        store.result(&stat.id).await.unwrap().unwrap().text,
        "no lesion"
    );
    let history: Vec<_> = store
        .transitions(&stat.id)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.to)
        .collect();
    assert_eq!(
        history,
        [
            OrderState::Queued,
            OrderState::Called,
            OrderState::InProgress,
            OrderState::Completed,
            OrderState::Reported
        ]
    );
    assert!(h.reconcile().await.unwrap().is_clean());
    guard.release().await.unwrap();
    h.session().close().await;
}

async fn illegal_transitions_change_nothing(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let h = instance(b, store.clone()).await;
    let p = PatientId::generate();
    let o = h
        .create_order(order(&p, Priority::Routine), "dr")
        .await
        .unwrap();
    for r in [
        h.start(&o.id, "t").await,
        h.complete(&o.id, "t").await,
        h.report(&o.id, "x", "t").await,
        h.no_show(&o.id, "t").await,
    ] {
        assert!(
            matches!(
                r,
                Err(Error::IllegalTransition {
                    from: OrderState::Queued,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    assert_eq!(store.transitions(&o.id).await.unwrap().len(), 1);
    assert!(store.result(&o.id).await.unwrap().is_none());
    // Reprioritise keeps it queued; cancel takes it out of line.
    h.reprioritise(&o.id, Priority::Stat).await.unwrap();
    assert_eq!(
        h.queue_view(&mri()).await.unwrap()[0].priority,
        Priority::Stat
    );
    h.cancel(&o.id, "dr").await.unwrap();
    assert!(h.queue_view(&mri()).await.unwrap().is_empty());
    assert!(matches!(
        h.cancel(&o.id, "dr").await,
        Err(Error::IllegalTransition {
            from: OrderState::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        h.order(&medkeeper_hospital::OrderId::generate()).await,
        Err(Error::NotFound(_))
    ));
    h.session().close().await;
}

async fn capabilities_and_maintenance_are_respected(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let h = instance(b, store).await;
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    // Every MRI unit in maintenance: nothing is dispatched.
    let units: Vec<String> = h
        .units(&mri())
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    for u in &units {
        h.set_unit_status(&mri(), u, UnitStatus::Maintenance)
            .await
            .unwrap();
    }
    let p = PatientId::generate();
    let mut want = order(&p, Priority::Stat);
    want.capabilities = vec!["contrast".into()];
    let o = h.create_order(want, "dr").await.unwrap();
    assert!(d.dispatch_once(&guard).await.unwrap().is_empty());
    // Back in service: only a unit with contrast takes it.
    for u in &units {
        h.set_unit_status(&mri(), u, UnitStatus::Available)
            .await
            .unwrap();
    }
    let made = d.dispatch_once(&guard).await.unwrap();
    assert_eq!(made.len(), 1);
    let unit = h
        .units(&mri())
        .await
        .unwrap()
        .into_iter()
        .find(|u| u.name == made[0].unit)
        .unwrap();
    assert!(unit.node.capabilities.contains(&"contrast".to_string()));
    assert_eq!(unit.node.order.as_ref(), Some(&o.id));
    // A unit in use cannot go into maintenance by hand.
    assert!(matches!(
        h.set_unit_status(&mri(), &made[0].unit, UnitStatus::Maintenance)
            .await,
        Err(Error::Conflict(_))
    ));
    // Nobody can order what no unit can do.
    let mut impossible = order(&p, Priority::Stat);
    impossible.capabilities = vec!["7T".into()];
    assert!(matches!(
        h.create_order(impossible, "dr").await,
        Err(Error::Invalid(_))
    ));
    guard.release().await.unwrap();
    h.session().close().await;
}

/// Three instances each run the MRI and CT dispatchers while orders arrive and technicians
/// complete exams; afterwards every order was called exactly once, no unit ever held two
/// orders at once, and no patient was in two exams at once (checked on the store's history).
async fn several_dispatchers_never_double_book(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let mut instances = Vec::new();
    for _ in 0..3 {
        instances.push(instance(b, store.clone()).await);
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut runners = Vec::new();
    for (i, h) in instances.iter().enumerate() {
        for pool in [mri(), Pool::Equipment("CT".into())] {
            let d = Dispatcher::new(h.clone(), pool, format!("i{i}"));
            let stop = stop.clone();
            runners.push(tokio::spawn(async move {
                d.run(stop.notified()).await.unwrap();
            }));
        }
    }
    // 8 patients, 24 orders over two kinds; some patients have both kinds at once.
    let patients: Vec<PatientId> = (0..8).map(|_| PatientId::generate()).collect();
    let mut orders = Vec::new();
    for n in 0..24 {
        let p = &patients[n % patients.len()];
        let pool = if n % 3 == 0 {
            Pool::Equipment("CT".into())
        } else {
            mri()
        };
        let prio = Priority::ALL[n % 4];
        let h = &instances[n % 3];
        let o = h
            .create_order(
                NewOrder {
                    patient: p.clone(),
                    pool,
                    capabilities: vec![],
                    priority: prio,
                    reason: String::new(),
                },
                "dr",
            )
            .await
            .unwrap();
        orders.push(o.id);
    }
    // Technicians: complete whatever is called, until every order is completed.
    let h = instances[0].clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for id in &orders {
            match h.order(id).await.unwrap().state {
                OrderState::Called => {
                    h.start(id, "tech").await.unwrap();
                }
                OrderState::InProgress => {
                    h.complete(id, "tech").await.unwrap();
                }
                OrderState::Completed => done += 1,
                OrderState::Queued => {}
                s => panic!("unexpected state {s}"),
            }
        }
        if done == orders.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {} done",
            orders.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.notify_waiters();
    for r in runners {
        tokio::time::timeout(Duration::from_secs(10), r)
            .await
            .unwrap()
            .unwrap();
    }
    // Check the history: occupancy intervals per unit and per patient never overlap.
    let mut unit_spans: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut patient_spans: HashMap<PatientId, Vec<(i64, i64)>> = HashMap::new();
    for id in &orders {
        let o = store.order(id).await.unwrap().unwrap();
        let ts = store.transitions(id).await.unwrap();
        let called: Vec<_> = ts.iter().filter(|t| t.to == OrderState::Called).collect();
        assert_eq!(called.len(), 1, "called exactly once: {ts:?}");
        let start = called[0].at_ms;
        let end = ts
            .iter()
            .find(|t| t.to == OrderState::Completed)
            .unwrap()
            .at_ms;
        let unit = format!("{}/{}", o.pool, called[0].unit.clone().unwrap());
        unit_spans.entry(unit).or_default().push((start, end));
        patient_spans
            .entry(o.patient)
            .or_default()
            .push((start, end));
    }
    for spans in unit_spans.values_mut().chain(patient_spans.values_mut()) {
        spans.sort();
        for w in spans.windows(2) {
            // Completion is recorded before the unit is freed, so the next call comes after.
            assert!(w[0].1 <= w[1].0, "overlap: {w:?}");
        }
    }
    for h in &instances {
        assert!(h.reconcile().await.unwrap().is_clean());
    }
    for h in instances {
        h.session().close().await;
    }
}

async fn dispatch_fails_over_when_the_holder_expires(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let a = instance(b, store.clone()).await;
    let bb = instance(b, store.clone()).await;
    let da = Dispatcher::new(a.clone(), mri(), "a");
    let guard_a = da.lock().unwrap().acquire().await.unwrap();
    let stop = Arc::new(tokio::sync::Notify::new());
    let runner = {
        let d = Dispatcher::new(bb.clone(), mri(), "b");
        let stop = stop.clone();
        tokio::spawn(async move { d.run(stop.notified()).await })
    };
    let p = PatientId::generate();
    let o = bb
        .create_order(order(&p, Priority::Stat), "dr")
        .await
        .unwrap();
    // A holds the lock but does not dispatch: the order waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bb.order(&o.id).await.unwrap().state, OrderState::Queued);
    // A's session ends (crash, or a pause past its timeout): B takes over within the timeout.
    let started = tokio::time::Instant::now();
    match b {
        Backend::Embedded(e, _) => e.expire_session(a.session().session_id()).await,
        Backend::Zk(_) => a.session().close().await,
    }
    loop {
        if bb.order(&o.id).await.unwrap().state == OrderState::Called {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no failover");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("dispatch failover: {:?}", started.elapsed());
    // The stale holder cannot assign any more.
    let p2 = PatientId::generate();
    bb.create_order(order(&p2, Priority::Stat), "dr")
        .await
        .unwrap();
    assert!(da.dispatch_once(&guard_a).await.is_err());
    stop.notify_waiters();
    runner.await.unwrap().unwrap();
    bb.session().close().await;
}

async fn reconciler_repairs_a_crash_between_the_writes(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let h = instance(b, store.clone()).await;
    // 1. Stored, but the process died before the queue item was written.
    let p = PatientId::generate();
    let lost = order(&p, Priority::Urgent).into_queued(medkeeper_hospital::model::now_ms());
    store.insert_order(&lost, "dr").await.unwrap();
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.enqueued, vec![lost.id.clone()]);
    assert_eq!(h.queue_view(&mri()).await.unwrap()[0].order, lost.id);
    assert!(h.reconcile().await.unwrap().is_clean(), "idempotent");

    // 2. The dispatch multi happened; the store write did not: simulate by undoing the store's
    //    record of the call (a fresh store row in `queued`).
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    let made = d.dispatch_once(&guard).await.unwrap();
    assert_eq!(made.len(), 1);
    let unit = made[0].unit.clone();
    let reverted = medkeeper_hospital::Transition {
        order: lost.id.clone(),
        from: Some(OrderState::Called),
        to: OrderState::Queued,
        at_ms: medkeeper_hospital::model::now_ms(),
        actor: "test: crash before the store write".into(),
        unit: None,
    };
    assert!(store.transition(&reverted).await.unwrap());
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.recorded_calls, vec![lost.id.clone()]);
    assert_eq!(h.order(&lost.id).await.unwrap().state, OrderState::Called);

    // 3. Completed in the store, but the process died before freeing the unit.
    let done = medkeeper_hospital::Transition {
        order: lost.id.clone(),
        from: Some(OrderState::Called),
        to: OrderState::Cancelled,
        at_ms: medkeeper_hospital::model::now_ms(),
        actor: "test: crash before freeing".into(),
        unit: None,
    };
    assert!(store.transition(&done).await.unwrap());
    let report = h.reconcile().await.unwrap();
    assert_eq!(report.freed_units, vec![unit.clone()]);
    let (data, _) = h
        .session()
        .get_data(&tree::unit_path(&mri(), &unit))
        .await
        .unwrap();
    let node: UnitNode = tree::from_json("unit", &data).unwrap();
    assert_eq!(node.status, UnitStatus::Available);
    assert!(
        h.session()
            .exists(&tree::active_path(&p))
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.reconcile().await.unwrap().is_clean());
    guard.release().await.unwrap();
    h.session().close().await;
}

/// Issue 5: a requeued no-show went back in line as a new arrival, although the policy's docs
/// promised its original priority and arrival. It keeps its priority, and ageing counts from
/// when it was ordered; its place in line is new (behind orders enqueued before the no-show).
async fn requeued_no_show_keeps_its_priority_and_order_time(b: &Backend) {
    use std::sync::atomic::{AtomicI64, Ordering};
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let session = b.session().await;
    let mut config = HospitalConfig::demo();
    config.no_show_policy = config::NoShowPolicy::Requeue;
    config::load(session.as_ref(), &config).await.unwrap();
    let now = Arc::new(AtomicI64::new(1_700_000_000_000));
    let t = now.clone();
    let clock = medkeeper_recipes::queue::Clock::new(move || {
        std::time::UNIX_EPOCH + Duration::from_millis(t.load(Ordering::SeqCst) as u64)
    });
    let routine_target = config.targets.routine;
    let h = Arc::new(Hospital::with_clock(session, store.clone(), config, clock).unwrap());
    let (p1, p2) = (PatientId::generate(), PatientId::generate());
    let first = h
        .create_order(order(&p1, Priority::Routine), "dr")
        .await
        .unwrap();
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    let made = d.dispatch_once(&guard).await.unwrap();
    assert_eq!(made.len(), 1);
    now.fetch_add(10 * 60_000, Ordering::SeqCst);
    let second = h
        .create_order(order(&p2, Priority::Routine), "dr")
        .await
        .unwrap();

    let back = h.no_show(&first.id, "tech").await.unwrap();
    assert_eq!(back.state, OrderState::Queued);
    assert_eq!(back.priority, Priority::Routine);
    let items = h.queue(&mri()).unwrap().list().await.unwrap();
    assert_eq!(items.len(), 2);
    // Rejoins its class behind the order enqueued before the no-show...
    let rows = h.queue_view(&mri()).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.order.clone()).collect::<Vec<_>>(),
        [second.id.clone(), first.id.clone()]
    );
    // ...with its priority and its order time.
    assert_eq!(items[1].class, Priority::Routine.class());
    assert_eq!(items[1].id.enqueued_at_ms() as i64, first.created_ms);
    assert_eq!(rows[1].waited_s, 600);
    let view = h.patient_view(&p1).await.unwrap();
    assert_eq!(view.len(), 1);
    assert_eq!(view[0].state, OrderState::Queued);
    assert_eq!(view[0].called_to, None);
    // Ageing counts from the order time: one routine target after the first order it is
    // served as urgent, ahead of the second, which is ten minutes short of its target.
    now.store(
        first.created_ms + routine_target.as_millis() as i64,
        Ordering::SeqCst,
    );
    let rows = h.queue_view(&mri()).await.unwrap();
    assert_eq!(rows[0].order, first.id);
    assert_eq!(rows[0].effective_priority, Priority::Urgent);
    assert_eq!(rows[1].effective_priority, Priority::Routine);
    guard.release().await.unwrap();
    h.session().close().await;
}
