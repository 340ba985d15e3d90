//! How the user authenticated, and what a route requires of it (step-up).
//!
//! An access token says how strongly and when its user last authenticated: `aal`
//! ([`Aal`], NIST SP 800-63B), `amr` ([`AuthMethod`]s, RFC 8176) and `auth_time`. A route
//! can require a level and a freshness with an [`AssuranceRequirement`]; a token that
//! falls short is refused with 401 and an RFC 9470 challenge
//! (`error="insufficient_user_authentication"`, `acr_values`, `max_age`), which tells the
//! client to authenticate again (step up) and retry with the new token.
//!
//! What a token without these claims means (tokens issued before they existed, or by
//! another issuer): no `aal` is [`Aal::Aal1`]; no `amr` is an empty list; no `auth_time`
//! falls short of every [`max_auth_age`](AssuranceRequirement::max_auth_age). `iat` does
//! not stand in for `auth_time`: a refresh mints a new token (a new `iat`) without the
//! user doing anything, so `iat` says nothing about when the user last authenticated.
//!
//! ```
//! use std::time::Duration;
//! use portcullis::{Aal, AssuranceRequirement};
//!
//! // A second factor, used within the last ten minutes.
//! let requirement = AssuranceRequirement::new()
//!     .require_aal(Aal::Aal2)
//!     .max_auth_age(Duration::from_secs(600));
//! assert_eq!(requirement.aal(), Aal::Aal2);
//! assert_eq!(requirement.max_auth_age_secs(), Some(600));
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::context::AuthContext;
use crate::error::AuthError;

/// An authenticator assurance level (NIST SP 800-63B): the token's `aal` claim, `"aal1"`
/// or `"aal2"`. Ordered: `Aal1 < Aal2`, so a route that requires `Aal1` admits `Aal2`.
///
/// Any other value (`"aal9"`, `"AAL2"`, a number) makes the token's claims invalid: a
/// level this crate cannot place in the order is never guessed at.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Aal {
    /// One factor, such as a password. What a token without `aal` has.
    #[default]
    Aal1,
    /// Two distinct factors, such as a password and a TOTP code, or a passkey.
    Aal2,
}

impl Aal {
    /// Every level, lowest first.
    pub const ALL: [Self; 2] = [Self::Aal1, Self::Aal2];

    /// The claim's value: `"aal1"`, `"aal2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Aal1 => "aal1",
            Self::Aal2 => "aal2",
        }
    }
}

