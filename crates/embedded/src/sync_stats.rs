//! The sync stage's histograms ([`SyncStats`]): how long each fdatasync of the log took, and
//! how many transactions it made durable (the size of a commit group).
//!
//! Only the sync thread observes, once per fdatasync, into fixed buckets of atomic counters: no
//! lock, nothing on the apply path, and a reader (a metrics scrape) never makes the sync thread
//! wait. A [`HistogramSnapshot`] read while the sync thread observes may count that fsync in
//! its count and buckets but not yet in its sum (or the reverse); its count is always the sum of
//! its buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the fsync-duration buckets, seconds: 100 µs (a device with a write cache
/// that honours flushes cheaply) to 2.5 s (a saturated or failing disk).
pub const FSYNC_SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upper bounds of the group-size buckets, transactions per fdatasync: 1 (no sharing) to the
/// apply thread's largest batch (4096 requests) and beyond it.
pub const FSYNC_TRANSACTIONS_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// One histogram's figures at one moment, as Prometheus reads a histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, cumulative, the bounds increasing; the
    /// last bound is `f64::INFINITY`, so its count is [`count`](HistogramSnapshot::count).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

/// A histogram of fixed buckets in atomic counters, with one writer.
#[derive(Debug)]
struct AtomicHistogram {
    bounds: &'static [f64],
    /// One counter per bound and one above the last (not cumulative).
    counts: Box<[AtomicU64]>,
    /// The sum in units of `1 / sum_scale` (nanoseconds, transactions): an integer, so one
    /// `fetch_add` adds it.
    sum: AtomicU64,
    sum_scale: f64,
}

impl AtomicHistogram {
    fn new(bounds: &'static [f64], sum_scale: f64) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            sum_scale,
        }
    }

    /// Observes `value` (in the bounds' unit), whose sum in units of `1 / sum_scale` is
    /// `scaled`.
    fn observe(&self, value: f64, scaled: u64) {
        let ix = self.bounds.partition_point(|b| *b < value);
        self.counts[ix].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(scaled, Ordering::Relaxed);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(self.counts.len());
        let mut seen = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), seen));
        }
        HistogramSnapshot {
            buckets,
            count: seen,
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.sum_scale,
        }
    }
}

/// The sync stage's histograms (see the module docs): read them with
/// [`fsync_seconds`](SyncStats::fsync_seconds) and
/// [`fsync_transactions`](SyncStats::fsync_transactions).
///
/// An engine records into its [`EngineConfig::sync_stats`](crate::EngineConfig::sync_stats)
/// if given (so that engines a process opens one after another add to the same figures, as a
/// Prometheus counter expects), else into a fresh one; [`Engine::sync_stats`](crate::Engine::sync_stats)
/// returns it. The fdatasync that deletes the previous process's ephemerals at open is not
/// counted (nor in [`EngineStats::fsyncs`](crate::EngineStats::fsyncs)).
#[derive(Debug)]
pub struct SyncStats {
    fsync_seconds: AtomicHistogram,
    fsync_transactions: AtomicHistogram,
}

impl Default for SyncStats {
    fn default() -> Self {
        SyncStats {
            fsync_seconds: AtomicHistogram::new(&FSYNC_SECONDS_BUCKETS, 1e9),
            fsync_transactions: AtomicHistogram::new(&FSYNC_TRANSACTIONS_BUCKETS, 1.0),
        }
    }
}

impl SyncStats {
    /// Records one fdatasync that took `took` and made `txns` transactions durable.
    pub(crate) fn observe(&self, took: Duration, txns: u64) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.fsync_seconds.observe(took.as_secs_f64(), nanos);
        self.fsync_transactions.observe(txns as f64, txns);
    }

    /// How long each fdatasync of the log took, seconds ([`FSYNC_SECONDS_BUCKETS`]).
    pub fn fsync_seconds(&self) -> HistogramSnapshot {
        self.fsync_seconds.snapshot()
    }

    /// How many transactions each fdatasync made durable ([`FSYNC_TRANSACTIONS_BUCKETS`]).
    pub fn fsync_transactions(&self) -> HistogramSnapshot {
        self.fsync_transactions.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let s = SyncStats::default();
        s.observe(Duration::from_micros(100), 1); // on a bound: that bucket
        s.observe(Duration::from_millis(3), 5);
        s.observe(Duration::from_secs(10), 5000); // above every bound: +Inf only
        let secs = s.fsync_seconds();
        assert_eq!(secs.count, 3);
        assert!((secs.sum - 10.0031).abs() < 1e-9, "{}", secs.sum);
        let at = |h: &HistogramSnapshot, bound: f64| {
            h.buckets.iter().find(|(b, _)| *b == bound).map(|(_, n)| *n)
        };
        assert_eq!(at(&secs, 0.0001), Some(1));
        assert_eq!(at(&secs, 0.0025), Some(1));
        assert_eq!(at(&secs, 0.005), Some(2));
        assert_eq!(at(&secs, 2.5), Some(2));
        assert_eq!(secs.buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(secs.buckets.len(), FSYNC_SECONDS_BUCKETS.len() + 1);

        let txns = s.fsync_transactions();
        assert_eq!(txns.count, 3);
        assert_eq!(txns.sum, 5006.0);
        assert_eq!(at(&txns, 1.0), Some(1));
        assert_eq!(at(&txns, 4.0), Some(1));
        assert_eq!(at(&txns, 8.0), Some(2));
        assert_eq!(at(&txns, 4096.0), Some(2));
        assert_eq!(txns.buckets.last(), Some(&(f64::INFINITY, 3)));
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let h = SyncStats::default().fsync_transactions();
        assert_eq!(h.count, 0);
        assert_eq!(h.sum, 0.0);
        assert!(h.buckets.iter().all(|(_, n)| *n == 0));
        assert!(h.buckets.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
