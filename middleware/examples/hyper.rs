//! A plain hyper service, no framework, behind the Portcullis layer.
//!
//! ```sh
//! cargo run -p portcullis-server &                       # the issuer, on :8080
//! cargo run -p portcullis --example hyper
//! curl -H "Authorization: Bearer $ACCESS_TOKEN" http://127.0.0.1:3001/
//! ```

use std::convert::Infallible;
use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use portcullis::postgres::DatabaseConfig;
use portcullis::{
    AuthContext, Authenticator, PostgresLiveness, RemoteJwks, SessionGuardLayer, TokenVerifier,
};
use tower::ServiceBuilder;

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = request
        .extensions()
        .get::<AuthContext>()
        .expect("set by the layer");
    let text = format!("hello {} (session {})\n", auth.user_id(), auth.session_id());
    Ok(Response::new(Full::new(Bytes::from(text))))
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
    let service = ServiceBuilder::new()
        .layer(SessionGuardLayer::new(Authenticator::new(
            verifier, liveness,
        )))
        .service_fn(hello);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
