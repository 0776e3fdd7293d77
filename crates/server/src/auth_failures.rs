//! Failed authentications per client address, and the addresses refused for a while after too
//! many of them (429 `rate_limited` with `Retry-After`).
//!
//! A token is 256 random bits, so guessing one is hopeless; what a flood of bad tokens does
//! is load the clinical store (every unknown token is a store read: they are not cached) and
//! hide, in the noise, a device left running with a revoked or expired token or someone
//! trying stolen ones. So: [`FailureLimit::max_failures`] failed authentications (no token, a
//! malformed, unknown, revoked or expired one) from one address within
//! [`FailureLimit::window`] refuse that address for [`FailureLimit::refuse_for`] — answered
//! 429 before its token is read from the store. A token this instance has checked within
//! the last [`CACHE_TTL`](crate::auth::CACHE_TTL) (its cache) still passes: staff already
//! working behind the same address (a ward's NAT) keep working, and that costs no store read.
//! Successful requests are never counted.
//!
//! Each address that gets refused is audited once, when it is refused (`auth.rate_limited`),
//! not once per failed request: an attacker could otherwise fill the audit log — and the
//! store's disk — with records of their own making.
//!
//! An address is an IPv4 address, or an IPv6 /64 (one subscriber's prefix: an attacker
//! holding a /64 does not get 2^64 buckets). The table is bounded
//! ([`FailureLimit::max_addresses`]): when full, stale entries go first, then the one seen
//! longest ago. A request whose address is unknown (served without connect info) is not
//! counted. Behind a load balancer every TCP peer is the balancer: the client's address is then
//! what the balancer's `X-Forwarded-For` says, if the balancer is trusted
//! ([`crate::proxies`]; docs/security.md).
//! Each instance counts on its own.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When failed authentications get an address refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureLimit {
    /// Failed authentications within [`window`](FailureLimit::window) that get the address
    /// refused (0: never).
    pub max_failures: u32,
    /// The window they are counted in (it starts at an address's first failure).
    pub window: Duration,
    /// How long the address is refused.
    pub refuse_for: Duration,
    /// The most addresses tracked at once.
    pub max_addresses: usize,
}

impl Default for FailureLimit {
    fn default() -> Self {
        FailureLimit {
            max_failures: 20,
            window: Duration::from_secs(60),
            refuse_for: Duration::from_secs(300),
            max_addresses: 10_000,
        }
    }
}

/// An address that has just been refused: what its audit record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The address (an IPv6 /64 as `prefix::/64`).
    pub client: String,
    /// Failed authentications counted.
    pub failures: u32,
    /// Refused for this long.
    pub refuse_for: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    window_start: Instant,
    failures: u32,
    last: Instant,
    refused_until: Option<Instant>,
}

/// The per-address counts of one instance.
#[derive(Debug)]
pub struct AuthFailures {
    limit: FailureLimit,
    table: Mutex<HashMap<IpAddr, Entry>>,
}

impl AuthFailures {
    /// Counts under `limit`.
    pub fn new(limit: FailureLimit) -> AuthFailures {
        AuthFailures {
            limit,
            table: Mutex::default(),
        }
    }

    /// How long `addr` stays refused, if it is refused at `now`.
    pub fn refused(&self, addr: IpAddr, now: Instant) -> Option<Duration> {
        let key = bucket(addr);
        let table = self.lock();
        let until = table.get(&key)?.refused_until?;
        (now < until).then(|| until - now)
    }

