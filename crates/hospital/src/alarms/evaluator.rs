//! The alarm evaluator: one per cluster (the leader runs it), woken by every change of what
//! the signals are computed from and at least every [`EVALUATE_EVERY`] for the time-driven
//! ones (waits, `for` durations, escalation, shelving expiry).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::Error as Coord;
use medkeeper_recipes::{CacheEvent, CacheEvents};
use serde::Serialize;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::rules::{AlarmPriority, AlarmRule, Scope, Signal};
use super::signals::Snapshot;
use super::{AlarmNode, MAX_ESCALATIONS, alarm_path, cached, create, node_name};
use crate::Result;
use crate::actor::Actor;
use crate::model::Pool;
use crate::news2::Risk;
use crate::orders::Hospital;
use crate::store::AlarmEventKind;
use crate::tree;

/// The longest the evaluator waits between two passes when nothing changes: the resolution of
/// the time-driven conditions.
pub const EVALUATE_EVERY: Duration = Duration::from_secs(1);

/// How long an alarm whose rule or scope is not in this evaluator's hospital file stays before
/// it is cleared.
pub const ORPHAN_GRACE_MS: i64 = 60_000;

/// What one pass did (alarm ids).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvaluationReport {
    /// Raised by this pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub raised: Vec<String>,
    /// Found raised by another evaluator as this one was raising them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adopted: Vec<String>,
    /// Escalated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub escalated: Vec<String>,
    /// Back from a shelving.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unshelved: Vec<String>,
    /// Cleared.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cleared: Vec<String>,
    /// Events copied to the clinical store that were not there yet.
    #[serde(skip_serializing_if = "is_zero")]
    pub copied: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl EvaluationReport {
    /// True if the pass changed nothing.
    pub fn is_empty(&self) -> bool {
        *self == EvaluationReport::default()
    }
}

/// How long a rule's condition has held in one scope (this evaluator's memory only).
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Since when the value has been at the raise threshold.
    breach_since: Option<i64>,
    /// Since when it has been at the clear threshold.
    clear_since: Option<i64>,
}

impl Tracker {
    /// Takes `value` at `now` into account; returns whether the rule's raise is due (the value
    /// has been at the raise threshold for `for`) and whether its clear is due (at the clear
    /// threshold for `clear_for`).
    pub(super) fn observe(&mut self, rule: &AlarmRule, value: f64, now: i64) -> (bool, bool) {
        if rule.breached(value) {
            self.breach_since.get_or_insert(now);
        } else {
            self.breach_since = None;
        }
        if rule.cleared(value) {
            self.clear_since.get_or_insert(now);
        } else {
            self.clear_since = None;
        }
        let held = |since: Option<i64>, d: Duration| {
            since.is_some_and(|s| now - s >= d.as_millis() as i64)
        };
        (
            held(self.breach_since, rule.raise_for),
            held(self.clear_since, rule.clear_for),
        )
    }
}

/// The evaluator (see the [module docs](crate::alarms)).
pub struct Evaluator {
    hospital: Arc<Hospital>,
    actor: Actor,
    trackers: HashMap<String, Tracker>,
    /// Per alarm id, the sequence number up to which its events are known to be stored.
    copied: HashMap<String, u32>,
    /// Alarms whose rule or scope this evaluator does not know, since when.
    orphans: HashMap<String, i64>,
}

impl Evaluator {
    /// The evaluator of `hospital`, run by `instance` (events say `evaluator:<instance>`).
    pub fn new(hospital: Arc<Hospital>, instance: &str) -> Evaluator {
        Evaluator {
            hospital,
            actor: Actor::new(format!("evaluator:{instance}")),
            trackers: HashMap::new(),
            copied: HashMap::new(),
            orphans: HashMap::new(),
        }
    }

