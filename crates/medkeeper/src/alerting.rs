//! What `medkeeper serve --alertmanager URL` sends to Alertmanager ([`crate::alertmanager`]):
//! the cluster's alarms, from the leader, and each instance's own health.
//!
//! # The cluster's alarms: from the leader only
//! The leader, which evaluates the alarms, also delivers them ([`deliver_alarms`], for as long
//! as it leads): every active alarm of `/medical/alarms` that is not shelved is one alert, and
//! one that clears (or is shelved) is resolved. When leadership moves, the old leader stops
//! sending without resolving anything and the new one sends the set it finds at once, so an
//! alarm stays firing across a failover. What a failover can cost: an alarm that clears while
//! no leader delivers is not resolved by anyone and expires in Alertmanager at its `endsAt`
//! (4 × the resend interval, about 4 minutes).
//!
//! An alarm is labelled `alertname` (the rule), `severity` (its priority: `high`, `medium`,
//! `low`), `scope`, `pool` (for a pool's alarm), `patient` (the opaque id) and `ward` (for a
//! patient's NEWS2 alarm: route it to the ward's team), `signal`, `hospital` and
//! `source="medkeeper"`;
//! an escalation changes `severity`, so Alertmanager sees a new alert (routed by its new
//! severity) and the old one resolved. Annotations: `summary`, `condition`, `state`,
//! `acknowledged_by`, `alarm_id`, `escalations`. `generatorURL` is the alarm in the API.
//!
//! # Each instance's health: from every instance
//! An instance whose coordination session is down, whose clinical store does not answer, or
//! which sees no leader cannot count on the cluster's alarms — they may be exactly what is not
//! working. Each instance therefore sends these about itself ([`deliver_health`]), labelled
//! with its `instance`: `MedkeeperSessionDown` (not connected for [`HEALTH_FOR`]),
//! `MedkeeperStoreDown` (the store failed its probe for [`HEALTH_FOR`]), `MedkeeperNoLeader`
//! (connected, and nobody stands for leader for [`HEALTH_FOR`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use medkeeper_hospital::alarms::{self, AlarmNode, AlarmState};
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::tree;
use medkeeper_server::ServerState;
use tokio::sync::watch;

use crate::alertmanager::{self, Alert, Options};

/// How long a health condition must hold before its alert is sent.
pub const HEALTH_FOR: Duration = Duration::from_secs(5);
/// How often the health is looked at.
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Where alerts go, and how they link back.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The Alertmanager.
    pub options: Options,
    /// This instance's base URL (`http://127.0.0.1:8080/`), for `generatorURL`.
    pub base_url: String,
    /// The hospital's name (label `hospital`).
    pub hospital: String,
}

/// The alert of an active alarm.
pub fn alert_of(alarm: &AlarmNode, d: &Delivery) -> Alert {
    let mut labels = BTreeMap::from([
        ("alertname".to_string(), alarm.rule.clone()),
        ("severity".to_string(), alarm.priority.to_string()),
        ("scope".to_string(), alarm.scope.clone()),
        ("signal".to_string(), alarm.signal.to_string()),
        ("hospital".to_string(), d.hospital.clone()),
        ("source".to_string(), "medkeeper".to_string()),
    ]);
    match alarm.scope.split_once('.') {
        Some(("equipment" | "department", pool)) => {
            labels.insert("pool".into(), pool.to_string());
        }
        Some(("patient", patient)) => {
            // The opaque id only, as in the tree: no name, no value.
            labels.insert("patient".into(), patient.to_string());
        }
        _ => {}
    }
    if let Some(ward) = &alarm.ward {
        labels.insert("ward".into(), ward.clone());
    }
    let state = match alarm.acknowledged {
        Some(_) => "acknowledged",
        None => "raised",
    };
    let mut annotations = BTreeMap::from([
        ("summary".to_string(), alarm.summary.clone()),
        ("condition".to_string(), alarm.condition.clone()),
        ("state".to_string(), state.to_string()),
        ("alarm_id".to_string(), alarm.id.clone()),
        ("escalations".to_string(), alarm.escalations.to_string()),
    ]);
    if let Some(a) = &alarm.acknowledged {
        annotations.insert("acknowledged_by".into(), a.by.clone());
    }
    Alert {
        labels,
        annotations,
        starts_at_ms: alarm.raised_ms,
        generator_url: format!(
            "{}api/alarms/{}",
            d.base_url,
            percent_encoding::utf8_percent_encode(&alarm.id, percent_encoding::NON_ALPHANUMERIC)
        ),
    }
}

