//! Attacks on the real server process: account enumeration and guessing, malformed and
//! oversized requests, slow and many connections.
//!
//! Run against another binary built on the library (a generated app) with
//! `PORTCULLIS_E2E_SERVER=<path>`.

mod accounts;
mod input;
mod network;
mod reset_timing;
