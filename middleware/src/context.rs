//! What a request carries once it is authenticated.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::assurance::{Aal, AuthMethod};

/// The id of a user: the token's `sub` claim.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Arc<str>);

/// The id of a session: the token's `sid` claim.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Arc<str>);

macro_rules! string_id {
    ($name:ident) => {
        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                Self(Arc::from(id))
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                Self(Arc::from(id))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(UserId);
string_id!(SessionId);

/// The `aud` claim: one audience or several.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `audience` is among them.
    pub fn contains(&self, audience: &str) -> bool {
        match self {
            Self::One(one) => one == audience,
            Self::Many(many) => many.iter().any(|a| a == audience),
        }
    }
}

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: Audience,
    /// Subject: the user.
    pub sub: String,
    /// The session the token belongs to.
    pub sid: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default)]
    pub nbf: Option<u64>,
    /// Token id.
    #[serde(default)]
    pub jti: Option<String>,
    /// The assurance level of the user's authentication; absent means [`Aal::Aal1`]. A
    /// value other than `"aal1"` or `"aal2"` makes the token invalid.
    #[serde(default)]
    pub aal: Option<Aal>,
    /// How the user authenticated (RFC 8176); absent means none are named.
    #[serde(default)]
    pub amr: Vec<AuthMethod>,
    /// When the user last authenticated actively (signed in or stepped up), seconds since
    /// the Unix epoch. Unlike `iat`, a refresh does not move it.
    #[serde(default)]
    pub auth_time: Option<u64>,
}

impl Claims {
    /// The instant the token expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// An authenticated request: who, which session, and the token's claims.
///
/// The Tower layer and the Poem middleware put it in the request extensions; the axum
/// and Poem extractors take it out. Cheap to clone: one reference count, since every
/// request of a cached token gets a clone.
#[derive(Debug, Clone)]
pub struct AuthContext(Arc<Verified>);

/// What an [`AuthContext`] shares between its clones.
#[derive(Debug)]
struct Verified {
    user_id: UserId,
    session_id: SessionId,
    /// `sid` and `sub` as UUIDs, parsed once when the token is verified: the PostgreSQL
    /// store looks the pair up. `None` when either is not a UUID.
    #[cfg(feature = "postgres")]
    uuids: Option<(uuid::Uuid, uuid::Uuid)>,
    /// `aal` and `auth_time` beside the ids rather than behind `claims`, so checking a
    /// route's requirement reads what the request has just touched.
    aal: Aal,
    auth_time: Option<u64>,
    claims: Arc<Claims>,
}

impl AuthContext {
    pub(crate) fn new(claims: Arc<Claims>) -> Self {
        Self(Arc::new(Verified {
            user_id: UserId::from(claims.sub.as_str()),
            session_id: SessionId::from(claims.sid.as_str()),
            #[cfg(feature = "postgres")]
            uuids: uuid::Uuid::parse_str(&claims.sid)
                .ok()
                .zip(uuid::Uuid::parse_str(&claims.sub).ok()),
            aal: claims.aal.unwrap_or_default(),
            auth_time: claims.auth_time,
            claims,
        }))
    }

    /// The session and the user as UUIDs, if both are.
    #[cfg(feature = "postgres")]
    pub(crate) fn session_and_user_uuids(&self) -> Option<(uuid::Uuid, uuid::Uuid)> {
        self.0.uuids
    }

    /// The session (`sid`) as a UUID, parsed once when the token was verified; `None`
    /// when it is not one. The PostgreSQL store keys sessions by it, and
    /// [`PostgresLiveness::forget`](crate::PostgresLiveness::forget) takes it.
    #[cfg(feature = "postgres")]
    pub fn session_uuid(&self) -> Option<uuid::Uuid> {
        self.0.uuids.map(|(session, _)| session)
    }

    /// The user (`sub`) as a UUID, parsed once when the token was verified; `None` when
    /// either it or the session id is not one.
    #[cfg(feature = "postgres")]
    pub fn user_uuid(&self) -> Option<uuid::Uuid> {
        self.0.uuids.map(|(_, user)| user)
    }

    /// The user (`sub`).
    pub fn user_id(&self) -> &UserId {
        &self.0.user_id
    }

    /// The session (`sid`).
    pub fn session_id(&self) -> &SessionId {
        &self.0.session_id
    }

    /// Every verified claim.
    pub fn claims(&self) -> &Claims {
        &self.0.claims
    }

    /// When the access token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.0.claims.expires_at()
    }

    /// The assurance level of the user's authentication (`aal`; [`Aal::Aal1`] when the
    /// token has none).
    pub fn aal(&self) -> Aal {
        self.0.aal
    }

    /// How the user authenticated (`amr`; empty when the token names none).
    pub fn amr(&self) -> &[AuthMethod] {
        &self.0.claims.amr
    }

    /// When the user last authenticated actively (`auth_time`), if the token says.
    pub fn auth_time(&self) -> Option<SystemTime> {
        // In range: the verifier refuses an `auth_time` a `SystemTime` cannot hold.
        self.0
            .auth_time
            .map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// `auth_time` as sent: seconds since the Unix epoch.
    pub(crate) fn auth_time_secs(&self) -> Option<u64> {
        self.0.auth_time
    }
}
