//! Alarm rules as the hospital file declares them (`[[alarm]]`), and the signals they watch.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Pool, Priority};

/// What a rule watches. Every signal is computed from what the instance already follows (the
/// pools' read models, the members and the leader line): evaluating sends no request.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Per pool: units (or doctors) in use, in percent of those in service (available or in
    /// use). A pool with nothing in service is at 100 %.
    Utilisation,
    /// Per pool: orders waiting (of `order_priority` if the rule names one).
    QueueLength,
    /// Per pool: the longest wait of a waiting order, in percent of its priority's target
    /// (of `order_priority` if the rule names one): 100 is a stat order waiting its full
    /// 10 minutes.
    OldestWait,
    /// Per pool: units (or doctors) offline or in maintenance for longer than the rule's
    /// `limit`.
    UnitsUnavailable,
    /// Per pool: units (or doctors) in service (available or in use). 0: the pool can take
    /// nobody.
    UnitsInService,
    /// Per pool: instances standing for the pool's dispatch lock (the children of its `lock`
    /// node — the holder and those waiting behind it). 0: nobody dispatches the pool.
    Dispatchers,
    /// Cluster: instances in `/medical/members`.
    Members,
    /// Cluster: instances standing for leader (the leader and those waiting behind it).
    LeaderCandidates,
    /// Per monitored patient: the NEWS2 clinical risk of the latest score, as a level — 0 low,
    /// 1 low–medium (a single parameter scoring 3), 2 medium (5–6), 3 high (7 or more)
    /// ([`crate::ingest`]). The alarm's priority follows the risk: high for a high risk, the
    /// rule's otherwise. Decision support, not a diagnosis.
    News2,
}

impl Signal {
    /// Every signal, in documentation order.
    pub const ALL: [Signal; 9] = [
        Signal::Utilisation,
        Signal::QueueLength,
        Signal::OldestWait,
        Signal::UnitsUnavailable,
        Signal::UnitsInService,
        Signal::Dispatchers,
        Signal::Members,
        Signal::LeaderCandidates,
        Signal::News2,
    ];

