//! Keyed rate limits (GCRA, governor): per user, stricter per user for the
//! calls that create orders, and per peer address for anonymous calls.
//!
//! Keys are arbitrary (user ids, addresses), so memory is bounded by
//! evicting keys whose bucket is back to full: periodically, and at once
//! when a flood of new keys crosses [`EAGER_EVICTION_KEYS`].

use std::{
    net::IpAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use shop_runtime::CancellationToken;

use crate::config::{Rate, RateLimitSettings};

/// Above this many tracked keys, each check may trigger an eviction (at most
/// once a second), instead of waiting for the periodic one.
pub const EAGER_EVICTION_KEYS: usize = 100_000;

/// A call over a limit: which one (`user`, `order`, `anonymous`) and when
/// a call would pass again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub limit: &'static str,
    pub retry_after: Duration,
}

/// Who a call is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey<'a> {
    User(&'a str),
    Peer(IpAddr),
}

pub struct RateLimits {
    user: DefaultKeyedRateLimiter<String>,
    order: DefaultKeyedRateLimiter<String>,
    anonymous: DefaultKeyedRateLimiter<IpAddr>,
    started: Instant,
    last_eager_eviction_ms: AtomicU64,
}

fn quota(rate: Rate) -> Quota {
    Quota::per_second(rate.per_second).allow_burst(rate.burst)
}

