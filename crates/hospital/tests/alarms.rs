//! Alarms end to end on a real coordination backend (the embedded engine, and real ZooKeeper
//! when `MEDKEEPER_ZK_CONNECT` is set) and a real SQLite store, on a clock the tests move:
//! every signal raises and clears, latching, escalation, shelving, hysteresis against a
//! flapping signal, and two evaluators that never duplicate an alarm. Beside them, on the same
//! figures, the leader's sampler of the charts' history ([`medkeeper_hospital::history`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use medkeeper_hospital::alarms::{
    self, AlarmNode, AlarmPriority, AlarmRule, AlarmState, Evaluator, Signal,
};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::Dispatcher;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{
    AlarmEventKind, AlarmQuery, AuditQuery, ClinicalStore, SqliteStore,
};
use medkeeper_hospital::{Error, PatientId, Pool, Priority, UnitStatus, tree};
use medkeeper_recipes::{Election, Leadership, LockGuard, Member, Membership};

type Backend = dyn medkeeper_testkit::Backend;

/// A test `embedded::<case>` and a test `zk::<case>` for each case.
macro_rules! both {
    ($($case:ident),* $(,)?) => {
        medkeeper_testkit::backend_tests!(
            embedded: ::medkeeper_testkit::Embedded::new()
                .with_session_timeout(::std::time::Duration::from_secs(2)),
            zk: ::medkeeper_testkit::Zk::from_env_in_fresh_chroot("/alarm-tests")
                .await
                .map(|zk| zk.with_session_timeout(::std::time::Duration::from_secs(2)));
            $($case),*
        );
    };
}

both!(
    every_signal_latches_escalates_and_clears_once_acknowledged,
    a_value_resting_on_the_threshold_gives_one_alarm,
    an_alarm_on_a_long_pool_name_is_acknowledged,
    queue_and_wait_alarms_raise_and_clear,
    utilisation_and_out_of_service_alarms_raise_and_clear,
    dispatch_and_cluster_alarms_raise_and_clear,
    a_latching_alarm_stays_until_acknowledged,
    an_unacknowledged_alarm_escalates_and_a_shelved_one_waits,
    a_flapping_signal_gives_one_alarm,
    two_evaluators_never_duplicate_an_alarm,
    a_removed_rule_clears_its_alarm,
    the_history_has_one_sample_per_pool_and_minute,
);

const T0: i64 = 1_700_000_000_000;

/// The test's clock: ms since the epoch, moved by hand.
struct Clock(Arc<AtomicI64>);

impl Clock {
    fn advance(&self, d: Duration) {
        self.0.fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }
}

/// The demo hospital with `rules` as its only alarms.
fn config(rules: Vec<AlarmRule>) -> HospitalConfig {
    let mut c = HospitalConfig::demo();
    c.alarms = rules;
    c
}

/// A rule on the MRI pool with no delays, medium priority.
fn rule(name: &str, signal: Signal, raise: f64, clear: f64) -> AlarmRule {
    AlarmRule {
        name: name.into(),
        signal,
        pool: signal.per_pool().then(mri),
        order_priority: None,
        raise,
        clear,
        raise_for: Duration::ZERO,
        clear_for: Duration::ZERO,
        priority: AlarmPriority::Medium,
        escalate_after: None,
        latching: false,
        limit: Duration::ZERO,
    }
}

/// A hospital on a fresh session with `config`, over `store`, on `clock` (a new clock at T0
/// if `None`).
async fn clocked(
    b: &Backend,
    store: Arc<dyn ClinicalStore>,
    config: HospitalConfig,
    clock: Option<&Clock>,
) -> (Arc<Hospital>, Clock) {
    let session = b.session().await;
    config::load(session.as_ref(), &config).await.unwrap();
    let now = clock.map_or_else(|| Arc::new(AtomicI64::new(T0)), |c| c.0.clone());
    let t = now.clone();
    let clock = medkeeper_recipes::queue::Clock::new(move || {
        std::time::UNIX_EPOCH + Duration::from_millis(t.load(Ordering::SeqCst) as u64)
    });
    let h = Hospital::with_clock(session, store, config, clock).unwrap();
    (Arc::new(h), Clock(now))
}

