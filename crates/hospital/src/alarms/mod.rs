//! Monitoring and alarms (seed §4.4): rules from the hospital file evaluated against what the
//! instance already follows, by one evaluator per cluster, with hysteresis, acknowledgement,
//! shelving, escalation and clearing.
//!
//! # Rules
//! `[[alarm]]` entries of the hospital file ([`AlarmRule`], syntax in [`crate::config`]): a
//! [`Signal`] (utilisation, queue length, oldest wait against the priority's target, units out
//! of service longer than a limit, instances standing for a pool's dispatch lock, members,
//! leader candidates), where it applies (every pool, one pool, or the cluster), a raise and a
//! clear threshold (hysteresis), how long each must hold (`for`, `clear_for`), an
//! [`AlarmPriority`] (IEC 60601-1-8: high, medium, low), an optional escalation delay and
//! whether the alarm latches.
//!
//! # Lifecycle
//! ```text
//!            value at raise threshold for `for`
//!  (none) ────────────────────────────────────────▶ raised ──ack──▶ acknowledged
//!    ▲                                               │  ▲  │ unacknowledged for
//!    │ value at clear threshold for `clear_for`      │  │  │ `escalate_after`:
//!    │ (latching: and acknowledged)                  │  │  ▼ escalated (one step up)
//!    └────────────────── cleared ◀───────────────────┘  └─ shelved until T (not
//!                                                           delivered, not escalated)
//! ```
//! An active alarm is one persistent node, `/medical/alarms/<rule>@<scope>` ([`AlarmNode`]:
//! no PHI — rule, scope, priority, times, who acknowledged), so there is at most one active
//! alarm per rule and scope whoever evaluates: raising is the node's creation, and an
//! evaluator that finds it created already adopts it. Its id, `<rule>@<scope>@<episode>`
//! (the episode is the raise time in ms), names the episode. Every transition is appended to the node's events first (the tree
//! decides, as for orders) and then copied to the clinical store
//! ([`ClinicalStore::record_alarm_events`](crate::store::ClinicalStore::record_alarm_events)),
//! keyed by alarm id and sequence number, with an audit record per event: copying again
//! changes nothing, so a copy a crash interrupted is finished by the next evaluator without
//! a gap or a duplicate. A cleared alarm is first marked cleared in its node, copied, then
//! its node is deleted.
//!
//! # Who evaluates
//! The cluster's leader ([`Evaluator`]); the other instances serve the alarms from the tree
//! ([`active`]) and take acknowledgements and shelvings ([`acknowledge`], [`shelve`]), which
//! are version-checked changes of the node that the evaluator then acts on. A new leader
//! rebuilds its state from `/medical/alarms` and the read models on its first pass; what it
//! does not inherit is how long a condition has been pending, so after a failover a pending
//! raise or clear waits its `for` afresh (at most one `for` late, never early).

mod evaluator;
mod rules;
mod signals;
mod tally;

use std::sync::Arc;

use medkeeper_coord::{CreateMode, CreateOptions, Error as Coord, SessionExt};
use serde::{Deserialize, Serialize};

pub use evaluator::{EVALUATE_EVERY, EvaluationReport, Evaluator, ORPHAN_GRACE_MS};
pub use rules::{AlarmPriority, AlarmRule, Scope, Signal, fmt_value};
pub use signals::{PoolFigures, Snapshot};
pub use tally::Tally;

use crate::actor::Actor;
use crate::model::validate_name;
use crate::orders::Hospital;
use crate::store::{AlarmEvent, AlarmEventKind};
use crate::tree::{self, Change};
use crate::{Error, Result};

/// How many times one alarm may be shelved (again and again is a fault to fix, not to
/// silence). With it an alarm's node holds at most 26 events — raised, acknowledged, 3
/// escalations, 10 shelvings and 10 unshelvings, cleared — so it keeps its whole history.
pub const MAX_SHELVINGS: usize = 10;
/// How many times an unacknowledged alarm is escalated at most.
pub const MAX_ESCALATIONS: u32 = 3;
/// The longest a shelving may last.
pub const MAX_SHELVE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The longest note or reason kept, in characters.
pub const MAX_NOTE: usize = 500;
/// How many times an acknowledgement or shelving retries a node that keeps changing.
const ATTEMPTS: usize = 16;

/// Who acknowledged an alarm, when, and what they noted.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acknowledgement {
    /// Who (the token's actor).
    pub by: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Their note (may be empty).
    #[serde(default)]
    pub note: String,
}

