//! Rate limits on login and refresh, per client IP and per account (governor).

use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::client_ip::ClientNetwork;

/// A per-key limit of `n` per minute (bursts of `n`), or none at all when `n` is 0.
#[derive(Clone)]
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<Arc<DefaultKeyedRateLimiter<K>>>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `per_minute` requests a minute per key; 0 turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute)
                .map(|n| Arc::new(RateLimiter::keyed(Quota::per_minute(n)))),
        }
    }

    /// `Ok` when `key` may go on; otherwise how long until it may, at least one second.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.max(Duration::from_secs(1))
        })
    }

    /// Forgets keys whose limit has fully recovered, so memory does not grow forever.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// Every limit the server applies.
#[derive(Clone)]
pub struct RateLimits {
    /// Logins per account (by normalised email).
    pub login_per_account: KeyedLimit<String>,
    /// Logins and registrations per client IP (IPv6: per /64).
    pub login_per_ip: KeyedLimit<ClientNetwork>,
    /// Refreshes per client IP (IPv6: per /64).
    pub refresh_per_ip: KeyedLimit<ClientNetwork>,
}

impl RateLimits {
    /// Forgets idle keys in every limiter.
    pub fn forget_idle(&self) {
        self.login_per_account.forget_idle();
        self.login_per_ip.forget_idle();
        self.refresh_per_ip.forget_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_limit_bites_per_key() {
        let limit = KeyedLimit::per_minute(20);
        for _ in 0..20 {
            assert!(limit.check(&"ada").is_ok());
        }
        let wait = limit.check(&"ada").unwrap_err();
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert!(limit.check(&"grace").is_ok(), "other keys are unaffected");
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let limit = KeyedLimit::per_minute(0);
        for _ in 0..10_000 {
            assert!(limit.check(&1).is_ok());
        }
    }
}
