//! Running the stand-alone server: start-up and configuration, the operator's command
//! line, migrations and upgrades, the schema, TLS to PostgreSQL, faults of the database,
//! load, and faults of a fleet on the NATS revocation feed.

mod database_tls;
mod faults;
mod fleet;
mod load;
mod operator_cli;
mod schema;
mod server_ops;
mod server_process;
mod upgrade;
