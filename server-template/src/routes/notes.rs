//! `/notes`: the example resource. Each route reads the caller from [`Authenticated`]
//! (the user and session `session-guard` vouched for) and touches only that user's rows.
//! Copy this file's shape for your own resources; delete it (with `store/notes.rs` and
//! `migrations/V1__notes.sql`, and its line in `routes::api`) to drop the example.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchema;
use poem_openapi::{ApiResponse, Object, OpenApi};
use uuid::Uuid;

use super::ApiTags;
use super::authenticated::Authenticated;
use super::error::{ApiError, ErrorBody};
use super::text::{Text, TextRule};
use crate::AppState;
use crate::error::ServiceError;
use crate::store::notes::{self, Note};

/// The longest title, in characters (the table checks it too).
const MAX_TITLE_CHARS: usize = 200;
/// The longest text, in characters (the table checks it too).
const MAX_BODY_CHARS: usize = 10_000;

/// A note's title as the document states it (no control characters); the handler checks
/// it and answers `invalid_note`.
struct Title;

impl TextRule for Title {
    fn schema() -> MetaSchema {
        MetaSchema {
            min_length: Some(1),
            max_length: Some(MAX_TITLE_CHARS),
            // `char::is_control` is Unicode's Cc category: U+0000-U+001F and U+007F-U+009F.
            pattern: Some(r"^[^\u0000-\u001F\u007F-\u009F]*$".to_owned()),
            ..MetaSchema::new("string")
        }
    }
}

/// A note's text as the document states it: poem-openapi reads `null` as left out, so
/// the document says `null` may be sent (and means empty).
struct Body;

impl TextRule for Body {
    fn schema() -> MetaSchema {
        MetaSchema {
            max_length: Some(MAX_BODY_CHARS),
            nullable: true,
            // PostgreSQL's text cannot hold U+0000.
            pattern: Some(r"^[^\u0000]*$".to_owned()),
            ..MetaSchema::new("string")
        }
    }
}

pub(super) struct NotesApi {
    state: AppState,
}

impl NotesApi {
    pub(super) fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn connection(&self) -> Result<deadpool_postgres::Object, ApiError> {
        Ok(self.state.pool.get().await.map_err(ServiceError::from)?)
    }
}

/// A note to write.
#[derive(Object)]
struct NewNote {
    /// 1 to 200 characters.
    title: Text<Title>,
    /// At most 10,000 characters; empty when left out or `null`.
    #[oai(default)]
    body: Text<Body>,
}

/// A note.
#[derive(Object)]
struct NoteBody {
    /// Its id.
    id: Uuid,
    /// Its title.
    title: String,
    /// Its text.
    body: String,
    /// When it was written (RFC 3339).
    created_at: String,
}

impl From<Note> for NoteBody {
    fn from(note: Note) -> Self {
        Self {
            id: note.id,
            title: note.title,
            body: note.body,
            created_at: humantime::format_rfc3339_millis(note.created_at).to_string(),
        }
    }
}

/// The caller's newest notes.
#[derive(Object)]
struct NoteList {
    /// At most 100, newest first.
    notes: Vec<NoteBody>,
}

#[derive(ApiResponse)]
enum CreatedResponse {
    /// The note was written.
    #[oai(status = 201)]
    Created(Json<NoteBody>),
}

#[derive(ApiResponse)]
enum NoteResponse {
    /// The note.
    #[oai(status = 200)]
    Ok(Json<NoteBody>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The notes.
    #[oai(status = 200)]
    Ok(Json<NoteList>),
}

#[derive(ApiResponse)]
enum DeletedResponse {
    /// The note is gone.
    #[oai(status = 204)]
    Deleted,
}

fn not_found() -> ApiError {
    ApiError::NotFound(Json(ErrorBody::new("note_not_found", "no such note")))
}

fn invalid(message: String) -> ApiError {
    ApiError::BadRequest(Json(ErrorBody::new("invalid_note", message)))
}

/// A path id that is not a UUID names no note.
fn note_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| not_found())
}

#[OpenApi(tag = "ApiTags::Notes")]
impl NotesApi {
    /// Write a note.
    #[oai(path = "/notes", method = "post")]
    async fn create(
        &self,
        auth: Authenticated,
        note: Json<NewNote>,
    ) -> Result<CreatedResponse, ApiError> {
        let NewNote { title, body } = note.0;
        let title = title.into_inner();
        let body = body.into_inner();
        let title_chars = title.chars().count();
        if !(1..=MAX_TITLE_CHARS).contains(&title_chars) {
            return Err(invalid(format!(
                "the title must have 1 to {MAX_TITLE_CHARS} characters"
            )));
        }
        if title.chars().any(char::is_control) {
            return Err(invalid(
                "the title may not hold control characters".to_owned(),
            ));
        }
        if body.contains('\0') {
            return Err(invalid("the text may not hold U+0000".to_owned()));
        }
        if body.chars().count() > MAX_BODY_CHARS {
            return Err(invalid(format!(
                "the text may have at most {MAX_BODY_CHARS} characters"
            )));
        }
        let client = self.connection().await?;
        let written = notes::insert(&client, auth.user(), &title, &body).await?;
        Ok(CreatedResponse::Created(Json(written.into())))
    }

    /// The caller's newest notes.
    #[oai(path = "/notes", method = "get")]
    async fn list(&self, auth: Authenticated) -> Result<ListResponse, ApiError> {
        let client = self.connection().await?;
        let found = notes::list(&client, auth.user()).await?;
        Ok(ListResponse::Ok(Json(NoteList {
            notes: found.into_iter().map(NoteBody::from).collect(),
        })))
    }

    /// One of the caller's notes. Unknown ids and other users' notes both get 404.
    #[oai(path = "/notes/:id", method = "get")]
    async fn get(
        &self,
        auth: Authenticated,
        /// The note's id.
        id: Path<String>,
    ) -> Result<NoteResponse, ApiError> {
        let id = note_id(&id)?;
        let client = self.connection().await?;
        let note = notes::by_id(&client, auth.user(), id)
            .await?
            .ok_or_else(not_found)?;
        Ok(NoteResponse::Ok(Json(note.into())))
    }

    /// Delete one of the caller's notes. Unknown ids and other users' notes both get 404.
    #[oai(path = "/notes/:id", method = "delete")]
    async fn delete(
        &self,
        auth: Authenticated,
        /// The note's id.
        id: Path<String>,
    ) -> Result<DeletedResponse, ApiError> {
        let id = note_id(&id)?;
        let client = self.connection().await?;
        if notes::delete(&client, auth.user(), id).await? {
            Ok(DeletedResponse::Deleted)
        } else {
            Err(not_found())
        }
    }
}