async fn setup(b: &Backend, rules: Vec<AlarmRule>) -> (Arc<Hospital>, Clock, Evaluator) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let (h, clock) = clocked(b, store, config(rules), None).await;
    let ev = Evaluator::new(h.clone(), "test");
    (h, clock, ev)
}

fn mri() -> Pool {
    Pool::Equipment("MRI".into())
}

fn ct() -> Pool {
    Pool::Equipment("CT".into())
}

async fn order(h: &Hospital, pool: Pool, priority: Priority) -> medkeeper_hospital::Order {
    h.create_order(
        NewOrder {
            patient: PatientId::generate(),
            pool,
            capabilities: vec![],
            priority,
            reason: "r".into(),
        },
        "dr-a",
    )
    .await
    .unwrap()
}

/// The active alarms' (rule, scope) pairs.
async fn active(h: &Hospital) -> Vec<(String, String)> {
    alarms::active(h)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.rule, a.scope))
        .collect()
}

async fn only(h: &Hospital) -> AlarmNode {
    let mut all = alarms::active(h).await.unwrap();
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn on_mri(rule: &str) -> (String, String) {
    (rule.to_string(), "equipment.MRI".to_string())
}

/// The kinds of an alarm's stored events, in order.
async fn history(h: &Hospital, id: &str) -> Vec<AlarmEventKind> {
    let q = AlarmQuery {
        alarm: Some(id.into()),
        ..Default::default()
    };
    let events = h.store().alarm_events(&q).await.unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq as usize, i, "a gap or a duplicate in {events:#?}");
    }
    events.into_iter().map(|e| e.kind).collect()
}

async fn queue_and_wait_alarms_raise_and_clear(b: &Backend) {
    let mut stat_wait = rule("stat-wait", Signal::OldestWait, 100.0, 50.0);
    stat_wait.order_priority = Some(Priority::Stat);
    stat_wait.priority = AlarmPriority::High;
    let (h, clock, mut ev) = setup(
        b,
        vec![rule("queue", Signal::QueueLength, 3.0, 1.0), stat_wait],
    )
    .await;
    assert!(ev.evaluate().await.unwrap().is_empty());
    let mut orders = Vec::new();
    for _ in 0..3 {
        orders.push(order(&h, mri(), Priority::Routine).await);
    }
    let r = ev.evaluate().await.unwrap();
    assert_eq!(r.raised.len(), 1, "{r:?}");
    assert_eq!(active(&h).await, [on_mri("queue")]);
    let a = only(&h).await;
    assert_eq!(a.value, 3.0);
    assert_eq!(a.summary, "queue_length in equipment MRI: 3 waiting");
    assert_eq!(a.state(h.now_ms()), AlarmState::Raised);

    // A stat order: its wait is measured against the stat target (10 min).
    let stat = order(&h, mri(), Priority::Stat).await;
    clock.advance(Duration::from_secs(9 * 60));
    ev.evaluate().await.unwrap();
    assert_eq!(active(&h).await.len(), 1);
    clock.advance(Duration::from_secs(60));
    ev.evaluate().await.unwrap();
    // High priority first.
    assert_eq!(active(&h).await, [on_mri("stat-wait"), on_mri("queue")]);

    // Hysteresis: the queue back at 2 is above clear (1): still raised.
    h.cancel(&orders[0].id, "dr-a").await.unwrap();
    h.cancel(&orders[1].id, "dr-a").await.unwrap();
    ev.evaluate().await.unwrap();
    assert_eq!(active(&h).await.len(), 2);
    h.cancel(&orders[2].id, "dr-a").await.unwrap();
    let r = ev.evaluate().await.unwrap();
    assert_eq!(r.cleared, vec![a.id.clone()], "{r:?}");
    assert_eq!(active(&h).await, [on_mri("stat-wait")]);
    assert_eq!(
        history(&h, &a.id).await,
        [AlarmEventKind::Raised, AlarmEventKind::Cleared]
    );
    h.cancel(&stat.id, "dr-a").await.unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    // Every transition is audited, as the evaluator.
    let audit = h.store().audit(&AuditQuery::default()).await.unwrap();
    let alarm_audit: Vec<_> = audit
        .iter()
        .filter(|r| r.action.starts_with("alarm."))
        .collect();
    assert_eq!(alarm_audit.len(), 4, "{alarm_audit:#?}");
    assert!(
        alarm_audit
            .iter()
            .all(|r| r.actor == "evaluator:test" && r.role == "system")
    );
    h.session().close().await;
}

