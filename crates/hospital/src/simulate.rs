//! A simulated hospital day: seeded arrivals through the real domain ([`Hospital`],
//! [`Dispatcher`], the clinical store, a coordination session) on a virtual clock, once with
//! medkeeper's policy and once as plain FIFO on the same arrivals, so the two can be compared.
//!
//! # What is simulated
//! - **Arrivals** ([`plan`]): per pool (equipment kind or department) a Poisson process whose
//!   rate follows the day — `1 + peak · cos(2π (h − 14) / 24)`, highest at 14:00, lowest at
//!   02:00, mean 1 over a whole day — scaled so the pool's *offered* utilisation over a whole
//!   day is [`Params::load`]. Priorities are drawn from [`Params::mix`], except that stat
//!   orders go only to pools that can serve them in time ([`takes_stat`]: CT in the demo
//!   hospital) unless [`Params::stat_everywhere`]; a share of orders needs one capability that
//!   only some units have (`contrast`, `3T`).
//! - **Per order**, drawn once in the plan so both policies see the same patients: the delay
//!   between being called and arriving (1–5 min), the exam duration (triangular on
//!   `[0.5, 1.5] ×` the pool's configured duration), the delay until the report (30 min – 4 h).
//! - **Events** on the virtual clock, in time order (ties in the order they were scheduled):
//!   an order is created ([`Hospital::create_order`]); a called patient arrives
//!   ([`Hospital::start`]); an exam ends ([`Hospital::complete`]); results are ready
//!   ([`Hospital::report`]). After an arrival or a completion the pool's dispatcher runs one
//!   round ([`Dispatcher::dispatch_once`]) with its lock held. Only those two events can change
//!   what a round decides — a new order, a freed unit; each patient has one order, so pools do
//!   not interact — so dispatching the other pools too would assign nothing more.
//! - Arrivals stop after [`Params::hours`]; the run goes on until every order is reported, so
//!   every order has a waiting time. Utilisation is measured over the arrival window.
//!
//! # The two policies
//! - [`Policy::Medkeeper`]: the configuration as given — orders queue by FHIR priority, aged by
//!   one class per waiting target of their class.
//! - [`Policy::Fifo`]: the same domain with a configuration that makes it first come, first
//!   served ([`Policy::config`]): every order is created as `routine` and every target is
//!   [`NO_AGEING`], so nothing ages and the queue is arrival order, and no pool keeps a unit
//!   back for stat orders. Capability matching is the same in both (an order no free unit can
//!   take is passed over; of the units that can take it, the one with the fewest capabilities). Reports use the orders'
//!   true priorities and the original targets.
//!
//! # Determinism
//! A run uses no randomness of its own and awaits one request at a time, so for one seed and one
//! configuration it makes the same calls at the same virtual times on every run and every
//! runtime; only the random order and patient ids differ, and nothing is ordered by them. The
//! plan's generator is `rand`'s `StdRng`, whose stream is fixed for a given `rand` version
//! (pinned by `Cargo.lock`).
//!
//! ```no_run
//! # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>,
//! #               store: std::sync::Arc<dyn medkeeper_hospital::store::ClinicalStore>)
//! #               -> medkeeper_hospital::Result<()> {
//! use medkeeper_hospital::config::HospitalConfig;
//! use medkeeper_hospital::simulate::{self, Params, Policy};
//!
//! let config = HospitalConfig::demo();
//! let plan = simulate::plan(&config, &Params::default());
//! // A fresh tree and store per run: the run loads the configuration itself.
//! let run = simulate::run(session, store, &config, &plan, Policy::Medkeeper).await?;
//! println!("{} orders, stat p95 {} s", run.orders, run.by_priority[0].p95_s);
//! # Ok(()) }
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use medkeeper_coord::Session;
use medkeeper_recipes::queue::Clock;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::alarms::{Snapshot, Tally};
use crate::config::{self, HospitalConfig, Targets};
use crate::dispatch::Dispatcher;
use crate::model::{OrderId, PatientId, Pool, Priority};
use crate::orders::{Hospital, NewOrder};
use crate::store::ClinicalStore;
use crate::{Error, Result};

/// Midnight at the start of the simulated day: Monday 5 January 2026, 00:00 UTC, in ms since
/// the Unix epoch.
pub const DAY_START_MS: u64 = 1_767_571_200_000;

/// The waiting target FIFO runs use for every priority: a century, so nothing ever ages.
pub const NO_AGEING: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The actor named in the order history for everything the simulation does.
pub const ACTOR: &str = "simulator";

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// The seed of the arrivals and durations.
    pub seed: u64,
    /// Hours of arrivals.
    pub hours: f64,
    /// The hour of the day arrivals start (0 = midnight).
    pub start_hour: f64,
    /// Offered utilisation of every pool over a whole day: arrival rate × mean occupancy
    /// (walk-in plus exam) ÷ units. Around the daily peak the offered load is higher.
    pub load: f64,
    /// The daily swing of the arrival rate: the rate at 14:00 is `1 + peak` times the mean,
    /// at 02:00 `1 - peak` times. Between 0 and 1.
    pub peak: f64,
    /// Shares of stat, asap, urgent and routine orders (most urgent first; normalised).
    pub mix: [f64; 4],
    /// The share of orders that need a capability only some units of their pool have.
    pub capability_share: f64,
    /// Send stat orders to every pool. By default they go only to pools that can turn a unit
    /// over within the stat target ([`takes_stat`]), in a share that keeps the stat share of
    /// all orders at `mix[0]`; the other pools get the other priorities in `mix`'s
    /// proportions.
    pub stat_everywhere: bool,
}

