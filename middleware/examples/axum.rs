//! An axum service: `/hello` needs a live session, `/health` does not.
//!
//! Keys come from the Portcullis server's JWKS URL; liveness from its PostgreSQL (the same
//! database the server uses, `DATABASE_URL`).
//!
//! ```sh
//! cargo run -p portcullis-server &                       # the issuer, on :8080
//! cargo run -p portcullis --example axum --features axum
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3000/hello
//! ```

use std::process::ExitCode;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use portcullis::postgres::DatabaseConfig;
use portcullis::{
    AuthContext, Authenticator, PostgresLiveness, RemoteJwks, SessionGuardLayer, TokenVerifier,
};

async fn hello(auth: AuthContext) -> String {
    format!("hello {} (session {})\n", auth.user_id(), auth.session_id())
}

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
    // Wrong database, no schema, PostgreSQL down: say so now, not as 503s later.
    liveness.ready().await?;
    let guard = SessionGuardLayer::new(Authenticator::new(verifier, liveness));

    let protected = Router::new().route("/hello", get(hello)).layer(guard);
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .merge(protected);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