async fn utilisation_and_out_of_service_alarms_raise_and_clear(b: &Backend) {
    let mut out = rule("out", Signal::UnitsUnavailable, 1.0, 0.0);
    out.pool = Some(ct());
    out.limit = Duration::from_secs(30 * 60);
    let mut down = rule("down", Signal::UnitsInService, 0.0, 1.0);
    down.pool = Some(Pool::Equipment("XRAY".into()));
    let (h, clock, mut ev) = setup(
        b,
        vec![rule("busy", Signal::Utilisation, 100.0, 50.0), out, down],
    )
    .await;
    // Two MRI orders called: both units in use.
    let o1 = order(&h, mri(), Priority::Routine).await;
    order(&h, mri(), Priority::Routine).await;
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    assert_eq!(d.dispatch_once(&guard).await.unwrap().len(), 2);
    ev.evaluate().await.unwrap();
    assert_eq!(active(&h).await, [on_mri("busy")]);
    // One done: 50 % is the clear threshold.
    h.start(&o1.id, "tech").await.unwrap();
    h.complete(&o1.id, "tech").await.unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());

    // A CT unit in maintenance counts once it has been out for 30 minutes.
    h.set_unit_status(&ct(), "CT-3", UnitStatus::Maintenance)
        .await
        .unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    clock.advance(Duration::from_secs(30 * 60));
    ev.evaluate().await.unwrap();
    assert_eq!(
        active(&h).await,
        [("out".to_string(), "equipment.CT".to_string())]
    );
    h.set_unit_status(&ct(), "CT-3", UnitStatus::Available)
        .await
        .unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());

    // The only X-ray offline: nothing in service.
    let xray = Pool::Equipment("XRAY".into());
    h.set_unit_status(&xray, "XR-1", UnitStatus::Offline)
        .await
        .unwrap();
    ev.evaluate().await.unwrap();
    assert_eq!(
        active(&h).await,
        [("down".to_string(), "equipment.XRAY".to_string())]
    );
    h.set_unit_status(&xray, "XR-1", UnitStatus::Available)
        .await
        .unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    guard.release().await.unwrap();
    h.session().close().await;
}

async fn dispatch_and_cluster_alarms_raise_and_clear(b: &Backend) {
    let (h, _clock, mut ev) = setup(
        b,
        vec![
            rule("no-dispatcher", Signal::Dispatchers, 0.0, 1.0),
            rule("members", Signal::Members, 1.0, 2.0),
            rule("leaders", Signal::LeaderCandidates, 0.0, 1.0),
        ],
    )
    .await;
    ev.evaluate().await.unwrap();
    assert_eq!(
        active(&h).await,
        [
            ("leaders".into(), "cluster".into()),
            ("members".into(), "cluster".into()),
            on_mri("no-dispatcher"),
        ]
    );
    // A dispatcher holds the MRI lock; two members join; one stands for leader.
    let d = Dispatcher::new(h.clone(), mri(), "test");
    let guard = d.lock().unwrap().acquire().await.unwrap();
    let group = Membership::new(h.session().clone(), tree::MEMBERS).unwrap();
    let m1 = group.join("i-1", vec![]).await.unwrap();
    let m2 = group.join("i-2", vec![]).await.unwrap();
    let election = Election::new(h.session().clone(), tree::LEADER, "i-1".to_string()).unwrap();
    let leading = election.campaign().await.unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty(), "{:?}", active(&h).await);
    // The dispatcher lets go, a member leaves: raised again (new episodes).
    guard.release().await.unwrap();
    m2.leave().await.unwrap();
    ev.evaluate().await.unwrap();
    assert_eq!(
        active(&h).await,
        [
            ("members".into(), "cluster".into()),
            on_mri("no-dispatcher")
        ]
    );
    let episodes = h
        .store()
        .alarm_events(&AlarmQuery::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.rule == "members" && e.kind == AlarmEventKind::Raised)
        .count();
    assert_eq!(episodes, 2);
    leading.resign().await.unwrap();
    m1.leave().await.unwrap();
    h.session().close().await;
}