impl Default for Params {
    /// Seed 1, a whole day from midnight at 90 % load with a peak of ±50 %, 5 % stat, 10 %
    /// asap, 25 % urgent, 60 % routine, 20 % needing a capability, stat only where
    /// [`takes_stat`].
    fn default() -> Self {
        Params {
            seed: 1,
            hours: 24.0,
            start_hour: 0.0,
            load: 0.9,
            peak: 0.5,
            mix: [0.05, 0.10, 0.25, 0.60],
            capability_share: 0.2,
            stat_everywhere: false,
        }
    }
}

/// One order of a plan, and everything random about its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Arrival {
    /// When the order is created, ms after [`DAY_START_MS`].
    pub at_ms: u64,
    /// The pool it asks for.
    pub pool: Pool,
    /// Its true FHIR priority.
    pub priority: Priority,
    /// Capabilities it needs.
    pub capabilities: Vec<String>,
    /// How long after being called the patient arrives, ms.
    pub walk_ms: u64,
    /// How long the exam takes, ms.
    pub exam_ms: u64,
    /// How long after the exam the results are ready, ms.
    pub report_ms: u64,
}

/// The orders of a simulated day, in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// What was asked for.
    pub params: Params,
    /// When arrivals start, ms after [`DAY_START_MS`].
    pub start_ms: u64,
    /// When arrivals stop, ms after [`DAY_START_MS`].
    pub end_ms: u64,
    /// The pools that received stat orders.
    pub stat_pools: Vec<String>,
    /// The orders.
    pub arrivals: Vec<Arrival>,
}

/// True if `pool` can serve stat orders within the stat target when all its units are busy:
/// one of its units frees up, on average, at least once per stat target (mean occupancy —
/// walk-in plus exam — divided by units, at most the target).
///
/// A dispatcher that does not interrupt exams cannot call a stat patient before a compatible
/// unit frees up, so in a pool with one unit and 30-minute exams a stat order waits up to half
/// an hour whatever the policy. Hospitals route emergencies accordingly (stroke and trauma to
/// CT); the simulation does the same unless [`Params::stat_everywhere`] is set.
pub fn takes_stat(config: &HospitalConfig, pool: &crate::config::PoolConfig) -> bool {
    let turnover_ms =
        (pool.exam_duration.as_millis() as f64 + WALK_MEAN_MS) / pool.units.len().max(1) as f64;
    turnover_ms <= config.targets.stat.as_millis() as f64
}

/// The arrival-rate multiplier at `hour` of the day (mean 1 over a day).
fn rate_factor(peak: f64, hour: f64) -> f64 {
    1.0 + peak * (2.0 * std::f64::consts::PI * (hour - 14.0) / 24.0).cos()
}

/// Mean walk-in delay, ms (uniform 1–5 min).
const WALK_MEAN_MS: f64 = 3.0 * MINUTE_MS as f64;

