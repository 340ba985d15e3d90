//! [`PostgresListenFeed`]: revocations from PostgreSQL `LISTEN`, the embedded default.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use crate::liveness::feed::{FeedEvent, Revocation, RevocationFeed};
use crate::postgres::{DatabaseConfig, Listener};

/// The channel the schema's trigger notifies on.
pub const DEFAULT_CHANNEL: &str = "session_revoked";
/// What the listener calls itself in `pg_stat_activity`.
pub const LISTENER_APPLICATION_NAME: &str = "portcullis-listener";

/// How long the listener may take to connect.
pub(crate) const LISTENER_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a quiet connection is asked whether it is still there.
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Revocations over one dedicated PostgreSQL connection that `LISTEN`s on the channel the
/// schema's trigger notifies (not a pooled one: pooled connections drop notifications).
///
/// A notification that is missed is lost for good, so the feed says
/// [`FeedEvent::Missed`] whenever its connection ends and again when a new one starts:
/// the cache forgets everything both times. It reconnects with backoff (100 ms doubling
/// to 5 s), and pings a quiet connection every 30 s, since one that died without a reset
/// would otherwise look alive. Needs a direct or session-mode connection: a
/// transaction-pooling proxy does not deliver notifications.
///
/// The payloads it understands are the schema's: a session id; `*` (every session, on
/// `TRUNCATE`); `user <uuid> before <µs since the Unix epoch>[ except <uuid>]` and
/// `all before <µs>[ except <uuid>]` (bulk revocations). Anything else is logged and
/// ignored.
#[derive(Debug)]
pub struct PostgresListenFeed {
    database: DatabaseConfig,
    channel: String,
    listener: Option<(Listener, tokio::time::Interval)>,
    pending: VecDeque<FeedEvent>,
    backoff: Duration,
    attempted: bool,
}

impl PostgresListenFeed {
    /// A feed on `database` that listens on `channel`
    /// ([`DEFAULT_CHANNEL`] is the schema's). Connects when first asked for an event.
    pub fn new(database: DatabaseConfig, channel: impl Into<String>) -> Self {
        let mut database = database;
        database
            .settings_mut()
            .application_name(LISTENER_APPLICATION_NAME)
            .keepalives_idle(Duration::from_secs(30))
            .connect_timeout(LISTENER_CONNECT_TIMEOUT);
        Self {
            database,
            channel: channel.into(),
            listener: None,
            pending: VecDeque::new(),
            backoff: FIRST_BACKOFF,
            attempted: false,
        }
    }

    /// Connects, after the backoff when this is not the first attempt.
    async fn connect(&mut self) -> FeedEvent {
        if self.attempted {
            tokio::time::sleep(self.backoff).await;
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        }
        self.attempted = true;
        match Listener::connect(&self.database, &self.channel).await {
            Ok(listener) => {
                self.backoff = FIRST_BACKOFF;
                let mut ping = tokio::time::interval(PING_EVERY);
                ping.reset();
                self.listener = Some((listener, ping));
                tracing::info!(channel = %self.channel, "revocation listener connected");
                // Whatever was cached before this connection existed may have missed a
                // notification.
                self.pending.push_back(FeedEvent::Connected);
                FeedEvent::Missed
            }
            Err(e) => {
                let reason = error_text(&e);
                tracing::warn!(error = %reason, backoff = ?self.backoff, "revocation listener cannot connect");
                FeedEvent::Disconnected { reason }
            }
        }
    }

    /// The connection ended: what was cached may have missed a notification.
    fn lost(&mut self, reason: &str) -> FeedEvent {
        self.listener = None;
        tracing::warn!(
            reason,
            "revocation listener disconnected; cache cleared, reconnecting"
        );
        self.pending.push_back(FeedEvent::Missed);
        FeedEvent::Disconnected {
            reason: reason.to_owned(),
        }
    }
}

impl RevocationFeed for PostgresListenFeed {
    async fn next_event(&mut self) -> Option<FeedEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let Some((listener, ping)) = &mut self.listener else {
                return Some(self.connect().await);
            };
            tokio::select! {
                notification = listener.recv() => {
                    let Some(notification) = notification else {
                        return Some(self.lost("the listening connection ended"));
                    };
                    if let Some(revocation) = parse_payload(notification.payload()) {
                        return Some(FeedEvent::Revoked(revocation));
                    }
                    tracing::warn!(
                        payload = notification.payload(),
                        "revocation notification not understood; ignored"
                    );
                }
                _ = ping.tick() => {
                    let alive = tokio::time::timeout(PING_TIMEOUT, listener.client().simple_query("")).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        return Some(self.lost("the listening connection stopped answering"));
                    }
                }
            }
        }
    }
}

/// A notification's payload as a revocation (see [`PostgresListenFeed`] for the forms).
pub(crate) fn parse_payload(payload: &str) -> Option<Revocation> {
    if payload == "*" {
        return Some(Revocation::Everything);
    }
    if let Ok(session) = Uuid::parse_str(payload) {
        return Some(Revocation::Session { session });
    }
    let mut words = payload.split(' ');
    let user = match words.next()? {
        "user" => Some(Uuid::parse_str(words.next()?).ok()?),
        "all" => None,
        _ => return None,
    };
    if words.next()? != "before" {
        return None;
    }
    let micros: u64 = words.next()?.parse().ok()?;
    let before = SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(micros))?;
    let except = match (words.next(), words.next()) {
        (None, _) => None,
        (Some("except"), Some(session)) => Some(Uuid::parse_str(session).ok()?),
        _ => return None,
    };
    if words.next().is_some() {
        return None;
    }
    Some(match user {
        Some(user) => Revocation::UserSessionsBefore {
            user,
            before,
            except,
        },
        None => Revocation::AllSessionsBefore { before, except },
    })
}

/// An error and the causes its own text does not already give, outermost first.
pub(crate) fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_the_schema_sends_are_understood() {
        let session = Uuid::new_v4();
        let user = Uuid::new_v4();
        let before = SystemTime::UNIX_EPOCH + Duration::from_micros(1_765_000_000_123_456);
        assert_eq!(parse_payload("*"), Some(Revocation::Everything));
        assert_eq!(
            parse_payload(&session.to_string()),
            Some(Revocation::Session { session })
        );
        assert_eq!(
            parse_payload(&format!("user {user} before 1765000000123456")),
            Some(Revocation::UserSessionsBefore {
                user,
                before,
                except: None
            })
        );
        assert_eq!(
            parse_payload(&format!(
                "user {user} before 1765000000123456 except {session}"
            )),
            Some(Revocation::UserSessionsBefore {
                user,
                before,
                except: Some(session)
            })
        );
        assert_eq!(
            parse_payload("all before 1765000000123456"),
            Some(Revocation::AllSessionsBefore {
                before,
                except: None
            })
        );
    }

    #[test]
    fn anything_else_is_not() {
        let user = Uuid::new_v4();
        for payload in [
            String::new(),
            "**".to_owned(),
            "not-a-uuid".to_owned(),
            format!("user {user}"),
            format!("user {user} before"),
            format!("user {user} before soon"),
            format!("user {user} after 1"),
            format!("user {user} before 1 except"),
            format!("user {user} before 1 except nobody"),
            format!("user {user} before 1 except {user} and more"),
            "all before -1".to_owned(),
            "group before 1".to_owned(),
        ] {
            assert_eq!(parse_payload(&payload), None, "{payload:?}");
        }
    }
}
