//! `security_events`: what happened, to whom, from where. Never a secret or a token.

use std::net::IpAddr;
use std::time::Duration;

use crate::ids::{SessionId, UserId};
use deadpool_postgres::GenericClient;

use super::bounded;
use super::sessions::{RevokeReason, interval};
use crate::error::ServiceError;

const INSERT: &str = "INSERT INTO security_events (kind, user_id, session_id, ip, detail) \
                      VALUES ($1, $2, $3, $4, $5)";
/// Served by `security_events_by_session_kind` (migration V4).
const COUNT_FOR_SESSION: &str =
    "SELECT count(*) FROM security_events WHERE session_id = $1 AND kind = $2";
/// Deletes up to `$2` events older than `$1`; served by `security_events_occurred_at`.
const PURGE_BATCH: &str = "DELETE FROM security_events WHERE id IN ( \
       SELECT id FROM security_events WHERE occurred_at < now() - $1::text::interval LIMIT $2)";

/// The `kind` column: what a security event is about. The rotation function in SQL
/// writes two more, `refresh_retried` and `refresh_reuse` (migration V3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A login with an unknown email or a wrong password.
    LoginFailed,
    /// Sessions were revoked (by their user, a password change, or too many failures).
    SessionsRevoked,
    /// The password was changed.
    PasswordChanged,
    /// A password change gave the wrong current password.
    PasswordChangeFailed,
    /// An operator revoked sessions from the command line.
    OperatorRevokedSessions,
    /// Someone asked for a password-reset mail.
    PasswordResetRequested,
    /// The password was reset through a mailed link.
    PasswordReset,
    /// The owner confirmed the account's address.
    EmailVerified,
    /// A second factor was added (a TOTP confirmed, a passkey registered).
    MfaFactorAdded,
    /// A second factor was removed.
    MfaFactorRemoved,
    /// A new set of recovery codes replaced the old.
    RecoveryCodesRegenerated,
    /// A recovery code stood in for a factor.
    RecoveryCodeUsed,
    /// A wrong second-factor code or passkey answer.
    MfaFailed,
    /// A signed-in user proved who they are again (step-up).
    SteppedUp,
    /// A refresh from a client unlike the session's got a token that asks for step-up
    /// (`STEP_UP_ON_DEVICE_CHANGE`).
    DeviceChanged,
}

impl EventKind {
    /// The `kind` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LoginFailed => "login_failed",
            Self::SessionsRevoked => "sessions_revoked",
            Self::PasswordChanged => "password_changed",
            Self::PasswordChangeFailed => "password_change_failed",
            Self::OperatorRevokedSessions => "operator_revoked_sessions",
            Self::PasswordResetRequested => "password_reset_requested",
            Self::PasswordReset => "password_reset",
            Self::EmailVerified => "email_verified",
            Self::MfaFactorAdded => "mfa_factor_added",
            Self::MfaFactorRemoved => "mfa_factor_removed",
            Self::RecoveryCodesRegenerated => "recovery_codes_regenerated",
            Self::RecoveryCodeUsed => "recovery_code_used",
            Self::MfaFailed => "mfa_failed",
            Self::SteppedUp => "stepped_up",
            Self::DeviceChanged => "device_changed",
        }
    }
}

/// Which sessions an operator revoked from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorScope {
    /// One session of one user.
    Session,
    /// Every live session of one user.
    User,
    /// Every live session of every user: a global sign-out.
    AllUsers,
}

impl OperatorScope {
    /// The `scope` in the event's `detail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::User => "user",
            Self::AllUsers => "all_users",
        }
    }
}

/// One security event the server records: its kind with the detail that goes with it,
/// so each kind's `detail` has one shape, written here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A login with an unknown email or a wrong password.
    LoginFailed,
    /// `count` sessions were revoked, for `reason`.
    SessionsRevoked {
        /// Why.
        reason: RevokeReason,
        /// How many.
        count: u64,
    },
    /// The password was changed, and `revoked_sessions` other sessions revoked.
    PasswordChanged {
        /// How many other sessions were revoked.
        revoked_sessions: u64,
    },
    /// A password change gave the wrong current password.
    PasswordChangeFailed,
    /// An operator revoked `count` live sessions of `scope`, with reason
    /// [`RevokeReason::Operator`].
    OperatorRevokedSessions {
        /// Which sessions.
        scope: OperatorScope,
        /// How many were live and are now revoked.
        count: u64,
    },
    /// A password-reset mail was asked for; `known` says whether an account has the
    /// address (and so whether a mail was queued).
    PasswordResetRequested {
        /// Whether the address is an account's.
        known: bool,
    },
    /// The password was reset through a mailed link, and every session revoked.
    PasswordReset {
        /// How many sessions were revoked.
        revoked_sessions: u64,
    },
    /// The owner confirmed the account's address.
    EmailVerified,
    /// A factor of `kind` was added.
    MfaFactorAdded {
        /// `totp` or `passkey`.
        kind: &'static str,
    },
    /// A factor of `kind` was removed; when it was the last, `revoked_sessions` other
    /// sessions were revoked.
    MfaFactorRemoved {
        /// `totp` or `passkey`.
        kind: &'static str,
        /// How many other sessions were revoked.
        revoked_sessions: u64,
    },
    /// New recovery codes replaced the old.
    RecoveryCodesRegenerated,
    /// A recovery code was used.
    RecoveryCodeUsed,
    /// A wrong code or passkey answer; `failures` in the account's window so far.
    MfaFailed {
        /// The account's wrong codes in the window.
        failures: u32,
    },
    /// The session's user proved who they are again, reaching `aal`.
    SteppedUp {
        /// `aal1` or `aal2`.
        aal: &'static str,
    },
    /// A refresh from another browser or OS than the session's: the token asks for step-up.
    DeviceChanged,
}

