//! Running the stand-alone server: start-up and configuration, the operator's command
//! line, migrations and upgrades, the schema, TLS to PostgreSQL, faults of the database,
//! and load.

mod database_tls;
mod faults;
mod load;
mod operator_cli;
mod schema;
mod server_ops;
mod server_process;
mod upgrade;