    /// The name in the hospital file.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Utilisation => "utilisation",
            Signal::QueueLength => "queue_length",
            Signal::OldestWait => "oldest_wait",
            Signal::UnitsUnavailable => "units_unavailable",
            Signal::UnitsInService => "units_in_service",
            Signal::Dispatchers => "dispatchers",
            Signal::Members => "members",
            Signal::LeaderCandidates => "leader_candidates",
            Signal::News2 => "news2",
        }
    }

    /// True if the alarm is about too much (raised at or above `raise`, cleared at or below
    /// `clear`); false if about too few (raised at or below `raise`, cleared at or above
    /// `clear`).
    pub fn rising(self) -> bool {
        !matches!(
            self,
            Signal::UnitsInService
                | Signal::Dispatchers
                | Signal::Members
                | Signal::LeaderCandidates
        )
    }

    /// True if the signal has one value per pool; false for the cluster's and the patients'.
    pub fn per_pool(self) -> bool {
        !matches!(
            self,
            Signal::Members | Signal::LeaderCandidates | Signal::News2
        )
    }

    /// The unit of its values, for messages.
    pub fn unit(self) -> &'static str {
        match self {
            Signal::Utilisation => "% in use",
            Signal::QueueLength => "waiting",
            Signal::OldestWait => "% of target",
            Signal::UnitsUnavailable => "out of service",
            Signal::UnitsInService => "in service",
            Signal::Dispatchers | Signal::Members | Signal::LeaderCandidates => "instances",
            Signal::News2 => "(NEWS2 risk level)",
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Signal {
    type Err = String;
    fn from_str(s: &str) -> Result<Signal, String> {
        Signal::ALL
            .into_iter()
            .find(|sig| sig.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Signal::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown signal {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// An alarm's priority in the vocabulary of IEC 60601-1-8: high (immediate response
/// required), medium (prompt response), low (awareness). Escalation raises it one step.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum AlarmPriority {
    /// Operator awareness is required.
    Low,
    /// Prompt operator response is required.
    #[default]
    Medium,
    /// Immediate operator response is required.
    High,
}

impl AlarmPriority {
    /// Every priority, highest first.
    pub const ALL: [AlarmPriority; 3] = [
        AlarmPriority::High,
        AlarmPriority::Medium,
        AlarmPriority::Low,
    ];

    /// The name (`high`, `medium`, `low`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmPriority::Low => "low",
            AlarmPriority::Medium => "medium",
            AlarmPriority::High => "high",
        }
    }

    /// One step up (high stays high).
    pub fn escalated(self) -> AlarmPriority {
        match self {
            AlarmPriority::Low => AlarmPriority::Medium,
            _ => AlarmPriority::High,
        }
    }
}

impl fmt::Display for AlarmPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AlarmPriority {
    type Err = String;
    fn from_str(s: &str) -> Result<AlarmPriority, String> {
        match s {
            "high" => Ok(AlarmPriority::High),
            "medium" => Ok(AlarmPriority::Medium),
            "low" => Ok(AlarmPriority::Low),
            _ => Err(format!(
                "alarm priority {s:?}: use high, medium or low (IEC 60601-1-8)"
            )),
        }
    }
}

/// What one alarm is about: a pool, or the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One pool.
    Pool(Pool),
    /// The cluster.
    Cluster,
    /// One patient (opaque id).
    Patient(crate::model::PatientId),
}

impl Scope {
    /// The scope's key in alarm ids and node names: `equipment.MRI`, `department.cardiology`,
    /// `cluster`.
    pub fn key(&self) -> String {
        match self {
            Scope::Pool(Pool::Equipment(k)) => format!("equipment.{k}"),
            Scope::Pool(Pool::Department(d)) => format!("department.{d}"),
            Scope::Cluster => "cluster".into(),
            Scope::Patient(p) => format!("patient.{p}"),
        }
    }

    /// The pool, for a pool's scope.
    pub fn pool(&self) -> Option<&Pool> {
        match self {
            Scope::Pool(p) => Some(p),
            Scope::Cluster | Scope::Patient(_) => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Pool(p) => write!(f, "{p}"),
            Scope::Cluster => f.write_str("the cluster"),
            Scope::Patient(p) => write!(f, "patient {p}"),
        }
    }
}

/// One `[[alarm]]` of the hospital file (see [`crate::config`] for the syntax).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmRule {
    /// The rule's name: a znode-name part (`A-Z a-z 0-9 - _ .`), unique in the file.
    pub name: String,
    /// What it watches.
    pub signal: Signal,
    /// The pools it applies to (per-pool signals); `None`: every pool.
    pub pool: Option<Pool>,
    /// Only orders of this priority (`queue_length`, `oldest_wait`); `None`: all.
    pub order_priority: Option<Priority>,
    /// Raised when the value reaches this (at or above for a rising signal, at or below
    /// otherwise) ...
    pub raise: f64,
    /// ... and cleared when it is back at or past this (hysteresis; equal to `raise` if the
    /// file gives none).
    pub clear: f64,
    /// How long the value must stay at the raise threshold before the alarm is raised.
    pub raise_for: Duration,
    /// How long it must stay at the clear threshold before the alarm is cleared.
    pub clear_for: Duration,
    /// The alarm's priority when raised.
    pub priority: AlarmPriority,
    /// Escalated (one priority step up) each time it stays unacknowledged this long.
    pub escalate_after: Option<Duration>,
    /// Latching: stays until acknowledged, even once the condition has cleared.
    pub latching: bool,
    /// `units_unavailable`: how long a unit must be out of service to count.
    pub limit: Duration,
}

impl AlarmRule {
    /// True if `value` is at the raise threshold.
    pub fn breached(&self, value: f64) -> bool {
        if self.signal.rising() {
            value >= self.raise
        } else {
            value <= self.raise
        }
    }

    /// True if `value` is at the clear threshold and off the raise threshold (so a rule whose
    /// clear equals its raise clears only once the value has left it, never while it sits on
    /// it).
    pub fn cleared(&self, value: f64) -> bool {
        !self.breached(value)
            && if self.signal.rising() {
                value <= self.clear
            } else {
                value >= self.clear
            }
    }

    /// The scopes it applies to in a hospital of `pools` (a `news2` rule: none here, its
    /// scopes are the monitored patients of a [`Snapshot`](super::Snapshot)).
    pub fn scopes<'a>(&'a self, pools: impl IntoIterator<Item = &'a Pool>) -> Vec<Scope> {
        if self.signal == Signal::News2 {
            return Vec::new();
        }
        if !self.signal.per_pool() {
            return vec![Scope::Cluster];
        }
        pools
            .into_iter()
            .filter(|p| self.pool.as_ref().is_none_or(|only| only == *p))
            .map(|p| Scope::Pool(p.clone()))
            .collect()
    }

    /// A one-line description of the condition: `oldest_wait (stat) >= 100 % of target`.
    pub fn condition(&self) -> String {
        let op = if self.signal.rising() { ">=" } else { "<=" };
        let of = self
            .order_priority
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        format!(
            "{}{of} {op} {} {}",
            self.signal,
            fmt_value(self.raise),
            self.signal.unit()
        )
    }
}

/// A value as messages show it: an integer without decimals, else one decimal.
pub fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}
