//! `profile-loop`: the child process the profile runs, natively and under callgrind.
//!
//! It puts `SessionGuardLayer` (EdDSA keys, or HS256 with `--algorithm hs256`; `PostgresLiveness`) in front of a service
//! that answers at once, authenticates every token once through the async path, so that
//! every token and session is cached, then calls either the guarded service or the bare
//! one with prepared requests, cycling through the tokens. The calls happen in
//! [`guarded_loop`] or [`bare_loop`], never inlined, so callgrind can count exactly one of
//! them (`--toggle-collect`); preparing the requests stays outside both.

use std::convert::Infallible;
use std::future::{Future as _, Ready, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use portcullis::{Authenticator, PostgresLiveness, SessionGuard, SessionGuardLayer};
use tower::util::ServiceFn;
use tower::{Layer as _, Service, ServiceExt as _};

use crate::cli::Args;
use crate::hello::wait_for_listener;
use crate::seed::{self, Population};
use crate::tokens::{self, Signer};
use crate::{Result, http1};

/// Sessions, and tokens, the loop cycles through.
pub(crate) const POPULATION: Population = Population {
    sessions: 1_000,
    users: 100,
    revoked_every: 10,
};
/// Requests prepared at a time, outside the counted functions.
const BATCH: usize = 1_000;
/// What callgrind's `--toggle-collect` matches for each loop.
pub(crate) const GUARDED_SYMBOL: &str = "*hot_loop::guarded_loop*";
/// See [`GUARDED_SYMBOL`].
pub(crate) const BARE_SYMBOL: &str = "*hot_loop::bare_loop*";

type Answer = fn(Request<Empty<Bytes>>) -> Ready<Result<Response<Empty<Bytes>>, Infallible>>;
type Bare = ServiceFn<Answer>;
type Guarded = SessionGuard<Bare>;

fn answer(_request: Request<Empty<Bytes>>) -> Ready<Result<Response<Empty<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Empty::new())))
}

/// `profile-loop --loop guarded|bare [--algorithm eddsa|hs256] --iterations N`: prints
/// `profiled <n> requests in <nanoseconds> ns` (the time inside the loop only).
pub(crate) async fn run(args: &Args) -> Result<()> {
    portcullis::install_crypto_provider();
    let database: portcullis::postgres::DatabaseConfig = args.required("database-url")?.parse()?;
    let iterations: usize = args.number("iterations", 50_000)?;
    let guarded_variant = match args.required("loop")? {
        "guarded" => true,
        "bare" => false,
        other => return Err(format!("--loop: guarded or bare, not {other:?}").into()),
    };
    // Live answers stay cached far longer than a run under valgrind takes.
    let liveness = PostgresLiveness::builder(database)
        .with_live_ttl(Duration::from_secs(600))
        .start()?;
    wait_for_listener(&liveness).await?;
    let (verifier, signer) = match args.get("algorithm").unwrap_or("eddsa") {
        "eddsa" => (tokens::eddsa_verifier()?, Signer::eddsa()?),
        "hs256" => {
            let secret = tokens::random_secret()?;
            (tokens::hs256_verifier(&secret)?, Signer::hs256(&secret))
        }
        other => return Err(format!("--algorithm: eddsa or hs256, not {other:?}").into()),
    };
    let auth = Authenticator::new(verifier, liveness);
    let bare: Bare = tower::service_fn(answer as Answer);
    let mut guarded: Guarded = SessionGuardLayer::new(auth).layer(bare);
    let mut bare = bare;
    let bearers = sign_all(&signer)?;
    for bearer in &bearers {
        let response = guarded.ready().await?.call(request(bearer)?).await?;
        if !matches!(response.status(), StatusCode::OK | StatusCode::UNAUTHORIZED) {
            return Err(format!("warm-up answered {}", response.status()).into());
        }
    }
    let mut answered = 0;
    let mut spent = Duration::ZERO;
    while answered < iterations {
        let batch = (answered..iterations.min(answered + BATCH))
            .map(|index| request(&bearers[index % bearers.len()]))
            .collect::<Result<Vec<_>>>()?;
        let started = Instant::now();
        answered += if guarded_variant {
            guarded_loop(&mut guarded, batch)?
        } else {
            bare_loop(&mut bare, batch)?
        };
        spent += started.elapsed();
    }
    println!("profiled {answered} requests in {} ns", spent.as_nanos());
    Ok(())
}

fn sign_all(signer: &Signer) -> Result<Vec<HeaderValue>> {
    let issued_at = tokens::unix_now();
    (0..POPULATION.sessions)
        .map(|index| {
            let user = seed::user_id(POPULATION.owner(index));
            let token = signer.sign(&user, &seed::session_id(index), issued_at, 3_600)?;
            http1::bearer(&token)
        })
        .collect()
}

fn request(bearer: &HeaderValue) -> Result<Request<Empty<Bytes>>> {
    Ok(Request::get("/hello")
        .header(http::header::AUTHORIZATION, bearer.clone())
        .body(Empty::new())?)
}

/// The counted loop through the layer.
#[inline(never)]
fn guarded_loop(service: &mut Guarded, requests: Vec<Request<Empty<Bytes>>>) -> Result<usize> {
    drive(service, requests)
}

/// The same loop without the layer: the baseline.
#[inline(never)]
fn bare_loop(service: &mut Bare, requests: Vec<Request<Empty<Bytes>>>) -> Result<usize> {
    drive(service, requests)
}

/// Each request through `service`, answered without awaiting (a cache miss is an error).
/// callgrind counts what the loop functions call, so this need not be inlined.
fn drive<S, B>(service: &mut S, requests: Vec<Request<Empty<Bytes>>>) -> Result<usize>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>, Error = Infallible>,
{
    let mut context = Context::from_waker(Waker::noop());
    let mut answered = 0;
    for request in requests {
        if service.poll_ready(&mut context).is_pending() {
            return Err("the service was not ready".into());
        }
        let future = pin!(service.call(request));
        match future.poll(&mut context) {
            Poll::Ready(Ok(response))
                if matches!(response.status(), StatusCode::OK | StatusCode::UNAUTHORIZED) =>
            {
                answered += 1;
            }
            Poll::Ready(Ok(response)) => {
                return Err(format!("the service answered {}", response.status()).into());
            }
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Err("a cached request had to wait (cache miss)".into()),
        }
    }
    Ok(answered)
}