/// Draws the day's orders for `config` from `params` (see the module docs).
pub fn plan(config: &HospitalConfig, params: &Params) -> Plan {
    let mut rng = StdRng::seed_from_u64(params.seed);
    let start_ms = (params.start_hour.max(0.0) * HOUR_MS as f64) as u64;
    let end_ms = start_ms + (params.hours.max(0.0) * HOUR_MS as f64) as u64;
    let peak = params.peak.clamp(0.0, 1.0);
    let mix = normalised(params.mix);
    // Mean arrivals per ms so that rate × occupancy / units = load over a day.
    let mean_rate = |pc: &crate::config::PoolConfig| {
        params.load.max(0.0) * pc.units.len() as f64
            / (pc.exam_duration.as_millis() as f64 + WALK_MEAN_MS)
    };
    let takes = |pc| params.stat_everywhere || takes_stat(config, pc);
    let total_rate: f64 = config.pools.iter().map(mean_rate).sum();
    let stat_rate: f64 = config
        .pools
        .iter()
        .filter(|p| takes(p))
        .map(mean_rate)
        .sum();
    // Stat orders go to the pools that take them, as many as `mix` asks for over all pools.
    let stat_share = if stat_rate > 0.0 {
        (mix[0] * total_rate / stat_rate).min(1.0)
    } else {
        0.0
    };
    let mut arrivals = Vec::new();
    let mut stat_pools = Vec::new();
    for pc in &config.pools {
        let stat = takes(pc);
        if stat {
            stat_pools.push(pc.pool.name().to_string());
        }
        let pool_mix = {
            let mut m = mix;
            m[0] = if stat { stat_share } else { 0.0 };
            let rest = (1.0 - m[0]) / (1.0 - mix[0]).max(f64::MIN_POSITIVE);
            for share in &mut m[1..] {
                *share *= rest;
            }
            m
        };
        let exam_ms = pc.exam_duration.as_millis() as f64;
        let mean_rate = mean_rate(pc);
        let max_rate = mean_rate * (1.0 + peak);
        // Capabilities some, but not all, units of the pool have.
        let all: BTreeSet<&String> = pc.units.iter().flat_map(|u| &u.capabilities).collect();
        let partial: Vec<String> = all
            .into_iter()
            .filter(|c| !pc.units.iter().all(|u| u.capabilities.contains(c)))
            .cloned()
            .collect();
        if max_rate <= 0.0 {
            continue;
        }
        // A non-homogeneous Poisson process by thinning.
        let mut t = start_ms as f64;
        loop {
            t += -(1.0 - rng.random::<f64>()).ln() / max_rate;
            if t >= end_ms as f64 {
                break;
            }
            let hour = (t / HOUR_MS as f64) % 24.0;
            if rng.random::<f64>() * (1.0 + peak) > rate_factor(peak, hour) {
                continue;
            }
            let mut pick = rng.random::<f64>();
            let mut priority = Priority::Routine;
            for (p, share) in Priority::ALL.iter().zip(pool_mix) {
                if pick < share {
                    priority = *p;
                    break;
                }
                pick -= share;
            }
            let capabilities =
                if !partial.is_empty() && rng.random::<f64>() < params.capability_share {
                    vec![partial[rng.random_range(0..partial.len())].clone()]
                } else {
                    Vec::new()
                };
            let triangular = 0.5 + 0.5 * rng.random::<f64>() + 0.5 * rng.random::<f64>();
            arrivals.push(Arrival {
                at_ms: t as u64,
                pool: pc.pool.clone(),
                priority,
                capabilities,
                walk_ms: rng.random_range(MINUTE_MS..=5 * MINUTE_MS),
                exam_ms: (exam_ms * triangular).max(1.0) as u64,
                report_ms: rng.random_range(30 * MINUTE_MS..=4 * HOUR_MS),
            });
        }
    }
    // Stable: pools in configuration order at equal times.
    arrivals.sort_by_key(|a| a.at_ms);
    Plan {
        params: params.clone(),
        start_ms,
        end_ms,
        stat_pools,
        arrivals,
    }
}

/// `mix` with negative shares as 0, scaled to sum to 1 (all routine if nothing is left).
fn normalised(mix: [f64; 4]) -> [f64; 4] {
    let mix = mix.map(|m| if m.is_finite() { m.max(0.0) } else { 0.0 });
    let total: f64 = mix.iter().sum();
    if total > 0.0 {
        mix.map(|m| m / total)
    } else {
        [0.0, 0.0, 0.0, 1.0]
    }
}

/// How the queue orders waiting orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// medkeeper's: FHIR priority, aged by the configured targets.
    Medkeeper,
    /// First come, first served.
    Fifo,
}

impl Policy {
    /// Both, medkeeper's first.
    pub const ALL: [Policy; 2] = [Policy::Medkeeper, Policy::Fifo];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Medkeeper => "medkeeper",
            Policy::Fifo => "FIFO",
        }
    }

    /// The configuration the domain runs with under this policy: `config` itself for
    /// medkeeper's; for FIFO, `config` with every target [`NO_AGEING`] and no stat reserve
    /// (orders are also created as routine, see [`Policy::queued_priority`]).
    pub fn config(self, config: &HospitalConfig) -> HospitalConfig {
        let mut c = config.clone();
        if self == Policy::Fifo {
            c.targets = Targets {
                stat: NO_AGEING,
                asap: NO_AGEING,
                urgent: NO_AGEING,
                routine: NO_AGEING,
            };
            // Plain FIFO keeps no unit back for anyone.
            for p in &mut c.pools {
                p.reserve_for_stat = false;
            }
        }
        c
    }

    /// The priority an order of true priority `p` is created with under this policy.
    pub fn queued_priority(self, p: Priority) -> Priority {
        match self {
            Policy::Medkeeper => p,
            Policy::Fifo => Priority::Routine,
        }
    }
}

/// Waiting times (created → called) of one priority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriorityRow {
    /// The true priority.
    pub priority: Priority,
    /// Its target, seconds.
    pub target_s: u64,
    /// Orders of this priority.
    pub orders: usize,
    /// Median wait, seconds (nearest rank).
    pub p50_s: u64,
    /// 95th percentile wait, seconds (nearest rank).
    pub p95_s: u64,
    /// Longest wait, seconds.
    pub max_s: u64,
    /// The share of orders called within the target.
    pub within_target: f64,
    /// The target is met: p95 ≤ target (true when there are no orders).
    pub met: bool,
}