impl fmt::Display for Aal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The RFC 8176 registry, written once: each variant of [`AuthMethod`] with its value.
macro_rules! auth_methods {
    ($( $(#[doc = $doc:literal])* $variant:ident = $value:literal, )*) => {
        /// How the user authenticated: one value of the token's `amr` claim (RFC 8176).
        ///
        /// Values RFC 8176 registers have a variant; any other string is kept as sent in
        /// [`Other`](Self::Other), so a token from an issuer with methods of its own stays
        /// valid. Two methods are equal when their values are.
        #[derive(Clone)]
        #[non_exhaustive]
        pub enum AuthMethod {
            $( $(#[doc = $doc])* $variant, )*
            /// A value RFC 8176 does not register, as sent. Made by
            /// [`AuthMethod::from`] only for such values.
            Other(Box<str>),
        }

        impl AuthMethod {
            /// The claim's value, such as `"pwd"`.
            pub fn as_str(&self) -> &str {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Other(value) => value,
                }
            }
        }

        impl From<&str> for AuthMethod {
            /// The registered method `value` names, else [`Other`](Self::Other).
            fn from(value: &str) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    other => Self::Other(other.into()),
                }
            }
        }
    };
}

auth_methods! {
    /// `face`: facial recognition.
    Face = "face",
    /// `fpt`: fingerprint.
    Fingerprint = "fpt",
    /// `geo`: geolocation.
    Geolocation = "geo",
    /// `hwk`: proof of possession of a hardware-secured key (a security key, a device-bound
    /// passkey).
    HardwareKey = "hwk",
    /// `iris`: iris scan.
    Iris = "iris",
    /// `kba`: knowledge-based authentication.
    KnowledgeBased = "kba",
    /// `mca`: several channels.
    MultipleChannels = "mca",
    /// `mfa`: several factors.
    MultipleFactors = "mfa",
    /// `otp`: a one-time password (TOTP, a recovery code).
    OneTimePassword = "otp",
    /// `pin`: a personal identification number.
    Pin = "pin",
    /// `pwd`: a password.
    Password = "pwd",
    /// `rba`: risk-based authentication.
    RiskBased = "rba",
    /// `retina`: retina scan.
    Retina = "retina",
    /// `sc`: a smart card.
    SmartCard = "sc",
    /// `sms`: a code sent by text message.
    Sms = "sms",
    /// `swk`: proof of possession of a software-secured key (a synced passkey).
    SoftwareKey = "swk",
    /// `tel`: a telephone call.
    Telephone = "tel",
    /// `user`: user presence test (a `WebAuthn` user-verification gesture).
    UserPresence = "user",
    /// `vbm`: voiceprint.
    Voiceprint = "vbm",
    /// `wia`: Windows integrated authentication.
    WindowsIntegrated = "wia",
}

impl PartialEq for AuthMethod {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for AuthMethod {}

impl std::hash::Hash for AuthMethod {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AuthMethod({:?})", self.as_str())
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AuthMethod {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AuthMethod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// Any string is a method; only a non-string is a malformed claim. A registered
        /// value is read without allocating.
        struct Method;

        impl Visitor<'_> for Method {
            type Value = AuthMethod;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an authentication method reference (RFC 8176)")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<AuthMethod, E> {
                Ok(AuthMethod::from(value))
            }
        }

        deserializer.deserialize_str(Method)
    }
}

/// What a route requires of the user's authentication: at least a level, and optionally
/// an authentication no older than some age. The default requires nothing.
///
/// [`SessionGuardLayer`](crate::SessionGuardLayer) and the Poem middleware take the same
/// settings ([`require_aal`](Self::require_aal), [`max_auth_age`](Self::max_auth_age));
/// [`check`](Self::check) applies one to an [`AuthContext`] by hand, in a handler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[must_use]
pub struct AssuranceRequirement {
    aal: Aal,
    /// Whole seconds: the unit of `auth_time` and of the challenge's `max_age`.
    max_age_secs: Option<u64>,
}

/// How a token fell short of an [`AssuranceRequirement`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Shortfall {
    /// Its `aal` is below the required level.
    Level,
    /// Its `auth_time` is older than the allowed age, or missing.
    Age,
    /// Both.
    LevelAndAge,
}

impl AssuranceRequirement {
    /// Requires nothing: every authenticated request passes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires at least `aal` (a token without `aal` is [`Aal::Aal1`]).
    pub fn require_aal(mut self, aal: Aal) -> Self {
        self.aal = aal;
        self
    }

    /// Requires that the user authenticated at most `age` ago (`auth_time`), in whole
    /// seconds (a fraction is dropped). A token without `auth_time` never meets it.
    pub fn max_auth_age(mut self, age: Duration) -> Self {
        self.max_age_secs = Some(age.as_secs());
        self
    }

    /// The level required.
    pub fn aal(&self) -> Aal {
        self.aal
    }

    /// The oldest authentication allowed, in seconds, if any.
    pub fn max_auth_age_secs(&self) -> Option<u64> {
        self.max_age_secs
    }

    /// Whether this requires nothing beyond a valid token of a live session.
    pub fn is_none(&self) -> bool {
        self.aal == Aal::Aal1 && self.max_age_secs.is_none()
    }

