//! The history the dashboard's charts draw (issue 16): each pool's units and queue, sampled
//! once per interval ([`SAMPLE_EVERY`], a minute by default) by the cluster's leader and kept
//! in the clinical store ([`PoolSample`]) for [`KEEP`], so every instance serves the same
//! hours and they survive restarts.
//!
//! # Where the figures come from
//! The alarm evaluator's [`Snapshot`]: the watched read models of the pools, no request to
//! the coordination service of its own.
//!
//! # One row per pool and interval
//! A sample's time is the start of its interval (`at_ms` floored to a multiple of the
//! interval), and the store keeps the first sample of a pool and interval
//! ([`ClinicalStore::insert_pool_samples`](crate::store::ClinicalStore::insert_pool_samples)):
//! a leader that takes over within an interval its predecessor already sampled adds nothing,
//! and a failover loses at most the intervals while nobody led. A gap in the history is time
//! with no leader (or no store).
//!
//! # Retention
//! The leader deletes samples older than [`KEEP`] once an hour (and when it starts leading).

use std::sync::Arc;
use std::time::Duration;

use crate::Result;
use crate::alarms::Snapshot;
use crate::model::Priority;
use crate::orders::Hospital;
use crate::store::{PoolSample, WaitingByPriority};

/// How often the leader samples by default.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(60);

/// How long samples are kept.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// How often old samples are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Each pool's sample in `snapshot`, stamped with the start of the interval of length
/// `every` that `snapshot.now_ms` falls in.
pub fn samples(snapshot: &Snapshot, every: Duration) -> Vec<PoolSample> {
    let every_ms = (every.as_millis() as i64).max(1);
    let at_ms = snapshot.now_ms - snapshot.now_ms.rem_euclid(every_ms);
    snapshot
        .pools
        .iter()
        .map(|(pool, f)| {
            let mut waiting = WaitingByPriority::default();
            for (priority, since) in &f.waiting {
                let w = waiting.of_mut(*priority);
                w.queued += 1;
                w.oldest_wait_ms = w.oldest_wait_ms.max(snapshot.now_ms - since);
            }
            let unavailable = f.out_of_service_since.len();
            PoolSample {
                at_ms,
                pool: pool.clone(),
                units: count(f.in_service + unavailable),
                in_use: count(f.in_use),
                unavailable: count(unavailable),
                waiting,
            }
        })
        .collect()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Takes one snapshot and stores its samples (see the module docs). Returns how many rows
/// were new: 0 if this interval was sampled already.
///
/// # Notable errors
/// A session-fatal error if the session has ended; the store's errors.
pub async fn sample_once(hospital: &Hospital, every: Duration) -> Result<usize> {
    let snapshot = Snapshot::take(hospital).await?;
    let rows = samples(&snapshot, every);
    Ok(hospital.store().insert_pool_samples(&rows).await?)
}

/// Deletes the samples older than [`KEEP`] by the hospital's clock. Returns how many.
pub async fn prune(hospital: &Hospital) -> Result<u64> {
    let before = hospital.now_ms() - KEEP.as_millis() as i64;
    Ok(hospital.store().prune_pool_samples(before).await?)
}

/// The leader's sampler: samples every `every` (just after each interval starts, so every
/// interval gets its row even if one sampling is slow) and prunes every hour, for as long as
/// the future is polled. Failures are logged and the next interval tried; a session that has
/// ended stops it (the leader's term is over).
///
/// # Cancellation safety
/// Dropping it between two samples loses nothing; dropped mid-write, the store's
/// transaction commits whole or not at all.
pub async fn run(hospital: Arc<Hospital>, every: Duration, id: &str) {
    let every = every.max(Duration::from_millis(100));
    let every_ms = every.as_millis() as i64;
    let mut next_prune = hospital.now_ms();
    loop {
        match sample_once(&hospital, every).await {
            Ok(_) => {}
            Err(_) if hospital.session().state().is_terminal() => {
                return std::future::pending().await;
            }
            Err(e) => tracing::warn!("{id}: sampling the pools' history: {e}"),
        }
        let now = hospital.now_ms();
        if now >= next_prune {
            match prune(&hospital).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("{id}: pruned {n} pool samples older than a week"),
                Err(e) => tracing::warn!("{id}: pruning the pools' history: {e}"),
            }
            next_prune = now + PRUNE_EVERY.as_millis() as i64;
        }
        // A little into the next interval.
        let wait = every_ms - now.rem_euclid(every_ms) + 50;
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// The waiting targets in ms, in [`Priority::ALL`] order: what the charts draw against.
pub fn targets_ms(hospital: &Hospital) -> [(Priority, i64); 4] {
    let t = &hospital.config().targets;
    Priority::ALL.map(|p| (p, t.of(p).as_millis() as i64))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::Pool;
    use crate::alarms::Snapshot;

    /// A pool's figures become its sample: units in every state counted, the queue per
    /// priority with its longest wait; the time is the start of the minute.
    #[test]
    fn a_snapshot_becomes_one_sample_per_pool_at_the_start_of_its_interval() {
        let now = 1_700_000_123_456;
        let mut pools = BTreeMap::new();
        let mut mri = crate::alarms::PoolFigures {
            in_use: 1,
            in_service: 2,
            out_of_service_since: vec![now - 5_000],
            ..Default::default()
        };
        mri.waiting = vec![
            (Priority::Urgent, now - 60_000),
            (Priority::Urgent, now - 90_000),
            (Priority::Stat, now - 1_000),
        ];
        pools.insert(Pool::Equipment("MRI".into()), mri);
        pools.insert(Pool::Department("cardiology".into()), Default::default());
        let snapshot = Snapshot {
            now_ms: now,
            pools,
            ..Default::default()
        };
        let s = samples(&snapshot, SAMPLE_EVERY);
        assert_eq!(s.len(), 2);
        let m = s
            .iter()
            .find(|s| s.pool == Pool::Equipment("MRI".into()))
            .unwrap();
        assert_eq!(m.at_ms, 1_700_000_100_000);
        assert_eq!((m.units, m.in_use, m.unavailable), (3, 1, 1));
        assert_eq!(m.waiting.urgent.queued, 2);
        assert_eq!(m.waiting.urgent.oldest_wait_ms, 90_000);
        assert_eq!(m.waiting.stat.oldest_wait_ms, 1_000);
        assert_eq!(m.waiting.routine, Default::default());
        assert_eq!(m.utilisation(), Some(50.0));
        let c = s
            .iter()
            .find(|s| s.pool == Pool::Department("cardiology".into()))
            .unwrap();
        assert_eq!(c.utilisation(), None);
    }
}
