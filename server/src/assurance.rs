//! How a user proved who they are: what every session records and every access token
//! carries, `aal` ([`Aal`]), `amr` ([`AuthMethod`]s, RFC 8176) and `auth_time`, in the
//! layer's (`portcullis`) own types; and the rule of the server's privileged routes
//! ([`privileged`]), a requirement the layer checks and answers with its RFC 9470
//! challenge, exactly as it does for a guarded route.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use portcullis::{Aal, AssuranceRequirement, AuthContext, AuthMethod};

/// How and when a user last proved who they are: what a session records and its access
/// tokens carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assurance {
    /// The level reached.
    pub aal: Aal,
    /// The methods used.
    pub amr: Vec<AuthMethod>,
    /// When.
    pub auth_time: SystemTime,
}

impl Assurance {
    /// A password, now.
    pub fn password() -> Self {
        Self::now(Aal::Aal1, vec![AuthMethod::Password])
    }

    /// A password and a one-time code (TOTP or recovery code), now.
    pub fn password_and_code() -> Self {
        Self::now(
            Aal::Aal2,
            vec![
                AuthMethod::Password,
                AuthMethod::OneTimePassword,
                AuthMethod::MultipleFactors,
            ],
        )
    }

    /// A one-time code alone (a step-up of a signed-in session), now: the session itself
    /// is the other factor.
    pub fn code() -> Self {
        Self::now(
            Aal::Aal2,
            vec![AuthMethod::OneTimePassword, AuthMethod::MultipleFactors],
        )
    }

    /// A passkey with user verification, now: something held and something known or
    /// been, so two factors on its own. `synced` passkeys are software keys.
    pub fn passkey(synced: bool) -> Self {
        let key = if synced {
            AuthMethod::SoftwareKey
        } else {
            AuthMethod::HardwareKey
        };
        Self::now(
            Aal::Aal2,
            vec![key, AuthMethod::UserPresence, AuthMethod::MultipleFactors],
        )
    }

    fn now(aal: Aal, amr: Vec<AuthMethod>) -> Self {
        Self {
            aal,
            amr,
            auth_time: SystemTime::now(),
        }
    }

    /// The same session seen from a client that does not look like the one that signed
    /// in (`STEP_UP_ON_DEVICE_CHANGE`): one factor, proved at the Unix epoch, so that
    /// every route that asks for assurance or freshness asks for a step-up first.
    #[must_use]
    pub fn downgraded(&self) -> Self {
        Self {
            aal: Aal::Aal1,
            amr: self.amr.clone(),
            auth_time: UNIX_EPOCH,
        }
    }

    /// What a verified access token says. A token without `auth_time` (issued before it
    /// existed) was proved at the Unix epoch: it meets no freshness requirement.
    pub fn of_token(context: &AuthContext) -> Self {
        Self {
            aal: context.aal(),
            amr: context.amr().to_vec(),
            auth_time: context.auth_time().unwrap_or(UNIX_EPOCH),
        }
    }

    /// `amr` as the column and the claim hold it.
    pub fn amr_values(&self) -> Vec<&str> {
        self.amr.iter().map(AuthMethod::as_str).collect()
    }

    /// `auth_time` in seconds since the Unix epoch, as the claim holds it.
    pub fn auth_time_secs(&self) -> u64 {
        seconds(self.auth_time)
    }

    /// What a session's columns say (`aal`, `amr`, `auth_time`).
    pub fn from_columns(aal: &str, amr: &[String], auth_time: SystemTime) -> Self {
        Self {
            aal: aal_from_column(aal),
            amr: amr
                .iter()
                .map(|value| AuthMethod::from(value.as_str()))
                .collect(),
            auth_time,
        }
    }
}

/// The level a `sessions.aal` value names; anything but `aal2` is the lowest (the
/// column's `CHECK` allows only the two).
pub fn aal_from_column(value: &str) -> Aal {
    if value == Aal::Aal2.as_str() {
        Aal::Aal2
    } else {
        Aal::Aal1
    }
}

/// Seconds since the Unix epoch (0 before it).
pub fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// What the server's privileged routes (password change, `logout-all`, adding or
/// removing a factor, new recovery codes) require: a proof within `max_age`, and `aal2`
/// when the account has a second factor.
pub fn privileged(has_factor: bool, max_age: Duration) -> AssuranceRequirement {
    let requirement = AssuranceRequirement::new().max_auth_age(max_age);
    if has_factor {
        requirement.require_aal(Aal::Aal2)
    } else {
        requirement
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_round_trip_and_unknown_methods_are_kept_as_sent() {
        assert_eq!(aal_from_column("aal2"), Aal::Aal2);
        assert_eq!(aal_from_column("aal1"), Aal::Aal1);
        let columns = Assurance::from_columns(
            "aal2",
            &["pwd".into(), "otp".into(), "mfa".into(), "later".into()],
            UNIX_EPOCH,
        );
        assert_eq!(columns.amr_values(), ["pwd", "otp", "mfa", "later"]);
        assert_eq!(
            Assurance::passkey(false).amr_values(),
            ["hwk", "user", "mfa"]
        );
        assert_eq!(
            Assurance::passkey(true).amr_values(),
            ["swk", "user", "mfa"]
        );
        let downgraded = Assurance::password_and_code().downgraded();
        assert_eq!(
            (downgraded.aal, downgraded.auth_time_secs()),
            (Aal::Aal1, 0)
        );
    }

    #[test]
    fn the_privileged_requirement_asks_aal2_only_of_accounts_with_a_factor() {
        let ten_minutes = Duration::from_secs(600);
        let without = privileged(false, ten_minutes);
        assert_eq!(without.aal(), Aal::Aal1);
        assert_eq!(without.max_auth_age_secs(), Some(600));
        assert_eq!(privileged(true, ten_minutes).aal(), Aal::Aal2);
    }
}
