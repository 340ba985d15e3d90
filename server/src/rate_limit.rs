//! Rate limits on login, refresh and password change: per client IP, per account, per
//! account and IP, per user and per session.
//!
//! Each limit is a GCRA (the token bucket `governor` implements: one timestamp per key)
//! whose keys live in a bounded `quick_cache`: however many distinct keys arrive, a
//! limiter holds at most its `max_keys`. (`governor` itself cannot give a token back and
//! keeps every key until a sweep.) The cache's CLOCK-Pro policy evicts keys seen once before keys that
//! keep coming back, so a flood of fresh keys does not flush the bucket of an account
//! under attack. Keys are fixed-size: IPs, UUIDs, or a [`LimitKey`] digest of an email.
//!
//! A limit can count failures only: [`KeyedLimit::check`] takes a token before the
//! password is verified (so parallel guesses cannot overshoot the budget), and
//! [`KeyedLimit::refund`] gives it back when the password was right. [`RateLimits`] does
//! that for each operation: its attempts ([`LoginAttempt`], [`PasswordChangeAttempt`])
//! give their tokens back when dropped, unless marked failed.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ids::{SessionId, UserId};
use quick_cache::sync::{Cache, EntryAction, EntryResult};

use crate::client_ip::ClientNetwork;
use crate::config::RateLimitSettings;

/// Keys a limiter keeps at most, unless told otherwise (`RATE_LIMIT_MAX_KEYS`).
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// The shortest `Retry-After` a refusal names.
const MIN_WAIT: Duration = Duration::from_secs(1);

/// A fixed-size key derived from an account (and optionally a client IP): what the
/// per-account limits are keyed by, so the size of the email never reaches a limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey([u8; 16]);

impl LimitKey {
    /// The key of an account, by its normalised email.
    pub fn account(email: &str) -> Self {
        Self::digest(&[b"account\0", email.as_bytes()])
    }

    /// The key of an account as seen from one client network (an IPv4 address or an
    /// IPv6 /64).
    pub fn account_from(email: &str, network: ClientNetwork) -> Self {
        let ip = match network.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self::digest(&[b"account-ip\0", &ip, email.as_bytes()])
    }

    fn digest(parts: &[&[u8]]) -> Self {
        let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in parts {
            context.update(part);
        }
        let mut key = [0; 16];
        key.copy_from_slice(&context.finish().as_ref()[..16]);
        Self(key)
    }
}

/// A per-key limit of `n` per minute (bursts of `n`), or none at all when `n` is 0.
#[derive(Clone)]
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<Arc<Limiter<K>>>,
}

struct Limiter<K> {
    /// One token comes back every `interval` nanoseconds.
    interval: u64,
    /// How far ahead of now a key's theoretical arrival time may be: `(burst - 1) × interval`.
    tolerance: u64,
    /// Each key's theoretical arrival time, in nanoseconds since `epoch`.
    arrivals: Cache<K, u64>,
    epoch: Instant,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `per_minute` requests a minute per key; 0 turns the limit off.
    pub fn per_minute(per_minute: u32) -> Self {
        Self {
            limiter: (per_minute > 0).then(|| {
                let interval = 60_000_000_000 / u64::from(per_minute);
                Arc::new(Limiter {
                    interval,
                    tolerance: interval * (u64::from(per_minute) - 1),
                    arrivals: Cache::new(DEFAULT_MAX_KEYS),
                    epoch: Instant::now(),
                })
            }),
        }
    }

    /// Keeps at most `max_keys` keys, the least recently used going first.
    #[must_use]
    pub fn with_max_keys(self, max_keys: usize) -> Self {
        Self {
            limiter: self.limiter.map(|limiter| {
                Arc::new(Limiter {
                    interval: limiter.interval,
                    tolerance: limiter.tolerance,
                    arrivals: Cache::new(max_keys.max(1)),
                    epoch: limiter.epoch,
                })
            }),
        }
    }

