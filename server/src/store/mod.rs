//! The SQL, one module per table, run on pooled connections with prepared (cached)
//! statements. Handlers call these functions; they never build SQL.

pub mod account_tokens;
pub mod events;
pub mod mail_log;
pub mod outbox;
pub mod refresh;
pub mod sessions;
pub mod users;
