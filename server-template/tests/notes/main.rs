//! The app's own tests, each against the app started on a throwaway database of the local
//! PostgreSQL (`portcullis_server::testing`): its routes over HTTP as a signed-in user, and
//! its store on the app's pool.
//!
//! This file only names the crate under test (`app` below), so that a generated project,
//! whose crate has another name, changes this one line (`main.rs.liquid`).

use portcullis_template as app;

mod http;
mod store;