    /// Takes a token for `key`: `Ok` when it may go on; otherwise how long until it may,
    /// at least one second (nothing is taken then).
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(limiter) => limiter.check(key, limiter.now()),
        }
    }

    /// Gives back the token a [`check`](Self::check) took, for an attempt that turned out
    /// not to count (the right password).
    pub fn refund(&self, key: &K) {
        if let Some(limiter) = &self.limiter {
            limiter.refund(key);
        }
    }

    /// Forgets keys whose limit has fully recovered.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            let now = limiter.now();
            limiter.arrivals.retain(|_, arrival| *arrival > now);
        }
    }

    /// How many keys the limiter holds now.
    pub fn len(&self) -> usize {
        self.limiter
            .as_ref()
            .map_or(0, |limiter| limiter.arrivals.len())
    }

    /// Whether the limiter holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The GCRA step at `now` for a key whose theoretical arrival time is `arrival`: the
    /// new arrival time, or how long to wait.
    fn step(&self, arrival: u64, now: u64) -> Result<u64, Duration> {
        let base = arrival.max(now);
        let ahead = base - now;
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance).max(MIN_WAIT));
        }
        Ok(base + self.interval)
    }

    fn check(&self, key: &K, now: u64) -> Result<(), Duration> {
        // The step runs under the shard's lock: two requests never take the same token.
        let entry = self.arrivals.entry(key, None, |_, arrival| {
            let next = self.step(*arrival, now);
            if let Ok(next) = next {
                *arrival = next;
            }
            EntryAction::Retain(next.map(drop))
        });
        match entry {
            EntryResult::Retained(outcome) => outcome,
            EntryResult::Vacant(guard) => {
                let next = self.step(0, now)?;
                let _ = guard.insert(next);
                Ok(())
            }
            // Never returned: the callback always retains and there is no timeout.
            EntryResult::Removed(..) | EntryResult::Replaced(..) | EntryResult::Timeout => Ok(()),
        }
    }

    fn refund(&self, key: &K) {
        // A key evicted meanwhile has nothing to give back to: dropping the guard
        // inserts nothing.
        let _ = self.arrivals.entry(key, None, |_, arrival| {
            *arrival = arrival.saturating_sub(self.interval);
            EntryAction::Retain(())
        });
    }
}

/// Every limit the server applies, and the one place each is applied: the routes take
/// what an operation needs from here before they call the account logic, which knows
/// nothing of limits.
#[derive(Clone)]
pub struct RateLimits {
    /// Failed logins per account.
    pub login_failures_per_account: KeyedLimit<LimitKey>,
    /// Failed logins per account from one client IP: binds even a client the account
    /// limit lets through because it is known.
    pub login_failures_per_account_ip: KeyedLimit<LimitKey>,
    /// Failed logins, and registrations, per client IP (IPv6: per /64).
    pub login_per_ip: KeyedLimit<ClientNetwork>,
    /// Refreshes per client IP (IPv6: per /64).
    pub refresh_per_ip: KeyedLimit<ClientNetwork>,
    /// Failed password changes per user, over all of the user's sessions.
    pub password_change_failures_per_user: KeyedLimit<UserId>,
    /// Failed password changes per session (the session is revoked after as many).
    pub password_change_failures_per_session: KeyedLimit<SessionId>,
    /// Reset requests per address (known or not), and verification mails per user.
    pub account_mail_per_address: KeyedLimit<LimitKey>,
    /// Requests to the reset and verification routes per client IP (IPv6: per /64).
    pub account_recovery_per_ip: KeyedLimit<ClientNetwork>,
}

impl RateLimits {
    /// Every limit `settings` ask for, each keeping at most `settings.max_keys` keys; a
    /// session may have as many password changes under way at once as it may fail in all
    /// before it is revoked (`password_change_max_failures`, the account policy's).
    pub fn new(settings: &RateLimitSettings, password_change_max_failures: u32) -> Self {
        fn limit<K: Hash + Eq + Clone>(per_minute: u32, max_keys: usize) -> KeyedLimit<K> {
            KeyedLimit::per_minute(per_minute).with_max_keys(max_keys)
        }
        let keys = settings.max_keys;
        Self {
            login_failures_per_account: limit(settings.login_per_account, keys),
            login_failures_per_account_ip: limit(settings.login_per_account, keys),
            login_per_ip: limit(settings.login_per_ip, keys),
            refresh_per_ip: limit(settings.refresh_per_ip, keys),
            password_change_failures_per_user: limit(settings.password_change_per_user, keys),
            password_change_failures_per_session: limit(password_change_max_failures, keys),
            account_mail_per_address: limit(settings.account_mail_per_address, keys),
            account_recovery_per_ip: limit(settings.account_recovery_per_ip, keys),
        }
    }

    /// A registration from `ip`: it shares the per-IP budget of failed logins.
    pub fn register(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        ip.map_or(Ok(()), |ip| {
            self.login_per_ip.check(&ClientNetwork::from(ip))
        })
    }

    /// A refresh from `ip`.
    pub fn refresh(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        ip.map_or(Ok(()), |ip| {
            self.refresh_per_ip.check(&ClientNetwork::from(ip))
        })
    }