    /// Whether `context` meets this requirement now; if not, the refusal, whose response
    /// is a 401 with the RFC 9470 challenge (or `UNAUTHENTICATED` for gRPC).
    ///
    /// ```
    /// # #[cfg(feature = "poem")] {
    /// use std::time::Duration;
    /// use portcullis::{Aal, AssuranceRequirement, AuthContext};
    ///
    /// // A Poem handler behind the plain middleware that needs more for one action:
    /// // `AuthError` is a Poem `ResponseError`, so `?` answers with the challenge.
    /// #[poem::handler]
    /// fn delete_everything(auth: AuthContext) -> poem::Result<&'static str> {
    ///     AssuranceRequirement::new()
    ///         .require_aal(Aal::Aal2)
    ///         .max_auth_age(Duration::from_secs(300))
    ///         .check(&auth)?;
    ///     Ok("deleted")
    /// }
    /// # }
    /// ```
    pub fn check(&self, context: &AuthContext) -> Result<(), AuthError> {
        if self.is_none() {
            return Ok(());
        }
        self.check_at(context, unix_now())
    }

    /// [`check`](Self::check) at `now`, seconds since the epoch.
    pub(crate) fn check_at(&self, context: &AuthContext, now: u64) -> Result<(), AuthError> {
        let low = context.aal() < self.aal;
        let old = self.max_age_secs.is_some_and(|max_age| {
            // A missing `auth_time` is no proof of a recent authentication. One in the
            // future (the issuer's clock ahead of ours) counts as just now.
            context
                .auth_time_secs()
                .is_none_or(|auth_time| now.saturating_sub(auth_time) > max_age)
        });
        let shortfall = match (low, old) {
            (false, false) => return Ok(()),
            (true, false) => Shortfall::Level,
            (false, true) => Shortfall::Age,
            (true, true) => Shortfall::LevelAndAge,
        };
        Err(AuthError::InsufficientAuthentication {
            required: *self,
            shortfall,
        })
    }

    /// The RFC 9470 auth-params that state this requirement: `acr_values` (every level
    /// that meets it, space-separated, lowest first; absent when any level does) and
    /// `max_age`. Each states what the route requires, so a client learns from one
    /// challenge everything its next token must meet.
    pub(crate) fn challenge_params(self) -> ChallengeParams {
        ChallengeParams(self)
    }
}

/// [`AssuranceRequirement::challenge_params`], written where the challenge is built.
pub(crate) struct ChallengeParams(AssuranceRequirement);

