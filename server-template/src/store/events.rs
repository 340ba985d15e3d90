//! `security_events`: what happened, to whom, from where. Never a secret or a token.

use std::net::IpAddr;

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use crate::error::ServiceError;

const INSERT: &str = "INSERT INTO security_events (kind, user_id, session_id, ip, detail) \
                      VALUES ($1, $2, $3, $4, $5)";

/// Records an event.
pub async fn record(
    client: &impl GenericClient,
    kind: &str,
    user: Option<Uuid>,
    session: Option<Uuid>,
    ip: Option<IpAddr>,
    detail: serde_json::Value,
) -> Result<(), ServiceError> {
    let statement = client.prepare_cached(INSERT).await?;
    client
        .execute(&statement, &[&kind, &user, &session, &ip, &detail])
        .await?;
    Ok(())
}