/// The alerts of `hospital`'s active alarms now (shelved ones are not delivered).
async fn alarm_alerts(hospital: &Hospital, d: &Delivery) -> medkeeper_hospital::Result<Vec<Alert>> {
    let now = hospital.now_ms();
    Ok(alarms::active(hospital)
        .await?
        .iter()
        .filter(|a| matches!(a.state(now), AlarmState::Raised | AlarmState::Acknowledged))
        .map(|a| alert_of(a, d))
        .collect())
}

/// Delivers the cluster's alarms for as long as the future is polled (the leader's term; see
/// the module docs). Never returns.
pub async fn deliver_alarms(hospital: Arc<Hospital>, d: Delivery) {
    let (tx, rx) = watch::channel(Vec::new());
    let follow = async {
        loop {
            let mut events = match hospital.alarm_model().await {
                Ok(m) => m.subscribe(),
                Err(e) => {
                    tracing::warn!("alerts: following the alarms: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                match alarm_alerts(&hospital, &d).await {
                    Ok(set) => {
                        tx.send_if_modified(|cur| {
                            let changed = *cur != set;
                            *cur = set;
                            changed
                        });
                    }
                    Err(e) => tracing::warn!("alerts: reading the alarms: {e}"),
                }
                // Woken by a change of the alarms; at least every second for shelvings
                // whose time is up (the evaluator unshelves them, which is a change too).
                tokio::select! {
                    e = events.next() => if e.is_none() { break },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                while events.try_next().is_some() {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        () = follow => {}
        () = alertmanager::run(d.options.clone(), rx, std::future::pending()) => {}
    }
}

/// Delivers this instance's own health alerts (see the module docs) until `shutdown`.
pub async fn deliver_health(
    state: Arc<ServerState>,
    d: Delivery,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let (tx, rx) = watch::channel(Vec::new());
    let instance = state.me().id.clone();
    let watchdog = async {
        let mut since: BTreeMap<&'static str, tokio::time::Instant> = BTreeMap::new();
        loop {
            let connected = state.session_connected();
            let store_up =
                tokio::time::timeout(Duration::from_secs(2), state.store().reconciled_until())
                    .await
                    .is_ok_and(|r| r.is_ok());
            let no_leader = connected && no_leader(&state).await;
            let now = tokio::time::Instant::now();
            let mut set = Vec::new();
            for (name, bad, summary) in [
                (
                    "MedkeeperSessionDown",
                    !connected,
                    "the instance has no connected coordination session",
                ),
                (
                    "MedkeeperStoreDown",
                    !store_up,
                    "the instance's clinical store does not answer",
                ),
                (
                    "MedkeeperNoLeader",
                    no_leader,
                    "nobody leads the cluster: no alarm evaluator, no reconciler",
                ),
            ] {
                if !bad {
                    since.remove(name);
                    continue;
                }
                let start = *since.entry(name).or_insert(now);
                if now - start >= HEALTH_FOR {
                    let started =
                        medkeeper_hospital::model::now_ms() - (now - start).as_millis() as i64;
                    set.push(Alert {
                        labels: BTreeMap::from([
                            ("alertname".to_string(), name.to_string()),
                            ("severity".to_string(), "high".to_string()),
                            ("instance".to_string(), instance.clone()),
                            ("hospital".to_string(), d.hospital.clone()),
                            ("source".to_string(), "medkeeper".to_string()),
                        ]),
                        annotations: BTreeMap::from([(
                            "summary".to_string(),
                            format!("{instance}: {summary}"),
                        )]),
                        starts_at_ms: started,
                        generator_url: format!("{}readyz", d.base_url),
                    });
                }
            }
            tx.send_if_modified(|cur| {
                let changed = *cur != set;
                *cur = set;
                changed
            });
            tokio::time::sleep(HEALTH_EVERY).await;
        }
    };
    tokio::select! {
        () = shutdown => {}
        () = watchdog => {}
        () = alertmanager::run(d.options.clone(), rx, std::future::pending()) => {}
    }
}

/// True if this instance's copy of the leader line is empty.
async fn no_leader(state: &ServerState) -> bool {
    let Ok(h) = state.hospital() else {
        return false;
    };
    match h.cluster_model().await {
        Ok((_, leader)) => {
            leader.settle().await;
            leader.children(tree::LEADER).is_empty()
        }
        Err(_) => false,
    }
}