async fn a_latching_alarm_stays_until_acknowledged(b: &Backend) {
    let mut r = rule("latch", Signal::QueueLength, 1.0, 0.0);
    r.latching = true;
    let (h, _clock, mut ev) = setup(b, vec![r]).await;
    let o = order(&h, mri(), Priority::Routine).await;
    ev.evaluate().await.unwrap();
    let a = only(&h).await;
    h.cancel(&o.id, "dr-a").await.unwrap();
    ev.evaluate().await.unwrap();
    assert_eq!(
        only(&h).await.id,
        a.id,
        "latched: stays after the condition cleared"
    );
    let acked = alarms::acknowledge(&h, &a.id, "nurse-1", "seen, queue handled")
        .await
        .unwrap();
    assert_eq!(acked.state(h.now_ms()), AlarmState::Acknowledged);
    assert_eq!(acked.acknowledged.as_ref().unwrap().by, "nurse-1");
    // The note is in the clinical store, not in the tree.
    let (data, _) = h
        .session()
        .get_data(&format!("{}/{}", tree::ALARMS, a.node_name()))
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&data).contains("queue handled"));
    let with = alarms::with_notes(&h, acked.clone()).await.unwrap();
    assert_eq!(with.acknowledged.unwrap().note, "seen, queue handled");
    // Acknowledging again changes nothing.
    let again = alarms::acknowledge(&h, &a.id, "nurse-2", "").await.unwrap();
    assert_eq!(again.acknowledged.unwrap().by, "nurse-1");
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    assert_eq!(
        history(&h, &a.id).await,
        [
            AlarmEventKind::Raised,
            AlarmEventKind::Acknowledged,
            AlarmEventKind::Cleared
        ]
    );
    // A cleared alarm can no longer be acknowledged; nor can a made-up one.
    assert!(matches!(
        alarms::acknowledge(&h, &a.id, "nurse-1", "").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        alarms::acknowledge(&h, "nope", "nurse-1", "").await,
        Err(Error::Invalid(_))
    ));
    h.session().close().await;
}

