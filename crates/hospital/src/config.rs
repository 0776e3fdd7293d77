//! The hospital configuration file (TOML): equipment kinds and their units with capabilities,
//! departments and their doctors, waiting targets per priority, the no-show policy — and its
//! idempotent loading into the `/medical` tree.
//!
//! # The file
//! ```toml
//! name = "St. Example General"      # display name (required)
//! time_zone = "Asia/Shanghai"       # IANA name the dashboard shows times in (optional;
//!                                   # without it, each device's own zone)
//!
//! [targets]                         # waiting target per FHIR priority; a missing one takes
//! stat = "10m"                      # the default (stat 10m, asap 30m, urgent 60m, routine 24h)
//! asap = "30m"
//! urgent = "60m"
//! routine = "24h"
//!
//! [no_show]
//! grace = "15m"                     # how long a called patient may take to arrive (15m)
//! policy = "requeue"                # or "no-show" (the default)
//!
//! [[equipment]]                     # one per equipment kind
//! kind = "MRI"
//! exam_duration = "45m"
//! units = [ { name = "MRI-1", capabilities = ["3T", "contrast"] }, { name = "MRI-2" } ]
//!
//! [[equipment]]
//! kind = "CT"
//! exam_duration = "15m"
//! reserve_for_stat = true           # keep the last free unit for stat orders while no busy
//!                                   # unit is expected to free within half the stat target
//! units = [ { name = "CT-1" }, { name = "CT-2" } ]
//!
//! [[department]]                    # one per department
//! name = "cardiology"
//! consultation_duration = "20m"
//! doctors = [ { name = "dr-cardio-1", capabilities = ["echo"] } ]
//! ```
//! Durations are strings of a number and a unit, `ms`, `s`, `m` or `h`, combinable (`1h30m`).
//! Kinds, departments, units and doctors become znode names: 1–64 characters of
//! `A-Z a-z 0-9 - _ .`, never `lock` or `queue` (a pool's lock and queue live beside its units).
//! Kinds are unique among kinds, departments among departments, units and doctors within their
//! pool; every pool has at least one unit or doctor; capabilities are non-empty, without `/`,
//! each listed once per unit; every duration is more than zero; unknown keys are refused. The
//! time zone has the shape of an IANA name ([`TimeZone`]). Every error names its line:
//! `hospital.toml line 14: unit "lock" is a reserved name`.
//!
//! The configuration holds resources and policy only: no patient, and no other PHI, is ever
//! named in it or written by [`load`].
//!
//! # Loading
//! [`load`] makes the tree match the file without ever disturbing live state: it creates what is
//! missing, updates pool parameters and unit capabilities that changed, and keeps a unit's
//! status, occupant and order — a reload never frees an occupied scanner or puts a unit in
//! maintenance back in service. Units in the tree that the file no longer declares are kept (a
//! patient may be inside) and reported as orphaned (`serve` logs them); they take no one new —
//! the dispatcher and manual calls pass them by ([`HospitalConfig::declares_unit`]) — and can be
//! removed with `medkeeper coord delete` once free. Loading the same file twice changes nothing
//! the second time.
//!
//! ```
//! use medkeeper_hospital::config::HospitalConfig;
//! use medkeeper_hospital::Pool;
//!
//! let demo = HospitalConfig::demo();
//! let mri = demo.pool(&Pool::Equipment("MRI".into())).unwrap();
//! assert_eq!(mri.units.len(), 2);
//!
//! let err = HospitalConfig::parse("name = \"x\"\n[targets]\nstst = \"10m\"\n").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "line 3: unknown priority target \"stst\": use stat, asap, urgent or routine"
//! );
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Error;
use crate::alarms::{AlarmPriority, AlarmRule, Signal, fmt_value};
use crate::model::{Pool, Priority, UnitStatus, now_ms, validate_name};
use crate::tree::{self, Change, UnitNode};

/// What happens to a called patient who does not arrive within the grace period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NoShowPolicy {
    /// The order ends as no-show; the unit is freed.
    #[default]
    NoShow,
    /// The order goes back to the queue with its original priority, and ageing counts from
    /// when it was ordered; the unit is freed. Its place in line is new: it rejoins its
    /// (effective) class behind the orders enqueued before the no-show.
    Requeue,
}

/// Waiting targets per priority: how long an order may wait before it is late. The queue ages
/// an order by one priority class per target of its class waited, so no class starves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Targets {
    /// stat.
    pub stat: Duration,
    /// asap.
    pub asap: Duration,
    /// urgent.
    pub urgent: Duration,
    /// routine.
    pub routine: Duration,
}

impl Targets {
    /// The target of `priority`.
    pub fn of(&self, priority: Priority) -> Duration {
        match priority {
            Priority::Stat => self.stat,
            Priority::Asap => self.asap,
            Priority::Urgent => self.urgent,
            Priority::Routine => self.routine,
        }
    }

    /// Targets by queue class (stat, asap, urgent, routine).
    pub fn by_class(&self) -> Vec<Duration> {
        Priority::ALL.iter().map(|p| self.of(*p)).collect()
    }
}

impl Default for Targets {
    /// Typical emergency-department targets: stat 10 min, asap 30 min, urgent 60 min, routine
    /// 24 h.
    fn default() -> Self {
        Targets {
            stat: Duration::from_secs(10 * 60),
            asap: Duration::from_secs(30 * 60),
            urgent: Duration::from_secs(60 * 60),
            routine: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// A unit of equipment, or a doctor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitConfig {
    /// Its name (`MRI-1`, `dr-house`): a znode name, not `lock` or `queue`.
    pub name: String,
    /// What it can do (`contrast`, `3T`).
    pub capabilities: Vec<String>,
}

/// An equipment kind or a department with its units or doctors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The kind or department.
    pub pool: Pool,
    /// Typical exam (or consultation) duration, for estimated waits.
    pub exam_duration: Duration,
    /// Its units or doctors.
    pub units: Vec<UnitConfig>,
    /// Keep the last free unit for stat orders while no busy unit is expected to free within
    /// half the stat target (see [`dispatch`](crate::dispatch)). For the pools stat orders go to
    /// (the emergency CT); it costs utilisation, so it is off by default.
    #[serde(default)]
    pub reserve_for_stat: bool,
}

/// A whole hospital.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HospitalConfig {
    /// The hospital's display name.
    pub name: String,
    /// The zone the hospital's screens show dates and times in; `None`: each device's own.
    #[serde(default)]
    pub time_zone: Option<TimeZone>,
    /// Waiting targets.
    pub targets: Targets,
    /// How long a called patient may take to arrive.
    pub no_show_grace: Duration,
    /// What happens then.
    pub no_show_policy: NoShowPolicy,
    /// Equipment kinds and departments.
    pub pools: Vec<PoolConfig>,
    /// Alarm rules ([`crate::alarms`]), in file order.
    #[serde(default)]
    pub alarms: Vec<AlarmRule>,
}