/// One pool over the arrival window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PoolRow {
    /// The pool's name (kind or department).
    pub pool: String,
    /// Units or doctors.
    pub units: usize,
    /// Orders for it.
    pub orders: usize,
    /// The work that arrived (walk-in plus exam time of its orders) over the unit time of the
    /// arrival window.
    pub offered: f64,
    /// The share of unit time occupied (called → completed) during the arrival window.
    pub utilisation: f64,
    /// Waiting times per priority in this pool, most urgent first.
    pub by_priority: Vec<PriorityRow>,
}

/// The outcome of one policy's run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The policy.
    pub policy: Policy,
    /// Orders created, dispatched, completed and reported.
    pub orders: usize,
    /// Waiting times per true priority, most urgent first.
    pub by_priority: Vec<PriorityRow>,
    /// Per pool.
    pub by_pool: Vec<PoolRow>,
    /// When the last order was reported, hours of virtual time after the first arrival.
    pub virtual_hours: f64,
    /// Wall-clock time of the run (the event loop, without setup), seconds.
    pub wall_s: f64,
    /// Orders processed per wall-clock second.
    pub orders_per_s: f64,
    /// Alarms the hospital file's rules raised over the run, and the same rules without
    /// hysteresis (medkeeper's policy only; see [`run`]).
    pub alarms: Vec<AlarmRow>,
    /// Every call the dispatcher made, in order (not in the JSON report).
    #[serde(skip)]
    pub calls: Vec<Call>,
}

/// How many alarms one rule raised over a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlarmRow {
    /// The rule.
    pub rule: String,
    /// Episodes raised as the rule is written.
    pub raised: usize,
    /// Episodes raised by the same rule without hysteresis (cleared as soon as the value is
    /// back under the raise threshold, no `for`).
    pub without_hysteresis: usize,
}

/// One call: the dispatcher gave a unit to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The order's index in [`Plan::arrivals`].
    pub arrival: usize,
    /// When, ms after [`DAY_START_MS`].
    pub at_ms: u64,
    /// The unit or doctor.
    pub unit: String,
}

impl Run {
    /// The row of `priority`.
    pub fn priority(&self, priority: Priority) -> &PriorityRow {
        self.by_priority
            .iter()
            .find(|r| r.priority == priority)
            .expect("every priority has a row")
    }
}

/// What happened to one order in a run, in ms after [`DAY_START_MS`].
#[derive(Debug, Clone, Default)]
struct Record {
    id: Option<OrderId>,
    called_ms: Option<u64>,
    completed_ms: Option<u64>,
    reported: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive,
    Start,
    Complete,
    Report,
}