async fn an_unacknowledged_alarm_escalates_and_a_shelved_one_waits(b: &Backend) {
    let mut r = rule("esc", Signal::QueueLength, 1.0, 0.0);
    r.priority = AlarmPriority::Low;
    r.escalate_after = Some(Duration::from_secs(300));
    let (h, clock, mut ev) = setup(b, vec![r]).await;
    order(&h, mri(), Priority::Routine).await;
    ev.evaluate().await.unwrap();
    let a = only(&h).await;
    assert_eq!(a.priority, AlarmPriority::Low);
    clock.advance(Duration::from_secs(299));
    assert!(ev.evaluate().await.unwrap().escalated.is_empty());
    clock.advance(Duration::from_secs(1));
    assert_eq!(ev.evaluate().await.unwrap().escalated, vec![a.id.clone()]);
    assert_eq!(only(&h).await.priority, AlarmPriority::Medium);
    // Shelved for 10 minutes: no escalation meanwhile; unshelved when the time is up.
    let shelved = alarms::shelve(
        &h,
        &a.id,
        "nurse-1",
        Duration::from_secs(600),
        "scanner service",
    )
    .await
    .unwrap();
    assert_eq!(shelved.state(h.now_ms()), AlarmState::Shelved);
    clock.advance(Duration::from_secs(599));
    assert!(ev.evaluate().await.unwrap().is_empty());
    clock.advance(Duration::from_secs(1));
    let r = ev.evaluate().await.unwrap();
    assert_eq!(r.unshelved, vec![a.id.clone()]);
    assert!(
        r.escalated.is_empty(),
        "staff get the full delay again: {r:?}"
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(ev.evaluate().await.unwrap().escalated, vec![a.id.clone()]);
    assert_eq!(only(&h).await.priority, AlarmPriority::High);
    // Acknowledged: no further escalation.
    alarms::acknowledge(&h, &a.id, "nurse-1", "").await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(ev.evaluate().await.unwrap().is_empty());
    assert_eq!(
        history(&h, &a.id).await,
        [
            AlarmEventKind::Raised,
            AlarmEventKind::Escalated,
            AlarmEventKind::Shelved,
            AlarmEventKind::Unshelved,
            AlarmEventKind::Escalated,
            AlarmEventKind::Acknowledged
        ]
    );
    // Bad shelvings are refused.
    assert!(matches!(
        alarms::shelve(&h, &a.id, "n", Duration::ZERO, "x").await,
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        alarms::shelve(&h, &a.id, "n", Duration::from_secs(60), " ").await,
        Err(Error::Invalid(_))
    ));
    // At most MAX_SHELVINGS shelvings: the node keeps its whole history.
    for _ in 1..alarms::MAX_SHELVINGS {
        alarms::shelve(&h, &a.id, "n", Duration::from_secs(60), "again")
            .await
            .unwrap();
    }
    assert!(matches!(
        alarms::shelve(&h, &a.id, "n", Duration::from_secs(60), "once more").await,
        Err(Error::Conflict(_))
    ));
    h.session().close().await;
}

async fn a_flapping_signal_gives_one_alarm(b: &Backend) {
    // Raised at 3 waiting held 30 s, cleared at 1 held 60 s.
    let mut r = rule("flap", Signal::QueueLength, 3.0, 1.0);
    r.raise_for = Duration::from_secs(30);
    r.clear_for = Duration::from_secs(60);
    let (h, clock, mut ev) = setup(b, vec![r]).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(order(&h, mri(), Priority::Routine).await);
    }
    ev.evaluate().await.unwrap();
    // Not for long enough yet.
    clock.advance(Duration::from_secs(29));
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    // The value flaps between 2 and 3 and, briefly, 1: one alarm throughout.
    clock.advance(Duration::from_secs(1));
    ev.evaluate().await.unwrap();
    let a = only(&h).await;
    for round in 0..6 {
        let o = waiting.pop().unwrap();
        h.cancel(&o.id, "dr-a").await.unwrap();
        if round % 2 == 0 {
            let o2 = waiting.pop().unwrap();
            h.cancel(&o2.id, "dr-a").await.unwrap();
            clock.advance(Duration::from_secs(30));
            ev.evaluate().await.unwrap();
            waiting.push(order(&h, mri(), Priority::Routine).await);
        }
        clock.advance(Duration::from_secs(20));
        ev.evaluate().await.unwrap();
        waiting.push(order(&h, mri(), Priority::Routine).await);
        clock.advance(Duration::from_secs(20));
        ev.evaluate().await.unwrap();
        assert_eq!(only(&h).await.id, a.id, "round {round}");
    }
    // Down to 1 for a full minute: cleared, once.
    while waiting.len() > 1 {
        let o = waiting.pop().unwrap();
        h.cancel(&o.id, "dr-a").await.unwrap();
    }
    ev.evaluate().await.unwrap();
    clock.advance(Duration::from_secs(60));
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    let all = h
        .store()
        .alarm_events(&AlarmQuery::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 2, "one raise and one clear: {all:#?}");
    h.session().close().await;
}

