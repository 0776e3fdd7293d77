//! Vital signs through the domain on a real coordination backend (the embedded engine, and
//! real ZooKeeper when `MEDKEEPER_ZK_CONNECT` is set) and a real SQLite store: ingestion
//! (cleaned, stored all or nothing, duplicates once), NEWS2 by effective time, the escalation
//! level in the tree (no values), and the NEWS2 alarm raised, raised to high, and cleared —
//! once, however many instances receive data.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use medkeeper_hospital::alarms::{self, AlarmPriority, Evaluator};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::ingest::{EscalationNode, escalation_path};
use medkeeper_hospital::news2::Risk;
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{
    AlarmEventKind, ClinicalStore, ObservationQuery, Patient, PatientSettings, RawMessage,
    SqliteStore,
};
use medkeeper_hospital::vitals::{
    FUTURE_TOLERANCE_MS, RawObservation, RawValue, Revision, VitalCode,
};
use medkeeper_hospital::{Error, PatientId, tree};

type Backend = dyn medkeeper_testkit::Backend;

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        medkeeper_testkit::backend_tests!(
            embedded: ::medkeeper_testkit::Embedded::new()
                .with_session_timeout(::std::time::Duration::from_secs(2)),
            zk: ::medkeeper_testkit::Zk::from_env_in_fresh_chroot("/vitals-tests")
                .await
                .map(|zk| zk.with_session_timeout(::std::time::Duration::from_secs(2)));
            $($case),*
        );
    };
}

both!(
    a_deteriorating_patient_raises_one_news2_alarm,
    duplicates_late_arrivals_and_refusals,
    a_future_reading_neither_gets_in_nor_freezes_the_score,
);

const T0: i64 = 1_800_000_000_000;

/// A hospital (the demo, whose `news2` rule raises at low–medium) on a clock the test moves.
async fn clocked(
    b: &Backend,
    store: Arc<dyn ClinicalStore>,
    now: &Arc<AtomicI64>,
) -> Arc<Hospital> {
    let session = b.session().await;
    let cfg = HospitalConfig::demo();
    config::load(session.as_ref(), &cfg).await.unwrap();
    let t = now.clone();
    let clock = medkeeper_recipes::queue::Clock::new(move || {
        std::time::UNIX_EPOCH + Duration::from_millis(t.load(Ordering::SeqCst) as u64)
    });
    Arc::new(Hospital::with_clock(session, store, cfg, clock).unwrap())
}