/// Runs `plan` through the domain under `policy` and measures it.
///
/// `session` and `store` must be fresh (an empty tree, an empty store): the run loads the
/// policy's configuration ([`Policy::config`]) into the tree, takes every pool's dispatch lock
/// as one instance, and releases them at the end. It fails if another dispatcher holds a lock.
///
/// # Notable errors
/// Whatever the domain returns (the run stops at the first error); `Conflict` if the run saw
/// a unit given to two orders at once or an order that never finished — which the domain must
/// make impossible.
pub async fn run(
    session: Arc<dyn Session>,
    store: Arc<dyn ClinicalStore>,
    config: &HospitalConfig,
    plan: &Plan,
    policy: Policy,
) -> Result<Run> {
    let domain_config = policy.config(config);
    config::load(session.as_ref(), &domain_config).await?;
    let now = Arc::new(AtomicU64::new(DAY_START_MS + plan.start_ms));
    let clock = {
        let now = now.clone();
        Clock::new(move || UNIX_EPOCH + Duration::from_millis(now.load(Ordering::SeqCst)))
    };
    let hospital = Arc::new(Hospital::with_clock(
        session,
        store.clone(),
        domain_config,
        clock,
    )?);
    let mut dispatchers = HashMap::new();
    for pc in &config.pools {
        let d = Dispatcher::new(hospital.clone(), pc.pool.clone(), ACTOR);
        let guard = d.lock()?.acquire().await?;
        dispatchers.insert(pc.pool.clone(), (d, guard));
    }

    let arrivals = &plan.arrivals;
    let mut records = vec![Record::default(); arrivals.len()];
    let mut by_id: HashMap<OrderId, usize> = HashMap::with_capacity(arrivals.len());
    // Which order each unit holds, as the dispatcher's assignments say.
    let mut occupant: HashMap<(Pool, String), usize> = HashMap::new();
    let mut events: BinaryHeap<Reverse<(u64, u64, Event, usize)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut schedule = |events: &mut BinaryHeap<_>, at: u64, e: Event, i: usize| {
        events.push(Reverse((at, seq, e, i)));
        seq += 1;
    };
    for (i, a) in arrivals.iter().enumerate() {
        schedule(&mut events, a.at_ms, Event::Arrive, i);
    }

    // The alarm rules, as written and without hysteresis, counted on the signals before and
    // after every event (between events nothing changes but the time).
    let pools: Vec<Pool> = config.pools.iter().map(|p| p.pool.clone()).collect();
    let mut tallies = (policy == Policy::Medkeeper).then(|| {
        (
            Tally::new(config.alarms.clone(), pools.clone()),
            Tally::new(Tally::without_hysteresis(&config.alarms), pools.clone()),
        )
    });
    let observe = async |tallies: &mut Option<(Tally, Tally)>| -> Result<()> {
        if let Some((with, without)) = tallies {
            let snap = Snapshot::take(&hospital).await?;
            with.observe(&snap);
            without.observe(&snap);
        }
        Ok(())
    };

    let mut calls = Vec::with_capacity(arrivals.len());
    let wall = Instant::now();
    let mut last_ms = plan.start_ms;
    while let Some(Reverse((at, _, event, i))) = events.pop() {
        now.store(DAY_START_MS + at, Ordering::SeqCst);
        last_ms = at;
        observe(&mut tallies).await?;
        let a = &arrivals[i];
        let id = || records[i].id.clone().expect("created before it moves");
        match event {
            Event::Arrive => {
                let order = hospital
                    .create_order(
                        NewOrder {
                            patient: PatientId::generate(),
                            pool: a.pool.clone(),
                            capabilities: a.capabilities.clone(),
                            priority: policy.queued_priority(a.priority),
                            reason: "simulated".into(),
                        },
                        ACTOR,
                    )
                    .await?;
                by_id.insert(order.id.clone(), i);
                records[i].id = Some(order.id);
            }
            Event::Start => {
                hospital.start(&id(), ACTOR).await?;
                schedule(&mut events, at + a.exam_ms, Event::Complete, i);
            }
            Event::Complete => {
                let order = hospital.complete(&id(), ACTOR).await?;
                if let Some(unit) = order.assigned {
                    occupant.remove(&(a.pool.clone(), unit));
                }
                records[i].completed_ms = Some(at);
                schedule(&mut events, at + a.report_ms, Event::Report, i);
            }
            Event::Report => {
                hospital.report(&id(), "simulated report", ACTOR).await?;
                records[i].reported = true;
            }
        }
        if matches!(event, Event::Arrive | Event::Complete) {
            let (d, guard) = &dispatchers[&a.pool];
            for made in d.dispatch_once(guard).await? {
                let Some(&j) = by_id.get(&made.order) else {
                    return Err(Error::Conflict(format!(
                        "dispatched {} which the simulation did not create",
                        made.order
                    )));
                };
                if let Some(other) = occupant.insert((a.pool.clone(), made.unit.clone()), j) {
                    return Err(Error::Conflict(format!(
                        "unit {} given to two orders ({} and {})",
                        made.unit,
                        records[other]
                            .id
                            .as_ref()
                            .map(|o| o.as_str())
                            .unwrap_or("?"),
                        made.order
                    )));
                }
                records[j].called_ms = Some(at);
                calls.push(Call {
                    arrival: j,
                    at_ms: at,
                    unit: made.unit,
                });
                schedule(&mut events, at + arrivals[j].walk_ms, Event::Start, j);
            }
        }
        observe(&mut tallies).await?;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    for (_, (_, guard)) in dispatchers {
        guard.release().await?;
    }
    if let Some(r) = records.iter().find(|r| !r.reported) {
        return Err(Error::Conflict(format!(
            "order {} never finished",
            r.id.as_ref().map(|o| o.as_str()).unwrap_or("(not created)")
        )));
    }

    let waits: Vec<u64> = records
        .iter()
        .zip(arrivals)
        .map(|(r, a)| r.called_ms.unwrap_or(a.at_ms) - a.at_ms)
        .collect();
    let all: Vec<usize> = (0..arrivals.len()).collect();
    let window = plan.end_ms.saturating_sub(plan.start_ms).max(1);
    let by_pool = config
        .pools
        .iter()
        .map(|pc| {
            let mine: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&i| arrivals[i].pool == pc.pool)
                .collect();
            let busy: u64 = mine
                .iter()
                .map(|&i| {
                    let from = records[i].called_ms.unwrap_or(0).max(plan.start_ms);
                    let to = records[i].completed_ms.unwrap_or(0).min(plan.end_ms);
                    to.saturating_sub(from)
                })
                .sum();
            let capacity = window as f64 * pc.units.len().max(1) as f64;
            let work: u64 = mine
                .iter()
                .map(|&i| arrivals[i].walk_ms + arrivals[i].exam_ms)
                .sum();
            PoolRow {
                pool: pc.pool.name().to_string(),
                units: pc.units.len(),
                orders: mine.len(),
                offered: work as f64 / capacity,
                utilisation: busy as f64 / capacity,
                by_priority: priority_rows(&config.targets, arrivals, &waits, &mine),
            }
        })
        .collect();
    Ok(Run {
        policy,
        orders: arrivals.len(),
        by_priority: priority_rows(&config.targets, arrivals, &waits, &all),
        by_pool,
        virtual_hours: last_ms.saturating_sub(plan.start_ms) as f64 / HOUR_MS as f64,
        wall_s,
        orders_per_s: arrivals.len() as f64 / wall_s.max(1e-9),
        alarms: tallies
            .map(|(with, without)| {
                with.raised()
                    .iter()
                    .map(|(rule, &n)| AlarmRow {
                        rule: rule.clone(),
                        raised: n,
                        without_hysteresis: without.raised().get(rule).copied().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        calls,
    })
}

/// Waiting-time rows, one per priority, over the orders `which`.
fn priority_rows(
    targets: &Targets,
    arrivals: &[Arrival],
    waits: &[u64],
    which: &[usize],
) -> Vec<PriorityRow> {
    Priority::ALL
        .iter()
        .map(|&p| {
            let mut w: Vec<u64> = which
                .iter()
                .filter(|&&i| arrivals[i].priority == p)
                .map(|&i| waits[i])
                .collect();
            w.sort_unstable();
            let target_ms = targets.of(p).as_millis() as u64;
            let pct = |q: f64| {
                if w.is_empty() {
                    0
                } else {
                    // Nearest rank: the smallest wait with at least q of the orders at or
                    // below it.
                    let rank = ((q * w.len() as f64).ceil() as usize).clamp(1, w.len());
                    w[rank - 1] / 1000
                }
            };
            let within = w.iter().filter(|&&x| x <= target_ms).count();
            PriorityRow {
                priority: p,
                target_s: target_ms / 1000,
                orders: w.len(),
                p50_s: pct(0.5),
                p95_s: pct(0.95),
                max_s: w.last().copied().unwrap_or(0) / 1000,
                within_target: if w.is_empty() {
                    1.0
                } else {
                    within as f64 / w.len() as f64
                },
                met: pct(0.95) * 1000 <= target_ms,
            }
        })
        .collect()
}

/// Both policies on the same plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The hospital's name.
    pub hospital: String,
    /// What was simulated.
    pub params: Params,
    /// The pools that received stat orders.
    pub stat_pools: Vec<String>,
    /// medkeeper's policy.
    pub medkeeper: Run,
    /// Plain FIFO.
    pub fifo: Run,
}

impl Comparison {
    /// The comparison of two runs of `plan` on `config`.
    pub fn new(config: &HospitalConfig, plan: &Plan, medkeeper: Run, fifo: Run) -> Comparison {
        Comparison {
            hospital: config.name.clone(),
            params: plan.params.clone(),
            stat_pools: plan.stat_pools.clone(),
            medkeeper,
            fifo,
        }
    }

    /// True if medkeeper's policy meets the stat and urgent targets (p95) and keeps every
    /// routine order within the routine target (no starvation).
    pub fn medkeeper_meets_targets(&self) -> bool {
        let m = &self.medkeeper;
        m.priority(Priority::Stat).met
            && m.priority(Priority::Urgent).met
            && m.priority(Priority::Routine).max_s <= m.priority(Priority::Routine).target_s
    }

    /// True if FIFO misses the stat or the urgent target (p95).
    pub fn fifo_misses_targets(&self) -> bool {
        !self.fifo.priority(Priority::Stat).met || !self.fifo.priority(Priority::Urgent).met
    }

    /// The report as markdown: waiting times per priority, pools, throughput, verdict.
    pub fn markdown(&self) -> String {
        let (m, f) = (&self.medkeeper, &self.fifo);
        let p = &self.params;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Simulated day at {}: seed {}, {} h of arrivals from {:02}:00, load {:.2}, \
             peak ±{:.0} %, mix stat/asap/urgent/routine {:.0}/{:.0}/{:.0}/{:.0} %, \
             {:.0} % needing a capability; stat orders to {} ({}). {} orders; the last \
             report was ready after {:.1} h (medkeeper) and {:.1} h (FIFO) of virtual time.\n",
            self.hospital,
            p.seed,
            p.hours,
            p.start_hour as u64,
            p.load,
            p.peak * 100.0,
            p.mix[0] * 100.0,
            p.mix[1] * 100.0,
            p.mix[2] * 100.0,
            p.mix[3] * 100.0,
            p.capability_share * 100.0,
            if self.stat_pools.is_empty() {
                "no pool".to_string()
            } else {
                self.stat_pools.join(", ")
            },
            if p.stat_everywhere {
                "every pool"
            } else {
                "the pools that free a unit at least once per stat target on average; the \
                 others get no stat orders"
            },
            m.orders,
            m.virtual_hours,
            f.virtual_hours,
        );
        let _ = writeln!(
            s,
            "Waiting time, order created → patient called (p95 against the target):\n"
        );
        let _ = writeln!(
            s,
            "| priority | target | orders | medkeeper p50 | medkeeper p95 | medkeeper max | within target | met | FIFO p50 | FIFO p95 | FIFO max | within target | met |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---:|:-:|"
        );
        for (a, b) in m.by_priority.iter().zip(&f.by_priority) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.0} % | {} | {} | {} | {} | {:.0} % | {} |",
                a.priority,
                duration(a.target_s),
                a.orders,
                duration(a.p50_s),
                duration(a.p95_s),
                duration(a.max_s),
                a.within_target * 100.0,
                yes_no(a.met),
                duration(b.p50_s),
                duration(b.p95_s),
                duration(b.max_s),
                b.within_target * 100.0,
                yes_no(b.met),
            );
        }
        let _ = writeln!(
            s,
            "\nPer pool (offered load and utilisation over the arrival window; p95 and max waits):\n"
        );
        let _ = writeln!(
            s,
            "| pool | units | orders | offered load | utilisation medkeeper | utilisation FIFO | stat p95 medkeeper | stat p95 FIFO | urgent p95 medkeeper | urgent p95 FIFO | routine max medkeeper | routine max FIFO |"
        );
        let _ = writeln!(
            s,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (a, b) in m.by_pool.iter().zip(&f.by_pool) {
            let row = |r: &PoolRow, p: Priority| {
                r.by_priority
                    .iter()
                    .find(|x| x.priority == p)
                    .filter(|x| x.orders > 0)
                    .cloned()
            };
            let p95 = |r: &PoolRow, p| row(r, p).map_or("–".to_string(), |x| duration(x.p95_s));
            let max = |r: &PoolRow, p| row(r, p).map_or("–".to_string(), |x| duration(x.max_s));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} % | {:.0} % | {:.0} % | {} | {} | {} | {} | {} | {} |",
                a.pool,
                a.units,
                a.orders,
                a.offered * 100.0,
                a.utilisation * 100.0,
                b.utilisation * 100.0,
                p95(a, Priority::Stat),
                p95(b, Priority::Stat),
                p95(a, Priority::Urgent),
                p95(b, Priority::Urgent),
                max(a, Priority::Routine),
                max(b, Priority::Routine),
            );
        }
        if !m.alarms.is_empty() {
            let _ = writeln!(
                s,
                "\nAlarms raised by the hospital file's rules over the run (medkeeper's policy; \
                 `without hysteresis`: the same rules cleared as soon as the value is back under \
                 the raise threshold, no `for`):\n"
            );
            let _ = writeln!(s, "| rule | raised | without hysteresis |\n|---|---:|---:|");
            for a in &m.alarms {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} |",
                    a.rule, a.raised, a.without_hysteresis
                );
            }
            let total = |f: fn(&AlarmRow) -> usize| m.alarms.iter().map(f).sum::<usize>();
            let _ = writeln!(
                s,
                "| **all** | **{}** | **{}** |",
                total(|a| a.raised),
                total(|a| a.without_hysteresis)
            );
        }
        let _ = writeln!(s, "\nThroughput through the real domain (wall clock):\n");
        let _ = writeln!(s, "| | medkeeper | FIFO |\n|---|---:|---:|");
        let _ = writeln!(s, "| orders processed | {} | {} |", m.orders, f.orders);
        let _ = writeln!(s, "| wall time | {:.1} s | {:.1} s |", m.wall_s, f.wall_s);
        let _ = writeln!(
            s,
            "| orders/s | {:.1} | {:.1} |",
            m.orders_per_s, f.orders_per_s
        );
        let verdict = |r: &Run, p: Priority| {
            let row = r.priority(p);
            format!(
                "{} the {p} target (p95 {} against {})",
                if row.met { "meets" } else { "MISSES" },
                duration(row.p95_s),
                duration(row.target_s)
            )
        };
        let routine = m.priority(Priority::Routine);
        let _ = writeln!(
            s,
            "\nVerdict: medkeeper {} and {}, and {} routine orders (longest routine wait {} \
             against {}); FIFO {} and {}.",
            verdict(m, Priority::Stat),
            verdict(m, Priority::Urgent),
            if routine.max_s <= routine.target_s {
                "starves no"
            } else {
                "STARVES"
            },
            duration(routine.max_s),
            duration(routine.target_s),
            verdict(f, Priority::Stat),
            verdict(f, Priority::Urgent),
        );
        s
    }
}