/// A shelving: the alarm is not delivered nor escalated until `until_ms`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shelving {
    /// Who shelved it.
    pub by: String,
    /// When.
    pub at_ms: i64,
    /// Until when.
    pub until_ms: i64,
    /// Why.
    pub reason: String,
}

/// What an active alarm's node (`/medical/alarms/<rule>@<scope>`) holds; what the API shows.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlarmNode {
    /// `<rule>@<scope>@<episode>`: the episode's id. The episode is the raise time in ms, or
    /// the first later ms no earlier episode of the rule and scope has (two episodes raised in
    /// one ms keep distinct ids).
    pub id: String,
    /// The rule's name.
    pub rule: String,
    /// The scope's key (`equipment.MRI`, `cluster`).
    pub scope: String,
    /// The signal.
    pub signal: Signal,
    /// The priority now (the rule's, escalations included).
    pub priority: AlarmPriority,
    /// When it was raised, ms since the epoch.
    pub raised_ms: i64,
    /// The rule's condition when raised (`queue_length >= 10 waiting`).
    pub condition: String,
    /// A human summary: `oldest_wait in equipment CT: 130 % of target`.
    pub summary: String,
    /// The signal's value at the last transition.
    pub value: f64,
    /// Stays until acknowledged even once the condition clears.
    #[serde(default)]
    pub latching: bool,
    /// The acknowledgement, once acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged: Option<Acknowledgement>,
    /// The shelving, while shelved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shelved: Option<Shelving>,
    /// How many times it was escalated.
    #[serde(default)]
    pub escalations: u32,
    /// When it was escalated last (or raised).
    #[serde(default)]
    pub escalated_ms: i64,
    /// The ward or department a patient's alarm is addressed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    /// Set when cleared: the node is about to be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleared_ms: Option<i64>,
    /// The next event's sequence number.
    pub next_seq: u32,
    /// Every transition (at most 26: see [`MAX_SHELVINGS`]). Staff's notes are not in them:
    /// free text may name a patient, so it is kept in the clinical store only.
    #[serde(default)]
    pub events: Vec<AlarmEvent>,
}

/// Where an alarm is in its life, as the API shows it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmState {
    /// Raised, not acknowledged.
    Raised,
    /// Acknowledged, not cleared.
    Acknowledged,
    /// Shelved.
    Shelved,
    /// Cleared.
    Cleared,
}

impl AlarmNode {
    /// Where it is in its life at `now_ms`.
    pub fn state(&self, now_ms: i64) -> AlarmState {
        if self.cleared_ms.is_some() {
            AlarmState::Cleared
        } else if self.shelved.as_ref().is_some_and(|s| s.until_ms > now_ms) {
            AlarmState::Shelved
        } else if self.acknowledged.is_some() {
            AlarmState::Acknowledged
        } else {
            AlarmState::Raised
        }
    }

    /// The node's name: `<rule>@<scope>`.
    pub fn node_name(&self) -> String {
        node_name(&self.rule, &self.scope)
    }

    /// Appends a transition (keeping the newest [`NODE_EVENTS`]).
    fn record(&mut self, kind: AlarmEventKind, at_ms: i64, actor: &Actor, note: String) {
        let event = AlarmEvent {
            alarm: self.id.clone(),
            seq: self.next_seq,
            rule: self.rule.clone(),
            scope: self.scope.clone(),
            kind,
            priority: self.priority,
            at_ms,
            actor: actor.name().to_string(),
            role: actor.role().to_string(),
            value: Some(self.value),
            note,
        };
        self.next_seq += 1;
        self.events.push(event);
    }

    /// How many times it was shelved.
    fn shelvings(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == AlarmEventKind::Shelved)
            .count()
    }
}

/// `<rule>@<scope>`.
pub fn node_name(rule: &str, scope: &str) -> String {
    format!("{rule}@{scope}")
}

/// The node of alarm `id` (`<rule>@<scope>@<episode>`) and its episode number.
///
/// # Errors
/// `Invalid` if `id` is not an alarm id.
pub fn parse_id(id: &str) -> Result<(String, i64)> {
    let bad = || {
        Error::Invalid(format!(
            "alarm id {id:?}: expected <rule>@<scope>@<raised_ms>"
        ))
    };
    let (name, raised) = id.rsplit_once('@').ok_or_else(bad)?;
    let raised: i64 = raised.parse().map_err(|_| bad())?;
    let (rule, scope) = name.split_once('@').ok_or_else(bad)?;
    // The scope is `cluster`, or a kind and a name (a pool's name may be 64 characters).
    let scope_ok = scope == "cluster"
        || scope.split_once('.').is_some_and(|(kind, rest)| {
            matches!(kind, "equipment" | "department" | "patient")
                && validate_name("alarm scope", rest).is_ok()
        });
    if validate_name("alarm rule", rule).is_err() || !scope_ok {
        return Err(bad());
    }
    Ok((name.to_string(), raised))
}

