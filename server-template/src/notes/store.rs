//! The `notes` table (`migrations/V1__notes.sql`): every query names the user, so one
//! user can never read or delete another's notes, whatever id they send.

use std::time::SystemTime;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;
use uuid::Uuid;

use portcullis_server::{ServiceError, UserId};

/// The most notes one listing returns (the newest).
pub const LIST_LIMIT: i64 = 100;

/// Inserts only while the user keeps fewer than `$4` notes. Two concurrent writes may
/// both pass the count; the limit is a quota, not an invariant, so that is acceptable.
const INSERT: &str = "INSERT INTO notes (user_id, title, body) \
                      SELECT $1, $2, $3 \
                      WHERE (SELECT count(*) FROM notes WHERE user_id = $1) < $4 \
                      RETURNING id, title, body, created_at";
const LIST: &str = "SELECT id, title, body, created_at FROM notes WHERE user_id = $1 \
                    ORDER BY created_at DESC, id DESC LIMIT $2";
const BY_ID: &str = "SELECT id, title, body, created_at FROM notes WHERE user_id = $1 AND id = $2";
const DELETE: &str = "DELETE FROM notes WHERE user_id = $1 AND id = $2";

/// One note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Its id.
    pub id: Uuid,
    /// Its title (1 to 200 characters).
    pub title: String,
    /// Its text (at most 10,000 characters).
    pub body: String,
    /// When it was written.
    pub created_at: SystemTime,
}

impl Note {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            title: row.get(1),
            body: row.get(2),
            created_at: row.get(3),
        }
    }
}

/// Writes a note for `user`, unless they keep `limit` notes already (`None`).
pub async fn insert(
    client: &impl GenericClient,
    user: UserId,
    title: &str,
    body: &str,
    limit: i64,
) -> Result<Option<Note>, ServiceError> {
    let statement = client.prepare_cached(INSERT).await?;
    let row = client
        .query_opt(&statement, &[&user, &title, &body, &limit])
        .await?;
    Ok(row.as_ref().map(Note::from_row))
}

/// The user's newest notes, at most [`LIST_LIMIT`].
pub async fn list(client: &impl GenericClient, user: UserId) -> Result<Vec<Note>, ServiceError> {
    let statement = client.prepare_cached(LIST).await?;
    let rows = client.query(&statement, &[&user, &LIST_LIMIT]).await?;
    Ok(rows.iter().map(Note::from_row).collect())
}

/// One of the user's notes; `None` when it does not exist or is another user's.
pub async fn by_id(
    client: &impl GenericClient,
    user: UserId,
    id: Uuid,
) -> Result<Option<Note>, ServiceError> {
    let statement = client.prepare_cached(BY_ID).await?;
    let row = client.query_opt(&statement, &[&user, &id]).await?;
    Ok(row.as_ref().map(Note::from_row))
}

/// Deletes one of the user's notes; `false` when there was no such note of theirs.
pub async fn delete(
    client: &impl GenericClient,
    user: UserId,
    id: Uuid,
) -> Result<bool, ServiceError> {
    let statement = client.prepare_cached(DELETE).await?;
    Ok(client.execute(&statement, &[&user, &id]).await? == 1)
}
