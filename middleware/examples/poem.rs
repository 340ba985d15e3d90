//! A Poem service: `/hello` needs a live session, `/health` does not.
//!
//! ```sh
//! cargo run -p portcullis-server &                       # the issuer, on :8080
//! cargo run -p portcullis --example poem --features poem
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3003/hello
//! ```

use std::process::ExitCode;

use anyhow::Context as _;
use poem::listener::TcpListener;
use poem::{EndpointExt as _, Route, Server, get, handler};
use portcullis::poem::SessionGuardMiddleware;
use portcullis::postgres::DatabaseConfig;
use portcullis::{AuthContext, Authenticator, PostgresLiveness, RemoteJwks, TokenVerifier};

#[handler]
#[allow(
    clippy::needless_pass_by_value,
    reason = "Poem extractors are taken by value"
)]
fn hello(auth: AuthContext) -> String {
    format!("hello {} (session {})\n", auth.user_id(), auth.session_id())
}

#[handler]
fn health() -> &'static str {
    "ok\n"
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
    liveness.ready().await?;
    let guard = SessionGuardMiddleware::new(Authenticator::new(verifier, liveness));

    let app = Route::new()
        .at("/hello", get(hello.with(guard)))
        .at("/health", get(health));
    Server::new(TcpListener::bind("127.0.0.1:3003"))
        .run(app)
        .await?;
    Ok(())
}
