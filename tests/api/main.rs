//! The auth server's HTTP API, as a real process against a real PostgreSQL: accounts and
//! login, refresh rotation, sessions and devices, the cookie transport, the session cap,
//! second factors and step-up, and concurrent requests racing each other.
//!
//! Run against another binary built on the library (a generated app) with
//! `PORTCULLIS_E2E_SERVER=<path>`.

mod auth;
mod cookies;
mod factors;
mod races;
mod refresh;
mod session_cap;
mod sessions;
mod soft_passkey;