    /// Counts a failed authentication from `addr` at `now`. Returns what to audit if this is
    /// the failure that gets the address refused (once per refusal).
    pub fn failed(&self, addr: IpAddr, now: Instant) -> Option<Refused> {
        if self.limit.max_failures == 0 {
            return None;
        }
        let key = bucket(addr);
        let mut table = self.lock();
        if !table.contains_key(&key) && table.len() >= self.limit.max_addresses.max(1) {
            self.evict(&mut table, now);
        }
        let e = table.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            last: now,
            refused_until: None,
        });
        if e.refused_until.is_some_and(|u| now < u) {
            return None;
        }
        if e.refused_until.is_some() || now.duration_since(e.window_start) >= self.limit.window {
            // A new window (after a refusal ended, or the last window passed).
            e.window_start = now;
            e.failures = 0;
            e.refused_until = None;
        }
        e.failures += 1;
        e.last = now;
        if e.failures < self.limit.max_failures {
            return None;
        }
        e.refused_until = Some(now + self.limit.refuse_for);
        Some(Refused {
            client: describe(key),
            failures: e.failures,
            refuse_for: self.limit.refuse_for,
        })
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }

    /// Makes room for one more: drops what no longer matters (no refusal in force, window
    /// passed), then, if still full, the entry seen longest ago.
    fn evict(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant) {
        let window = self.limit.window;
        table.retain(|_, e| match e.refused_until {
            Some(u) => now < u,
            None => now.duration_since(e.window_start) < window,
        });
        while table.len() >= self.limit.max_addresses.max(1) {
            let Some(oldest) = table.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| *k) else {
                break;
            };
            table.remove(&oldest);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The bucket an address counts in: IPv4 as it is (an IPv4-mapped IPv6 address too), IPv6
/// by its /64.
fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn describe(key: IpAddr) -> String {
    match key {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/64"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(max_failures: u32, max_addresses: usize) -> FailureLimit {
        FailureLimit {
            max_failures,
            window: Duration::from_secs(60),
            refuse_for: Duration::from_secs(300),
            max_addresses,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_after_n_failures_in_the_window_once_then_free_again() {
        let f = AuthFailures::new(limit(3, 100));
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(f.failed(a, t0), None);
        assert_eq!(f.failed(a, t0 + Duration::from_secs(1)), None);
        assert_eq!(f.refused(a, t0 + Duration::from_secs(2)), None);
        let refused = f.failed(a, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(refused.client, "10.0.0.1");
        assert_eq!(refused.failures, 3);
        assert_eq!(
            f.refused(a, t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(300))
        );
        // More failures while refused neither extend it nor report it again.
        assert_eq!(f.failed(a, t0 + Duration::from_secs(100)), None);
        assert_eq!(
            f.refused(a, t0 + Duration::from_secs(102)),
            Some(Duration::from_secs(200))
        );
        // Another address is not affected.
        assert_eq!(f.refused(ip("10.0.0.2"), t0 + Duration::from_secs(3)), None);
        // After the refusal, counting starts again.
        let after = t0 + Duration::from_secs(302);
        assert_eq!(f.refused(a, after), None);
        assert_eq!(f.failed(a, after), None);
        assert_eq!(f.refused(a, after), None);
    }

    #[test]
    fn failures_spread_over_more_than_the_window_do_not_add_up() {
        let f = AuthFailures::new(limit(3, 100));
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        for i in 0..10 {
            assert_eq!(f.failed(a, t0 + Duration::from_secs(31 * i)), None, "{i}");
        }
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        let f = AuthFailures::new(limit(2, 100));
        let t0 = Instant::now();
        assert_eq!(f.failed(ip("2001:db8:1:2::1"), t0), None);
        let r = f.failed(ip("2001:db8:1:2:ffff::9"), t0).unwrap();
        assert_eq!(r.client, "2001:db8:1:2::/64");
        assert!(f.refused(ip("2001:db8:1:2::77"), t0).is_some());
        assert!(f.refused(ip("2001:db8:1:3::1"), t0).is_none());
        assert_eq!(f.failed(ip("::ffff:192.0.2.1"), t0), None);
        assert!(f.failed(ip("192.0.2.1"), t0).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_keeps_refusals_over_stale_entries() {
        let f = AuthFailures::new(limit(2, 4));
        let t0 = Instant::now();
        let bad = ip("10.0.0.1");
        f.failed(bad, t0);
        f.failed(bad, t0).unwrap();
        for i in 0..1000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            f.failed(a, t0 + Duration::from_millis(u64::from(i)));
            assert!(f.tracked() <= 4);
        }
        // The refused address was the oldest entry: under pressure from live entries it may
        // go (bounded memory wins), but stale ones go first.
        let g = AuthFailures::new(limit(2, 2));
        g.failed(bad, t0);
        g.failed(bad, t0).unwrap();
        g.failed(ip("10.0.0.2"), t0);
        // 10.0.0.2's window has passed: it is stale and goes, the refusal stays.
        g.failed(ip("10.0.0.3"), t0 + Duration::from_secs(61));
        assert!(g.refused(bad, t0 + Duration::from_secs(61)).is_some());
        assert_eq!(g.tracked(), 2);
    }

    #[test]
    fn zero_max_failures_never_refuses() {
        let f = AuthFailures::new(limit(0, 10));
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(f.failed(ip("10.0.0.1"), t0), None);
        }
        assert_eq!(f.tracked(), 0);
    }
}
