//! Database tests of the store and the account logic against a real PostgreSQL, at the
//! Rust API level. Each test has a database of its own (`session-testdb`); without
//! PostgreSQL the process stops with one line saying how to start one.
//!
//! This file only names the crate under test (`app` below), so that a generated project,
//! whose crate has another name, changes this one line (`main.rs.liquid`).

use session_server as app;

mod accounts;
mod notes;
