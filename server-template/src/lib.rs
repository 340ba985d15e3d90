//! A backend on Portcullis: sign-in, sessions, devices, recovery mail and the account page
//! come from `portcullis-server`; this crate adds what is its own, starting with the
//! example `notes` resource (its routes, its table, its setting).
//!
//! Add a resource the way `notes` is built: a module with its store (SQL) and its routes,
//! a migration in `migrations/`, and its API in the tuple [`app`] hands to `.api(…)`.

pub mod notes;

use portcullis_server::App;

pub use notes::NotesApi;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The application: Portcullis's auth server, plus this crate's settings, migrations and
/// routes. `main` runs its command line; the tests start it with
/// `portcullis_server::testing::TestServer`.
pub fn app() -> App<NotesApi> {
    App::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        .settings(notes::SETTINGS)
        .migrations(embedded::migrations::runner)
        .api(NotesApi::new)
}
