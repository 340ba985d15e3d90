//! The NATS `JetStream` feed and relay against a real `nats-server` and PostgreSQL: a
//! revocation committed in the database reaches an instance's cache through the relay;
//! a broker restart resumes where the feed stopped; a gap past the stream's retention
//! makes the cache forget; a standby relay takes over from a killed one and nothing is
//! lost or stored twice.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{EncodingKey, Header};
use portcullis::nats::{NatsFeedConfig, NatsRelay, NatsRelayHandle, NatsRevocationFeed};
use portcullis::postgres::{RevocationFeedKind, RevocationLog};
use portcullis::{
    AuthError, Authenticator, FeedEvent, KeySet, Liveness, PostgresLiveness, Revocation,
    RevocationFeed, TokenVerifier, VerificationKey,
};
use portcullis_testdb::rows::{insert_session, insert_user, revoke_session};
use portcullis_testdb::{NatsServer, TestDb};
use tokio_postgres::Client;
use uuid::Uuid;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// How long any one expected event may take.
const PATIENCE: Duration = Duration::from_secs(15);

fn verifier() -> TokenVerifier {
    portcullis::install_crypto_provider();
    TokenVerifier::builder(KeySet::new([VerificationKey::hmac("hs", SECRET).unwrap()]))
        .issuer("https://auth.test")
        .audience("api")
        .build()
}

fn bearer(user: Uuid, session: Uuid) -> HeaderMap {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": "https://auth.test", "aud": "api", "sub": user.to_string(),
        "sid": session.to_string(), "iat": now, "exp": now + 900, "jti": Uuid::new_v4().to_string(),
    });
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("hs".to_owned());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

/// A database on the NATS feed, a broker, and the feed's settings.
async fn fleet() -> (TestDb, Client, NatsServer, NatsFeedConfig) {
    let db = TestDb::new().await;
    let client = db.connect().await;
    RevocationLog::set_feed(&client, RevocationFeedKind::Nats)
        .await
        .unwrap();
    let nats = NatsServer::start().await.expect("nats-server");
    let config = NatsFeedConfig::new(nats.url());
    (db, client, nats, config)
}

fn relay(db: &TestDb, config: &NatsFeedConfig) -> NatsRelayHandle {
    NatsRelay::new(db.config().clone().into(), config.clone()).start()
}

async fn next(feed: &mut NatsRevocationFeed) -> FeedEvent {
    tokio::time::timeout(PATIENCE, feed.next_event())
        .await
        .expect("an event in time")
        .expect("the feed goes on")
}

