//! Counting the alarms rules would raise, without raising them ([`Tally`]): for the
//! simulation, which compares the hospital file's rules with the same rules without hysteresis.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use super::evaluator::Tracker;
use super::node_name;
use super::rules::AlarmRule;
use super::signals::Snapshot;
use crate::model::Pool;

/// The episodes rules would raise over a series of snapshots, with the evaluator's logic
/// ([`Tracker`]: thresholds, `for`, `clear_for`) and no tree. Acknowledgements are not
/// simulated: a latching alarm is taken as acknowledged at once, so it clears with its
/// condition, as a non-latching one does.
#[derive(Debug)]
pub struct Tally {
    rules: Vec<AlarmRule>,
    pools: Vec<Pool>,
    trackers: HashMap<String, Tracker>,
    active: HashSet<String>,
    raised: BTreeMap<String, usize>,
}

impl Tally {
    /// A tally of `rules` over `pools`.
    pub fn new(rules: Vec<AlarmRule>, pools: Vec<Pool>) -> Tally {
        let raised = rules.iter().map(|r| (r.name.clone(), 0)).collect();
        Tally {
            rules,
            pools,
            trackers: HashMap::new(),
            active: HashSet::new(),
            raised,
        }
    }

    /// `rules` without hysteresis: cleared at the raise threshold, no `for` either way.
    pub fn without_hysteresis(rules: &[AlarmRule]) -> Vec<AlarmRule> {
        rules
            .iter()
            .map(|r| {
                let mut r = r.clone();
                // Cleared as soon as the value is off the raise threshold.
                r.clear = r.raise;
                r.raise_for = Duration::ZERO;
                r.clear_for = Duration::ZERO;
                r
            })
            .collect()
    }

    /// Takes one snapshot into account.
    pub fn observe(&mut self, snap: &Snapshot) {
        for rule in &self.rules {
            for scope in rule.scopes(&self.pools) {
                let Some(value) = snap.value(rule, &scope) else {
                    continue;
                };
                let name = node_name(&rule.name, &scope.key());
                let (raise_due, clear_due) = self
                    .trackers
                    .entry(name.clone())
                    .or_default()
                    .observe(rule, value, snap.now_ms);
                if self.active.contains(&name) {
                    if clear_due {
                        self.active.remove(&name);
                    }
                } else if raise_due {
                    self.active.insert(name);
                    *self.raised.entry(rule.name.clone()).or_default() += 1;
                }
            }
        }
    }

    /// Episodes raised per rule, by rule name.
    pub fn raised(&self) -> &BTreeMap<String, usize> {
        &self.raised
    }
}
