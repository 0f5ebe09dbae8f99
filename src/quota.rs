//! Request quotas per client IP and per API key (governor token buckets).
//!
//! The IP quota is checked before authentication so that guessing keys is throttled as well;
//! the key quota after it, shared by every client presenting that key. A refusal carries the
//! time until the next request would be allowed, which becomes `Retry-After`.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use nonzero_ext::nonzero;

use crate::config::{Rate, RateLimits};

/// A request over a quota, and when the next one would be allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded ({scope}); retry in {} ms", retry_after.as_millis())]
pub struct Limited {
    pub scope: &'static str,
    pub retry_after: Duration,
}

/// The quotas; each may be disabled in config.
pub struct Limiter {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// For what needs no key: `/metrics`, `/readyz` and unknown routes.
    per_ip_public: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_key: Option<DefaultKeyedRateLimiter<String>>,
    clock: DefaultClock,
}

fn quota(rate: Rate) -> Quota {
    let per_second = NonZeroU32::new(rate.per_second).unwrap_or(nonzero!(1u32));
    let burst = NonZeroU32::new(rate.burst).unwrap_or(nonzero!(1u32));
    Quota::per_second(per_second).allow_burst(burst)
}

impl Limiter {
    pub fn new(config: &RateLimits) -> Self {
        Self {
            per_ip: config
                .per_ip
                .map(|r| DefaultKeyedRateLimiter::keyed(quota(r))),
            per_ip_public: config
                .per_ip_public
                .map(|r| DefaultKeyedRateLimiter::keyed(quota(r))),
            per_key: config
                .per_key
                .map(|r| DefaultKeyedRateLimiter::keyed(quota(r))),
            clock: DefaultClock::default(),
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check(&self.per_ip, &ip, "per client IP")
    }

    /// The quota of requests that need no key (`rate_limits.per_ip_public`).
    pub fn check_public(&self, ip: IpAddr) -> Result<(), Limited> {
        self.check(&self.per_ip_public, &ip, "per client IP, without a key")
    }

    pub fn check_key(&self, key_name: &str) -> Result<(), Limited> {
        self.check(&self.per_key, &key_name.to_string(), "per API key")
    }

    fn check<K: std::hash::Hash + Eq + Clone>(
        &self,
        limiter: &Option<DefaultKeyedRateLimiter<K>>,
        key: &K,
        scope: &'static str,
    ) -> Result<(), Limited> {
        match limiter {
            Some(limiter) => limiter.check_key(key).map_err(|not_until| Limited {
                scope,
                retry_after: not_until.wait_time_from(self.clock.now()),
            }),
            None => Ok(()),
        }
    }

    /// Forgets buckets that are full again, so memory follows the active clients only.
    pub fn forget_idle(&self) {
        for l in [&self.per_ip, &self.per_ip_public].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_key {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Places counted per API key (subscribers open on this instance): at most `max` per key at
/// once. A taken [`Seat`] is freed when dropped.
pub struct Seats {
    max: usize,
    taken: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One taken place; dropping it frees it.
pub struct Seat {
    seats: std::sync::Arc<Seats>,
    key: String,
}

impl Seats {
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            max,
            taken: Default::default(),
        })
    }

    /// A place for `key`, or `None` when it has `max` already.
    pub fn take(self: &std::sync::Arc<Self>, key: &str) -> Option<Seat> {
        let mut taken = self.taken.lock().expect("seats lock");
        let n = taken.entry(key.to_string()).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Seat {
            seats: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut taken = self.seats.taken.lock().expect("seats lock");
        if let Some(n) = taken.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                taken.remove(&self.key);
            }
        }
    }
}

/// How often `forget_idle` runs.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_are_counted_per_key_and_freed_on_drop() {
        let seats = Seats::new(2);
        let a = seats.take("alice").unwrap();
        let _b = seats.take("alice").unwrap();
        assert!(seats.take("alice").is_none());
        assert!(
            seats.take("bob").is_some(),
            "another key has its own places"
        );
        drop(a);
        assert!(seats.take("alice").is_some());
    }

    #[test]
    fn burst_then_refusal_with_wait() {
        let limiter = Limiter::new(&RateLimits {
            per_ip: Some(Rate {
                per_second: 1,
                burst: 2,
            }),
            per_ip_public: None,
            per_key: None,
        });
        let ip: IpAddr = [127, 0, 0, 1].into();
        limiter.check_ip(ip).unwrap();
        limiter.check_ip(ip).unwrap();
        match limiter.check_ip(ip) {
            Err(Limited { retry_after, .. }) => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            other => panic!("expected rate limited, got {other:?}"),
        }
        // Another IP has its own bucket; the key quota is disabled.
        limiter.check_ip([127, 0, 0, 2].into()).unwrap();
        limiter.check_key("anyone").unwrap();
    }
}