fn alarm_path(name: &str) -> String {
    format!("{}/{name}", tree::ALARMS)
}

/// The active alarms (and any cleared one whose node is not deleted yet), highest priority
/// first, then oldest first, then by id — from the instance's copy of `/medical/alarms` (no request once
/// the copy is started).
///
/// # Notable errors
/// A session-fatal error if the session has ended before the copy was started.
pub async fn active(hospital: &Hospital) -> Result<Vec<AlarmNode>> {
    let model = hospital.alarm_model().await?;
    model.settle().await;
    let mut alarms: Vec<AlarmNode> = model
        .children(tree::ALARMS)
        .into_iter()
        .filter_map(|name| {
            let node = model.get(&alarm_path(&name))?;
            match tree::from_json::<AlarmNode>("alarm", &node.data) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::warn!(alarm = %name, error = %e, "skipping a malformed alarm node");
                    None
                }
            }
        })
        .collect();
    alarms.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.raised_ms.cmp(&b.raised_ms))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(alarms)
}

/// Acknowledges alarm `id` as `actor`, with `note`. Acknowledging an acknowledged alarm
/// changes nothing and answers it as it is.
///
/// # Notable errors
/// `NotFound` if no such alarm is active (cleared, or never raised); `Invalid` for an
/// over-long note or a malformed id.
pub async fn acknowledge(
    hospital: &Hospital,
    id: &str,
    actor: impl Into<Actor>,
    note: &str,
) -> Result<AlarmNode> {
    let actor = actor.into();
    let note = checked_note("note", note)?;
    let now = hospital.now_ms();
    let by = actor.name().to_string();
    change(
        hospital,
        id,
        move |mut a| {
            if a.acknowledged.is_some() {
                return Ok(None);
            }
            a.acknowledged = Some(Acknowledgement {
                by: actor.name().to_string(),
                at_ms: now,
                note: String::new(),
            });
            a.record(AlarmEventKind::Acknowledged, now, &actor, String::new());
            Ok(Some(a))
        },
        (AlarmEventKind::Acknowledged, by, note),
    )
    .await
}

/// Shelves alarm `id` for `duration` (at most [`MAX_SHELVE`]) because of `reason`: it is not
/// delivered nor escalated until then; the evaluator unshelves it when the time is up. It
/// still clears when its condition does. Shelving a shelved alarm sets the new expiry.
///
/// # Notable errors
/// `NotFound` if no such alarm is active; `Invalid` for a zero or over-long duration or a
/// missing or over-long reason.
pub async fn shelve(
    hospital: &Hospital,
    id: &str,
    actor: impl Into<Actor>,
    duration: std::time::Duration,
    reason: &str,
) -> Result<AlarmNode> {
    let actor = actor.into();
    if duration.is_zero() || duration > MAX_SHELVE {
        return Err(Error::Invalid(format!(
            "shelve for more than zero and at most {} h",
            MAX_SHELVE.as_secs() / 3600
        )));
    }
    let reason = checked_note("reason", reason)?;
    if reason.trim().is_empty() {
        return Err(Error::Invalid("a shelving needs a reason".into()));
    }
    let now = hospital.now_ms();
    let until = now + duration.as_millis() as i64;
    let by = actor.name().to_string();
    change(
        hospital,
        id,
        move |mut a| {
            if a.shelvings() >= MAX_SHELVINGS {
                return Err(Error::Conflict(format!(
                    "alarm {} was shelved {MAX_SHELVINGS} times already: acknowledge it, or fix \
                     its cause",
                    a.id
                )));
            }
            a.shelved = Some(Shelving {
                by: actor.name().to_string(),
                at_ms: now,
                until_ms: until,
                reason: String::new(),
            });
            a.record(AlarmEventKind::Shelved, now, &actor, String::new());
            Ok(Some(a))
        },
        (AlarmEventKind::Shelved, by, reason),
    )
    .await
}

fn checked_note(what: &str, note: &str) -> Result<String> {
    if note.chars().count() > MAX_NOTE {
        return Err(Error::Invalid(format!(
            "the {what} is over {MAX_NOTE} characters"
        )));
    }
    Ok(note.to_string())
}

