//! `mfa_factors`, `mfa_recovery_codes`, `mfa_challenges`, `mfa_failures` and
//! `webauthn_ceremonies` (migration V9): second factors, the codes that stand in for them,
//! the logins that wait for one, and the passkey ceremonies under way. Never a secret in
//! the clear: TOTP secrets are sealed, codes and tokens hashed, by the caller.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use deadpool_postgres::GenericClient;
use uuid::Uuid;

use super::bounded;
use super::sessions::interval;
use crate::error::ServiceError;
use crate::ids::UserId;

const INSERT_TOTP: &str = "INSERT INTO mfa_factors (id, user_id, kind, name, totp_secret) \
     VALUES ($1, $2, 'totp', $3, $4)";
const TOTP_SECRET: &str = "SELECT totp_secret, confirmed_at IS NOT NULL FROM mfa_factors \
     WHERE id = $1 AND user_id = $2 AND kind = 'totp'";
/// Confirms a pending TOTP factor. Its first code proves the app holds the secret; it
/// signs no one in, so it does not take its step: the app's current code still signs in
/// (once) right after setting it up.
const CONFIRM_TOTP: &str = "UPDATE mfa_factors SET confirmed_at = now() \
     WHERE id = $1 AND user_id = $2 AND kind = 'totp' AND confirmed_at IS NULL";
/// Takes the step of an accepted code; a step at or before the last accepted is a replay.
const USE_TOTP_STEP: &str = "UPDATE mfa_factors SET totp_last_step = $3, last_used_at = now() \
     WHERE id = $1 AND user_id = $2 AND kind = 'totp' AND confirmed_at IS NOT NULL \
       AND (totp_last_step IS NULL OR totp_last_step < $3)";
const LIST: &str = "SELECT id, kind, name, created_at, last_used_at FROM mfa_factors \
     WHERE user_id = $1 AND confirmed_at IS NOT NULL ORDER BY created_at, id";
const COUNT_CONFIRMED: &str =
    "SELECT count(*) FROM mfa_factors WHERE user_id = $1 AND confirmed_at IS NOT NULL";
const DELETE: &str = "DELETE FROM mfa_factors WHERE id = $1 AND user_id = $2 \
     RETURNING kind, confirmed_at IS NOT NULL";
const INSERT_PASSKEY: &str = "INSERT INTO mfa_factors \
       (user_id, kind, name, confirmed_at, credential_id, passkey) \
     VALUES ($1, 'passkey', $2, now(), $3, $4) \
     ON CONFLICT (credential_id) DO NOTHING RETURNING id";
const PASSKEYS: &str = "SELECT id, passkey FROM mfa_factors \
     WHERE user_id = $1 AND kind = 'passkey' ORDER BY created_at, id";
const PASSKEY_BY_CREDENTIAL: &str =
    "SELECT id, user_id, passkey FROM mfa_factors WHERE credential_id = $1 AND kind = 'passkey'";
const UPDATE_PASSKEY: &str =
    "UPDATE mfa_factors SET passkey = $2, last_used_at = now() WHERE id = $1";
const DELETE_RECOVERY_CODES: &str = "DELETE FROM mfa_recovery_codes WHERE user_id = $1";
const INSERT_RECOVERY_CODES: &str = "INSERT INTO mfa_recovery_codes (user_id, code_hash) \
     SELECT $1, unnest($2::bytea[])";
const USE_RECOVERY_CODE: &str = "UPDATE mfa_recovery_codes SET used_at = now() \
     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL";
const INSERT_CHALLENGE: &str = "INSERT INTO mfa_challenges \
       (token_hash, user_id, transport, user_agent, device_label, device_name, ip, \
        password_hash, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9::text::interval)";
/// The live challenge of a token, locked: two verifications of one token take turns.
const LOCK_CHALLENGE: &str = "SELECT user_id, transport, user_agent, device_label, device_name, \
       ip, password_hash, failures FROM mfa_challenges \
     WHERE token_hash = $1 AND expires_at > now() FOR UPDATE";