async fn patient(store: &dyn ClinicalStore, ward: &str) -> PatientId {
    let id = PatientId::generate();
    store
        .upsert_patient(&Patient {
            id: id.clone(),
            name: "Vital Signs".into(),
            birth_date: None,
        })
        .await
        .unwrap();
    store
        .set_patient_settings(
            &id,
            &PatientSettings {
                ward: Some(ward.into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    id
}

/// One monitor's set of the seven parameters at `at`.
#[allow(clippy::too_many_arguments)]
fn set(
    p: &PatientId,
    at: i64,
    rr: f64,
    spo2: f64,
    o2: bool,
    sbp: f64,
    hr: f64,
    acvpu: &str,
    t: f64,
) -> Vec<RawObservation> {
    let q = |code, v: f64, unit: &str| RawObservation {
        patient: p.clone(),
        code,
        sent_code: String::new(),
        value: RawValue::Quantity(v, unit.into()),
        effective_ms: at,
        source: "monitor-7".into(),
        revision: Revision::Original,
    };
    vec![
        q(VitalCode::RespiratoryRate, rr, "/min"),
        q(VitalCode::Spo2, spo2, "%"),
        RawObservation {
            value: RawValue::Bool(o2),
            ..q(VitalCode::InhaledOxygen, 0.0, "")
        },
        q(VitalCode::SystolicBp, sbp, "mm[Hg]"),
        q(VitalCode::HeartRate, hr, "/min"),
        RawObservation {
            value: RawValue::Text(acvpu.into()),
            ..q(VitalCode::Consciousness, 0.0, "")
        },
        q(VitalCode::Temperature, t, "Cel"),
    ]
}

fn message(at: i64) -> RawMessage {
    RawMessage {
        format: "test".into(),
        source: "monitor-7".into(),
        received_ms: at,
        body: "{}".into(),
    }
}

async fn escalation(h: &Hospital, p: &PatientId) -> EscalationNode {
    let (data, _) = h.session().get_data(&escalation_path(p)).await.unwrap();
    let text = String::from_utf8(data).unwrap();
    assert!(
        !text.contains("score") && !text.contains("value"),
        "values in the tree: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

async fn news2_alarms(h: &Hospital) -> Vec<alarms::AlarmNode> {
    alarms::active(h)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.rule == "news2")
        .collect()
}

async fn a_deteriorating_patient_raises_one_news2_alarm(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let now = Arc::new(AtomicI64::new(T0));
    // Two instances receive data for the same patient.
    let h1 = clocked(b, store.clone(), &now).await;
    let h2 = clocked(b, store.clone(), &now).await;
    let p = patient(store.as_ref(), "5A").await;
    let mut ev = Evaluator::new(h1.clone(), "one");

    // Normal: low, no alarm.
    let r = h1
        .ingest(
            &set(&p, T0, 16.0, 97.0, false, 120.0, 70.0, "A", 37.0),
            &message(T0),
            "monitor",
        )
        .await
        .unwrap();
    assert_eq!(r.scores[0].score.aggregate, 0);
    assert_eq!(escalation(&h1, &p).await.risk, Risk::Low);
    ev.evaluate().await.unwrap();
    assert!(news2_alarms(&h1).await.is_empty());

    // Medium (5): through the second instance.
    let t1 = T0 + 60_000;
    now.store(t1, Ordering::SeqCst);
    let r = h2
        .ingest(
            &set(&p, t1, 22.0, 94.0, false, 105.0, 95.0, "A", 37.0),
            &message(t1),
            "monitor",
        )
        .await
        .unwrap();
    assert_eq!(
        (r.scores[0].score.aggregate, r.scores[0].score.risk),
        (5, Risk::Medium)
    );
    // Written through the other instance: its watch event reaches this one's copy shortly.
    settle_on(&h1, &p, Risk::Medium).await;
    ev.evaluate().await.unwrap();
    let a = news2_alarms(&h1).await;
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].priority, AlarmPriority::Medium);
    assert_eq!(a[0].ward.as_deref(), Some("5A"));
    assert!(
        a[0].summary.contains("decision support, not a diagnosis"),
        "{}",
        a[0].summary
    );

    // High (7+) through the first: the same alarm, now high.
    let t2 = t1 + 60_000;
    now.store(t2, Ordering::SeqCst);
    h1.ingest(
        &set(&p, t2, 26.0, 91.0, true, 95.0, 125.0, "A", 38.5),
        &message(t2),
        "monitor",
    )
    .await
    .unwrap();
    assert_eq!(escalation(&h1, &p).await.risk, Risk::High);
    let r = ev.evaluate().await.unwrap();
    assert_eq!(r.escalated, vec![a[0].id.clone()]);
    let high = news2_alarms(&h1).await;
    assert_eq!((high.len(), high[0].priority), (1, AlarmPriority::High));

    // A nurse acknowledges; the patient recovers: cleared.
    alarms::acknowledge(&h2, &a[0].id, "nurse-5a", "doctor called")
        .await
        .unwrap();
    let t3 = t2 + 60_000;
    now.store(t3, Ordering::SeqCst);
    h2.ingest(
        &set(&p, t3, 16.0, 97.0, false, 120.0, 70.0, "A", 37.0),
        &message(t3),
        "monitor",
    )
    .await
    .unwrap();
    settle_on(&h1, &p, Risk::Low).await;
    ev.evaluate().await.unwrap();
    assert!(news2_alarms(&h1).await.is_empty());
    let q = medkeeper_hospital::store::AlarmQuery {
        alarm: Some(a[0].id.clone()),
        ..Default::default()
    };
    let kinds: Vec<_> = store
        .alarm_events(&q)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            AlarmEventKind::Raised,
            AlarmEventKind::Escalated,
            AlarmEventKind::Acknowledged,
            AlarmEventKind::Cleared
        ]
    );
    h1.session().close().await;
    h2.session().close().await;
}