    /// A login attempt on the account of the normalised `email` from `ip`: a token from
    /// the per-IP and per-account-and-IP budgets (refused when either is spent) and one
    /// from the per-account budget, if it has one left (see
    /// [`LoginAttempt::account_exhausted`]). They come back when the attempt ends, unless
    /// it [failed](LoginAttempt::failed).
    pub fn login(&self, email: &str, ip: Option<IpAddr>) -> Result<LoginAttempt<'_>, Duration> {
        let mut attempt = LoginAttempt {
            limits: self,
            ip: None,
            pair: None,
            account: None,
            account_exhausted: None,
            failed: false,
        };
        if let Some(ip) = ip {
            let network = ClientNetwork::from(ip);
            self.login_per_ip.check(&network)?;
            attempt.ip = Some(network);
            let pair = LimitKey::account_from(email, network);
            self.login_failures_per_account_ip.check(&pair)?;
            attempt.pair = Some(pair);
        }
        let account = LimitKey::account(email);
        match self.login_failures_per_account.check(&account) {
            Ok(()) => attempt.account = Some(account),
            Err(wait) => attempt.account_exhausted = Some(wait),
        }
        Ok(attempt)
    }

    /// A password change from `session` of `user`: a token per session and per user,
    /// back when the attempt ends unless it [failed](PasswordChangeAttempt::failed).
    pub fn password_change(
        &self,
        user: UserId,
        session: SessionId,
    ) -> Result<PasswordChangeAttempt<'_>, Duration> {
        self.password_change_failures_per_session.check(&session)?;
        if let Err(wait) = self.password_change_failures_per_user.check(&user) {
            self.password_change_failures_per_session.refund(&session);
            return Err(wait);
        }
        Ok(PasswordChangeAttempt {
            limits: self,
            user,
            session,
            failed: false,
        })
    }

    /// A request to a reset or verification route from `ip`.
    pub fn account_recovery(&self, ip: Option<IpAddr>) -> Result<(), Duration> {
        ip.map_or(Ok(()), |ip| {
            self.account_recovery_per_ip.check(&ClientNetwork::from(ip))
        })
    }

    /// A mail to the normalised `email` (a reset request, a verification mail): counted
    /// for every address, whether an account has it or not, so the answer is the same.
    pub fn account_mail(&self, email: &str) -> Result<(), Duration> {
        self.account_mail_per_address
            .check(&LimitKey::account(email))
    }

    /// Forgets idle keys in every limiter.
    pub fn forget_idle(&self) {
        self.login_failures_per_account.forget_idle();
        self.login_failures_per_account_ip.forget_idle();
        self.login_per_ip.forget_idle();
        self.refresh_per_ip.forget_idle();
        self.password_change_failures_per_user.forget_idle();
        self.password_change_failures_per_session.forget_idle();
        self.account_mail_per_address.forget_idle();
        self.account_recovery_per_ip.forget_idle();
    }
}

/// The tokens one login attempt took: given back when it ends, unless it failed (a wrong
/// password, an unknown email). A right password, and an attempt the database could not
/// answer, cost nobody's budget.
#[must_use = "dropping the attempt gives its tokens back at once"]
pub struct LoginAttempt<'a> {
    limits: &'a RateLimits,
    ip: Option<ClientNetwork>,
    pair: Option<LimitKey>,
    account: Option<LimitKey>,
    account_exhausted: Option<Duration>,
    failed: bool,
}

impl LoginAttempt<'_> {
    /// When others' failures have spent the account's budget: how long until it has a
    /// token again. Only a client known to the account may go on then.
    pub fn account_exhausted(&self) -> Option<Duration> {
        self.account_exhausted
    }

    /// Refused for the account's spent budget: not a guess (no password was looked at),
    /// so the per-account-and-IP token comes back, but the queries it cost stay on the
    /// IP's budget.
    pub fn refused(mut self) {
        self.ip = None;
    }

    /// The password was wrong or the account unknown: every token stays taken.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for LoginAttempt<'_> {
    fn drop(&mut self) {
        if self.failed {
            return;
        }
        if let Some(ip) = &self.ip {
            self.limits.login_per_ip.refund(ip);
        }
        if let Some(key) = &self.pair {
            self.limits.login_failures_per_account_ip.refund(key);
        }
        if let Some(key) = &self.account {
            self.limits.login_failures_per_account.refund(key);
        }
    }
}

/// The tokens one password change took: given back when it ends, unless the current
/// password was wrong.
#[must_use = "dropping the attempt gives its tokens back at once"]
pub struct PasswordChangeAttempt<'a> {
    limits: &'a RateLimits,
    user: UserId,
    session: SessionId,
    failed: bool,
}

impl PasswordChangeAttempt<'_> {
    /// The current password was wrong: both tokens stay taken.
    pub fn failed(mut self) {
        self.failed = true;
    }
}