/// A version-checked change of alarm `id`'s node by `decide` (`None`: nothing to change),
/// then the copy of its events to the clinical store, with `note` (the kind of event, who, the
/// text) given to that person's newest event of that kind: staff's text goes to the store
/// only. A retry after a failed copy fills in the note the first attempt could not store.
async fn change<F>(
    hospital: &Hospital,
    id: &str,
    decide: F,
    note: (AlarmEventKind, String, String),
) -> Result<AlarmNode>
where
    F: Fn(AlarmNode) -> Result<Option<AlarmNode>>,
{
    let (name, _) = parse_id(id)?;
    let path = alarm_path(&name);
    let decide = &decide;
    let (node, _) = tree::read_modify_write(hospital.session().as_ref(), &path, ATTEMPTS, |data| {
        let result = (|| {
            let gone = || Error::NotFound(format!("alarm {id} (cleared, or never raised)"));
            let data = data.ok_or_else(gone)?;
            let a: AlarmNode = tree::from_json("alarm", &data)?;
            if a.id != id || a.cleared_ms.is_some() {
                return Err(gone());
            }
            Ok(match decide(a.clone())? {
                Some(changed) => Change::Write(tree::to_json(&changed), changed),
                None => Change::Keep(a),
            })
        })();
        std::future::ready(result)
    })
    .await?;
    let (kind, by, text) = note;
    let mut events = node.events.clone();
    if let Some(e) = events
        .iter_mut()
        .rev()
        .find(|e| e.kind == kind && e.actor == by)
    {
        e.note = text;
    }
    hospital.store().record_alarm_events(&events).await?;
    Ok(node)
}

/// The notes staff gave alarm `node`'s acknowledgement and shelving, from the clinical store
/// (the node holds none): `node` with them filled in.
pub async fn with_notes(hospital: &Hospital, mut node: AlarmNode) -> Result<AlarmNode> {
    if node.acknowledged.is_none() && node.shelved.is_none() {
        return Ok(node);
    }
    let q = crate::store::AlarmQuery {
        alarm: Some(node.id.clone()),
        since_ms: None,
        limit: Some(crate::store::AUDIT_MAX_LIMIT),
    };
    let stored = hospital.store().alarm_events(&q).await?;
    let newest = |kind| {
        stored
            .iter()
            .rev()
            .find(|e| e.kind == kind)
            .map(|e| e.note.clone())
            .unwrap_or_default()
    };
    if let Some(a) = &mut node.acknowledged {
        a.note = newest(AlarmEventKind::Acknowledged);
    }
    if let Some(s) = &mut node.shelved {
        s.reason = newest(AlarmEventKind::Shelved);
    }
    Ok(node)
}

/// Raises `node` by creating it; if another evaluator created it first, the one in the tree is
/// returned instead (with `false`).
async fn create(hospital: &Hospital, node: &AlarmNode) -> Result<(AlarmNode, bool)> {
    let path = alarm_path(&node.node_name());
    let session = hospital.session();
    match session
        .create(
            &path,
            &tree::to_json(node),
            &CreateOptions::new(CreateMode::Persistent),
        )
        .await
    {
        Ok(_) => Ok((node.clone(), true)),
        Err(Coord::NoNode) => {
            session
                .create_all(
                    tree::ALARMS,
                    b"",
                    &CreateOptions::new(CreateMode::Persistent),
                )
                .await?;
            Box::pin(create(hospital, node)).await
        }
        Err(Coord::NodeExists) => {
            let (data, _) = session.get_data(&path).await?;
            Ok((tree::from_json("alarm", &data)?, false))
        }
        Err(e) => Err(e.into()),
    }
}

/// True if the clinical store has events of alarm `id` (an earlier episode).
async fn known(hospital: &Hospital, id: &str) -> Result<bool> {
    let q = crate::store::AlarmQuery {
        alarm: Some(id.to_string()),
        since_ms: None,
        limit: Some(1),
    };
    Ok(!hospital.store().alarm_events(&q).await?.is_empty())
}

/// The alarms' history from the clinical store, newest first.
pub async fn history(
    hospital: &Hospital,
    query: &crate::store::AlarmQuery,
) -> Result<Vec<AlarmEvent>> {
    Ok(hospital.store().alarm_events(query).await?)
}

/// Shared by the evaluator's pass: the node at `name` as cached, with its version.
fn cached(model: &Arc<medkeeper_recipes::TreeCache>, name: &str) -> Option<(AlarmNode, i32)> {
    let node = model.get(&alarm_path(name))?;
    let a = tree::from_json::<AlarmNode>("alarm", &node.data).ok()?;
    Some((a, node.stat.version))
}