async fn two_evaluators_never_duplicate_an_alarm(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let rules = vec![rule("queue", Signal::QueueLength, 1.0, 0.0)];
    let (h1, clock) = clocked(b, store.clone(), config(rules.clone()), None).await;
    let (h2, _) = clocked(b, store.clone(), config(rules), Some(&clock)).await;
    let o = order(&h1, mri(), Priority::Routine).await;
    // Both evaluate the same condition (as an old leader that has not yet noticed it lost its
    // session would): one alarm.
    let (mut e1, mut e2) = (
        Evaluator::new(h1.clone(), "one"),
        Evaluator::new(h2.clone(), "two"),
    );
    let (r1, r2) = tokio::join!(e1.evaluate(), e2.evaluate());
    let (r1, r2) = (r1.unwrap(), r2.unwrap());
    assert_eq!(r1.raised.len() + r2.raised.len(), 1, "{r1:?} {r2:?}");
    let a = only(&h1).await;
    // The first evaluator's session ends; the second carries on and clears it.
    h1.session().close().await;
    assert_eq!(only(&h2).await.id, a.id);
    h2.cancel(&o.id, "dr-a").await.unwrap();
    let r = e2.evaluate().await.unwrap();
    assert_eq!(r.cleared, vec![a.id.clone()]);
    assert_eq!(
        history(&h2, &a.id).await,
        [AlarmEventKind::Raised, AlarmEventKind::Cleared]
    );
    h2.session().close().await;
}

async fn a_removed_rule_clears_its_alarm(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let (h1, clock) = clocked(
        b,
        store.clone(),
        config(vec![rule("queue", Signal::QueueLength, 1.0, 0.0)]),
        None,
    )
    .await;
    order(&h1, mri(), Priority::Routine).await;
    Evaluator::new(h1.clone(), "one").evaluate().await.unwrap();
    let a = only(&h1).await;
    h1.session().close().await;
    // A new leader with a file without the rule.
    let (h2, _) = clocked(b, store, config(vec![]), Some(&clock)).await;
    let mut ev = Evaluator::new(h2.clone(), "two");
    // Not at once: an instance with an older file may be leading for a moment.
    assert!(ev.evaluate().await.unwrap().cleared.is_empty());
    clock.advance(Duration::from_millis(
        medkeeper_hospital::alarms::ORPHAN_GRACE_MS as u64,
    ));
    let r = ev.evaluate().await.unwrap();
    assert_eq!(r.cleared, vec![a.id.clone()]);
    assert!(active(&h2).await.is_empty());
    h2.session().close().await;
}

/// What holds a falling signal's value up: the MRI dispatch lock, a member, a leader candidate.
#[derive(Default)]
struct Held {
    lock: Option<LockGuard>,
    member: Option<Member>,
    leading: Option<Leadership>,
    order: Option<medkeeper_hospital::OrderId>,
}

/// Puts `signal`'s condition on (the alarm's) or off, in the MRI pool or the cluster.
async fn condition(h: &Arc<Hospital>, clock: &Clock, signal: Signal, on: bool, held: &mut Held) {
    let both_units = |status: UnitStatus| async move {
        for u in ["MRI-1", "MRI-2"] {
            h.set_unit_status(&mri(), u, status).await.unwrap();
        }
    };
    match signal {
        // Nothing in service counts as 100 % utilised and as no unit in service.
        Signal::Utilisation | Signal::UnitsInService => {
            both_units(if on {
                UnitStatus::Maintenance
            } else {
                UnitStatus::Available
            })
            .await
        }
        Signal::UnitsUnavailable => {
            let status = if on {
                UnitStatus::Offline
            } else {
                UnitStatus::Available
            };
            h.set_unit_status(&mri(), "MRI-1", status).await.unwrap();
        }
        Signal::QueueLength | Signal::OldestWait => {
            if on {
                held.order = Some(order(h, mri(), Priority::Stat).await.id);
                if signal == Signal::OldestWait {
                    clock.advance(Duration::from_secs(10 * 60));
                }
            } else if let Some(o) = held.order.take() {
                h.cancel(&o, "dr-a").await.unwrap();
            }
        }
        Signal::Dispatchers => {
            if on {
                held.lock.take().unwrap().release().await.unwrap();
            } else {
                let d = Dispatcher::new(h.clone(), mri(), "test");
                held.lock = Some(d.lock().unwrap().acquire().await.unwrap());
            }
        }
        Signal::Members => {
            if on {
                held.member.take().unwrap().leave().await.unwrap();
            } else {
                let group = Membership::new(h.session().clone(), tree::MEMBERS).unwrap();
                held.member = Some(group.join("i-1", vec![]).await.unwrap());
            }
        }
        Signal::LeaderCandidates => {
            if on {
                held.leading.take().unwrap().resign().await.unwrap();
            } else {
                let e =
                    Election::new(h.session().clone(), tree::LEADER, "i-1".to_string()).unwrap();
                held.leading = Some(e.campaign().await.unwrap());
            }
        }
        Signal::News2 => unreachable!("driven by vital signs: tests/vitals.rs"),
    }
}