/// An IANA time zone name (`Asia/Shanghai`, `America/Argentina/Buenos_Aires`, `Etc/GMT+8`,
/// `UTC`): the zone a hospital's screens show dates and times in, whatever zone a device is set
/// to (a tablet left on UTC, an administrator abroad).
///
/// Only the name's shape is checked — no time zone database is linked in: an IANA area
/// (`Africa`, `America`, `Antarctica`, `Arctic`, `Asia`, `Atlantic`, `Australia`, `Europe`,
/// `Indian`, `Pacific`, `Etc`, or the old `US`, `Canada`, `Brazil`, `Chile`, `Mexico`), then one
/// or two parts of 1–14 ASCII letters, digits, `.`, `-`, `_` or `+`, each starting with a
/// letter; or `UTC` / `GMT` alone. A well-shaped name the browser does not know
/// (`Asia/Atlantis`) is caught there: the dashboard falls back to the device's zone and says so
/// in the browser's console.
///
/// ```
/// use medkeeper_hospital::config::TimeZone;
///
/// assert_eq!("Asia/Shanghai".parse::<TimeZone>().unwrap().as_str(), "Asia/Shanghai");
/// assert!("UTC".parse::<TimeZone>().is_ok());
/// assert!("Etc/GMT+8".parse::<TimeZone>().is_ok());
/// assert!("+08:00".parse::<TimeZone>().is_err());
/// assert!("Shanghai".parse::<TimeZone>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZone(String);

impl TimeZone {
    /// The areas an IANA name starts with (the old country directories of `backward` too).
    pub const AREAS: [&'static str; 16] = [
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
        "US",
        "Canada",
        "Brazil",
        "Chile",
        "Mexico",
    ];

    /// The name, e.g. `Asia/Shanghai`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for TimeZone {
    type Err = Error;

    /// # Errors
    /// [`Error::Invalid`] saying what is wrong with the name's shape.
    fn from_str(name: &str) -> Result<TimeZone, Error> {
        let hint = "use an IANA name such as \"Asia/Shanghai\", \"Europe/London\" or \"UTC\"";
        let parts: Vec<&str> = name.split('/').collect();
        let bad = |why: String| Err(Error::Invalid(format!("time_zone {name:?}: {why}")));
        match parts.as_slice() {
            ["UTC" | "GMT"] => return Ok(TimeZone(name.to_string())),
            [_] => return bad(hint.to_string()),
            [area, ..] if !Self::AREAS.contains(area) => {
                return bad(format!(
                    "{area:?} is not an IANA area ({}); {hint}",
                    Self::AREAS.join(", ")
                ));
            }
            [_, rest @ ..] if rest.len() > 2 => return bad(hint.to_string()),
            _ => {}
        }
        for part in &parts[1..] {
            let shape = part.len() <= 14
                && part.starts_with(|c: char| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+'));
            if !shape {
                return bad(format!(
                    "{part:?} is not a place name (1-14 ASCII letters, digits, . - _ +, \
                     starting with a letter); {hint}"
                ));
            }
        }
        Ok(TimeZone(name.to_string()))
    }
}

impl TryFrom<String> for TimeZone {
    type Error = Error;

    fn try_from(name: String) -> Result<TimeZone, Error> {
        name.parse()
    }
}

impl From<TimeZone> for String {
    fn from(zone: TimeZone) -> String {
        zone.0
    }
}

impl HospitalConfig {
    /// Whether the file declares unit (or doctor) `unit` in `pool`. A unit it no longer
    /// declares stays in the tree while someone may be inside ([`load`]'s orphans), but takes
    /// no one new: the dispatcher and manual calls pass it by.
    pub fn declares_unit(&self, pool: &Pool, unit: &str) -> bool {
        self.pool(pool)
            .is_some_and(|p| p.units.iter().any(|u| u.name == unit))
    }

    /// The pool named by `pool`, if configured.
    pub fn pool(&self, pool: &Pool) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| &p.pool == pool)
    }
}

impl HospitalConfig {
    /// The demo hospital's file (`crates/hospital/demo-hospital.toml`): 2 MRI, 3 CT, 1 X-ray,
    /// cardiology and neurology with their doctors.
    pub const DEMO_TOML: &'static str = include_str!("../demo-hospital.toml");

    /// The demo hospital, parsed from [`DEMO_TOML`](HospitalConfig::DEMO_TOML).
    pub fn demo() -> HospitalConfig {
        HospitalConfig::parse(Self::DEMO_TOML).expect("the shipped demo hospital is valid")
    }

    /// Parses and validates a configuration file's text.
    ///
    /// # Errors
    /// [`Error::Config`] with a message that starts with the offending line, `line 9: ...`.
    pub fn parse(text: &str) -> Result<HospitalConfig, Error> {
        parse_text(text).map_err(|e| Error::Config(e.to_string()))
    }

    /// Reads, parses and validates the configuration file at `path`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and the line (`hospital.toml line 9: ...`), or the file
    /// and the I/O error if it cannot be read.
    pub fn from_file(path: impl AsRef<Path>) -> Result<HospitalConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        parse_text(&text).map_err(|e| Error::Config(format!("{} {e}", path.display())))
    }
}

