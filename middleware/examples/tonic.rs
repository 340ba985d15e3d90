//! A tonic gRPC server whose health service needs a live session.
//!
//! With feature `tonic`, a guarded service keeps its gRPC name, so guarded and open
//! services sit side by side: `add_service(SessionGuard::new(service, auth))` for those
//! that need a session, plain `add_service(service)` for the others. (tonic's
//! `Server::builder().layer(SessionGuardLayer::new(auth))` guards them all.) A refusal is
//! a gRPC status: `UNAUTHENTICATED` for a missing, bad or revoked token, `UNAVAILABLE`
//! while liveness cannot be decided.
//!
//! ```sh
//! cargo run -p portcullis-server &                       # the issuer, on :8080
//! cargo run -p portcullis --example tonic --features tonic
//! grpcurl -plaintext -H "authorization: Bearer $ACCESS_TOKEN" 127.0.0.1:3002 grpc.health.v1.Health/Check
//! ```

use std::process::ExitCode;

use anyhow::Context as _;
use portcullis::postgres::DatabaseConfig;
use portcullis::{Authenticator, PostgresLiveness, RemoteJwks, SessionGuard, TokenVerifier};
use tonic::transport::Server;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt::init(); // where the layer's warnings go
    if let Err(error) = run().await {
        eprintln!("error: {error:#}"); // with every cause: `a: b: c`
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn run() -> anyhow::Result<()> {
    portcullis::install_crypto_provider();

    // Nothing there, not a key set, no usable key: say so now, not as 401s later.
    let keys = RemoteJwks::fetch("http://127.0.0.1:8080/.well-known/jwks.json").await?;
    let verifier = TokenVerifier::builder(keys)
        .issuer("portcullis-server")
        .audience("portcullis-server")
        .build();
    let database: DatabaseConfig = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=/var/run/postgresql,127.0.0.1 dbname=portcullis_server".into())
        .parse()
        .context("DATABASE_URL")?;
    let liveness = PostgresLiveness::builder(database).start()?;
    liveness.ready().await?;
    let auth = Authenticator::new(verifier, liveness);

    let (_reporter, health) = tonic_health::server::health_reporter();
    let addr = "127.0.0.1:3002".parse()?;
    println!("listening on {addr}");
    Server::builder()
        .add_service(SessionGuard::new(health, auth))
        .serve(addr)
        .await?;
    Ok(())
}