impl Drop for PasswordChangeAttempt<'_> {
    fn drop(&mut self) {
        if !self.failed {
            self.limits
                .password_change_failures_per_session
                .refund(&self.session);
            self.limits
                .password_change_failures_per_user
                .refund(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    fn limiter<K: Hash + Eq + Clone>(limit: &KeyedLimit<K>) -> &Limiter<K> {
        limit.limiter.as_deref().expect("limit on")
    }

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
        assert!(limit.is_empty());
    }

    #[test]
    fn tokens_come_back_one_per_interval_and_the_wait_says_when() {
        let limit = KeyedLimit::per_minute(20);
        let limiter = limiter(&limit);
        for _ in 0..20 {
            limiter.check(&"ada", 0).unwrap();
        }
        assert_eq!(
            limiter.check(&"ada", 0),
            Err(Duration::from_secs(3)),
            "one token every 3 s"
        );
        assert!(limiter.check(&"ada", 3 * SECOND - 1).is_err());
        limiter.check(&"ada", 3 * SECOND).unwrap();
        assert!(limiter.check(&"ada", 3 * SECOND).is_err());
        // A minute later the whole burst is back, and no more than it.
        let later = 63 * SECOND;
        for _ in 0..20 {
            limiter.check(&"ada", later).unwrap();
        }
        assert!(limiter.check(&"ada", later).is_err());
    }

    #[test]
    fn a_refund_gives_back_exactly_the_token_taken_and_never_more_than_the_burst() {
        let limit = KeyedLimit::per_minute(3);
        let limiter = limiter(&limit);
        // Refunding every check: any number of attempts pass (only failures count).
        for _ in 0..100 {
            limiter.check(&"ada", 0).unwrap();
            limiter.refund(&"ada");
        }
        // Refunds on a full bucket do not raise it above the burst.
        for _ in 0..10 {
            limiter.refund(&"ada");
        }
        for _ in 0..3 {
            limiter.check(&"ada", 0).unwrap();
        }
        assert!(limiter.check(&"ada", 0).is_err());
        // A refund of an unknown key creates nothing.
        limiter.refund(&"grace");
        assert_eq!(limit.len(), 1);
    }

    #[test]
    fn concurrent_checks_never_take_more_than_the_burst() {
        let limit = KeyedLimit::per_minute(20);
        let passed = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..50 {
                        if limit.check(&"ada").is_ok() {
                            passed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(passed.into_inner(), 20);
    }

    #[test]
    fn the_key_count_is_bounded_and_a_flood_of_new_keys_keeps_a_busy_key() {
        let limit = KeyedLimit::per_minute(5).with_max_keys(1_000);
        let limiter = limiter(&limit);
        for _ in 0..5 {
            limiter.check(&u64::MAX, 0).unwrap();
        }
        for key in 0..100_000 {
            limiter.check(&key, 0).unwrap();
            // The attacked key keeps being tried, as it is under attack.
            if key % 100 == 0 {
                assert!(limiter.check(&u64::MAX, 0).is_err(), "after {key} keys");
            }
            assert!(limit.len() <= 1_100, "{} keys", limit.len());
        }
    }

    #[test]
    fn idle_keys_are_forgotten_once_their_limit_has_recovered() {
        let limit = KeyedLimit::per_minute(60);
        limit.check(&"ada").unwrap();
        assert_eq!(limit.len(), 1);
        limit.forget_idle();
        assert_eq!(limit.len(), 1, "still recovering");
        let limiter = limiter(&limit);
        limiter.arrivals.insert("ada", 0);
        limit.forget_idle();
        assert!(limit.is_empty());
    }

    #[test]
    fn limit_keys_are_fixed_size_and_tell_accounts_and_ips_apart() {
        let network = |ip: &str| ClientNetwork::from(ip.parse::<IpAddr>().unwrap());
        let ip = network("203.0.113.7");
        let other = network("203.0.113.8");
        assert_eq!(
            LimitKey::account_from("ada@example.com", network("2001:db8::1")),
            LimitKey::account_from("ada@example.com", network("2001:db8::2")),
            "one IPv6 /64 is one client"
        );
        assert_eq!(
            LimitKey::account("ada@example.com"),
            LimitKey::account("ada@example.com")
        );
        assert!(LimitKey::account("ada@example.com") != LimitKey::account("bob@example.com"));
        assert!(
            LimitKey::account_from("ada@example.com", ip)
                != LimitKey::account_from("ada@example.com", other)
        );
        assert!(
            LimitKey::account_from("ada@example.com", ip) != LimitKey::account("ada@example.com")
        );
        assert_eq!(std::mem::size_of::<LimitKey>(), 16);
    }
}