const DELETE_CHALLENGE: &str = "DELETE FROM mfa_challenges WHERE token_hash = $1";
const FAIL_CHALLENGE: &str =
    "UPDATE mfa_challenges SET failures = failures + 1 WHERE token_hash = $1 RETURNING failures";
/// Wrong codes of the account in the current window (one that has passed counts none).
const ACCOUNT_FAILURES: &str = "SELECT CASE WHEN window_start > now() - $2::text::interval \
       THEN failures ELSE 0 END FROM mfa_failures WHERE user_id = $1";
/// One more wrong code of the account, in a new window when the old one has passed.
const RECORD_ACCOUNT_FAILURE: &str = "INSERT INTO mfa_failures (user_id, window_start, failures) \
     VALUES ($1, now(), 1) \
     ON CONFLICT (user_id) DO UPDATE SET \
       window_start = CASE WHEN mfa_failures.window_start > now() - $2::text::interval \
                      THEN mfa_failures.window_start ELSE now() END, \
       failures = CASE WHEN mfa_failures.window_start > now() - $2::text::interval \
                  THEN mfa_failures.failures + 1 ELSE 1 END \
     RETURNING failures";
const CLEAR_ACCOUNT_FAILURES: &str = "DELETE FROM mfa_failures WHERE user_id = $1";
const INSERT_CEREMONY: &str = "INSERT INTO webauthn_ceremonies (user_id, purpose, state, expires_at) \
     VALUES ($1, $2, $3, now() + $4::text::interval) RETURNING id";
/// A ceremony is used once: taking it deletes it.
const TAKE_CEREMONY: &str = "DELETE FROM webauthn_ceremonies \
     WHERE id = $1 AND purpose = $2 AND expires_at > now() RETURNING user_id, state";
/// What has expired, up to `$1` rows each: challenges, ceremonies, and TOTP factors never
/// confirmed (a day on).
const PURGE_CHALLENGES: &str = "DELETE FROM mfa_challenges WHERE token_hash IN ( \
       SELECT token_hash FROM mfa_challenges WHERE expires_at < now() LIMIT $1)";
const PURGE_CEREMONIES: &str = "DELETE FROM webauthn_ceremonies WHERE id IN ( \
       SELECT id FROM webauthn_ceremonies WHERE expires_at < now() LIMIT $1)";
const PURGE_PENDING_FACTORS: &str = "DELETE FROM mfa_factors WHERE id IN ( \
       SELECT id FROM mfa_factors \
       WHERE confirmed_at IS NULL AND created_at < now() - interval '1 day' LIMIT $1)";

/// A kind of factor: the `kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorKind {
    /// An authenticator app's codes (RFC 6238).
    Totp,
    /// A WebAuthn credential.
    Passkey,
}

impl FactorKind {
    /// The column's value, and the API's.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Passkey => "passkey",
        }
    }

    fn from_column(value: &str) -> Self {
        if value == "passkey" {
            Self::Passkey
        } else {
            Self::Totp
        }
    }
}

/// A confirmed factor, as listed to its user.
#[derive(Debug, Clone)]
pub struct FactorRow {
    /// Its id.
    pub id: Uuid,
    /// TOTP or passkey.
    pub kind: FactorKind,
    /// The user's name for it.
    pub name: String,
    /// When it was added.
    pub created_at: SystemTime,
    /// When it last proved its user, if ever.
    pub last_used_at: Option<SystemTime>,
}

/// A login waiting for a second factor: what its session will be opened with.
#[derive(Debug, Clone)]
pub struct ChallengeRow {
    /// Whose password checked out.
    pub user: UserId,
    /// `bearer` or `cookie`.
    pub transport: String,
    /// The login's user agent.
    pub user_agent: Option<String>,
    /// Its label.
    pub device_label: Option<String>,
    /// The device's name the login gave.
    pub device_name: Option<String>,
    /// The login's client IP.
    pub ip: Option<IpAddr>,
    /// The password hash the login verified.
    pub password_hash: String,
    /// Wrong codes given with this token so far.
    pub failures: i32,
}