/// Every signal, as a latching, escalating rule: raised when its condition comes, escalated
/// while unacknowledged, still there once the condition is gone, cleared once acknowledged —
/// its history exactly that, in order.
async fn every_signal_latches_escalates_and_clears_once_acknowledged(b: &Backend) {
    // news2 is driven by vital signs: tests/vitals.rs raises, escalates and clears it.
    for signal in Signal::ALL.into_iter().filter(|s| *s != Signal::News2) {
        // Raise and clear thresholds that the on and off conditions cross.
        let (raise, clear) = match signal {
            Signal::Utilisation | Signal::OldestWait => (100.0, 0.0),
            Signal::QueueLength | Signal::UnitsUnavailable => (1.0, 0.0),
            Signal::UnitsInService => (0.0, 2.0),
            Signal::Dispatchers | Signal::Members | Signal::LeaderCandidates => (0.0, 1.0),
            Signal::News2 => unreachable!("filtered out above"),
        };
        let mut r = rule("r", signal, raise, clear);
        r.latching = true;
        r.priority = AlarmPriority::Low;
        r.escalate_after = Some(Duration::from_secs(60));
        let (h, clock, mut ev) = setup(b, vec![r]).await;
        let mut held = Held::default();
        condition(&h, &clock, signal, false, &mut held).await;
        ev.evaluate().await.unwrap();
        assert!(active(&h).await.is_empty(), "{signal}: raised while off");

        condition(&h, &clock, signal, true, &mut held).await;
        ev.evaluate().await.unwrap();
        let a = only(&h).await;
        assert_eq!(a.priority, AlarmPriority::Low, "{signal}");
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            ev.evaluate().await.unwrap().escalated,
            vec![a.id.clone()],
            "{signal}"
        );
        assert_eq!(only(&h).await.priority, AlarmPriority::Medium, "{signal}");

        condition(&h, &clock, signal, false, &mut held).await;
        ev.evaluate().await.unwrap();
        assert_eq!(only(&h).await.id, a.id, "{signal}: latched");
        alarms::acknowledge(&h, &a.id, "nurse-1", "").await.unwrap();
        assert_eq!(
            ev.evaluate().await.unwrap().cleared,
            vec![a.id.clone()],
            "{signal}"
        );
        assert!(active(&h).await.is_empty(), "{signal}");
        assert_eq!(
            history(&h, &a.id).await,
            [
                AlarmEventKind::Raised,
                AlarmEventKind::Escalated,
                AlarmEventKind::Acknowledged,
                AlarmEventKind::Cleared
            ],
            "{signal}"
        );
        h.session().close().await;
    }
}

/// A rule without a separate clear threshold (clear = raise) and a value that rests exactly on
/// it: one alarm, not one per `for`.
async fn a_value_resting_on_the_threshold_gives_one_alarm(b: &Backend) {
    let mut r = rule("down", Signal::UnitsInService, 0.0, 0.0);
    r.raise_for = Duration::from_secs(10);
    let (h, clock, mut ev) = setup(b, vec![r]).await;
    for u in ["MRI-1", "MRI-2"] {
        h.set_unit_status(&mri(), u, UnitStatus::Offline)
            .await
            .unwrap();
    }
    for _ in 0..60 {
        ev.evaluate().await.unwrap();
        clock.advance(Duration::from_secs(1));
    }
    let events = h
        .store()
        .alarm_events(&AlarmQuery::default())
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:#?}");
    h.set_unit_status(&mri(), "MRI-1", UnitStatus::Available)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    ev.evaluate().await.unwrap();
    ev.evaluate().await.unwrap();
    assert!(active(&h).await.is_empty());
    h.session().close().await;
}

