//! What the verified-token cache saves: one EdDSA (and HS256) verification against one
//! cached authentication, measured in the same run; and what a route's step-up
//! requirement adds to a cached authentication. Prints figures and their ratios.
//!
//! `cargo bench -p portcullis --bench authenticate`

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use jsonwebtoken::{EncodingKey, Header};
use portcullis::{
    Aal, Algorithm, AssuranceRequirement, Authenticator, InMemoryLiveness, KeySet, TokenVerifier,
    VerificationKey,
};

const ED_PRIVATE: &[u8] = include_bytes!("../tests/keys/ed25519.pem");
const ED_PUBLIC: &[u8] = include_bytes!("../tests/keys/ed25519.pub.pem");
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Median time per call over 7 rounds of `iterations` calls.
fn measure(iterations: u32, mut call: impl FnMut()) -> Duration {
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                call();
            }
            start.elapsed() / iterations
        })
        .collect();
    rounds.sort();
    rounds[3]
}

/// [`measure`] for several calls at once, their rounds interleaved, so that a machine
/// that speeds up or slows down meanwhile favours none of them: the median per call.
fn measure_side_by_side<const N: usize>(
    iterations: u32,
    calls: &mut [&mut dyn FnMut(); N],
) -> [Duration; N] {
    let mut rounds = [[Duration::ZERO; 7]; N];
    for round in 0..7 {
        for (call, times) in calls.iter_mut().zip(&mut rounds) {
            let start = Instant::now();
            for _ in 0..iterations {
                call();
            }
            times[round] = start.elapsed() / iterations;
        }
    }
    rounds.map(|mut times| {
        times.sort();
        times[3]
    })
}

fn main() {
    portcullis::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = KeySet::new([
        VerificationKey::from_pem("ed", Algorithm::EdDSA, ED_PUBLIC).unwrap(),
        VerificationKey::hmac("hs", SECRET).unwrap(),
    ]);
    let verifier = TokenVerifier::builder(keys)
        .issuer("iss")
        .audience("aud")
        .build();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss": "iss", "aud": "aud", "sub": "u1", "sid": "s1",
        "iat": now, "exp": now + 900, "aal": "aal2", "amr": ["pwd", "otp", "mfa"],
        "auth_time": now});
    let sign = |kid: &str, algorithm, key: &EncodingKey| {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let ed = sign(
        "ed",
        jsonwebtoken::Algorithm::EdDSA,
        &EncodingKey::from_ed_pem(ED_PRIVATE).unwrap(),
    );
    let hs = sign(
        "hs",
        jsonwebtoken::Algorithm::HS256,
        &EncodingKey::from_secret(SECRET),
    );

    let verify_ed = measure(2_000, || {
        black_box(runtime.block_on(verifier.verify(black_box(&ed))).unwrap());
    });
    let verify_hs = measure(20_000, || {
        black_box(runtime.block_on(verifier.verify(black_box(&hs))).unwrap());
    });

    let store = InMemoryLiveness::new();
    store.insert("s1", "u1", None);
    let auth = Authenticator::new(verifier, store);
    let mut headers = HeaderMap::new();
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {ed}")).unwrap(),
    );
    runtime.block_on(auth.authenticate(&headers)).unwrap();

    // The requirement a route checks after the cached authentication: none (every route
    // without step-up), and a recent second factor (the token meets it).
    let nothing = AssuranceRequirement::new();
    let privileged = AssuranceRequirement::new()
        .require_aal(Aal::Aal2)
        .max_auth_age(Duration::from_secs(600));
    let checked = |requirement: &AssuranceRequirement| {
        let context = auth
            .authenticate_cached(black_box(&headers))
            .unwrap()
            .unwrap();
        assert!(black_box(requirement).check(&context).is_ok());
        black_box(context);
    };
    let [cached, with_nothing, with_step_up] = measure_side_by_side(
        200_000,
        &mut [
            &mut || {
                black_box(
                    auth.authenticate_cached(black_box(&headers))
                        .unwrap()
                        .unwrap(),
                );
            },
            &mut || checked(&nothing),
            &mut || checked(&privileged),
        ],
    );

    println!("verify EdDSA (no cache)         {verify_ed:>10.2?} per call");
    println!("verify HS256 (no cache)         {verify_hs:>10.2?} per call");
    println!("authenticate, cache hit (EdDSA) {cached:>10.2?} per call");
    println!(
        "cache hit / EdDSA verify        {:>10.4}",
        cached.as_secs_f64() / verify_ed.as_secs_f64()
    );
    println!("  + no requirement              {with_nothing:>10.2?} per call");
    println!("  + aal2 within 600 s           {with_step_up:>10.2?} per call");
}