/// A pending TOTP factor of `user`, its secret sealed.
pub async fn insert_totp(
    client: &impl GenericClient,
    id: Uuid,
    user: UserId,
    name: &str,
    sealed: &[u8],
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT_TOTP)).await?;
    bounded(client.execute(&statement, &[&id, &user, &name, &sealed])).await?;
    Ok(())
}

/// The sealed secret of `user`'s TOTP factor, and whether it is confirmed.
pub async fn totp_secret(
    client: &impl GenericClient,
    user: UserId,
    factor: Uuid,
) -> Result<Option<(Vec<u8>, bool)>, ServiceError> {
    let statement = bounded(client.prepare_cached(TOTP_SECRET)).await?;
    let row = bounded(client.query_opt(&statement, &[&factor, &user])).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Confirms the pending factor; false when it was not pending (confirmed meanwhile, or
/// gone).
pub async fn confirm_totp(
    client: &impl GenericClient,
    user: UserId,
    factor: Uuid,
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(CONFIRM_TOTP)).await?;
    Ok(bounded(client.execute(&statement, &[&factor, &user])).await? == 1)
}

/// Takes `step` for the confirmed factor; false when it, or a later one, was taken
/// already (a replayed code).
pub async fn use_totp_step(
    client: &impl GenericClient,
    user: UserId,
    factor: Uuid,
    step: u64,
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(USE_TOTP_STEP)).await?;
    let step = i64::try_from(step).unwrap_or(i64::MAX);
    Ok(bounded(client.execute(&statement, &[&factor, &user, &step])).await? == 1)
}

/// The user's confirmed factors, oldest first.
pub async fn list(
    client: &impl GenericClient,
    user: UserId,
) -> Result<Vec<FactorRow>, ServiceError> {
    let statement = bounded(client.prepare_cached(LIST)).await?;
    let rows = bounded(client.query(&statement, &[&user])).await?;
    Ok(rows
        .iter()
        .map(|row| FactorRow {
            id: row.get(0),
            kind: FactorKind::from_column(row.get(1)),
            name: row.get(2),
            created_at: row.get(3),
            last_used_at: row.get(4),
        })
        .collect())
}

/// How many confirmed factors the user has.
pub async fn count_confirmed(
    client: &impl GenericClient,
    user: UserId,
) -> Result<u64, ServiceError> {
    let statement = bounded(client.prepare_cached(COUNT_CONFIRMED)).await?;
    let count: i64 = bounded(client.query_one(&statement, &[&user]))
        .await?
        .get(0);
    Ok(count.unsigned_abs())
}

/// Deletes the user's factor; its kind and whether it was confirmed, or `None` when the
/// user has no such factor.
pub async fn delete(
    client: &impl GenericClient,
    user: UserId,
    factor: Uuid,
) -> Result<Option<(FactorKind, bool)>, ServiceError> {
    let statement = bounded(client.prepare_cached(DELETE)).await?;
    let row = bounded(client.query_opt(&statement, &[&factor, &user])).await?;
    Ok(row.map(|row| (FactorKind::from_column(row.get(0)), row.get(1))))
}

/// A registered passkey of `user`; `None` when its credential is registered already (to
/// anyone).
pub async fn insert_passkey(
    client: &impl GenericClient,
    user: UserId,
    name: &str,
    credential_id: &[u8],
    passkey: &serde_json::Value,
) -> Result<Option<Uuid>, ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT_PASSKEY)).await?;
    let row =
        bounded(client.query_opt(&statement, &[&user, &name, &credential_id, passkey])).await?;
    Ok(row.map(|row| row.get(0)))
}