/// A configuration error at a line of the file.
#[derive(Debug)]
struct LineError {
    line: usize,
    message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

// The file as written, with the position of every value that validation may complain about.

/// A duration as written: a string. A bare number gets a hint instead of serde's "expected a
/// string".
struct DurationText(String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "duration {v}: write it as a string with a unit, e.g. \"{v}m\""
                )))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "duration {v}: write it as a string with a unit, e.g. \"{v}m\""
                )))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<DurationText, E> {
                Err(E::custom(format!(
                    "duration {v}: write it as a string with a unit, e.g. \"10m\""
                )))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHospital {
    name: Spanned<String>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<DurationText>>,
    #[serde(default)]
    no_show: Option<RawNoShow>,
    #[serde(default)]
    equipment: Vec<RawEquipment>,
    #[serde(default)]
    department: Vec<RawDepartment>,
    #[serde(default)]
    alarm: Vec<RawAlarm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlarm {
    name: Spanned<String>,
    signal: Spanned<String>,
    #[serde(default)]
    pool: Option<Spanned<String>>,
    #[serde(default)]
    order_priority: Option<Spanned<String>>,
    raise: Spanned<f64>,
    #[serde(default)]
    clear: Option<Spanned<f64>>,
    #[serde(default, rename = "for")]
    raise_for: Option<Spanned<DurationText>>,
    #[serde(default)]
    clear_for: Option<Spanned<DurationText>>,
    #[serde(default)]
    priority: Option<Spanned<String>>,
    #[serde(default)]
    escalate_after: Option<Spanned<DurationText>>,
    #[serde(default)]
    latching: bool,
    #[serde(default)]
    limit: Option<Spanned<DurationText>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNoShow {
    #[serde(default)]
    grace: Option<Spanned<DurationText>>,
    #[serde(default)]
    policy: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEquipment {
    kind: Spanned<String>,
    exam_duration: Spanned<DurationText>,
    #[serde(default)]
    reserve_for_stat: bool,
    #[serde(default)]
    units: Vec<RawUnit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDepartment {
    name: Spanned<String>,
    consultation_duration: Spanned<DurationText>,
    #[serde(default)]
    reserve_for_stat: bool,
    #[serde(default)]
    doctors: Vec<RawUnit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnit {
    name: Spanned<String>,
    #[serde(default)]
    capabilities: Vec<Spanned<String>>,
}

/// Validates the raw file against its text (for line numbers).
struct Validator<'a> {
    text: &'a str,
}

impl Validator<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    fn fail<T>(&self, span: Range<usize>, message: String) -> Result<T, LineError> {
        Err(LineError {
            line: self.line(span),
            message,
        })
    }

    /// A duration that may be zero (`"0s"`).
    fn duration_or_zero(&self, value: &Spanned<DurationText>) -> Result<Duration, LineError> {
        let text = &value.get_ref().0;
        parse_duration(text).map_or_else(
            || {
                self.fail(
                    value.span(),
                    format!("duration {text:?}: use e.g. 10m, 30s, 2h"),
                )
            },
            Ok,
        )
    }

    fn duration(&self, value: &Spanned<DurationText>) -> Result<Duration, LineError> {
        let text = &value.get_ref().0;
        match parse_duration(text) {
            Some(d) if !d.is_zero() => Ok(d),
            Some(_) => self.fail(
                value.span(),
                format!("duration {text:?} must be more than zero"),
            ),
            None => self.fail(
                value.span(),
                format!("duration {text:?}: use e.g. 10m, 30s, 2h"),
            ),
        }
    }

    /// A kind, department, unit or doctor name: one znode name, not reserved.
    fn name(&self, what: &str, value: &Spanned<String>) -> Result<String, LineError> {
        let name = value.get_ref();
        if tree::RESERVED.contains(&name.as_str()) {
            return self.fail(value.span(), format!("{what} {name:?} is a reserved name"));
        }
        match validate_name(what, name) {
            Ok(()) => Ok(name.clone()),
            Err(Error::Invalid(message)) => self.fail(value.span(), message),
            Err(other) => self.fail(value.span(), other.to_string()),
        }
    }

    /// The hospital's time zone: an IANA name's shape ([`TimeZone`]).
    fn time_zone(&self, value: &Spanned<String>) -> Result<TimeZone, LineError> {
        value
            .get_ref()
            .parse()
            .or_else(|e| self.fail(value.span(), message_of(e)))
    }

    fn targets(&self, raw: &BTreeMap<String, Spanned<DurationText>>) -> Result<Targets, LineError> {
        let mut targets = Targets::default();
        // In file order, so the first mistake is the one reported.
        let mut entries: Vec<_> = raw.iter().collect();
        entries.sort_by_key(|(_, v)| v.span().start);
        for (key, value) in entries {
            let slot = match key.parse::<Priority>() {
                Ok(Priority::Stat) => &mut targets.stat,
                Ok(Priority::Asap) => &mut targets.asap,
                Ok(Priority::Urgent) => &mut targets.urgent,
                Ok(Priority::Routine) => &mut targets.routine,
                Err(_) => {
                    return self.fail(
                        value.span(),
                        format!(
                            "unknown priority target {key:?}: use stat, asap, urgent or routine"
                        ),
                    );
                }
            };
            *slot = self.duration(value)?;
        }
        Ok(targets)
    }

    fn policy(&self, value: &Spanned<String>) -> Result<NoShowPolicy, LineError> {
        match value.get_ref().as_str() {
            "requeue" => Ok(NoShowPolicy::Requeue),
            "no-show" => Ok(NoShowPolicy::NoShow),
            other => self.fail(
                value.span(),
                format!("no-show policy {other:?}: use \"requeue\" or \"no-show\""),
            ),
        }
    }

    /// A pool's units or doctors; `at` is the pool name's position, for "no units".
    fn units(
        &self,
        pool: &Pool,
        what: &str,
        at: Range<usize>,
        raw: &[RawUnit],
    ) -> Result<Vec<UnitConfig>, LineError> {
        if raw.is_empty() {
            return self.fail(at, format!("{pool} has no {what}s: declare at least one"));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut units = Vec::with_capacity(raw.len());
        for unit in raw {
            let name = self.name(what, &unit.name)?;
            if let Some(first) = seen.insert(unit.name.get_ref(), self.line(unit.name.span())) {
                return self.fail(
                    unit.name.span(),
                    format!("{what} {name:?} appears twice in {pool} (first on line {first})"),
                );
            }
            let mut capabilities: Vec<String> = Vec::with_capacity(unit.capabilities.len());
            for cap in &unit.capabilities {
                let c = cap.get_ref();
                if c.trim().is_empty() || c.contains('/') {
                    return self.fail(
                        cap.span(),
                        format!(
                            "capability {c:?} of {what} {name:?}: use a non-empty name without \"/\""
                        ),
                    );
                }
                if capabilities.contains(c) {
                    return self.fail(
                        cap.span(),
                        format!("capability {c:?} is listed twice for {what} {name:?}"),
                    );
                }
                capabilities.push(c.clone());
            }
            units.push(UnitConfig { name, capabilities });
        }
        Ok(units)
    }
}

impl Validator<'_> {
    /// The `[[alarm]]` rules, against the pools declared.
    fn alarms(&self, raw: &[RawAlarm], pools: &[PoolConfig]) -> Result<Vec<AlarmRule>, LineError> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(raw.len());
        for a in raw {
            let name = a.name.get_ref();
            if let Err(e) = validate_name("alarm rule", name) {
                return self.fail(a.name.span(), message_of(e));
            }
            if let Some(first) = names.insert(name, self.line(a.name.span())) {
                return self.fail(
                    a.name.span(),
                    format!("alarm {name:?} is declared twice (first on line {first})"),
                );
            }
            let signal: Signal = a
                .signal
                .get_ref()
                .parse()
                .or_else(|m| self.fail(a.signal.span(), m))?;
            let pool = match &a.pool {
                None => None,
                Some(_) if !signal.per_pool() => {
                    return self.fail(
                        a.pool.as_ref().map_or(a.signal.span(), |p| p.span()),
                        format!("alarm {name:?}: signal {signal} is not a pool's: remove `pool`"),
                    );
                }
                Some(p) => Some(self.alarm_pool(p, pools)?),
            };
            let order_priority = match &a.order_priority {
                None => None,
                Some(p) if !matches!(signal, Signal::QueueLength | Signal::OldestWait) => {
                    return self.fail(
                        p.span(),
                        format!("alarm {name:?}: order_priority applies to queue_length and oldest_wait only"),
                    );
                }
                Some(p) => Some(
                    p.get_ref()
                        .parse::<Priority>()
                        .or_else(|e| self.fail(p.span(), message_of(e)))?,
                ),
            };
            let raise = *a.raise.get_ref();
            let clear = a.clear.as_ref().map_or(raise, |c| *c.get_ref());
            for (value, span) in [
                (raise, a.raise.span()),
                (clear, a.clear.as_ref().map_or(a.raise.span(), |c| c.span())),
            ] {
                if !value.is_finite() || value < 0.0 {
                    return self.fail(
                        span,
                        format!("alarm {name:?}: threshold {value} must be a number of 0 or more"),
                    );
                }
                if signal == Signal::Utilisation && value > 100.0 {
                    return self.fail(
                        span,
                        format!("alarm {name:?}: utilisation is a percentage: {value} is over 100"),
                    );
                }
            }
            let clear_span = a.clear.as_ref().map_or(a.raise.span(), |c| c.span());
            if signal.rising() && clear > raise {
                return self.fail(
                    clear_span,
                    format!(
                        "alarm {name:?}: {signal} alarms when high, so clear ({}) must be at or below raise ({})",
                        fmt_value(clear),
                        fmt_value(raise)
                    ),
                );
            }
            if !signal.rising() && clear < raise {
                return self.fail(
                    clear_span,
                    format!(
                        "alarm {name:?}: {signal} alarms when low, so clear ({}) must be at or above raise ({})",
                        fmt_value(clear),
                        fmt_value(raise)
                    ),
                );
            }
            let raise_for = match &a.raise_for {
                Some(d) => self.duration_or_zero(d)?,
                None => Duration::ZERO,
            };
            let clear_for = match &a.clear_for {
                Some(d) => self.duration_or_zero(d)?,
                None => raise_for,
            };
            let priority = match &a.priority {
                Some(p) => p
                    .get_ref()
                    .parse::<AlarmPriority>()
                    .or_else(|m| self.fail(p.span(), m))?,
                None => AlarmPriority::default(),
            };
            let escalate_after = match &a.escalate_after {
                Some(d) => Some(self.duration(d)?),
                None => None,
            };
            let limit = match &a.limit {
                Some(l) if signal != Signal::UnitsUnavailable => {
                    return self.fail(
                        l.span(),
                        format!("alarm {name:?}: limit applies to units_unavailable only"),
                    );
                }
                Some(l) => self.duration_or_zero(l)?,
                None => Duration::ZERO,
            };
            rules.push(AlarmRule {
                name: name.clone(),
                signal,
                pool,
                order_priority,
                raise,
                clear,
                raise_for,
                clear_for,
                priority,
                escalate_after,
                latching: a.latching,
                limit,
            });
        }
        Ok(rules)
    }

    /// An alarm's `pool`: a kind or department name, or `equipment/KIND`, `department/NAME`
    /// when a name is both.
    fn alarm_pool(&self, value: &Spanned<String>, pools: &[PoolConfig]) -> Result<Pool, LineError> {
        let text = value.get_ref();
        let matches: Vec<&Pool> = match text.split_once('/') {
            Some(("equipment", k)) => pools
                .iter()
                .map(|p| &p.pool)
                .filter(|p| matches!(p, Pool::Equipment(n) if n == k))
                .collect(),
            Some(("department", d)) => pools
                .iter()
                .map(|p| &p.pool)
                .filter(|p| matches!(p, Pool::Department(n) if n == d))
                .collect(),
            _ => pools
                .iter()
                .map(|p| &p.pool)
                .filter(|p| p.name() == text)
                .collect(),
        };
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => self.fail(
                value.span(),
                format!("alarm pool {text:?} is neither an equipment kind nor a department of this file"),
            ),
            _ => self.fail(
                value.span(),
                format!("alarm pool {text:?} is both an equipment kind and a department: write \"equipment/{text}\" or \"department/{text}\""),
            ),
        }
    }
}

/// A validation error's message without its kind.
fn message_of(e: Error) -> String {
    match e {
        Error::Invalid(m) => m,
        other => other.to_string(),
    }
}

fn parse_text(text: &str) -> Result<HospitalConfig, LineError> {
    let raw: RawHospital = toml::from_str(text).map_err(|e| LineError {
        line: e.span().map_or(1, |s| line_of(text, s.start)),
        // toml's messages may run over several lines; one line reads better in a log.
        message: e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    })?;
    let v = Validator { text };

    if raw.name.get_ref().trim().is_empty() {
        return v.fail(raw.name.span(), "the hospital name is empty".into());
    }
    let time_zone = raw.time_zone.as_ref().map(|z| v.time_zone(z)).transpose()?;
    let targets = v.targets(&raw.targets)?;
    let mut no_show_grace = Duration::from_secs(15 * 60);
    let mut no_show_policy = NoShowPolicy::default();
    if let Some(no_show) = &raw.no_show {
        if let Some(grace) = &no_show.grace {
            no_show_grace = v.duration(grace)?;
        }
        if let Some(policy) = &no_show.policy {
            no_show_policy = v.policy(policy)?;
        }
    }

    let mut pools = Vec::with_capacity(raw.equipment.len() + raw.department.len());
    let mut kinds: HashMap<&str, usize> = HashMap::new();
    for eq in &raw.equipment {
        let kind = v.name("equipment kind", &eq.kind)?;
        if let Some(first) = kinds.insert(eq.kind.get_ref(), v.line(eq.kind.span())) {
            return v.fail(
                eq.kind.span(),
                format!("equipment kind {kind:?} is declared twice (first on line {first})"),
            );
        }
        let exam_duration = v.duration(&eq.exam_duration)?;
        let pool = Pool::Equipment(kind);
        let units = v.units(&pool, "unit", eq.kind.span(), &eq.units)?;
        pools.push(PoolConfig {
            pool,
            exam_duration,
            units,
            reserve_for_stat: eq.reserve_for_stat,
        });
    }
    let mut departments: HashMap<&str, usize> = HashMap::new();
    for dept in &raw.department {
        let name = v.name("department", &dept.name)?;
        if let Some(first) = departments.insert(dept.name.get_ref(), v.line(dept.name.span())) {
            return v.fail(
                dept.name.span(),
                format!("department {name:?} is declared twice (first on line {first})"),
            );
        }
        let exam_duration = v.duration(&dept.consultation_duration)?;
        let pool = Pool::Department(name);
        let units = v.units(&pool, "doctor", dept.name.span(), &dept.doctors)?;
        pools.push(PoolConfig {
            pool,
            exam_duration,
            units,
            reserve_for_stat: dept.reserve_for_stat,
        });
    }
    if pools.is_empty() {
        return v.fail(
            0..0,
            "no [[equipment]] or [[department]]: a hospital needs at least one".into(),
        );
    }
    let alarms = v.alarms(&raw.alarm, &pools)?;

    Ok(HospitalConfig {
        name: raw.name.into_inner(),
        time_zone,
        targets,
        no_show_grace,
        no_show_policy,
        pools,
        alarms,
    })
}

/// Parses `10m`, `30s`, `250ms`, `2h`, `1h30m`; `None` if malformed or too large.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let bytes = text.as_bytes();
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let digits = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == digits {
            return None;
        }
        let n: u64 = text[digits..i].parse().ok()?;
        let unit = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit_ms = match &text[unit..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total_ms = total_ms.checked_add(n.checked_mul(unit_ms)?)?;
    }
    Some(Duration::from_millis(total_ms))
}

/// What a pool's node (`/medical/resources/equipment/<KIND>`,
/// `/medical/resources/doctors/<dept>`) holds: its configured parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolNode {
    /// The typical exam (or consultation) duration, in milliseconds, for estimated waits.
    pub exam_duration_ms: u64,
    /// Every capability some unit of the pool has, sorted: what an order may ask of it.
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl PoolNode {
    /// The node for `pool`'s configuration.
    pub fn of(pool: &PoolConfig) -> PoolNode {
        let mut capabilities: Vec<String> = pool
            .units
            .iter()
            .flat_map(|u| u.capabilities.iter().cloned())
            .collect();
        capabilities.sort();
        capabilities.dedup();
        PoolNode {
            exam_duration_ms: duration_ms(pool.exam_duration),
            capabilities,
        }
    }
}

/// Waiting targets in milliseconds, as [`ConfigNode`] holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetsMs {
    /// stat.
    pub stat: u64,
    /// asap.
    pub asap: u64,
    /// urgent.
    pub urgent: u64,
    /// routine.
    pub routine: u64,
}