    /// Evaluates every rule in every scope once, now.
    ///
    /// # Notable errors
    /// A coordination or store error; a session-fatal one if the session has ended. What a
    /// pass had done before an error stays done; the next pass goes on from the tree.
    pub async fn evaluate(&mut self) -> Result<EvaluationReport> {
        let hospital = self.hospital.clone();
        let snap = Snapshot::take(&hospital).await?;
        let model = hospital.alarm_model().await?;
        model.settle().await;
        let now = snap.now_ms;
        let pools: Vec<Pool> = hospital
            .config()
            .pools
            .iter()
            .map(|p| p.pool.clone())
            .collect();
        let mut report = EvaluationReport::default();
        let mut expected = HashSet::new();
        for rule in &hospital.config().alarms {
            for scope in snap.scopes_of(rule, &pools) {
                let name = node_name(&rule.name, &scope.key());
                expected.insert(name.clone());
                let Some(value) = snap.value(rule, &scope) else {
                    continue;
                };
                let (raise_due, clear_due) = self
                    .trackers
                    .entry(name.clone())
                    .or_default()
                    .observe(rule, value, now);
                match cached(&model, &name) {
                    None if raise_due => {
                        // An earlier episode raised in this very ms keeps its id: the next ms
                        // is taken. (A store that cannot say is no reason not to raise.)
                        let mut episode = now;
                        loop {
                            match super::known(&hospital, &episode_id(&name, episode)).await {
                                Ok(true) => episode += 1,
                                Ok(false) => break,
                                Err(e) => {
                                    tracing::warn!(error = %e, "alarms: cannot read earlier episodes");
                                    break;
                                }
                            }
                        }
                        let mut node = raised(rule, &scope, value, now, episode, &self.actor);
                        if let Scope::Patient(p) = &scope {
                            node.ward = snap.escalations.get(p).and_then(|e| e.ward.clone());
                        }
                        let (node, ours) = create(&hospital, &node).await?;
                        if ours {
                            report.raised.push(node.id.clone());
                        } else {
                            report.adopted.push(node.id.clone());
                        }
                        report.copied += self.copy(&node).await.unwrap_or(0);
                    }
                    None => {}
                    Some((node, version)) if node.cleared_ms.is_some() => {
                        report.copied += self.finish(node, version).await?;
                    }
                    Some((node, version)) => {
                        self.step(rule, node, version, value, now, clear_due, &mut report)
                            .await?;
                    }
                }
            }
        }
        // Alarms whose rule (or pool) is no longer configured are cleared, once they have been
        // unknown for ORPHAN_GRACE: during a rolling change of the hospital file an instance
        // with the older file may lead for a moment.
        self.orphans.retain(|name, _| !expected.contains(name));
        for name in model.children(tree::ALARMS) {
            if expected.contains(&name) {
                continue;
            }
            let since = *self.orphans.entry(name.clone()).or_insert(now);
            if now - since < ORPHAN_GRACE_MS {
                continue;
            }
            self.orphans.remove(&name);
            self.trackers.remove(&name);
            if let Some((mut node, version)) = cached(&model, &name) {
                if node.cleared_ms.is_none() {
                    node.cleared_ms = Some(now);
                    node.record(
                        AlarmEventKind::Cleared,
                        now,
                        &self.actor,
                        "its rule or scope is no longer in the hospital file".into(),
                    );
                    report.cleared.push(node.id.clone());
                    let Some(version) = self.write(&node, version).await? else {
                        continue;
                    };
                    report.copied += self.finish(node, version).await?;
                } else {
                    report.copied += self.finish(node, version).await?;
                }
            }
        }
        self.trackers.retain(|name, _| expected.contains(name));
        let active: HashSet<String> = model
            .children(tree::ALARMS)
            .into_iter()
            .filter_map(|n| cached(&model, &n).map(|(a, _)| a.id))
            .collect();
        self.copied.retain(|id, _| active.contains(id));
        Ok(report)
    }

