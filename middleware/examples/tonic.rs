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

use portcullis::postgres::DatabaseConfig;
use portcullis::{Authenticator, PostgresLiveness, RemoteJwks, SessionGuard, TokenVerifier};
use tonic::transport::Server;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    portcullis::install_crypto_provider();

    let keys = RemoteJwks::new("http://127.0.0.1:8080/.well-known/jwks.json")?;
    let verifier = TokenVerifier::builder(keys)
        .issuer("portcullis-server")
        .audience("portcullis-server")
        .build();
    let database: DatabaseConfig = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "host=/var/run/postgresql,127.0.0.1 dbname=portcullis_server".into())
        .parse()?;
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