/// What `/medical/config` holds: the loaded configuration's policy, so every instance
/// dispatches by the same targets and no-show rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigNode {
    /// The hospital's display name.
    pub hospital: String,
    /// Waiting targets per priority.
    pub targets_ms: TargetsMs,
    /// How long a called patient may take to arrive.
    pub no_show_grace_ms: u64,
    /// What happens then.
    pub no_show_policy: NoShowPolicy,
}

impl ConfigNode {
    /// The node for `config`.
    pub fn of(config: &HospitalConfig) -> ConfigNode {
        let t = &config.targets;
        ConfigNode {
            hospital: config.name.clone(),
            targets_ms: TargetsMs {
                stat: duration_ms(t.stat),
                asap: duration_ms(t.asap),
                urgent: duration_ms(t.urgent),
                routine: duration_ms(t.routine),
            },
            no_show_grace_ms: duration_ms(config.no_show_grace),
            no_show_policy: config.no_show_policy,
        }
    }

    /// The waiting targets.
    pub fn targets(&self) -> Targets {
        let t = &self.targets_ms;
        Targets {
            stat: Duration::from_millis(t.stat),
            asap: Duration::from_millis(t.asap),
            urgent: Duration::from_millis(t.urgent),
            routine: Duration::from_millis(t.routine),
        }
    }

