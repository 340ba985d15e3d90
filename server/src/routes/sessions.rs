//! `/me` and `/sessions`: who is signed in, and where.

use std::net::IpAddr;

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::authenticated::Authenticated;
use super::error::ApiError;
use super::responses::NoContent;
use super::transport::{Transport, WithCookies};
use crate::AppState;
use crate::accounts::RevokeScope;
use crate::client_ip::ClientIp;
use crate::error::ServiceError;
use crate::ids::SessionId;
use crate::store::sessions::RevokeReason;

pub(super) struct SessionsApi {
    state: AppState,
}

impl SessionsApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }
}

/// The signed-in user and session.
#[derive(Object)]
struct Me {
    /// The user's id.
    user_id: Uuid,
    /// The user's email.
    email: String,
    /// Whether the owner confirmed the address (through a verification or reset mail).
    email_verified: bool,
    /// This session's id.
    session_id: Uuid,
    /// The assurance level of this access token: `aal1` (one factor) or `aal2` (two).
    aal: String,
    /// How the user proved who they are (RFC 8176 values: `pwd`, `otp`, `hwk`, `swk`,
    /// `user`, `mfa`).
    amr: Vec<String>,
    /// When, in seconds since the Unix epoch.
    auth_time: u64,
}

/// One place the user is signed in.
#[derive(Object)]
struct SessionBody {
    /// The session's id.
    id: Uuid,
    /// The name the user gave the device at login.
    #[oai(nullable)]
    device_name: Option<String>,
    /// What the user agent says it is, e.g. "Firefox 131 on Linux".
    #[oai(nullable)]
    device_label: Option<String>,
    /// The user agent at login.
    #[oai(nullable)]
    user_agent: Option<String>,
    /// The client IP at the last login or refresh.
    #[oai(nullable)]
    ip: Option<String>,
    /// When the session started (RFC 3339).
    created_at: String,
    /// When it was last refreshed (RFC 3339).
    last_used_at: String,
    /// Whether this is the session making the request.
    current: bool,
    /// The assurance level of the session's last proof: `aal1` or `aal2`.
    aal: String,
}

/// The live sessions, newest use first.
#[derive(Object)]
struct SessionList {
    /// The sessions.
    sessions: Vec<SessionBody>,
}

/// How many sessions were signed out.
#[derive(Object)]
struct Revoked {
    /// The count.
    revoked: u64,
}

#[derive(ApiResponse)]
enum MeResponse {
    /// The caller.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionList>),
}

#[derive(ApiResponse)]
enum RevokedResponse {
    /// The other sessions were signed out.
    #[oai(status = 200)]
    Ok(Json<Revoked>),
}

#[OpenApi(tag = "ApiTags::Sessions")]
impl SessionsApi {
    /// The signed-in user and session, and how and when the user proved who they are (as
    /// the access token says).
    #[oai(path = "/me", method = "get")]
    async fn me(&self, auth: Authenticated) -> Result<MeResponse, ApiError> {
        let user_id = auth.user();
        let (email, email_verified) = self.state.accounts.credentials.profile(user_id).await?;
        Ok(MeResponse::Ok(Json(Me {
            user_id: user_id.as_uuid(),
            email,
            email_verified,
            session_id: auth.session().as_uuid(),
            aal: auth.assurance().aal.as_str().to_owned(),
            amr: auth
                .assurance()
                .amr_values()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            auth_time: auth.assurance().auth_time_secs(),
        })))
    }

    /// Every live session of the user, newest use first.
    #[oai(path = "/sessions", method = "get")]
    async fn list(&self, auth: Authenticated) -> Result<ListResponse, ApiError> {
        let current = auth.session();
        let sessions = &self.state.accounts.sessions;
        // Listing is a use of the session asking: its last use is now.
        sessions.touch(auth.user(), current).await?;
        let rows = sessions.list(auth.user()).await?;
        let sessions = rows
            .into_iter()
            .map(|row| SessionBody {
                current: row.id == current,
                id: row.id.as_uuid(),
                device_name: row.device_name,
                device_label: row.device_label,
                user_agent: row.user_agent,
                ip: row.ip.as_ref().map(IpAddr::to_string),
                created_at: rfc3339(row.created_at),
                last_used_at: rfc3339(row.last_used_at),
                aal: row.aal.as_str().to_owned(),
            })
            .collect();
        Ok(ListResponse::Ok(Json(SessionList { sessions })))
    }

    /// Sign out one session of this user. Unknown ids and other users' ids both get 404; a
    /// session of this user that has ended already gets 204 and changes nothing. Signing
    /// out the caller's own session in cookie transport clears its cookies.
    #[oai(path = "/sessions/:id", method = "delete")]
    async fn revoke(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
        /// The session to sign out.
        id: Path<String>,
    ) -> Result<WithCookies<NoContent>, ApiError> {
        // Any text may arrive here; one that is not a session id names no session.
        let session: SessionId = id.parse().map_err(|_| ServiceError::SessionNotFound)?;
        let scope = RevokeScope::One {
            session,
            reason: RevokeReason::RevokedByUser,
        };
        self.state
            .accounts
            .sessions
            .revoke(auth.user(), scope, ip)
            .await?;
        let own_cookies = session == auth.session() && auth.transport() == Transport::Cookie;
        Ok(if own_cookies {
            WithCookies::new(NoContent::Done, self.state.config.browser.cookies.cleared())
        } else {
            WithCookies::none(NoContent::Done)
        })
    }

    /// Sign out every session of this user but this one.
    #[oai(path = "/sessions/revoke-others", method = "post")]
    async fn revoke_others(
        &self,
        ClientIp(ip): ClientIp,
        auth: Authenticated,
    ) -> Result<RevokedResponse, ApiError> {
        let scope = RevokeScope::AllBut {
            keep: Some(auth.session()),
            reason: RevokeReason::RevokeOthers,
        };
        let revoked = self
            .state
            .accounts
            .sessions
            .revoke(auth.user(), scope, ip)
            .await?;
        Ok(RevokedResponse::Ok(Json(Revoked { revoked })))
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use poem_openapi::registry::Registry;
    use poem_openapi::types::Type as _;

    use super::*;

    /// Schemathesis found `GET /sessions` answering `"device_name": null` where the
    /// document promised a string: the optional fields are sent as `null`, so the document
    /// says they may be.
    #[test]
    fn optional_session_fields_are_documented_as_nullable() {
        let mut registry = Registry::new();
        SessionBody::register(&mut registry);
        let schema = serde_json::to_value(&registry.schemas["SessionBody"]).unwrap();
        for field in ["device_name", "device_label", "user_agent", "ip"] {
            assert_eq!(schema["properties"][field]["nullable"], true, "{field}");
        }
        assert!(schema["properties"]["id"].get("nullable").is_none());

        let body = SessionBody {
            id: Uuid::nil(),
            device_name: None,
            device_label: None,
            user_agent: None,
            ip: None,
            created_at: String::new(),
            last_used_at: String::new(),
            current: true,
            aal: "aal1".to_owned(),
        };
        let json = poem_openapi::types::ToJSON::to_json(&body).unwrap();
        assert!(json["device_name"].is_null());
    }
}
