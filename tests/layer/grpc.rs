//! A real tonic gRPC server whose health service is guarded by the layer, trusting the
//! real server process (keys from its JWKS URL, liveness from the shared PostgreSQL), and
//! a real tonic client: a live session's token passes; no token, a bad one and a revoked
//! session get `UNAUTHENTICATED`.

use std::time::{Duration, Instant};

use portcullis::{Authenticator, PostgresLiveness, RemoteJwks, SessionGuard, TokenVerifier};
use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::{Api, Session};
use portcullis_testdb::TestDb;
use reqwest::Method;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Request};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

async fn check(
    client: &mut HealthClient<Channel>,
    token: Option<&str>,
) -> Result<HealthCheckResponse, tonic::Status> {
    let mut request = Request::new(HealthCheckRequest {
        service: String::new(),
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    client.check(request).await.map(tonic::Response::into_inner)
}

fn expect_unauthenticated(outcome: Result<HealthCheckResponse, tonic::Status>, what: &str) {
    match outcome {
        Err(status) => assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}"),
        Ok(answer) => panic!("{what} passed: {answer:?}"),
    }
}

#[tokio::test]
async fn a_guarded_tonic_service_admits_live_sessions_only() {
    portcullis::install_crypto_provider();
    let db = TestDb::new().await;
    let server = ServerProcess::start(&db.url(), &[]).await;
    let api = Api::new(&server);
    let session = Session::from_pair(&api.signed_up("grpc@example.com", "a long passphrase").await);

    let verifier =
        TokenVerifier::builder(RemoteJwks::new(server.url("/.well-known/jwks.json")).unwrap())
            .issuer("portcullis-server")
            .audience("portcullis-server")
            .build();
    let liveness = PostgresLiveness::builder(db.config().clone().into())
        .start()
        .unwrap();
    liveness.ready().await.unwrap();
    let auth = Authenticator::new(verifier, liveness);
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(SessionGuard::new(health, auth))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::new(channel);

    let answer = check(&mut client, Some(&session.access))
        .await
        .expect("a live session's token passes");
    assert_eq!(answer.status(), ServingStatus::Serving);
    expect_unauthenticated(check(&mut client, None).await, "no token");
    expect_unauthenticated(
        check(&mut client, Some("not.a.token")).await,
        "a malformed token",
    );

    api.bearer(Method::POST, "/auth/logout", &session.access)
        .await
        .expect(204);
    let revoked = Instant::now();
    loop {
        match check(&mut client, Some(&session.access)).await {
            Ok(_) => assert!(
                revoked.elapsed() < Duration::from_secs(2),
                "the revoked session still passes"
            ),
            outcome => {
                expect_unauthenticated(outcome, "a revoked session");
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
