//! The signals' values at one moment ([`Snapshot`]), from the read models: no request.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use super::rules::{AlarmRule, Scope, Signal};
use crate::Result;
use crate::model::{Pool, Priority, UnitStatus};
use crate::orders::Hospital;
use crate::tree;

/// One pool's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolFigures {
    /// Units (or doctors) in use.
    pub in_use: usize,
    /// Units available or in use.
    pub in_service: usize,
    /// For each unit offline or in maintenance: since when, ms since the epoch.
    pub out_of_service_since: Vec<i64>,
    /// Each waiting order's priority and when it joined the queue (ms since the epoch).
    pub waiting: Vec<(Priority, i64)>,
    /// Instances standing for the pool's dispatch lock.
    pub dispatchers: usize,
}

/// The signals' inputs at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When, ms since the epoch (the hospital's clock).
    pub now_ms: i64,
    /// Per pool.
    pub pools: BTreeMap<Pool, PoolFigures>,
    /// Members of the cluster.
    pub members: usize,
    /// Instances standing for leader.
    pub leader_candidates: usize,
    /// The waiting targets, by priority class (stat first).
    pub targets_ms: [i64; 4],
    /// Each monitored patient's escalation level ([`crate::ingest`]).
    pub escalations: BTreeMap<crate::model::PatientId, crate::ingest::EscalationNode>,
}

impl Snapshot {
    /// Takes the figures from `hospital`'s read models (starting any not started yet), after
    /// applying every watch event received so far.
    ///
    /// # Notable errors
    /// A session-fatal error if the session has ended.
    pub async fn take(hospital: &Hospital) -> Result<Snapshot> {
        let mut pools = BTreeMap::new();
        for p in &hospital.config().pools {
            let model = hospital.pool_model(&p.pool).await?;
            model.ensure_live()?;
            model.settle().await;
            let mut f = PoolFigures::default();
            for u in model.units() {
                match u.node.status {
                    UnitStatus::InUse => {
                        f.in_use += 1;
                        f.in_service += 1;
                    }
                    UnitStatus::Available => f.in_service += 1,
                    UnitStatus::Maintenance | UnitStatus::Offline => {
                        f.out_of_service_since.push(u.node.since_ms)
                    }
                }
            }
            for item in model.queue() {
                let Some(priority) = Priority::from_class(item.info.class) else {
                    continue;
                };
                let at = item
                    .info
                    .enqueued_at
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                f.waiting.push((priority, at));
            }
            f.dispatchers = model.lock_line().len();
            pools.insert(p.pool.clone(), f);
        }
        let (members, leader) = hospital.cluster_model().await?;
        members.settle().await;
        leader.settle().await;
        let esc = hospital.escalation_model().await?;
        esc.settle().await;
        let mut escalations = BTreeMap::new();
        for name in esc.children(tree::ESCALATIONS) {
            let (Ok(p), Some(node)) = (
                name.parse::<crate::model::PatientId>(),
                esc.get(&format!("{}/{name}", tree::ESCALATIONS)),
            ) else {
                continue;
            };
            match tree::from_json::<crate::ingest::EscalationNode>("escalation", &node.data) {
                Ok(e) => {
                    escalations.insert(p, e);
                }
                Err(e) => {
                    tracing::warn!(patient = %name, error = %e, "skipping a malformed escalation node")
                }
            }
        }
        let targets = &hospital.config().targets;
        let ms = |p: Priority| targets.of(p).as_millis() as i64;
        Ok(Snapshot {
            now_ms: hospital.now_ms(),
            pools,
            members: members.children(tree::MEMBERS).len(),
            leader_candidates: leader.children(tree::LEADER).len(),
            targets_ms: [
                ms(Priority::Stat),
                ms(Priority::Asap),
                ms(Priority::Urgent),
                ms(Priority::Routine),
            ],
            escalations,
        })
    }

    /// The scopes of `rule` in this snapshot: its pools or the cluster, or for a `news2` rule
    /// every monitored patient.
    pub fn scopes_of(&self, rule: &AlarmRule, pools: &[Pool]) -> Vec<Scope> {
        if rule.signal == Signal::News2 {
            return self
                .escalations
                .keys()
                .cloned()
                .map(Scope::Patient)
                .collect();
        }
        rule.scopes(pools)
    }

    /// The value of `rule`'s signal in `scope`; `None` if the scope is not in the snapshot (a
    /// pool no longer configured).
    pub fn value(&self, rule: &AlarmRule, scope: &Scope) -> Option<f64> {
        let pool = match scope {
            Scope::Patient(p) => {
                return (rule.signal == Signal::News2)
                    .then(|| self.escalations.get(p).map(|e| f64::from(e.risk.level())))
                    .flatten();
            }
            Scope::Cluster => {
                return match rule.signal {
                    Signal::Members => Some(self.members as f64),
                    Signal::LeaderCandidates => Some(self.leader_candidates as f64),
                    _ => None,
                };
            }
            Scope::Pool(p) => self.pools.get(p)?,
        };
        let of_rule = |p: &Priority| rule.order_priority.is_none_or(|only| only == *p);
        Some(match rule.signal {
            Signal::Utilisation => {
                if pool.in_service == 0 {
                    100.0
                } else {
                    100.0 * pool.in_use as f64 / pool.in_service as f64
                }
            }
            Signal::QueueLength => pool.waiting.iter().filter(|(p, _)| of_rule(p)).count() as f64,
            Signal::OldestWait => pool
                .waiting
                .iter()
                .filter(|(p, _)| of_rule(p))
                .map(|(p, at)| {
                    let target = self.targets_ms[p.class() as usize].max(1);
                    100.0 * (self.now_ms - at).max(0) as f64 / target as f64
                })
                .fold(0.0, f64::max),
            Signal::UnitsUnavailable => {
                let limit = rule.limit.as_millis() as i64;
                pool.out_of_service_since
                    .iter()
                    .filter(|since| self.now_ms - **since >= limit)
                    .count() as f64
            }
            Signal::UnitsInService => pool.in_service as f64,
            Signal::Dispatchers => pool.dispatchers as f64,
            Signal::Members | Signal::LeaderCandidates | Signal::News2 => return None,
        })
    }

    /// A one-line account of `value` for an alarm's summary: `oldest_wait in equipment CT:
    /// 130 % of target`.
    pub fn summary(rule: &AlarmRule, scope: &Scope, value: f64) -> String {
        if rule.signal == Signal::News2 {
            let risk = crate::news2::Risk::from_level(value as u8).unwrap_or_default();
            return format!(
                "NEWS2 clinical risk {risk} for {scope} — decision support, not a diagnosis"
            );
        }
        let of = rule
            .order_priority
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        format!(
            "{}{of} in {scope}: {} {}",
            rule.signal,
            super::fmt_value(value),
            rule.signal.unit()
        )
    }
}