/// A pool name of 64 characters makes a scope longer than a name: its alarms still take an
/// acknowledgement.
async fn an_alarm_on_a_long_pool_name_is_acknowledged(b: &Backend) {
    let long = "K".repeat(64);
    let text = format!(
        "name = \"Long\"\n[[equipment]]\nkind = \"{long}\"\nexam_duration = \"10m\"\n\
         units = [{{ name = \"u-1\" }}]\n[[alarm]]\nname = \"q\"\nsignal = \"queue_length\"\n\
         raise = 1\nclear = 0\n"
    );
    let cfg = HospitalConfig::parse(&text).unwrap();
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let (h, _clock) = clocked(b, store, cfg, None).await;
    order(&h, Pool::Equipment(long.clone()), Priority::Routine).await;
    Evaluator::new(h.clone(), "t").evaluate().await.unwrap();
    let a = only(&h).await;
    assert_eq!(a.scope, format!("equipment.{long}"));
    alarms::acknowledge(&h, &a.id, "nurse-1", "").await.unwrap();
    h.session().close().await;
}

/// Issue 16: the leader's sampler writes one row per pool per minute, from the read models;
/// sampling again within the minute — the same leader, or a new one after a failover, on
/// another session — adds nothing; the next minute gets its own rows; old rows are pruned.
async fn the_history_has_one_sample_per_pool_and_minute(b: &Backend) {
    use medkeeper_hospital::history;
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let (h, clock) = clocked(b, store.clone(), config(vec![]), None).await;
    let pools = h.config().pools.len();
    h.set_unit_status(&mri(), "MRI-2", UnitStatus::Maintenance)
        .await
        .unwrap();
    order(&h, mri(), Priority::Routine).await;
    clock.advance(Duration::from_secs(30));
    order(&h, mri(), Priority::Routine).await;
    order(&h, mri(), Priority::Stat).await;
    clock.advance(Duration::from_secs(5));
    let minute = history::SAMPLE_EVERY;
    assert_eq!(history::sample_once(&h, minute).await.unwrap(), pools);
    assert_eq!(history::sample_once(&h, minute).await.unwrap(), 0);
    // Another leader, later in the same minute.
    let (other, _) = clocked(b, store.clone(), config(vec![]), Some(&clock)).await;
    let start = T0 - T0 % 60_000;
    let in_minute = 60_000 - (T0 + 35_000 - start);
    clock.advance(Duration::from_millis(in_minute as u64 - 1));
    assert_eq!(history::sample_once(&other, minute).await.unwrap(), 0);
    let rows = store.pool_samples(0, i64::MAX, None).await.unwrap();
    assert_eq!(rows.len(), pools, "{rows:#?}");
    let m = rows.iter().find(|r| r.pool == mri()).unwrap();
    assert_eq!(m.at_ms, start);
    assert_eq!((m.units, m.in_use, m.unavailable), (2, 0, 1));
    assert_eq!(m.waiting.routine.queued, 2);
    assert_eq!(m.waiting.routine.oldest_wait_ms, 35_000);
    assert_eq!(m.waiting.stat.queued, 1);
    assert_eq!(m.waiting.stat.oldest_wait_ms, 5_000);
    assert_eq!(m.waiting.urgent.queued, 0);
    // The next minute.
    clock.advance(Duration::from_millis(1));
    assert_eq!(history::sample_once(&other, minute).await.unwrap(), pools);
    let rows = store
        .pool_samples(start + 60_000, i64::MAX, Some(&mri()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].at_ms, start + 60_000);
    assert_eq!(rows[0].waiting.routine.oldest_wait_ms, start + 60_000 - T0);
    // A week later both minutes are pruned.
    clock.advance(history::KEEP + Duration::from_secs(61));
    assert_eq!(history::prune(&h).await.unwrap(), 2 * pools as u64);
    // The targets the charts draw against are the hospital file's.
    assert_eq!(
        history::targets_ms(&h)[0],
        (Priority::Stat, h.config().targets.stat.as_millis() as i64)
    );
}