    /// The no-show grace period.
    pub fn no_show_grace(&self) -> Duration {
        Duration::from_millis(self.no_show_grace_ms)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// What [`load`] did. Paths are full znode paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Nodes created: top-level directories, pools, units and doctors, `/medical/config`.
    pub created: Vec<String>,
    /// Nodes whose data changed: a pool's parameters, a unit's capabilities, the policy.
    pub updated: Vec<String>,
    /// Nodes that were already as configured.
    pub unchanged: usize,
    /// Units and doctors in the tree that the configuration does not declare, sorted. They
    /// are kept — a patient may be inside — for an operator to retire once free.
    pub orphaned: Vec<String>,
}

impl LoadReport {
    /// True if the load changed nothing.
    pub fn is_unchanged(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty()
    }

    fn record(&mut self, path: &str, outcome: Outcome) {
        match outcome {
            Outcome::Created => self.created.push(path.to_string()),
            Outcome::Updated => self.updated.push(path.to_string()),
            Outcome::Unchanged => self.unchanged += 1,
        }
    }
}

/// How many times [`load`] retries one node that others keep changing under it.
const MAX_ATTEMPTS: usize = 32;

enum Outcome {
    Created,
    Updated,
    Unchanged,
}

fn persistent() -> CreateOptions {
    CreateOptions::new(CreateMode::Persistent)
}

/// Makes `path` hold what `merge` wants: creates it with `fresh` if missing; otherwise
/// `merge(current)` says what to write (`None`: leave it). Writes are conditional on the version
/// read, so a concurrent change (a dispatch occupying the unit) is never overwritten: it is
/// re-read and merged again.
async fn upsert(
    session: &dyn Session,
    path: &str,
    fresh: &[u8],
    merge: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, Error>,
) -> Result<Outcome, Error> {
    let merge = &merge;
    tree::read_modify_write(session, path, MAX_ATTEMPTS, |current| async move {
        Ok(match current {
            None => Change::Write(fresh.to_vec(), Outcome::Created),
            Some(current) => match merge(&current)? {
                None => Change::Keep(Outcome::Unchanged),
                Some(data) => Change::Write(data, Outcome::Updated),
            },
        })
    })
    .await
    .map(|(outcome, _)| outcome)
}

/// `merge` for nodes that hold exactly the configured value.
fn replace_unless_equal<T>(desired: &T) -> impl Fn(&[u8]) -> Result<Option<Vec<u8>>, Error> + '_
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq,
{
    move |current| {
        let same = serde_json::from_slice::<T>(current).is_ok_and(|c| &c == desired);
        Ok((!same).then(|| tree::to_json(desired)))
    }
}

/// Loads `config` into the tree, idempotently (see the [module docs](self)).
///
/// Creates `/medical/{resources/equipment,resources/doctors,patients,members,alarms}`, writes
/// `/medical/config` ([`ConfigNode`]), each pool's node ([`PoolNode`]) and each unit's or
/// doctor's node ([`UnitNode`], available) if missing. An existing unit keeps its status,
/// order, patient and `since_ms`; only its capabilities follow the file. Nothing is deleted:
/// units the file no longer declares are reported in [`LoadReport::orphaned`].
///
/// Safe to run from several instances at once: every write is a create (which one instance
/// wins) or a set conditional on the version read.
///
/// # Notable errors
/// - [`Error::Coord`]: the session failed (a session-fatal error, or `ConnectionLoss`: load
///   again — it resumes where it stopped).
/// - [`Error::Invalid`]: an existing unit node does not hold a unit (it is left alone).
/// - [`Error::Conflict`]: one node kept changing under 32 attempts in a row.
///
/// # Cancellation safety
/// Cancel-safe in the sense that matters: every write is a single atomic node change, so a
/// cancelled load leaves each node either as it was or as configured, and loading again
/// completes it.
pub async fn load(session: &dyn Session, config: &HospitalConfig) -> Result<LoadReport, Error> {
    let mut report = LoadReport::default();
    for dir in [
        tree::EQUIPMENT,
        tree::DOCTORS,
        tree::PATIENTS,
        tree::MEMBERS,
        tree::ALARMS,
        tree::ESCALATIONS,
    ] {
        let created = session.create_all(dir, b"", &persistent()).await?;
        report.record(
            dir,
            if created {
                Outcome::Created
            } else {
                Outcome::Unchanged
            },
        );
    }

    let node = ConfigNode::of(config);
    let outcome = upsert(
        session,
        tree::CONFIG,
        &tree::to_json(&node),
        replace_unless_equal(&node),
    )
    .await?;
    report.record(tree::CONFIG, outcome);

    for pool in &config.pools {
        let path = tree::pool_path(&pool.pool);
        let node = PoolNode::of(pool);
        let outcome = upsert(
            session,
            &path,
            &tree::to_json(&node),
            replace_unless_equal(&node),
        )
        .await?;
        report.record(&path, outcome);

        for unit in &pool.units {
            let path = tree::unit_path(&pool.pool, &unit.name);
            let fresh = tree::to_json(&UnitNode {
                status: UnitStatus::Available,
                capabilities: unit.capabilities.clone(),
                order: None,
                patient: None,
                since_ms: now_ms(),
                requeueing: false,
            });
            let outcome = upsert(session, &path, &fresh, |current| {
                if current.is_empty() {
                    // A bare node (created as someone's ancestor): not yet a unit.
                    return Ok(Some(fresh.clone()));
                }
                let mut node: UnitNode = tree::from_json("unit", current)?;
                if node.capabilities == unit.capabilities {
                    return Ok(None);
                }
                node.capabilities = unit.capabilities.clone();
                Ok(Some(tree::to_json(&node)))
            })
            .await?;
            report.record(&path, outcome);
        }
    }

    report.orphaned = orphans(session, config).await?;
    Ok(report)
}

/// Unit and doctor nodes in the tree that `config` does not declare.
async fn orphans(session: &dyn Session, config: &HospitalConfig) -> Result<Vec<String>, Error> {
    let mut orphaned = Vec::new();
    for (base, equipment) in [(tree::EQUIPMENT, true), (tree::DOCTORS, false)] {
        let mut names = children(session, base).await?;
        names.sort();
        for name in names {
            let pool = if equipment {
                Pool::Equipment(name)
            } else {
                Pool::Department(name)
            };
            let declared = config.pool(&pool);
            let mut units = children(session, &tree::pool_path(&pool)).await?;
            units.sort();
            for unit in units {
                let known = tree::RESERVED.contains(&unit.as_str())
                    || declared.is_some_and(|p| p.units.iter().any(|u| u.name == unit));
                if !known {
                    orphaned.push(tree::unit_path(&pool, &unit));
                }
            }
        }
    }
    orphaned.sort();
    Ok(orphaned)
}

/// `path`'s children; none if it vanished meanwhile.
async fn children(session: &dyn Session, path: &str) -> Result<Vec<String>, Error> {
    match session.get_children(path).await {
        Ok(c) => Ok(c),
        Err(medkeeper_coord::Error::NoNode) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid file; tests break one line of it. Line numbers matter: see the comments.
    const GOOD: &str = r#"name = "Test General"
[targets]
stat = "5m"
urgent = "1h30m"
[no_show]
grace = "10m"
policy = "no-show"
[[equipment]]
kind = "MRI"
exam_duration = "45m"
units = [
  { name = "MRI-1", capabilities = ["3T", "contrast"] },
  { name = "MRI-2" },
]
[[department]]
name = "cardiology"
consultation_duration = "20m"
doctors = [ { name = "dr-a", capabilities = ["echo"] } ]
"#;

    /// `GOOD` with line `line` (1-based) replaced by `with`.
    fn with_line(line: usize, with: &str) -> String {
        let mut lines: Vec<&str> = GOOD.lines().collect();
        lines[line - 1] = with;
        lines.join("\n") + "\n"
    }

    /// The error message of parsing `text`, which must fail.
    fn error_of(text: &str) -> String {
        match HospitalConfig::parse(text) {
            Err(Error::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[track_caller]
    fn assert_error(text: &str, line: usize, contains: &str) {
        let message = error_of(text);
        let prefix = format!("line {line}: ");
        assert!(
            message.starts_with(&prefix) && message.contains(contains),
            "expected `{prefix}...{contains}...`, got `{message}`"
        );
    }

    /// `GOOD` and one `[[alarm]]` of `lines` (its first line is line 20 of the text).
    fn with_alarm(lines: &[&str]) -> String {
        format!("{GOOD}[[alarm]]\n{}\n", lines.join("\n"))
    }

    #[test]
    fn alarm_rules_parse() {
        let c = HospitalConfig::parse(&with_alarm(&[
            "name = \"stat-wait\"",
            "signal = \"oldest_wait\"",
            "pool = \"MRI\"",
            "order_priority = \"stat\"",
            "raise = 100",
            "clear = 50.5",
            "for = \"30s\"",
            "priority = \"high\"",
            "escalate_after = \"5m\"",
            "latching = true",
        ]))
        .unwrap();
        let rule = &c.alarms[0];
        assert_eq!(rule.signal, Signal::OldestWait);
        assert_eq!(rule.pool, Some(Pool::Equipment("MRI".into())));
        assert_eq!(rule.order_priority, Some(Priority::Stat));
        assert_eq!((rule.raise, rule.clear), (100.0, 50.5));
        assert_eq!(rule.raise_for, Duration::from_secs(30));
        assert_eq!(
            rule.clear_for,
            Duration::from_secs(30),
            "clear_for defaults to for"
        );
        assert_eq!(rule.priority, AlarmPriority::High);
        assert_eq!(rule.escalate_after, Some(Duration::from_secs(300)));
        assert!(rule.latching);
        // Defaults: every pool, clear = raise, no delay, medium.
        let c = HospitalConfig::parse(&with_alarm(&[
            "name = \"dispatch\"",
            "signal = \"dispatchers\"",
            "raise = 0",
        ]))
        .unwrap();
        let rule = &c.alarms[0];
        assert_eq!(
            (rule.pool.clone(), rule.clear, rule.raise_for),
            (None, 0.0, Duration::ZERO)
        );
        assert_eq!(rule.priority, AlarmPriority::Medium);
        assert!(!rule.signal.rising());
        assert_eq!(HospitalConfig::demo().alarms.len(), 8);
    }

    #[test]
    fn bad_alarm_rules_name_the_line() {
        let base = ["name = \"a\"", "signal = \"queue_length\"", "raise = 10"];
        let with = |i: usize, line: &str| {
            let mut lines = base.to_vec();
            if i < lines.len() {
                lines[i] = line;
            } else {
                lines.push(line);
            }
            with_alarm(&lines)
        };
        assert_error(
            &with(1, "signal = \"queue\""),
            21,
            "unknown signal \"queue\"",
        );
        assert_error(&with(0, "name = \"a/b\""), 20, "alarm rule \"a/b\"");
        assert_error(
            &with(3, "clear = 12"),
            23,
            "clear (12) must be at or below raise (10)",
        );
        assert_error(
            &with(3, "pool = \"PET\""),
            23,
            "alarm pool \"PET\" is neither",
        );
        assert_error(
            &with(3, "priority = \"urgent\""),
            23,
            "use high, medium or low",
        );
        assert_error(
            &with(3, "limit = \"10m\""),
            23,
            "limit applies to units_unavailable only",
        );
        assert_error(&with(3, "for = \"soon\""), 23, "duration \"soon\"");
        assert_error(&with(3, "escalate_after = \"0s\""), 23, "more than zero");
        assert_error(&with(3, "threshold = 1"), 23, "unknown field `threshold`");
        assert_error(&with(2, "raise = -1"), 22, "must be a number of 0 or more");
        assert_error(
            &with(1, "signal = \"members\"\npool = \"MRI\""),
            22,
            "is not a pool's",
        );
        assert_error(
            &with(1, "signal = \"utilisation\"\nraise = 120"),
            23,
            "duplicate key",
        );
        assert_error(
            &format!(
                "{}[[alarm]]\nname = \"a\"\nsignal = \"members\"\nraise = 0\n",
                with(9, "")
            ),
            25,
            "alarm \"a\" is declared twice (first on line 20)",
        );
        assert_error(
            &with(1, "signal = \"dispatchers\"\norder_priority = \"stat\""),
            22,
            "order_priority applies to queue_length and oldest_wait only",
        );
        assert_error(
            &with(1, "signal = \"members\"\nclear = 5"),
            22,
            "clear (5) must be at or above raise (10)",
        );
    }

    #[test]
    fn demo_parses() {
        let demo = HospitalConfig::demo();
        assert_eq!(demo.name, "St. Example General");
        assert_eq!(demo.targets, Targets::default());
        assert_eq!(demo.no_show_grace, Duration::from_secs(15 * 60));
        assert_eq!(demo.no_show_policy, NoShowPolicy::Requeue);
        let names: Vec<String> = demo.pools.iter().map(|p| p.pool.to_string()).collect();
        assert_eq!(
            names,
            [
                "equipment MRI",
                "equipment CT",
                "equipment XRAY",
                "department cardiology",
                "department neurology"
            ]
        );
        let units = |pool: Pool| -> Vec<(String, Vec<String>)> {
            demo.pool(&pool)
                .unwrap()
                .units
                .iter()
                .map(|u| (u.name.clone(), u.capabilities.clone()))
                .collect()
        };
        let s = |v: &[&str]| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        assert_eq!(
            units(Pool::Equipment("MRI".into())),
            [
                ("MRI-1".into(), s(&["3T", "contrast"])),
                ("MRI-2".into(), s(&["1.5T"]))
            ]
        );
        assert_eq!(
            units(Pool::Equipment("CT".into())),
            [
                ("CT-1".into(), s(&["contrast"])),
                ("CT-2".into(), s(&["contrast"])),
                ("CT-3".into(), vec![])
            ]
        );
        assert_eq!(
            units(Pool::Equipment("XRAY".into())),
            [("XR-1".into(), vec![])]
        );
        assert_eq!(units(Pool::Department("cardiology".into())).len(), 2);
        assert_eq!(units(Pool::Department("neurology".into())).len(), 1);
        for pool in &demo.pools {
            assert!(!pool.exam_duration.is_zero());
        }
    }

    #[test]
    fn good_file_and_defaults() {
        let c = HospitalConfig::parse(GOOD).unwrap();
        assert_eq!(c.targets.stat, Duration::from_secs(5 * 60));
        assert_eq!(c.targets.urgent, Duration::from_secs(90 * 60));
        // Missing targets take the defaults.
        assert_eq!(c.targets.asap, Targets::default().asap);
        assert_eq!(c.targets.routine, Targets::default().routine);
        assert_eq!(c.no_show_policy, NoShowPolicy::NoShow);
        assert_eq!(c.no_show_grace, Duration::from_secs(600));
        let cardiology = c.pool(&Pool::Department("cardiology".into())).unwrap();
        assert_eq!(cardiology.exam_duration, Duration::from_secs(20 * 60));
        assert_eq!(cardiology.units[0].capabilities, ["echo"]);

        // No [targets] or [no_show] at all: every default.
        let minimal = "name = \"m\"\n[[equipment]]\nkind = \"CT\"\nexam_duration = \"15m\"\nunits = [{ name = \"CT-1\" }]\n";
        let c = HospitalConfig::parse(minimal).unwrap();
        assert_eq!(c.targets, Targets::default());
        assert_eq!(c.no_show_grace, Duration::from_secs(15 * 60));
        assert_eq!(c.no_show_policy, NoShowPolicy::default());

        // Units written as an array of tables are the same units.
        let tables = "name = \"m\"\n[[equipment]]\nkind = \"CT\"\nexam_duration = \"15m\"\n[[equipment.units]]\nname = \"CT-1\"\ncapabilities = [\"contrast\"]\n";
        let c = HospitalConfig::parse(tables).unwrap();
        assert_eq!(c.pools[0].units[0].capabilities, ["contrast"]);

        // A kind and a department may share a name; a unit name may recur in another pool.
        let shared = "name = \"m\"\n[[equipment]]\nkind = \"echo\"\nexam_duration = \"15m\"\nunits = [{ name = \"u1\" }]\n[[department]]\nname = \"echo\"\nconsultation_duration = \"15m\"\ndoctors = [{ name = \"u1\" }]\n";
        assert_eq!(HospitalConfig::parse(shared).unwrap().pools.len(), 2);
    }

    /// Issue 16: `time_zone`, an IANA name's shape, checked at load; a bad one names its line.
    #[test]
    fn time_zone_is_an_iana_name() {
        let zone = |z: &str| {
            HospitalConfig::parse(&format!("time_zone = \"{z}\"\n{GOOD}"))
                .map(|c| c.time_zone.map(|z| z.to_string()))
        };
        assert_eq!(HospitalConfig::parse(GOOD).unwrap().time_zone, None);
        for good in [
            "Asia/Shanghai",
            "Europe/London",
            "America/Argentina/Buenos_Aires",
            "America/North_Dakota/New_Salem",
            "America/Port-au-Prince",
            "Etc/GMT+8",
            "Etc/GMT-14",
            "Etc/UTC",
            "US/Eastern",
            "UTC",
            "GMT",
        ] {
            assert_eq!(zone(good).unwrap().as_deref(), Some(good), "{good}");
        }
        // Line 1 here; `name` follows on line 2.
        let bad = |z: &str| format!("time_zone = \"{z}\"\n{GOOD}");
        assert_error(
            &bad("Shanghai"),
            1,
            "time_zone \"Shanghai\": use an IANA name",
        );
        assert_error(
            &bad("+08:00"),
            1,
            "use an IANA name such as \"Asia/Shanghai\"",
        );
        assert_error(&bad("CST"), 1, "time_zone \"CST\"");
        assert_error(&bad(""), 1, "time_zone \"\": use an IANA name");
        assert_error(
            &bad("Aisa/Shanghai"),
            1,
            "\"Aisa\" is not an IANA area (Africa, America,",
        );
        assert_error(&bad("asia/shanghai"), 1, "\"asia\" is not an IANA area");
        assert_error(&bad("Asia/"), 1, "\"\" is not a place name");
        assert_error(
            &bad("Asia/Shang hai"),
            1,
            "\"Shang hai\" is not a place name",
        );
        assert_error(&bad("Asia/../etc"), 1, "\"..\" is not a place name");
        assert_error(
            &bad("America/Argentina/Buenos_Aires/X"),
            1,
            "use an IANA name",
        );
        assert_error(
            &bad("Asia/Ulaanbaatar_Extended"),
            1,
            "\"Ulaanbaatar_Extended\" is not a place name (1-14",
        );
        // Further down the file: the error names that line; not a string: toml's own message.
        let mut lines: Vec<String> = GOOD.lines().map(String::from).collect();
        lines.insert(1, "time_zone = \"Mars/Olympus\"".into());
        assert_error(
            &(lines.join("\n") + "\n"),
            2,
            "\"Mars\" is not an IANA area",
        );
        assert_error(&format!("time_zone = 8\n{GOOD}"), 1, "expected a string");
        // Through the file too, with the file's name; and a round trip through serde.
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bad("Shanghai")).unwrap();
        let Err(Error::Config(m)) = HospitalConfig::from_file(file.path()) else {
            panic!("a bad time zone must not load");
        };
        assert!(m.ends_with("line 1: time_zone \"Shanghai\": use an IANA name such as \"Asia/Shanghai\", \"Europe/London\" or \"UTC\""), "{m}");
        let c = HospitalConfig::parse(&format!("time_zone = \"Asia/Shanghai\"\n{GOOD}")).unwrap();
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["time_zone"], "Asia/Shanghai");
        assert_eq!(serde_json::from_value::<HospitalConfig>(json).unwrap(), c);
        assert!(serde_json::from_value::<TimeZone>(serde_json::json!("Mars/Olympus")).is_err());
    }

    #[test]
    fn durations() {
        let ms = |s: &str| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("250ms"), Some(250));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("10m"), Some(600_000));
        assert_eq!(ms("2h"), Some(7_200_000));
        assert_eq!(ms("1h30m"), Some(5_400_000));
        assert_eq!(ms("0s"), Some(0));
        for bad in [
            "",
            "10",
            "m",
            "10 m",
            "10 minutes",
            "1.5h",
            "-1s",
            "10M",
            "h1",
            "99999999999999999h",
        ] {
            assert_eq!(ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        // Unknown priority target.
        assert_error(
            &with_line(3, "stst = \"5m\""),
            3,
            "unknown priority target \"stst\": use stat, asap, urgent or routine",
        );
        // Durations: malformed, zero.
        assert_error(
            &with_line(10, "exam_duration = \"10 minutes\""),
            10,
            "duration \"10 minutes\": use e.g. 10m, 30s, 2h",
        );
        assert_error(
            &with_line(6, "grace = \"0s\""),
            6,
            "duration \"0s\" must be more than zero",
        );
        assert_error(
            &with_line(17, "consultation_duration = \"\""),
            17,
            "duration \"\": use e.g. 10m",
        );
        // Reserved and malformed names.
        assert_error(
            &with_line(13, "  { name = \"lock\" },"),
            13,
            "unit \"lock\" is a reserved name",
        );
        assert_error(
            &with_line(9, "kind = \"queue\""),
            9,
            "equipment kind \"queue\" is a reserved name",
        );
        assert_error(
            &with_line(13, "  { name = \"MRI 2\" },"),
            13,
            "unit \"MRI 2\": use 1-64 characters of A-Z a-z 0-9 - _ .",
        );
        assert_error(
            &with_line(16, "name = \"cardio/logy\""),
            16,
            "department \"cardio/logy\": use 1-64 characters",
        );
        // Duplicates.
        assert_error(
            &with_line(13, "  { name = \"MRI-1\" },"),
            13,
            "unit \"MRI-1\" appears twice in equipment MRI (first on line 12)",
        );
        let twice = format!(
            "{GOOD}[[department]]\nname = \"cardiology\"\nconsultation_duration = \"5m\"\ndoctors = [{{ name = \"dr-b\" }}]\n"
        );
        assert_error(
            &twice,
            20,
            "department \"cardiology\" is declared twice (first on line 16)",
        );
        // A pool without units.
        assert_error(
            &with_line(18, "doctors = []"),
            16,
            "department cardiology has no doctors",
        );
        // Capabilities.
        assert_error(
            &with_line(
                18,
                "doctors = [ { name = \"dr-a\", capabilities = [\"a/b\"] } ]",
            ),
            18,
            "capability \"a/b\" of doctor \"dr-a\": use a non-empty name without \"/\"",
        );
        assert_error(
            &with_line(13, "  { name = \"MRI-2\", capabilities = [\"\"] },"),
            13,
            "capability \"\" of unit \"MRI-2\"",
        );
        assert_error(
            &with_line(
                12,
                "  { name = \"MRI-1\", capabilities = [\"3T\", \"3T\"] },",
            ),
            12,
            "capability \"3T\" is listed twice for unit \"MRI-1\"",
        );
        // Policy.
        assert_error(
            &with_line(7, "policy = \"skip\""),
            7,
            "no-show policy \"skip\": use \"requeue\" or \"no-show\"",
        );
        // Unknown keys, at every level.
        assert_error(
            &with_line(10, "exam_durtion = \"45m\""),
            10,
            "unknown field `exam_durtion`",
        );
        assert_error(
            &with_line(13, "  { name = \"MRI-2\", capability = [\"x\"] },"),
            13,
            "unknown field `capability`",
        );
        assert_error(
            &with_line(7, "polcy = \"requeue\""),
            7,
            "unknown field `polcy`",
        );
        assert_error(
            &with_line(15, "[[departments]]"),
            15,
            "unknown field `departments`",
        );
        // Wrong types and TOML syntax.
        assert_error(
            &with_line(4, "urgent = 60"),
            4,
            "duration 60: write it as a string with a unit, e.g. \"60m\"",
        );
        assert_error(
            &with_line(9, "kind = 3"),
            9,
            "invalid type: integer `3`, expected a string",
        );
        assert_error(&with_line(11, "units = [ {"), 11, "");
        // The hospital name.
        assert_error(
            &with_line(1, "name = \" \""),
            1,
            "the hospital name is empty",
        );
        assert_error(&with_line(1, "# no name"), 1, "missing field `name`");
        // No pools at all.
        assert_error("name = \"empty\"\n", 1, "a hospital needs at least one");
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hospital.toml");
        std::fs::write(&path, with_line(13, "  { name = \"lock\" },")).unwrap();
        let message = match HospitalConfig::from_file(&path) {
            Err(Error::Config(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message,
            format!(
                "{} line 13: unit \"lock\" is a reserved name",
                path.display()
            )
        );
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(
            HospitalConfig::from_file(&path).unwrap(),
            HospitalConfig::parse(GOOD).unwrap()
        );
        let missing = dir.path().join("missing.toml");
        assert!(matches!(
            HospitalConfig::from_file(&missing),
            Err(Error::Config(m)) if m.starts_with(&missing.display().to_string())
        ));
    }

    #[test]
    fn config_node_round_trips() {
        let demo = HospitalConfig::demo();
        let node = ConfigNode::of(&demo);
        assert_eq!(node.targets(), demo.targets);
        assert_eq!(node.no_show_grace(), demo.no_show_grace);
        assert_eq!(
            String::from_utf8(tree::to_json(&node)).unwrap(),
            r#"{"hospital":"St. Example General","targets_ms":{"stat":600000,"asap":1800000,"urgent":3600000,"routine":86400000},"no_show_grace_ms":900000,"no_show_policy":"requeue"}"#
        );
        let mri = PoolNode::of(demo.pool(&Pool::Equipment("MRI".into())).unwrap());
        assert_eq!(mri.exam_duration_ms, 45 * 60 * 1000);
        assert_eq!(mri.capabilities, ["1.5T", "3T", "contrast"]);
    }
}
