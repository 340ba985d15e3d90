//! Issue 22, item 5: the answer to a password-reset request must not tell a known
//! address from an unknown one by its timing. 200 requests for each, interleaved in a
//! random order on one warm connection, compared with a Mann–Whitney U test: before the
//! fix the known ones took 1.4 ms longer at the median (p = 5e-31).
//!
//! A test of indistinguishability, not of speed: it asserts no figure about how fast
//! either is.

use std::time::{Duration, Instant};

use portcullis_e2e::ServerProcess;
use portcullis_e2e::api::Api;
use portcullis_testdb::TestDb;
use serde_json::json;

const SAMPLES: usize = 200;
/// Below this the two distributions count as told apart. With equal distributions a
/// run fails this one time in a thousand.
const ALPHA: f64 = 1e-3;

#[tokio::test]
async fn known_and_unknown_addresses_take_the_same_time_to_answer() {
    let db = TestDb::new().await;
    let server = ServerProcess::start(
        &db.url(),
        &[
            ("RATE_LIMIT_ACCOUNT_MAIL_PER_ADDRESS", "0"),
            ("RATE_LIMIT_ACCOUNT_RECOVERY_PER_IP", "0"),
            ("ACCOUNT_MAIL_PER_HOUR", "1000"),
            ("ACCOUNT_MAIL_PER_DAY", "10000"),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;
    let api = Api::new(&server);
    api.register("ada@example.com", "correct horse battery staple")
        .await;
    let mut known = Vec::with_capacity(SAMPLES);
    let mut unknown = Vec::with_capacity(SAMPLES);
    // Warm the connection and every code path first.
    for email in ["ada@example.com", "nobody@example.com"] {
        for _ in 0..10 {
            request(&api, email).await;
        }
    }
    for round in 0..SAMPLES {
        // Which goes first is random, so neither is always the one after the other's
        // work in the background.
        let known_first = uuid::Uuid::new_v4().as_bytes()[0] & 1 == 0;
        for is_known in [known_first, !known_first] {
            let email = if is_known {
                "ada@example.com".to_owned()
            } else {
                format!("nobody{round}@example.com")
            };
            let took = request(&api, &email).await;
            if is_known {
                known.push(took);
            } else {
                unknown.push(took);
            }
            // Let the background work of this request finish before the next one.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let p = mann_whitney_p(&known, &unknown);
    let (known_median, unknown_median) = (median(&mut known), median(&mut unknown));
    println!(
        "medians: known {known_median:.3} ms, unknown {unknown_median:.3} ms; Mann–Whitney p = {p:.3e}"
    );
    assert!(
        p > ALPHA,
        "known and unknown addresses are told apart by timing: medians {known_median:.3} \
         against {unknown_median:.3} ms, p = {p:.3e}"
    );
}

/// One reset request for `email`, answered 202: how long it took, in milliseconds.
async fn request(api: &Api<'_>, email: &str) -> f64 {
    let started = Instant::now();
    let reply = api
        .post_json("/auth/password-reset", &json!({ "email": email }))
        .await;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    reply.expect(202);
    took
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A count as a float; the counts here are a few hundred.
fn count(n: usize) -> f64 {
    f64::from(u32::try_from(n).expect("a count of samples"))
}

/// The two-sided p-value of the Mann–Whitney U test (normal approximation with the tie
/// correction; fine for samples of this size).
fn mann_whitney_p(first: &[f64], second: &[f64]) -> f64 {
    let mut all: Vec<(f64, bool)> = first
        .iter()
        .map(|&x| (x, true))
        .chain(second.iter().map(|&x| (x, false)))
        .collect();
    all.sort_by(|x, y| x.0.total_cmp(&y.0));
    let len = all.len();
    let mut rank_sum_first = 0.0;
    let mut tie_term = 0.0;
    let mut start = 0;
    while start < len {
        let mut end = start;
        while end + 1 < len && all[end + 1].0.total_cmp(&all[start].0).is_eq() {
            end += 1;
        }
        // Ranks start+1 ..= end+1 share their mean.
        let rank = count(start + end) / 2.0 + 1.0;
        let tied = count(end - start + 1);
        tie_term += tied.powi(3) - tied;
        let from_first = all[start..=end].iter().filter(|(_, first)| *first).count();
        rank_sum_first += rank * count(from_first);
        start = end + 1;
    }
    let (n1, n2) = (count(first.len()), count(second.len()));
    let statistic = rank_sum_first - n1 * (n1 + 1.0) / 2.0;
    let mean = n1 * n2 / 2.0;
    let total = n1 + n2;
    let variance = n1 * n2 / 12.0 * ((total + 1.0) - tie_term / (total * (total - 1.0)));
    let z = (statistic - mean).abs() / variance.sqrt();
    erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative error below
/// 1.2e-7), for the normal tail.
fn erfc(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let poly = -x * x - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let value = t * poly.exp();
    if x >= 0.0 { value } else { 2.0 - value }
}

#[test]
fn the_test_tells_a_shift_apart_and_not_a_shuffle() {
    let a: Vec<f64> = (0..200).map(|i| f64::from(i % 50)).collect();
    let shifted: Vec<f64> = a.iter().map(|x| x + 10.0).collect();
    assert!(mann_whitney_p(&a, &shifted) < 1e-6);
    let same: Vec<f64> = a.iter().rev().copied().collect();
    assert!(mann_whitney_p(&a, &same) > 0.9);
    assert!((erfc(0.0) - 1.0).abs() < 1e-6);
    assert!((erfc(1.0) - 0.157_299_2).abs() < 1e-6);
}
