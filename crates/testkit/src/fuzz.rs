//! Seeded fuzzing on the stable toolchain (no cargo-fuzz here): a small random source and the
//! budget the fuzz tests of every crate share — `MEDKEEPER_FUZZ_SECONDS` runs cases for that
//! long, else `MEDKEEPER_FUZZ_CASES` cases; `MEDKEEPER_FUZZ_SEED` fixes the first case's seed
//! (case `i` uses seed + i, so a failure is replayed with `MEDKEEPER_FUZZ_SEED=<its seed>
//! MEDKEEPER_FUZZ_CASES=1`). `scripts/fuzz` sets them.

use std::time::{Duration, Instant};

/// xorshift64*: small, seeded, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    /// A source seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so neighbouring seeds start far apart (and never at 0).
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }
    /// The next number.
    #[allow(clippy::should_implement_trait)] // an endless stream, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// How long to fuzz: a time budget or a number of cases, and the first seed.
pub struct Budget {
    seconds: Option<Duration>,
    cases: u64,
    seed: u64,
}

impl Budget {
    /// The budget the environment sets (`default_cases` if it sets none).
    pub fn from_env(default_cases: u64) -> Budget {
        let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
        let seed = var("MEDKEEPER_FUZZ_SEED").unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
        Budget {
            seconds: var("MEDKEEPER_FUZZ_SECONDS").map(Duration::from_secs),
            cases: var("MEDKEEPER_FUZZ_CASES").unwrap_or(default_cases),
            seed,
        }
    }

    /// Runs `case(seed)` until the budget is spent; returns the number of cases run.
    pub fn run(&self, target: &str, mut case: impl FnMut(u64)) -> u64 {
        let start = Instant::now();
        let mut i = 0;
        loop {
            let done = match self.seconds {
                Some(d) => i > 0 && start.elapsed() >= d,
                None => i >= self.cases,
            };
            if done {
                break;
            }
            let seed = self.seed.wrapping_add(i);
            let guard = Reproduce { target, seed };
            case(seed);
            std::mem::forget(guard);
            i += 1;
        }
        eprintln!(
            "fuzz {target}: {i} cases in {:?} (seeds {}..)",
            start.elapsed(),
            self.seed
        );
        i
    }
}

/// Prints how to replay a case that panicked.
pub(crate) struct Reproduce<'a> {
    target: &'a str,
    seed: u64,
}

impl Drop for Reproduce<'_> {
    fn drop(&mut self) {
        eprintln!(
            "fuzz {}: case failed; replay with MEDKEEPER_FUZZ_SEED={} MEDKEEPER_FUZZ_CASES=1",
            self.target, self.seed
        );
    }
}

impl Rng {
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