fn yes_no(met: bool) -> &'static str {
    if met { "yes" } else { "**no**" }
}

/// `42s`, `7m05s`, `2h03m`.
fn duration(s: u64) -> String {
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_seeded_and_loaded_as_asked() {
        let config = HospitalConfig::demo();
        let params = Params::default();
        let a = plan(&config, &params);
        assert_eq!(a, plan(&config, &params));
        assert_ne!(
            a.arrivals,
            plan(
                &config,
                &Params {
                    seed: 2,
                    ..params.clone()
                }
            )
            .arrivals
        );
        assert!(a.arrivals.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        // Offered load per pool is close to the asked 90 %.
        for pc in &config.pools {
            let work: u64 = a
                .arrivals
                .iter()
                .filter(|x| x.pool == pc.pool)
                .map(|x| x.walk_ms + x.exam_ms)
                .sum();
            let offered = work as f64 / (24.0 * HOUR_MS as f64 * pc.units.len() as f64);
            assert!((0.7..1.1).contains(&offered), "{}: {offered}", pc.pool);
        }
        let stat = a
            .arrivals
            .iter()
            .filter(|x| x.priority == Priority::Stat)
            .count() as f64;
        assert!((0.02..0.08).contains(&(stat / a.arrivals.len() as f64)));
    }

    /// A fresh embedded engine and in-memory clinical store.
    async fn backend() -> (
        medkeeper_embedded::Engine,
        tempfile::TempDir,
        Arc<dyn Session>,
        Arc<dyn ClinicalStore>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let engine =
            medkeeper_embedded::Engine::open(medkeeper_embedded::EngineConfig::new(dir.path()))
                .unwrap();
        let session: Arc<dyn Session> = Arc::new(
            engine
                .connect(medkeeper_embedded::SessionOptions {
                    timeout: Duration::from_secs(20),
                })
                .await,
        );
        let store: Arc<dyn ClinicalStore> =
            Arc::new(crate::store::SqliteStore::in_memory().unwrap());
        (engine, dir, session, store)
    }

    async fn run_fresh(config: &HospitalConfig, plan: &Plan, policy: Policy) -> Run {
        let (_engine, _dir, session, store) = backend().await;
        let run = run(session.clone(), store, config, plan, policy)
            .await
            .unwrap();
        session.close().await;
        run
    }

    /// Two runs of one seed make the same calls at the same virtual times and report the same
    /// waits; only the wall clock differs.
    #[tokio::test]
    async fn same_seed_same_day() {
        let config = HospitalConfig::demo();
        let plan = plan(
            &config,
            &Params {
                hours: 2.0,
                start_hour: 10.0,
                load: 0.8,
                ..Params::default()
            },
        );
        assert!(plan.arrivals.len() > 20, "{} orders", plan.arrivals.len());
        let a = run_fresh(&config, &plan, Policy::Medkeeper).await;
        let b = run_fresh(&config, &plan, Policy::Medkeeper).await;
        assert_eq!(a.calls.len(), plan.arrivals.len());
        assert_eq!(a.calls, b.calls);
        assert_eq!(a.by_priority, b.by_priority);
        assert_eq!(a.by_pool, b.by_pool);
        assert_eq!(a.virtual_hours, b.virtual_hours);
        assert_eq!(a.alarms, b.alarms);
    }

    /// Issue 14, item 8: the demo rules over a busy morning raise alarms, and fewer than the
    /// same rules without hysteresis, rule by rule; FIFO runs count none.
    #[tokio::test]
    async fn hysteresis_keeps_alarms_from_storming() {
        let config = HospitalConfig::demo();
        let plan = plan(
            &config,
            &Params {
                hours: 4.0,
                start_hour: 10.0,
                load: 0.95,
                ..Params::default()
            },
        );
        let run = run_fresh(&config, &plan, Policy::Medkeeper).await;
        assert_eq!(run.alarms.len(), config.alarms.len());
        let raised: usize = run.alarms.iter().map(|a| a.raised).sum();
        let without: usize = run.alarms.iter().map(|a| a.without_hysteresis).sum();
        assert!(raised > 0, "{:?}", run.alarms);
        assert!(without > raised, "{:?}", run.alarms);
        for a in &run.alarms {
            assert!(a.raised <= a.without_hysteresis, "{a:?}");
        }
        assert!(
            run_fresh(&config, &plan, Policy::Fifo)
                .await
                .alarms
                .is_empty()
        );
    }

    /// On the demo hospital at its afternoon peak, medkeeper calls stat orders sooner than
    /// FIFO on the same arrivals, and FIFO serves them in arrival order.
    #[tokio::test]
    async fn medkeeper_calls_stat_sooner_than_fifo() {
        let config = HospitalConfig::demo();
        let plan = plan(
            &config,
            &Params {
                hours: 3.0,
                start_hour: 10.0,
                mix: [0.10, 0.10, 0.25, 0.55],
                ..Params::default()
            },
        );
        let medkeeper = run_fresh(&config, &plan, Policy::Medkeeper).await;
        let fifo = run_fresh(&config, &plan, Policy::Fifo).await;
        let (m, f) = (
            medkeeper.priority(Priority::Stat),
            fifo.priority(Priority::Stat),
        );
        assert!(m.orders >= 3, "{} stat orders", m.orders);
        assert!(m.p95_s < f.p95_s, "stat p95: medkeeper {m:?}, FIFO {f:?}");
        // FIFO: within a pool, calls follow arrival order.
        for pc in &config.pools {
            let order: Vec<usize> = fifo
                .calls
                .iter()
                .filter(|c| plan.arrivals[c.arrival].pool == pc.pool)
                .filter(|c| plan.arrivals[c.arrival].capabilities.is_empty())
                .map(|c| c.arrival)
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", pc.pool);
        }
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(425), "7m05s");
        assert_eq!(duration(7380), "2h03m");
    }
}
