//! `notes`: the example resource. Each user writes, lists, reads and deletes their own
//! notes; nobody sees anyone else's. `store` holds the SQL, `routes` the HTTP operations;
//! the table is `migrations/V1__notes.sql`. Copy its shape for your own resources, or
//! delete the folder, the migration and its lines in `lib.rs` to drop it.

mod routes;
pub mod store;

use portcullis_server::config::settings::{Group, Kind, Setting};

pub use routes::NotesApi;

/// `NOTES_PER_USER`: an application setting, declared as Portcullis declares its own, so
/// `config` lists it and a bad value stops start-up naming it.
pub const NOTES_PER_USER: Setting = Setting {
    name: "NOTES_PER_USER",
    group: Group::Application("Notes"),
    kind: Kind::count(1_000, 1, 1_000_000),
    meaning: "Most notes one user may keep; writing one more answers 409 `too_many_notes`.",
};

/// Every setting of this resource.
pub const SETTINGS: &[&Setting] = &[&NOTES_PER_USER];