impl Event {
    /// The `kind` column.
    pub fn kind(self) -> EventKind {
        match self {
            Self::LoginFailed => EventKind::LoginFailed,
            Self::SessionsRevoked { .. } => EventKind::SessionsRevoked,
            Self::PasswordChanged { .. } => EventKind::PasswordChanged,
            Self::PasswordChangeFailed => EventKind::PasswordChangeFailed,
            Self::OperatorRevokedSessions { .. } => EventKind::OperatorRevokedSessions,
            Self::PasswordResetRequested { .. } => EventKind::PasswordResetRequested,
            Self::PasswordReset { .. } => EventKind::PasswordReset,
            Self::EmailVerified => EventKind::EmailVerified,
            Self::MfaFactorAdded { .. } => EventKind::MfaFactorAdded,
            Self::MfaFactorRemoved { .. } => EventKind::MfaFactorRemoved,
            Self::RecoveryCodesRegenerated => EventKind::RecoveryCodesRegenerated,
            Self::RecoveryCodeUsed => EventKind::RecoveryCodeUsed,
            Self::MfaFailed { .. } => EventKind::MfaFailed,
            Self::SteppedUp { .. } => EventKind::SteppedUp,
            Self::DeviceChanged => EventKind::DeviceChanged,
        }
    }

    /// The `detail` column.
    fn detail(self) -> serde_json::Value {
        match self {
            Self::LoginFailed
            | Self::PasswordChangeFailed
            | Self::EmailVerified
            | Self::RecoveryCodesRegenerated
            | Self::RecoveryCodeUsed
            | Self::DeviceChanged => serde_json::json!({}),
            Self::MfaFactorAdded { kind } => serde_json::json!({ "factor": kind }),
            Self::MfaFactorRemoved {
                kind,
                revoked_sessions,
            } => serde_json::json!({ "factor": kind, "revoked_sessions": revoked_sessions }),
            Self::MfaFailed { failures } => serde_json::json!({ "failures": failures }),
            Self::SteppedUp { aal } => serde_json::json!({ "aal": aal }),
            Self::PasswordResetRequested { known } => serde_json::json!({ "known": known }),
            Self::SessionsRevoked { reason, count } => {
                serde_json::json!({ "reason": reason.as_str(), "count": count })
            }
            Self::PasswordChanged { revoked_sessions }
            | Self::PasswordReset { revoked_sessions } => {
                serde_json::json!({ "revoked_sessions": revoked_sessions })
            }
            Self::OperatorRevokedSessions { scope, count } => serde_json::json!({
                "scope": scope.as_str(),
                "reason": RevokeReason::Operator.as_str(),
                "count": count,
            }),
        }
    }
}

/// Whom and where an event concerns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject {
    /// The user, when known.
    pub user: Option<UserId>,
    /// The session, when one is concerned.
    pub session: Option<SessionId>,
    /// The client IP.
    pub ip: Option<IpAddr>,
}

/// Records an event.
pub async fn record(
    client: &impl GenericClient,
    event: Event,
    subject: Subject,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT)).await?;
    bounded(client.execute(
        &statement,
        &[
            &event.kind().as_str(),
            &subject.user,
            &subject.session,
            &subject.ip,
            &event.detail(),
        ],
    ))
    .await?;
    Ok(())
}

/// How many events of `kind` the session has.
pub async fn count_for_session(
    client: &impl GenericClient,
    session: SessionId,
    kind: EventKind,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(COUNT_FOR_SESSION)).await?;
    let count: i64 = bounded(client.query_one(&statement, &[&session, &kind.as_str()]))
        .await?
        .get(0);
    Ok(count.unsigned_abs())
}

/// Deletes one batch of events that happened more than `retention` ago.
pub async fn purge_batch(
    client: &impl GenericClient,
    retention: Duration,
    batch: i64,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(PURGE_BATCH)).await?;
    bounded(client.execute(&statement, &[&interval(retention), &batch])).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_has_its_kind_and_the_detail_of_that_kind() {
        let revoked = Event::SessionsRevoked {
            reason: RevokeReason::RevokeOthers,
            count: 2,
        };
        assert_eq!(revoked.kind(), EventKind::SessionsRevoked);
        assert_eq!(
            revoked.detail(),
            serde_json::json!({ "reason": "revoke_others", "count": 2 })
        );
        let changed = Event::PasswordChanged {
            revoked_sessions: 3,
        };
        assert_eq!(changed.kind().as_str(), "password_changed");
        assert_eq!(
            changed.detail(),
            serde_json::json!({ "revoked_sessions": 3 })
        );
        assert_eq!(Event::LoginFailed.detail(), serde_json::json!({}));
        assert_eq!(
            Event::PasswordChangeFailed.kind().as_str(),
            "password_change_failed"
        );
        let operator = Event::OperatorRevokedSessions {
            scope: OperatorScope::AllUsers,
            count: 7,
        };
        assert_eq!(operator.kind().as_str(), "operator_revoked_sessions");
        assert_eq!(
            operator.detail(),
            serde_json::json!({ "scope": "all_users", "reason": "operator", "count": 7 })
        );
    }
}
