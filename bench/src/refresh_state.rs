//! Figure 6, refresh state: the bytes and rows one session's refresh chain occupies in
//! PostgreSQL after 1, 100 and 10,000 refreshes over HTTP. The state is part of the
//! session's row (migration V3), so the three should be equal.

use std::time::Instant;

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::Result;
use crate::cluster::Database;
use crate::refresh::{login, string_field};
use crate::report::{Round, Target, Unit};
use crate::server::Server;

/// After how many refreshes the state is measured.
const CHECKPOINTS: [u32; 3] = [1, 100, 10_000];

/// How the figure is measured, for BENCHMARKS.md.
pub(crate) const METHOD: &str = "\
In the refresh round's database and server, one new session is refreshed 10,000 times in \
a row over HTTP, each time with the token the last refresh returned. After the 1st, \
100th and 10,000th refresh the harness reads the rows that hold the session's refresh \
state (its `sessions` row and any `legacy_refresh_tokens` row) and their size \
(`pg_column_size` of each row). The target is the same bytes at all three.";

/// Rows and bytes of the session's refresh state.
const FOOTPRINT: &str = "\
SELECT count(*), coalesce(sum(bytes), 0)::bigint FROM (
    SELECT pg_column_size(s.*) AS bytes FROM sessions s WHERE s.id = $1
    UNION ALL
    SELECT pg_column_size(l.*) FROM legacy_refresh_tokens l WHERE l.session_id = $1
) AS state";

/// What one round measured: (refreshes, rows, bytes) at each checkpoint.
#[derive(Debug)]
pub(crate) struct Figures {
    footprints: Vec<(u32, i64, i64)>,
    seconds: f64,
}

/// Logs in once and refreshes the new session's chain to the last checkpoint.
pub(crate) async fn run(server: &Server, db: &Database) -> Result<Figures> {
    let pair = login(server, "refresh state").await?;
    let session: Uuid = string_field(&pair, "session_id")?.parse()?;
    let mut token = string_field(&pair, "refresh_token")?;
    let client = db.connect().await?;
    let started = Instant::now();
    let mut footprints = Vec::with_capacity(CHECKPOINTS.len());
    let mut done = 0;
    for checkpoint in CHECKPOINTS {
        while done < checkpoint {
            let next = server
                .post_json(
                    "/auth/refresh",
                    &json!({ "refresh_token": token }),
                    StatusCode::OK,
                )
                .await?;
            token = string_field(&next, "refresh_token")?;
            done += 1;
        }
        let row = client.query_one(FOOTPRINT, &[&session]).await?;
        footprints.push((checkpoint, row.get(0), row.get(1)));
    }
    Ok(Figures {
        footprints,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Figures {
    /// Records the figures of this round.
    #[allow(clippy::cast_precision_loss, reason = "byte counts far below 2^52")]
    pub(crate) fn record(&self, round: &mut Round) {
        let first_bytes = self.footprints.first().map_or(0, |&(_, _, bytes)| bytes);
        for &(refreshes, rows, bytes) in &self.footprints {
            round.value(
                format!("refresh state after {refreshes} refreshes (bytes)"),
                bytes as f64,
                Unit::Count,
            );
            round
                .count(
                    format!("rows beyond one after {refreshes} refreshes"),
                    u64::try_from(rows - 1).unwrap_or(u64::MAX),
                )
                .target(Target::AtMost(0.0));
        }
        let growth = self
            .footprints
            .iter()
            .map(|&(_, _, bytes)| bytes.abs_diff(first_bytes))
            .max()
            .unwrap_or(0);
        round
            .count("bytes gained or lost since the first refresh", growth)
            .target(Target::AtMost(0.0));
        round.note(format!(
            "{} refreshes in {:.1} s",
            CHECKPOINTS[CHECKPOINTS.len() - 1],
            self.seconds
        ));
    }
}
