//! `/notes` over HTTP. Each operation takes [`Authenticated`], so the guard has checked
//! the caller's token and session before it runs, and touches only that user's rows.

use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::registry::MetaSchema;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use portcullis_server::config::ConfigError;
use portcullis_server::routes::text::{Text, TextRule};
use portcullis_server::{ApiError, Authenticated, ErrorBody, ServiceError, Services};
use uuid::Uuid;

use super::NOTES_PER_USER;
use super::store::{self, Note};

#[derive(Tags)]
enum ApiTags {
    /// The example resource: your own notes.
    Notes,
}

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

/// The notes routes, with what they need of the server.
pub struct NotesApi {
    services: Services,
    per_user: i64,
}

impl NotesApi {
    /// The routes over `services`, reading `NOTES_PER_USER`.
    pub fn new(services: &Services) -> Result<Self, ConfigError> {
        Ok(Self {
            per_user: services.settings().number(&NOTES_PER_USER)?,
            services: services.clone(),
        })
    }

    async fn connection(&self) -> Result<deadpool_postgres::Object, ApiError> {
        Ok(self
            .services
            .pool()
            .get()
            .await
            .map_err(ServiceError::from)?)
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
    /// Write a note; 409 `too_many_notes` when the caller keeps `NOTES_PER_USER` already.
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
        let written = store::insert(&client, auth.user(), &title, &body, self.per_user)
            .await?
            .ok_or_else(|| {
                ApiError::Conflict(Json(ErrorBody::new(
                    "too_many_notes",
                    format!("a user may keep at most {} notes", self.per_user),
                )))
            })?;
        Ok(CreatedResponse::Created(Json(written.into())))
    }

    /// The caller's newest notes.
    #[oai(path = "/notes", method = "get")]
    async fn list(&self, auth: Authenticated) -> Result<ListResponse, ApiError> {
        let client = self.connection().await?;
        let found = store::list(&client, auth.user()).await?;
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
        let note = store::by_id(&client, auth.user(), id)
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
        if store::delete(&client, auth.user(), id).await? {
            Ok(DeletedResponse::Deleted)
        } else {
            Err(not_found())
        }
    }
}