/// IPv6 clients usually own a whole /64; keying by it stops one client from
/// minting fresh limits by rotating addresses.
fn peer_bucket(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            user: DefaultKeyedRateLimiter::keyed(quota(settings.user)),
            order: DefaultKeyedRateLimiter::keyed(quota(settings.order)),
            anonymous: DefaultKeyedRateLimiter::keyed(quota(settings.anonymous)),
            started: Instant::now(),
            last_eager_eviction_ms: AtomicU64::new(0),
        }
    }

    /// Counts one call; `Err` names the limit that refused it and how long
    /// until one would pass.
    pub fn check(&self, key: RateKey<'_>, creates_order: bool) -> Result<(), Refused> {
        self.evict_if_flooded();
        match key {
            RateKey::User(user) => {
                let user = user.to_owned();
                if creates_order {
                    self.order.check_key(&user).map_err(|denied| Refused {
                        limit: "order",
                        retry_after: denied.wait_time_from(self.order.clock().now()),
                    })?;
                }
                self.user.check_key(&user).map_err(|denied| Refused {
                    limit: "user",
                    retry_after: denied.wait_time_from(self.user.clock().now()),
                })
            }
            RateKey::Peer(ip) => self.anonymous.check_key(&peer_bucket(ip)).map_err(|denied| Refused {
                limit: "anonymous",
                retry_after: denied.wait_time_from(self.anonymous.clock().now()),
            }),
        }
    }

    /// Drops every key whose bucket is full again (indistinguishable from a
    /// new key) and returns the memory.
    pub fn evict_idle(&self) {
        self.user.retain_recent();
        self.user.shrink_to_fit();
        self.order.retain_recent();
        self.order.shrink_to_fit();
        self.anonymous.retain_recent();
        self.anonymous.shrink_to_fit();
    }

    /// Keys currently held (an estimate while checks run concurrently).
    pub fn tracked_keys(&self) -> usize {
        self.user.len() + self.order.len() + self.anonymous.len()
    }

    fn evict_if_flooded(&self) {
        if self.tracked_keys() < EAGER_EVICTION_KEYS {
            return;
        }
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_eager_eviction_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 1_000
            && self
                .last_eager_eviction_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.evict_idle();
        }
    }

    /// Evicts idle keys every `interval` until `shutdown`.
    pub async fn evict_periodically(&self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => self.evict_idle(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv6Addr, num::NonZeroU32};

    use super::*;

    fn rate(per_second: u32, burst: u32) -> Rate {
        Rate {
            per_second: NonZeroU32::new(per_second).expect("nonzero"),
            burst: NonZeroU32::new(burst).expect("nonzero"),
        }
    }

    fn limits(user: Rate, order: Rate, anonymous: Rate) -> RateLimits {
        RateLimits::new(&RateLimitSettings {
            user,
            order,
            anonymous,
            eviction_interval: Duration::from_secs(60),
        })
    }

    #[test]
    fn burst_then_refusal_with_a_wait_time_and_users_are_independent() {
        let limits = limits(rate(1, 3), rate(1, 1), rate(1, 1));
        for _ in 0..3 {
            assert!(limits.check(RateKey::User("alice"), false).is_ok());
        }
        let refused = limits.check(RateKey::User("alice"), false).expect_err("over the burst");
        let wait = refused.retry_after;
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert_eq!(refused.limit, "user");
        assert!(limits.check(RateKey::User("bob"), false).is_ok());
    }

    #[test]
    fn order_creation_is_stricter_than_the_user_limit() {
        let limits = limits(rate(100, 100), rate(1, 2), rate(1, 1));
        assert!(limits.check(RateKey::User("alice"), true).is_ok());
        assert!(limits.check(RateKey::User("alice"), true).is_ok());
        assert_eq!(
            limits.check(RateKey::User("alice"), true).map_err(|r| r.limit),
            Err("order")
        );
        // Other calls of the same user still pass.
        assert!(limits.check(RateKey::User("alice"), false).is_ok());
    }

    #[test]
    fn anonymous_ipv6_clients_share_their_slash_64() {
        let limits = limits(rate(1, 1), rate(1, 1), rate(1, 1));
        let a: IpAddr = "2001:db8::1".parse::<Ipv6Addr>().expect("ip").into();
        let b: IpAddr = "2001:db8::2".parse::<Ipv6Addr>().expect("ip").into();
        assert!(limits.check(RateKey::Peer(a), false).is_ok());
        assert!(limits.check(RateKey::Peer(b), false).is_err());
        let mapped: IpAddr = "::ffff:10.0.0.1".parse::<Ipv6Addr>().expect("ip").into();
        assert_eq!(peer_bucket(mapped), "10.0.0.1".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn a_flood_of_distinct_keys_is_evicted_once_idle() {
        // 1000/s: a used bucket is full again after a millisecond.
        let fast = limits(rate(1000, 1), rate(1000, 1), rate(1000, 1));
        for n in 0..20_000u32 {
            let _ = fast.check(RateKey::User(&format!("user-{n}")), false);
            let _ = fast.check(RateKey::Peer(IpAddr::from(n.to_be_bytes())), false);
        }
        assert!(fast.tracked_keys() >= 40_000, "{}", fast.tracked_keys());
        std::thread::sleep(Duration::from_millis(20));
        fast.evict_idle();
        assert_eq!(fast.tracked_keys(), 0);
        // A key still limited is kept: at 1/s its bucket stays in use for a
        // second, however slowly this test runs.
        let slow = limits(rate(1, 1), rate(1, 1), rate(1, 1));
        let _ = slow.check(RateKey::User("busy"), false);
        slow.evict_idle();
        assert_eq!(slow.tracked_keys(), 1);
    }

    #[test]
    fn a_flood_past_the_threshold_evicts_without_waiting_for_the_timer() {
        let limits = limits(rate(1000, 1), rate(1000, 1), rate(1000, 1));
        for n in 0..(EAGER_EVICTION_KEYS as u32 + 10) {
            let _ = limits.check(RateKey::Peer(IpAddr::from(n.to_be_bytes())), false);
        }
        std::thread::sleep(Duration::from_millis(1100));
        let _ = limits.check(RateKey::User("trigger"), false);
        // Evicted during the flood (a slow machine crosses the threshold a
        // second or more before the flood ends, keeping what came after) or
        // by the trigger: either way the flood is not all held.
        assert!(limits.tracked_keys() < EAGER_EVICTION_KEYS, "{}", limits.tracked_keys());
    }
}