/// The user's passkeys: ids and stored records.
pub async fn passkeys(
    client: &impl GenericClient,
    user: UserId,
) -> Result<Vec<(Uuid, serde_json::Value)>, ServiceError> {
    let statement = bounded(client.prepare_cached(PASSKEYS)).await?;
    let rows = bounded(client.query(&statement, &[&user])).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The passkey of a credential id: its factor id, user and record.
pub async fn passkey_by_credential(
    client: &impl GenericClient,
    credential_id: &[u8],
) -> Result<Option<(Uuid, UserId, serde_json::Value)>, ServiceError> {
    let statement = bounded(client.prepare_cached(PASSKEY_BY_CREDENTIAL)).await?;
    let row = bounded(client.query_opt(&statement, &[&credential_id])).await?;
    Ok(row.map(|row| (row.get(0), row.get(1), row.get(2))))
}

/// Stores a passkey's record after a use (its counter and flags move on).
pub async fn update_passkey(
    client: &impl GenericClient,
    factor: Uuid,
    passkey: &serde_json::Value,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(UPDATE_PASSKEY)).await?;
    bounded(client.execute(&statement, &[&factor, passkey])).await?;
    Ok(())
}

/// Replaces the user's recovery codes with `hashes`.
pub async fn replace_recovery_codes(
    client: &impl GenericClient,
    user: UserId,
    hashes: &[Vec<u8>],
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(DELETE_RECOVERY_CODES)).await?;
    bounded(client.execute(&statement, &[&user])).await?;
    if !hashes.is_empty() {
        let statement = bounded(client.prepare_cached(INSERT_RECOVERY_CODES)).await?;
        bounded(client.execute(&statement, &[&user, &hashes])).await?;
    }
    Ok(())
}

/// Uses the user's unused recovery code of `hash`; false when there is none.
pub async fn use_recovery_code(
    client: &impl GenericClient,
    user: UserId,
    hash: &[u8],
) -> Result<bool, ServiceError> {
    let statement = bounded(client.prepare_cached(USE_RECOVERY_CODE)).await?;
    Ok(bounded(client.execute(&statement, &[&user, &hash])).await? == 1)
}

/// A new login waiting for a second factor, for `ttl`.
pub async fn insert_challenge(
    client: &impl GenericClient,
    token_hash: &[u8],
    challenge: &ChallengeRow,
    ttl: Duration,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT_CHALLENGE)).await?;
    bounded(client.execute(
        &statement,
        &[
            &token_hash,
            &challenge.user,
            &challenge.transport,
            &challenge.user_agent,
            &challenge.device_label,
            &challenge.device_name,
            &challenge.ip,
            &challenge.password_hash,
            &interval(ttl),
        ],
    ))
    .await?;
    Ok(())
}

/// The live challenge of `token_hash`, locked until the transaction ends.
pub async fn lock_challenge(
    client: &impl GenericClient,
    token_hash: &[u8],
) -> Result<Option<ChallengeRow>, ServiceError> {
    let statement = bounded(client.prepare_cached(LOCK_CHALLENGE)).await?;
    let row = bounded(client.query_opt(&statement, &[&token_hash])).await?;
    Ok(row.map(|row| ChallengeRow {
        user: row.get(0),
        transport: row.get(1),
        user_agent: row.get(2),
        device_label: row.get(3),
        device_name: row.get(4),
        ip: row.get(5),
        password_hash: row.get(6),
        failures: row.get(7),
    }))
}

/// Ends a challenge: used, or failed too often.
pub async fn delete_challenge(
    client: &impl GenericClient,
    token_hash: &[u8],
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(DELETE_CHALLENGE)).await?;
    bounded(client.execute(&statement, &[&token_hash])).await?;
    Ok(())
}

