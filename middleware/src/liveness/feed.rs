//! [`RevocationFeed`]: how a [`LivenessCache`](crate::LivenessCache) hears that sessions
//! ended.
//!
//! A feed is a stream of [`FeedEvent`]s the cache applies in order: revocations, and what
//! the feed knows about itself (connected, disconnected, "I may have missed something").
//! Two ship with the crate: PostgreSQL `LISTEN` (inside
//! [`PostgresLiveness`](crate::PostgresLiveness)) and, behind the `nats` feature, a NATS
//! `JetStream` subscription. A test feed is a channel:
//!
//! ```
//! # #[cfg(feature = "postgres")] {
//! use portcullis::{FeedEvent, RevocationFeed};
//!
//! struct ChannelFeed(tokio::sync::mpsc::UnboundedReceiver<FeedEvent>);
//!
//! impl RevocationFeed for ChannelFeed {
//!     async fn next_event(&mut self) -> Option<FeedEvent> {
//!         self.0.recv().await
//!     }
//! }
//! # }
//! ```

use std::future::Future;
use std::time::SystemTime;

use uuid::Uuid;

/// What ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Revocation {
    /// One session ended (revoked, deleted, or a deadline moved earlier).
    Session {
        /// The session's id, as the `sessions` table holds it.
        session: Uuid,
    },
    /// Every session of `user` that started before `before` ended, but `except`: a
    /// sign-out everywhere, a password change, a reset. One event however many sessions.
    UserSessionsBefore {
        /// Whose sessions.
        user: Uuid,
        /// Sessions created before this instant ended; later ones did not.
        before: SystemTime,
        /// A session spared (the one that asked for the others to end), if any.
        except: Option<Uuid>,
    },
    /// Every session of every user that started before `before` ended, but `except`.
    AllSessionsBefore {
        /// Sessions created before this instant ended; later ones did not.
        before: SystemTime,
        /// A session spared, if any.
        except: Option<Uuid>,
    },
    /// Every session ended, and may be gone (the table was emptied): nothing cached holds.
    Everything,
}

/// One thing a [`RevocationFeed`] tells its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// From now on every revocation reaches the cache through the feed, so the cache may
    /// remember live answers. What it remembered before stays: a feed that may have lost
    /// revocations while it was away says [`Missed`](Self::Missed) first.
    Connected,
    /// Until the next [`Connected`](Self::Connected), revocations may go unheard: the cache
    /// remembers no new live answer, and those it holds run out at their bound (the live
    /// TTL). The reason is kept for [`PostgresLiveness::ready`](crate::PostgresLiveness::ready)
    /// and logs.
    Disconnected {
        /// What went wrong, for people.
        reason: String,
    },
    /// Sessions ended.
    Revoked(Revocation),
    /// The feed may have lost revocations it will never deliver: the cache forgets
    /// everything, and every next request asks the database.
    Missed,
}

/// A source of [`FeedEvent`]s: one per cache, driven by a task the cache starts.
///
/// [`next_event`](Self::next_event) is awaited again as soon as the last event is
/// applied; the feed does its own reconnecting inside it (sleeping between attempts), and
/// reports what it is doing through the events. `None` ends the feed for good: the cache
/// then behaves as disconnected forever, remembering no live answer.
pub trait RevocationFeed: Send + 'static {
    /// The next event; `None` when the feed has stopped for good.
    fn next_event(&mut self) -> impl Future<Output = Option<FeedEvent>> + Send;
}