    /// One active alarm's pass: cleared, unshelved, escalated, or left as it is.
    #[allow(clippy::too_many_arguments)]
    async fn step(
        &mut self,
        rule: &AlarmRule,
        mut node: AlarmNode,
        version: i32,
        value: f64,
        now: i64,
        clear_due: bool,
        report: &mut EvaluationReport,
    ) -> Result<()> {
        let mut changed = false;
        if clear_due && (!rule.latching || node.acknowledged.is_some()) {
            node.value = value;
            node.cleared_ms = Some(now);
            node.record(
                AlarmEventKind::Cleared,
                now,
                &self.actor,
                format!(
                    "back at {} for {:?}",
                    super::fmt_value(rule.clear),
                    rule.clear_for
                ),
            );
            report.cleared.push(node.id.clone());
            if let Some(version) = self.write(&node, version).await? {
                report.copied += self.finish(node, version).await?;
            }
            return Ok(());
        }
        if node.shelved.as_ref().is_some_and(|s| s.until_ms <= now) {
            node.shelved = None;
            // Staff get the full escalation delay again from here.
            node.escalated_ms = now;
            node.value = value;
            node.record(AlarmEventKind::Unshelved, now, &self.actor, String::new());
            report.unshelved.push(node.id.clone());
            changed = true;
        }
        // NEWS2: a high risk makes the alarm high, whatever the rule says, at once.
        if rule.signal == Signal::News2
            && value >= f64::from(Risk::High.level())
            && node.priority < AlarmPriority::High
        {
            node.priority = AlarmPriority::High;
            node.value = value;
            node.summary = Snapshot::summary(rule, &scope_of(&node), value);
            node.record(
                AlarmEventKind::Escalated,
                now,
                &self.actor,
                "NEWS2 clinical risk rose to high".into(),
            );
            report.escalated.push(node.id.clone());
            changed = true;
        }
        if let Some(after) = rule.escalate_after
            && node.acknowledged.is_none()
            && node.shelved.is_none()
            && node.escalations < MAX_ESCALATIONS
            && now - node.escalated_ms >= after.as_millis() as i64
        {
            node.escalations += 1;
            node.escalated_ms = now;
            node.priority = node.priority.escalated();
            node.value = value;
            node.record(
                AlarmEventKind::Escalated,
                now,
                &self.actor,
                format!("unacknowledged for {after:?}"),
            );
            report.escalated.push(node.id.clone());
            changed = true;
        }
        if changed && self.write(&node, version).await?.is_none() {
            return Ok(());
        }
        report.copied += self.copy(&node).await.unwrap_or(0);
        Ok(())
    }

