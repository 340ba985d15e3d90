//! Database tests of the store and the account logic against a real PostgreSQL, at the
//! Rust API level. Each test has a database of its own (`portcullis-testdb`); without
//! PostgreSQL the process stops with one line saying how to start one.
//!
//! This file only names the crate under test (`app` below), so that a generated project,
//! whose crate had another name, changed this one line.

use portcullis_server as app;

mod accounts;
mod sessions_schema;