impl fmt::Display for ChallengeParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self(requirement) = self;
        if requirement.aal > Aal::Aal1 {
            f.write_str(r#", acr_values=""#)?;
            let mut meeting = Aal::ALL.iter().filter(|level| **level >= requirement.aal);
            if let Some(lowest) = meeting.next() {
                f.write_str(lowest.as_str())?;
            }
            for level in meeting {
                write!(f, " {level}")?;
            }
            f.write_str("\"")?;
        }
        if let Some(max_age) = requirement.max_age_secs {
            write!(f, ", max_age={max_age}")?;
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::context::Claims;

    fn claims(extra: &serde_json::Value) -> Result<Claims, serde_json::Error> {
        let mut claims = serde_json::json!({
            "iss": "i", "aud": "a", "sub": "u", "sid": "s", "exp": 4_000_000_000_u64,
        });
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(claims)
    }

    fn context(extra: &serde_json::Value) -> AuthContext {
        AuthContext::new(Arc::new(claims(extra).unwrap()))
    }

    #[test]
    fn levels_read_their_claim_values_in_order_and_refuse_others() {
        assert!(Aal::Aal1 < Aal::Aal2);
        assert_eq!(
            claims(&serde_json::json!({"aal": "aal2"})).unwrap().aal,
            Some(Aal::Aal2)
        );
        assert_eq!(claims(&serde_json::json!({})).unwrap().aal, None);
        for bad in [
            serde_json::json!("aal9"),
            serde_json::json!("AAL2"),
            serde_json::json!(""),
            serde_json::json!(2),
            serde_json::json!(["aal2"]),
        ] {
            assert!(claims(&serde_json::json!({ "aal": bad })).is_err(), "{bad}");
        }
        for level in Aal::ALL {
            assert_eq!(serde_json::to_value(level).unwrap(), level.as_str());
        }
    }

    #[test]
    fn methods_keep_unregistered_values_and_compare_by_value() {
        let claims = claims(&serde_json::json!({"amr": ["pwd", "otp", "x-face-id", "hwk"]}));
        let amr = claims.unwrap().amr;
        assert_eq!(
            amr,
            [
                AuthMethod::Password,
                AuthMethod::OneTimePassword,
                AuthMethod::Other("x-face-id".into()),
                AuthMethod::HardwareKey,
            ]
        );
        assert_eq!(AuthMethod::from("swk"), AuthMethod::SoftwareKey);
        assert_eq!(AuthMethod::Other("mfa".into()), AuthMethod::MultipleFactors);
        assert_eq!(
            serde_json::to_value(&amr).unwrap(),
            serde_json::json!(["pwd", "otp", "x-face-id", "hwk"])
        );
        // Not a list of strings: malformed.
        for bad in [serde_json::json!("pwd"), serde_json::json!([1])] {
            assert!(super::tests::claims(&serde_json::json!({ "amr": bad })).is_err());
        }
    }

    #[test]
    fn the_default_requires_nothing() {
        let requirement = AssuranceRequirement::new();
        assert!(requirement.is_none());
        assert!(requirement.check(&context(&serde_json::json!({}))).is_ok());
    }

    #[test]
    fn level_and_age_are_checked_against_the_claims() {
        let now = 1_700_000_000;
        let aal2 = AssuranceRequirement::new().require_aal(Aal::Aal2);
        let recent = AssuranceRequirement::new().max_auth_age(Duration::from_millis(600_900));
        let both = aal2.max_auth_age(Duration::from_secs(600));
        let shortfall = |requirement: AssuranceRequirement, extra| match requirement
            .check_at(&context(&extra), now)
        {
            Ok(()) => None,
            Err(AuthError::InsufficientAuthentication {
                required,
                shortfall,
            }) => {
                assert_eq!(required, requirement);
                Some(shortfall)
            }
            Err(other) => panic!("{other}"),
        };
        let at = |aal: &str, age: u64| serde_json::json!({"aal": aal, "auth_time": now - age});
        for (requirement, claims, expected) in [
            (aal2, serde_json::json!({}), Some(Shortfall::Level)),
            (aal2, at("aal1", 0), Some(Shortfall::Level)),
            (aal2, at("aal2", 99_999), None),
            (recent, at("aal1", 600), None),
            (recent, at("aal1", 601), Some(Shortfall::Age)),
            (recent, serde_json::json!({"auth_time": now + 30}), None),
            (
                recent,
                serde_json::json!({"iat": now}),
                Some(Shortfall::Age),
            ),
            (both, at("aal2", 0), None),
            (both, at("aal1", 0), Some(Shortfall::Level)),
            (both, at("aal2", 601), Some(Shortfall::Age)),
            (both, at("aal1", 601), Some(Shortfall::LevelAndAge)),
            (both, serde_json::json!({}), Some(Shortfall::LevelAndAge)),
        ] {
            assert_eq!(
                shortfall(requirement, claims.clone()),
                expected,
                "{requirement:?} {claims}"
            );
        }
        assert_eq!(recent.max_auth_age_secs(), Some(600), "whole seconds");
    }

    #[test]
    fn the_challenge_states_the_whole_requirement() {
        let aal2 = AssuranceRequirement::new().require_aal(Aal::Aal2);
        assert_eq!(
            aal2.challenge_params().to_string(),
            r#", acr_values="aal2""#
        );
        let recent = AssuranceRequirement::new().max_auth_age(Duration::ZERO);
        assert_eq!(recent.challenge_params().to_string(), ", max_age=0");
        assert_eq!(
            aal2.max_auth_age(Duration::from_secs(600))
                .challenge_params()
                .to_string(),
            r#", acr_values="aal2", max_age=600"#
        );
        assert_eq!(
            AssuranceRequirement::new().challenge_params().to_string(),
            ""
        );
    }
}