async fn duplicates_late_arrivals_and_refusals(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let now = Arc::new(AtomicI64::new(T0));
    let h = clocked(b, store.clone(), &now).await;
    let p = patient(store.as_ref(), "5A").await;
    let t1 = T0 + 120_000;
    let first = h
        .ingest(
            &set(&p, t1, 26.0, 91.0, true, 95.0, 125.0, "A", 38.5),
            &message(t1),
            "m",
        )
        .await
        .unwrap();
    assert_eq!(escalation(&h, &p).await.risk, Risk::High);
    // The same message again: the same observations, nothing new.
    let again = h
        .ingest(
            &set(&p, t1, 26.0, 91.0, true, 95.0, 125.0, "A", 38.5),
            &message(t1),
            "m",
        )
        .await
        .unwrap();
    let ids = |r: &medkeeper_hospital::ingest::Ingested| {
        r.observations
            .iter()
            .map(|o| o.id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ids(&again));
    let all = ObservationQuery {
        patient: Some(p.clone()),
        ..Default::default()
    };
    assert_eq!(store.observations(&all).await.unwrap().len(), 7);
    // A late, normal set from before: scored at its own time; the level stays with the newer.
    let late = h
        .ingest(
            &set(&p, T0, 16.0, 97.0, false, 120.0, 70.0, "A", 37.0),
            &message(t1 + 1),
            "m",
        )
        .await
        .unwrap();
    assert_eq!(late.scores[0].at_ms, T0);
    assert_eq!(late.scores[0].score.risk, Risk::Low);
    assert_eq!(
        late.scores.last().unwrap().at_ms,
        t1,
        "the newer moment scored again"
    );
    let e = escalation(&h, &p).await;
    assert_eq!((e.risk, e.at_ms), (Risk::High, t1));
    // One impossible value: the whole message refused, nothing stored.
    let mut bad = set(&p, t1 + 1000, 16.0, 104.0, false, 120.0, 70.0, "A", 37.0);
    bad[0].source = "monitor-8".into();
    match h.ingest(&bad, &message(t1 + 1000), "m").await {
        Err(Error::Invalid(m)) => assert!(m.contains("observation 2: spo2"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.observations(&all).await.unwrap().len(), 14);
    // An artefact is stored, flagged, and not scored.
    let mut odd = set(&p, t1 + 2000, 16.0, 97.0, false, 120.0, 300.0, "A", 37.0);
    odd.truncate(5);
    let r = h.ingest(&odd, &message(t1 + 2000), "m").await.unwrap();
    assert!(r.observations[4].artefact.is_some());
    // An unregistered patient is refused.
    let stranger = PatientId::generate();
    assert!(matches!(
        h.ingest(
            &set(&stranger, t1, 16.0, 97.0, false, 120.0, 70.0, "A", 37.0),
            &message(t1),
            "m"
        )
        .await,
        Err(Error::NotFound(_))
    ));
    assert!(
        h.session()
            .get_data(&format!("{}/{stranger}", tree::ESCALATIONS))
            .await
            .is_err()
    );
    h.session().close().await;
}

/// 2999-12-31T00:00:00Z: a monitor whose clock is wrong.
const YEAR_2999: i64 = 32_503_593_600_000;

/// The probe's finding: one reading dated 2999 froze the patient at "low" — scored at its
/// time from it alone, every real reading after it stale, the escalation level kept at its
/// time — so a deteriorating patient raised no alarm. Refused at ingestion now; and one
/// already stored (by a server whose clock was wrong) is ignored by the score and the level.
async fn a_future_reading_neither_gets_in_nor_freezes_the_score(b: &Backend) {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let now = Arc::new(AtomicI64::new(T0));
    let h = clocked(b, store.clone(), &now).await;
    let p = patient(store.as_ref(), "5A").await;
    let all = ObservationQuery {
        patient: Some(p.clone()),
        ..Default::default()
    };
    let normal = |at| set(&p, at, 16.0, 97.0, false, 120.0, 70.0, "A", 37.0);

    // Refused, whole message, saying why: the far future, just past the tolerance, year 0000.
    for at in [YEAR_2999, T0 + FUTURE_TOLERANCE_MS + 1, -62_167_219_200_000] {
        match h.ingest(&normal(at), &message(T0), "m").await {
            Err(Error::Invalid(m)) => assert!(
                m.contains("observation 1: respiratory_rate: the effective time is"),
                "{m}"
            ),
            other => panic!("{at}: {other:?}"),
        }
    }
    assert!(store.observations(&all).await.unwrap().is_empty());
    // A fast device clock within the tolerance is taken.
    h.ingest(&normal(T0 + FUTURE_TOLERANCE_MS), &message(T0), "m")
        .await
        .unwrap();

    // A store that already holds a 2999 reading, its score and level: taken while this
    // instance's clock read 2999.
    now.store(YEAR_2999, Ordering::SeqCst);
    h.ingest(&normal(YEAR_2999), &message(YEAR_2999), "m")
        .await
        .unwrap();
    assert_eq!(escalation(&h, &p).await.at_ms, YEAR_2999);
    now.store(T0 + 60_000, Ordering::SeqCst);

    // The patient deteriorates: scored, the level raised, the alarm raised.
    let t1 = T0 + 2 * FUTURE_TOLERANCE_MS;
    now.store(t1, Ordering::SeqCst);
    let r = h
        .ingest(
            &set(&p, t1, 30.0, 85.0, false, 85.0, 140.0, "A", 39.5),
            &message(t1),
            "m",
        )
        .await
        .unwrap();
    assert_eq!(
        r.scores.iter().map(|s| s.at_ms).collect::<Vec<_>>(),
        [t1],
        "the 2999 moment is not rescored"
    );
    assert_eq!(r.scores[0].score.risk, Risk::High);
    let e = escalation(&h, &p).await;
    assert_eq!((e.risk, e.at_ms), (Risk::High, t1));
    let n = h.news2_now(&p).await.unwrap().unwrap();
    assert_eq!(n.at_ms, t1, "scored now, not at the 2999 reading");
    assert!(n.score.complete(), "{:?}", n.score.missing);
    assert_eq!(n.score.risk, Risk::High);
    let mut ev = Evaluator::new(h.clone(), "one");
    ev.evaluate().await.unwrap();
    let a = news2_alarms(&h).await;
    assert_eq!((a.len(), a[0].priority), (1, AlarmPriority::High));
    h.session().close().await;
}

/// Waits until `h`'s copy of the escalations shows `risk` for `p` (a write of another
/// instance's session arrives by a watch event).
async fn settle_on(h: &Hospital, p: &PatientId, risk: Risk) {
    let model = h.escalation_model().await.unwrap();
    for _ in 0..200 {
        model.settle().await;
        if let Some(n) = model.get(&escalation_path(p))
            && serde_json::from_slice::<EscalationNode>(&n.data)
                .unwrap()
                .risk
                == risk
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the escalation of {p} never showed {risk}");
}
