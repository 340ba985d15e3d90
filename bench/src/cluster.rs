//! The PostgreSQL cluster the refresh and login figures run on: a private one
//! (`portcullis_testdb::PrivateCluster`) with a real server's durability, so that every
//! process of the cluster works for the figure and nothing else. That is what lets the
//! harness charge PostgreSQL's CPU and WAL exactly: the whole cluster's CPU (backends,
//! WAL writer, checkpointer, background writer, autovacuum) and its WAL position, with no
//! other tenant's backends or writes in them.

use std::time::Duration;

use portcullis_testdb::{PrivateCluster, TestDb};
use tokio_postgres::{Client, Config, NoTls};

use crate::{Result, cpu};

/// Written after `portcullis-testdb`'s defaults (which turn durability off for speed): a
/// real server's durability, and PostgreSQL's default shared buffers.
pub(crate) const SETTINGS: [(&str, &str); 5] = [
    ("fsync", "on"),
    ("synchronous_commit", "on"),
    ("full_page_writes", "on"),
    ("shared_buffers", "128MB"),
    ("max_connections", "100"),
];

/// A private cluster and its postmaster.
#[derive(Debug)]
pub(crate) struct BenchCluster {
    cluster: PrivateCluster,
    postmaster: u32,
}

/// One database of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Database {
    /// Its connection settings.
    pub(crate) config: Config,
}

impl Database {
    /// Its URL, for the server and for pgbench.
    pub(crate) fn url(&self) -> String {
        TestDb::url_of(&self.config)
    }

    /// A new connection, driven on the current runtime.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.config.connect(NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }
}

impl BenchCluster {
    /// `initdb` and start, with [`SETTINGS`].
    pub(crate) async fn start() -> Result<Self> {
        let cluster = PrivateCluster::start_with(&SETTINGS).await?;
        let client = cluster.connect(&cluster.config("postgres")).await;
        let backend: i32 = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0);
        let postmaster = cpu::parent(u32::try_from(backend)?)?;
        Ok(Self {
            cluster,
            postmaster,
        })
    }

    /// A new database `name`, migrated up to and including `version` (every migration
    /// when `None`).
    pub(crate) async fn database(&self, name: &str, version: Option<u16>) -> Result<Database> {
        let admin = self.cluster.connect(&self.cluster.config("postgres")).await;
        let create: String = admin
            .query_one("SELECT format('CREATE DATABASE %I', $1::text)", &[&name])
            .await?
            .get(0);
        admin.batch_execute(&create).await?;
        let database = Database {
            config: self.cluster.config(name),
        };
        let mut client = database.connect().await?;
        match version {
            Some(version) => portcullis_migrations::migrate_to(&mut client, version).await?,
            None => portcullis_migrations::migrate(&mut client).await?,
        };
        Ok(database)
    }

    /// CPU time the whole cluster has used so far: the postmaster, its live children and
    /// the children it has reaped.
    pub(crate) fn cpu(&self) -> Result<Duration> {
        cpu::tree_time(self.postmaster)
    }
}

/// The cluster's WAL insert position, in bytes.
pub(crate) async fn wal_position(client: &Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint",
            &[],
        )
        .await?
        .get(0))
}

/// Updates of `sessions` in this database so far, and how many of them were HOT.
pub(crate) async fn session_updates(client: &Client) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'sessions'",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
