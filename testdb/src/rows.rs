//! Rows a test writes straight into the schema, as an operator's plain SQL would: a user,
//! a live session of theirs, and the revocation of a session.

use tokio_postgres::Client;
use uuid::Uuid;

/// Inserts a user with a random address; returns its id.
///
/// # Panics
///
/// When the insert fails.
pub async fn insert_user(client: &Client) -> Uuid {
    client
        .query_one(
            "INSERT INTO users (email, password_hash) \
             VALUES (gen_random_uuid() || '@example.com', 'x') RETURNING id",
            &[],
        )
        .await
        .expect("inserting a user")
        .get(0)
}

/// Inserts a live session of `user` whose idle deadline is `idle` from now (a PostgreSQL
/// interval, such as `"1 day"`) and whose lifetime is 90 days; returns its id.
///
/// # Panics
///
/// When the insert fails.
pub async fn insert_session(client: &Client, user: Uuid, idle: &str) -> Uuid {
    client
        .query_one(
            "INSERT INTO sessions (user_id, idle_expires_at, absolute_expires_at) \
             VALUES ($1, now() + $2::text::interval, now() + interval '90 days') \
             RETURNING id",
            &[&user, &idle],
        )
        .await
        .expect("inserting a session")
        .get(0)
}

/// Revokes `session` with plain SQL (reason `admin`).
///
/// # Panics
///
/// When the update fails.
pub async fn revoke_session(client: &Client, session: Uuid) {
    client
        .execute(
            "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE id = $1",
            &[&session],
        )
        .await
        .expect("revoking a session");
}