/// Counts a wrong code against the challenge; returns its failures so far.
pub async fn fail_challenge(
    client: &impl GenericClient,
    token_hash: &[u8],
) -> Result<u32, ServiceError> {
    let statement = bounded(client.prepare_cached(FAIL_CHALLENGE)).await?;
    let row = bounded(client.query_opt(&statement, &[&token_hash])).await?;
    Ok(row.map_or(0, |row| row.get::<_, i32>(0).unsigned_abs()))
}

/// Wrong codes of the account within the last `window`.
pub async fn account_failures(
    client: &impl GenericClient,
    user: UserId,
    window: Duration,
) -> Result<u32, ServiceError> {
    let statement = bounded(client.prepare_cached(ACCOUNT_FAILURES)).await?;
    let row = bounded(client.query_opt(&statement, &[&user, &interval(window)])).await?;
    Ok(row.map_or(0, |row| row.get::<_, i32>(0).unsigned_abs()))
}

/// One more wrong code of the account; returns its failures in the window.
pub async fn record_account_failure(
    client: &impl GenericClient,
    user: UserId,
    window: Duration,
) -> Result<u32, ServiceError> {
    let statement = bounded(client.prepare_cached(RECORD_ACCOUNT_FAILURE)).await?;
    let row = bounded(client.query_one(&statement, &[&user, &interval(window)])).await?;
    Ok(row.get::<_, i32>(0).unsigned_abs())
}

/// Forgets the account's wrong codes (after a right one).
pub async fn clear_account_failures(
    client: &impl GenericClient,
    user: UserId,
) -> Result<(), ServiceError> {
    let statement = bounded(client.prepare_cached(CLEAR_ACCOUNT_FAILURES)).await?;
    bounded(client.execute(&statement, &[&user])).await?;
    Ok(())
}

/// What a passkey ceremony is for: the `purpose` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyPurpose {
    /// Registering a passkey.
    Registration,
    /// Signing in or stepping up with one.
    Authentication,
}

impl CeremonyPurpose {
    fn as_str(self) -> &'static str {
        match self {
            Self::Registration => "registration",
            Self::Authentication => "authentication",
        }
    }
}

/// Keeps the server's half of a ceremony for `ttl`; returns its id.
pub async fn insert_ceremony(
    client: &impl GenericClient,
    user: Option<UserId>,
    purpose: CeremonyPurpose,
    state: &serde_json::Value,
    ttl: Duration,
) -> Result<Uuid, ServiceError> {
    let statement = bounded(client.prepare_cached(INSERT_CEREMONY)).await?;
    let row = bounded(client.query_one(
        &statement,
        &[&user, &purpose.as_str(), state, &interval(ttl)],
    ))
    .await?;
    Ok(row.get(0))
}

/// Takes (and so ends) the live ceremony `id` of `purpose`: its user and state.
pub async fn take_ceremony(
    client: &impl GenericClient,
    id: Uuid,
    purpose: CeremonyPurpose,
) -> Result<Option<(Option<UserId>, serde_json::Value)>, ServiceError> {
    let statement = bounded(client.prepare_cached(TAKE_CEREMONY)).await?;
    let row = bounded(client.query_opt(&statement, &[&id, &purpose.as_str()])).await?;
    Ok(row.map(|row| (row.get(0), row.get(1))))
}

/// Deletes up to `batch` each of expired challenges and ceremonies, and of TOTP factors
/// left unconfirmed for a day; returns how many rows went, and whether any statement
/// deleted a whole batch (so there may be more).
pub async fn purge_batch(
    client: &impl GenericClient,
    batch: i64,
) -> Result<(u64, bool), ServiceError> {
    let (mut total, mut full) = (0, false);
    for sql in [PURGE_CHALLENGES, PURGE_CEREMONIES, PURGE_PENDING_FACTORS] {
        let statement = bounded(client.prepare_cached(sql)).await?;
        let deleted = bounded(client.execute(&statement, &[&batch])).await?;
        total += deleted;
        full |= deleted >= batch.unsigned_abs();
    }
    Ok((total, full))
}
