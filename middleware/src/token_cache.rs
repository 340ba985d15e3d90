//! Verified claims, keyed by the exact token bytes, so a client that sends the same
//! access token for its whole life pays for one signature check, not one per request.
//!
//! Bounded in size, and an entry never outlives its token's `exp`.

use std::sync::Arc;
use std::time::SystemTime;

use quick_cache::sync::Cache;

use crate::context::AuthContext;
#[cfg(test)]
use crate::context::Claims;
use crate::liveness::{LivenessCell, Tick};

/// The default number of tokens kept.
pub const DEFAULT_TOKEN_CACHE_CAPACITY: u64 = 100_000;

/// What is remembered of one verified token.
#[derive(Debug, Clone)]
pub(crate) struct VerifiedToken {
    pub(crate) context: AuthContext,
    /// The token's `exp` on the monotonic clock the cell's deadline is on, so one clock
    /// read serves both.
    expires: Tick,
    /// Its session's state, kept current by the store, when the store keeps one.
    pub(crate) liveness: Option<LivenessCell>,
}

/// A bounded cache from token bytes to the context its verified claims make and the
/// session's [`LivenessCell`]. Keyed by bytes, not `str`: a lookup straight from the
/// header value skips a UTF-8 pass (11.6% of the layer's instructions per cached
/// request, measured with callgrind), and only tokens that passed verification,
/// well-formed ASCII, are ever inserted.
///
/// An entry is shared (`Arc`), so that a lookup, which clones what it finds, adds to
/// the token's own counter only: the cell inside it may point at an arena shared by every
/// session, whose counter every request would otherwise fight over.
///
/// `quick_cache` (CLOCK-Pro, sharded, foldhash) rather than a cache with per-entry
/// timers: a lookup is one hash of the token and one probe, and an entry costs little
/// more than the token itself. Expiry is checked on every read against the token's own
/// `exp`, and an expired entry is removed then. A cell held here keeps nothing else
/// alive: the store invalidates the cells of sessions it stops tracking.
#[derive(Clone)]
pub(crate) struct VerifiedTokenCache {
    cache: Arc<Cache<Arc<[u8]>, Arc<VerifiedToken>>>,
}

impl VerifiedTokenCache {
    pub(crate) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        Self {
            cache: Arc::new(Cache::new(capacity)),
        }
    }

    /// What is known of `token` if it was verified before and has not expired by `now`.
    pub(crate) fn get(&self, token: &[u8], now: Tick) -> Option<Arc<VerifiedToken>> {
        let verified = self.cache.get(token)?;
        if verified.expires <= now {
            self.cache.remove(token);
            return None;
        }
        Some(verified)
    }

    /// Remembers `token` with its session's cell, if it has not expired yet.
    pub(crate) fn insert(
        &self,
        token: &[u8],
        context: AuthContext,
        liveness: Option<LivenessCell>,
    ) {
        let Ok(remaining) = context.expires_at().duration_since(SystemTime::now()) else {
            return;
        };
        if remaining.is_zero() {
            return;
        }
        let verified = VerifiedToken {
            context,
            expires: Tick::after(remaining),
            liveness,
        };
        self.cache.insert(Arc::from(token), Arc::new(verified));
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Audience;
    use crate::liveness::Liveness;
    use std::time::{Duration, UNIX_EPOCH};

    fn claims(expires_in: i64) -> AuthContext {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        AuthContext::new(Arc::new(Claims {
            iss: "i".into(),
            aud: Audience::One("a".into()),
            sub: "u".into(),
            sid: "s".into(),
            exp: now.saturating_add_signed(expires_in),
            iat: None,
            nbf: None,
            jti: None,
            aal: None,
            amr: Vec::new(),
            auth_time: None,
        }))
    }

    #[test]
    fn returns_what_was_inserted_until_exp() {
        let cache = VerifiedTokenCache::new(10);
        let cell = LivenessCell::new(Liveness::Live, None);
        cache.insert(b"live", claims(60), Some(cell.clone()));
        let verified = cache.get(b"live", Tick::now()).unwrap();
        assert_eq!(verified.context.user_id().as_str(), "u");
        assert!(verified.liveness.as_ref().unwrap().is(&cell));
        assert!(cache.get(b"other", Tick::now()).is_none());
    }

    #[test]
    fn never_serves_an_expired_token() {
        let cache = VerifiedTokenCache::new(10);
        cache.insert(b"expired", claims(-1), None);
        assert!(cache.get(b"expired", Tick::now()).is_none());
        // An entry that expires while cached is not served either.
        cache.insert(b"soon", claims(1), None);
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while let Some(verified) = cache.get(b"soon", Tick::now()) {
            assert!(
                verified.context.expires_at() > SystemTime::now(),
                "served after its exp"
            );
            assert!(std::time::Instant::now() < deadline, "never expired");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cache.len(), 0, "the expired entry was removed on read");
    }

    #[test]
    fn is_bounded() {
        let cache = VerifiedTokenCache::new(100);
        for i in 0..1_000 {
            cache.insert(format!("token-{i}").as_bytes(), claims(60), None);
        }
        assert!(cache.len() <= 100, "{}", cache.len());
    }
}