/// Events until one matches `wanted`; all of them, that one last.
async fn until(
    feed: &mut NatsRevocationFeed,
    wanted: impl Fn(&FeedEvent) -> bool,
) -> Vec<FeedEvent> {
    let deadline = Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "not in time; saw {seen:?}");
        let event = next(feed).await;
        let done = wanted(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_revocation_committed_in_postgres_reaches_an_instance_through_the_relay() {
    let (db, client, nats, config) = fleet().await;
    let _relay = relay(&db, &config);
    let store = PostgresLiveness::builder(db.config().clone().into())
        .with_nats(config.clone())
        .start()
        .unwrap();
    store.ready().await.unwrap();
    let auth = Authenticator::new(verifier(), store.clone());
    let owner = insert_user(&client).await;
    let (single, bulk, spared) = (
        insert_session(&client, owner, "1 day").await,
        insert_session(&client, owner, "1 day").await,
        insert_session(&client, owner, "1 day").await,
    );
    for session in [single, bulk, spared] {
        auth.authenticate(&bearer(owner, session)).await.unwrap();
        auth.authenticate(&bearer(owner, session)).await.unwrap();
    }
    assert_eq!(store.stats().misses, 3, "the rest came from memory");

    revoke_session(&client, single).await;
    eventually("the revocation to reach the cache", async || {
        matches!(
            auth.authenticate(&bearer(owner, single)).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        )
    })
    .await;

    // A bulk revocation is one message, and the cell of every session it covers hears it.
    client
        .execute(
            "SELECT session_guard_revoke_sessions_before($1, $2, 'logout_all')",
            &[&owner, &spared],
        )
        .await
        .unwrap();
    eventually("the bulk revocation to reach the cache", async || {
        matches!(
            auth.authenticate(&bearer(owner, bulk)).await,
            Err(AuthError::SessionNotLive(Liveness::Revoked))
        )
    })
    .await;
    auth.authenticate(&bearer(owner, spared))
        .await
        .expect("the spared session stays live");
    let stats = store.stats();
    assert_eq!(stats.notifications, 2, "{stats:?}");
    assert_eq!(stats.forgot_everything, 0, "{stats:?}");
    drop(nats);
}

#[tokio::test]
async fn a_broker_restart_resumes_where_the_feed_stopped() {
    let (db, client, mut nats, config) = fleet().await;
    let relay = relay(&db, &config);
    let owner = insert_user(&client).await;
    let (before, during) = (
        insert_session(&client, owner, "1 day").await,
        insert_session(&client, owner, "1 day").await,
    );
    let mut feed = NatsRevocationFeed::new(config.clone());
    until(&mut feed, |event| *event == FeedEvent::Connected).await;

    revoke_session(&client, before).await;
    assert_eq!(
        next(&mut feed).await,
        FeedEvent::Revoked(Revocation::Session { session: before })
    );
    let applied = feed.last_applied().expect("read the stream");

    nats.stop();
    let events = until(&mut feed, |event| {
        matches!(event, FeedEvent::Disconnected { .. })
    })
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    // Revoked while the broker is down: the relay publishes it once the broker is back.
    revoke_session(&client, during).await;
    nats.restart().await.unwrap();

    let events = until(&mut feed, |event| {
        *event == FeedEvent::Revoked(Revocation::Session { session: during })
    })
    .await;
    assert!(
        !events.contains(&FeedEvent::Missed),
        "resumed without forgetting: {events:?}"
    );
    assert!(events.contains(&FeedEvent::Connected), "{events:?}");
    assert_eq!(feed.last_applied(), Some(applied + 1));
    assert!(relay.published() >= 2);
}

#[tokio::test]
async fn a_feed_cut_off_past_the_retention_forgets_everything() {
    let (db, client, mut nats, config) = fleet().await;
    let relay = NatsRelay::new(db.config().clone().into(), config.clone())
        .with_max_age(Duration::from_secs(1))
        .start();
    let owner = insert_user(&client).await;
    let (first, expired) = (
        insert_session(&client, owner, "1 day").await,
        insert_session(&client, owner, "1 day").await,
    );
    let mut feed = NatsRevocationFeed::new(config.clone());
    until(&mut feed, |event| *event == FeedEvent::Connected).await;
    revoke_session(&client, first).await;
    assert_eq!(
        next(&mut feed).await,
        FeedEvent::Revoked(Revocation::Session { session: first })
    );

    nats.stop();
    until(&mut feed, |event| {
        matches!(event, FeedEvent::Disconnected { .. })
    })
    .await;
    // The feed is not read again until what it would resume with has expired.
    nats.restart().await.unwrap();
    revoke_session(&client, expired).await;
    eventually("the relay to publish", async || relay.published() == 2).await;
    let observer = async_nats::connect(nats.url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(observer);
    eventually("the message to expire", async || {
        let mut stream = jetstream.get_stream(&config.stream).await.unwrap();
        let state = &stream.info().await.unwrap().state;
        state.messages == 0 && state.last_sequence == 2
    })
    .await;

    let events = until(&mut feed, |event| *event == FeedEvent::Connected).await;
    assert_eq!(
        events
            .iter()
            .filter(|event| **event == FeedEvent::Missed)
            .count(),
        1,
        "{events:?}"
    );
    assert_eq!(feed.last_applied(), Some(2));

    // And it goes on from there.
    let third = insert_session(&client, owner, "1 day").await;
    revoke_session(&client, third).await;
    assert_eq!(
        next(&mut feed).await,
        FeedEvent::Revoked(Revocation::Session { session: third })
    );
}

#[tokio::test]
async fn a_standby_relay_takes_over_and_nothing_is_lost_or_stored_twice() {
    let (db, client, _nats, config) = fleet().await;
    let mut relays = vec![relay(&db, &config), relay(&db, &config)];
    eventually("one relay to be active", async || {
        relays.iter().filter(|relay| relay.is_active()).count() == 1
    })
    .await;
    let owner = insert_user(&client).await;
    let mut sessions = Vec::new();
    for _ in 0..60 {
        sessions.push(insert_session(&client, owner, "1 day").await);
    }

    let mut revoking = Vec::new();
    for (index, session) in sessions.iter().enumerate() {
        revoke_session(&client, *session).await;
        revoking.push(*session);
        if index == 30 {
            // Killed mid-stream: its task, its PostgreSQL session and its lock end.
            let active = relays.iter().position(NatsRelayHandle::is_active).unwrap();
            drop(relays.remove(active));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let standby = &relays[0];
    eventually("the standby to take over", async || standby.is_active()).await;

    let observer = async_nats::connect(config.url.clone()).await.unwrap();
    let jetstream = async_nats::jetstream::new(observer);
    let stream = jetstream.get_stream(&config.stream).await.unwrap();
    let mut stored: HashMap<Uuid, usize> = HashMap::new();
    eventually("every revocation in the stream", async || {
        stored.clear();
        let last = stream.get_info().await.unwrap().state.last_sequence;
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.unwrap();
            match portcullis::nats::decode_revocation(&message.payload).unwrap() {
                Revocation::Session { session } => *stored.entry(session).or_default() += 1,
                other => panic!("{other:?}"),
            }
        }
        stored.len() == sessions.len()
    })
    .await;
    for session in &sessions {
        assert_eq!(stored.get(session), Some(&1), "{session} stored once");
    }
}