    /// Writes `node` over `version`; `None` if it changed meanwhile (an acknowledgement: the
    /// next pass, which its change wakes, decides again).
    async fn write(&self, node: &AlarmNode, version: i32) -> Result<Option<i32>> {
        let path = alarm_path(&node.node_name());
        match self
            .hospital
            .session()
            .set_data(&path, &tree::to_json(node), version)
            .await
        {
            Ok(st) => Ok(Some(st.version)),
            Err(Coord::BadVersion | Coord::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// A cleared alarm's last steps: its events to the store, then its node deleted. If the
    /// store cannot take them, the node stays (marked cleared) for a later pass: its history
    /// is never lost.
    async fn finish(&mut self, node: AlarmNode, version: i32) -> Result<usize> {
        let Some(copied) = self.copy(&node).await else {
            return Ok(0);
        };
        let path = alarm_path(&node.node_name());
        match self.hospital.session().delete(&path, version).await {
            Ok(()) | Err(Coord::NoNode | Coord::BadVersion) => {}
            Err(e) => return Err(e.into()),
        }
        self.copied.remove(&node.id);
        self.trackers.remove(&node.node_name());
        Ok(copied)
    }

    /// Copies the node's events that this evaluator has not seen stored yet; how many were
    /// new. Best effort: the tree decides, so a store that fails does not stop the pass (the
    /// failure is logged, and the next pass copies again); `None` then.
    async fn copy(&mut self, node: &AlarmNode) -> Option<usize> {
        let done = self.copied.get(&node.id).copied().unwrap_or(0);
        if node.next_seq <= done {
            return Some(0);
        }
        match self
            .hospital
            .store()
            .record_alarm_events(&node.events)
            .await
        {
            Ok(new) => {
                self.copied.insert(node.id.clone(), node.next_seq);
                Some(new)
            }
            Err(e) => {
                tracing::warn!(alarm = %node.id, error = %e, "alarms: cannot store the alarm's events yet");
                None
            }
        }
    }

    /// Runs passes until `shutdown`: one at once, then one after every change of what the
    /// signals or the alarms are computed from (the pools' read models, the members, the
    /// leader line, `/medical/alarms`), and at least every [`EVALUATE_EVERY`].
    ///
    /// # Errors
    /// A session-fatal error once the session has ended; other errors are logged and the
    /// next pass tries again.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let wake = Arc::new(Notify::new());
        let mut forwarders = JoinSet::new();
        let mut sources: Vec<CacheEvents> = Vec::new();
        for p in &self.hospital.config().pools {
            sources.push(self.hospital.pool_model(&p.pool).await?.subscribe());
        }
        let (members, leader) = self.hospital.cluster_model().await?;
        sources.push(members.subscribe());
        sources.push(leader.subscribe());
        sources.push(self.hospital.alarm_model().await?.subscribe());
        sources.push(self.hospital.escalation_model().await?.subscribe());
        for mut events in sources {
            let wake = wake.clone();
            forwarders.spawn(async move {
                while let Some(e) = events.next().await {
                    wake.notify_one();
                    if matches!(e, CacheEvent::Ended(_)) {
                        return;
                    }
                }
            });
        }
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            match self.evaluate().await {
                Ok(r) if !r.is_empty() => {
                    tracing::info!("alarms: {}", serde_json::to_string(&r).unwrap_or_default())
                }
                Ok(_) => {}
                Err(e) if self.hospital.session().state().is_terminal() => return Err(e),
                Err(e) => tracing::warn!("alarms: evaluating: {e}"),
            }
            tokio::select! {
                _ = shutdown.as_mut() => return Ok(()),
                _ = wake.notified() => {}
                _ = tokio::time::sleep(EVALUATE_EVERY) => {}
            }
        }
    }
}

fn episode_id(name: &str, episode: i64) -> String {
    format!("{name}@{episode}")
}

/// A new alarm of `rule` in `scope` at `value`, episode `episode`.
fn raised(
    rule: &AlarmRule,
    scope: &Scope,
    value: f64,
    now: i64,
    episode: i64,
    actor: &Actor,
) -> AlarmNode {
    let scope_key = scope.key();
    let mut node = AlarmNode {
        id: episode_id(&node_name(&rule.name, &scope_key), episode),
        rule: rule.name.clone(),
        scope: scope_key,
        signal: rule.signal,
        priority: rule.priority,
        raised_ms: now,
        condition: rule.condition(),
        summary: Snapshot::summary(rule, scope, value),
        value,
        latching: rule.latching,
        acknowledged: None,
        shelved: None,
        escalations: 0,
        escalated_ms: now,
        cleared_ms: None,
        ward: None,
        next_seq: 0,
        events: Vec::new(),
    };
    if rule.signal == Signal::News2 && value >= f64::from(Risk::High.level()) {
        node.priority = AlarmPriority::High;
    }
    let note = node.summary.clone();
    node.record(AlarmEventKind::Raised, now, actor, note);
    node
}

/// The scope of an alarm's node, as far as its summary needs it.
fn scope_of(node: &AlarmNode) -> Scope {
    match node.scope.strip_prefix("patient.").map(str::parse) {
        Some(Ok(p)) => Scope::Patient(p),
        _ => Scope::Cluster,
    }
}
