//! Second factors: enrol and confirm a TOTP app, register passkeys, list and remove
//! factors, recovery codes; the login that waits for a factor (`mfa_token`) and its
//! verification; signing in with a passkey alone; and step-up, a new proof on a signed-in
//! session. Every new session goes through [`SignIn::open`] with the assurance reached.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{GenericClient, Pool, Transaction};
use secrecy::SecretString;
use uuid::Uuid;
use webauthn_rs::prelude::{Passkey, PublicKeyCredential, RegisterPublicKeyCredential};

use super::mail::AccountMail;
use super::{Refusal, Revocations, SignIn, TokenPair, Tokens};
use crate::account_token::AccountToken;
use crate::assurance::{self, Assurance, AuthContext};
use crate::config::FactorSettings;
use crate::error::ServiceError;
use crate::factors::passkeys::{self, Ceremony, RelyingParty};
use crate::factors::recovery_codes;
use crate::factors::totp::{Enrolment, TotpSecret};
use crate::ids::{SessionId, UserId};
use crate::mail::compose::FactorChange;
use crate::passwords::{PasswordHasher, Verified};
use crate::refresh_token::RefreshKey;
use crate::store::events::{self, Event, Subject};
use crate::store::factors::{self as store, CeremonyPurpose, ChallengeRow, FactorKind, FactorRow};
use crate::store::sessions::{self, BulkScope, Device, RevokeReason};
use crate::store::users;

/// The window of the per-account limit of wrong codes.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Longest code accepted as input at all (a TOTP code is 6 digits, a recovery code 11
/// characters); anything longer is wrong without being looked at.
const MAX_CODE_CHARS: usize = 64;

/// A login whose password checked out, waiting for a second factor.
#[derive(Debug, Clone)]
pub struct SecondFactorNeeded {
    /// The single-use token that continues it (`POST /auth/mfa/verify`).
    pub mfa_token: String,
    /// The factors it may continue with.
    pub factors: Vec<(Uuid, FactorKind)>,
}

/// How a login ended when its password checked out.
#[derive(Debug)]
pub enum LoginResult {
    /// A session was opened.
    SignedIn(TokenPair),
    /// The account has a factor: no session until it is proved.
    SecondFactorNeeded(SecondFactorNeeded),
}

/// A second factor as given to finish a login or to step up.
pub enum Code {
    /// A TOTP code of one of the user's factors.
    Totp {
        /// The factor.
        factor: Uuid,
        /// The six digits.
        code: String,
    },
    /// One of the user's recovery codes.
    Recovery(String),
}

/// A proof of who the user is, on a signed-in session (step-up).
pub enum Proof {
    /// The account's password.
    Password(SecretString),
    /// A second factor's code.
    Code(Code),
    /// A passkey's answer to a ceremony's challenge.
    Passkey {
        /// The ceremony (`challenge_id`).
        ceremony: Uuid,
        /// The browser's answer.
        credential: Box<PublicKeyCredential>,
    },
}

/// A new session's sign-in, finished: its tokens, and how the login asked to hold them.
#[derive(Debug)]
pub struct Finished {
    /// The tokens.
    pub pair: TokenPair,
    /// `bearer` or `cookie`, as the login that began it asked.
    pub transport: String,
}

/// A fresh access token for the same session (step-up).
#[derive(Debug, Clone)]
pub struct SteppedUp {
    /// The token.
    pub access_token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// What it says.
    pub assurance: Assurance,
}

/// Second factors, and the sign-ins and step-ups they take part in.
#[derive(Clone)]
pub struct Factors {
    pool: Pool,
    key: Arc<RefreshKey>,
    rp: Option<RelyingParty>,
    passwords: PasswordHasher,
    sign_in: SignIn,
    tokens: Tokens,
    revocations: Revocations,
    mail: AccountMail,
    settings: Arc<FactorSettings>,
    require_verified_email: bool,
}

/// What [`Factors`] is built from.
pub struct FactorParts {
    /// The database.
    pub pool: Pool,
    /// Seals TOTP secrets, hashes codes and `mfa_token`s.
    pub key: Arc<RefreshKey>,
    /// The WebAuthn relying party; `None` when `PUBLIC_URL` names no domain (passkeys
    /// are off).
    pub rp: Option<RelyingParty>,
    /// Verifies passwords (step-up).
    pub passwords: PasswordHasher,
    /// Opens sessions.
    pub sign_in: SignIn,
    /// Signs step-up access tokens.
    pub tokens: Tokens,
    /// Forgets revoked sessions.
    pub revocations: Revocations,
    /// Queues the owner's mail.
    pub mail: AccountMail,
    /// The settings.
    pub settings: FactorSettings,
    /// `REQUIRE_VERIFIED_EMAIL`, for passkey sign-ins.
    pub require_verified_email: bool,
}

impl Factors {
    /// Second factors from `parts`.
    pub fn new(parts: FactorParts) -> Self {
        Self {
            pool: parts.pool,
            key: parts.key,
            rp: parts.rp,
            passwords: parts.passwords,
            sign_in: parts.sign_in,
            tokens: parts.tokens,
            revocations: parts.revocations,
            mail: parts.mail,
            settings: Arc::new(parts.settings),
            require_verified_email: parts.require_verified_email,
        }
    }

    /// Whether a privileged action (password change, `logout-all`, adding or removing a
    /// factor, new recovery codes) may go on for `user` with the access token `context`:
    /// a proof within `PRIVILEGED_AUTH_MAX_AGE_SECONDS`, and `aal2` when the account has a
    /// factor ([`assurance::privileged`]). The refusal is the layer's, with its RFC 9470
    /// challenge.
    pub async fn privileged(
        &self,
        user: UserId,
        context: &AuthContext,
    ) -> Result<(), ServiceError> {
        let has_factor = store::count_confirmed(&self.pool.get().await?, user).await? > 0;
        assurance::privileged(has_factor, self.settings.privileged_max_age)
            .check(context)
            .map_err(ServiceError::InsufficientAuthentication)
    }

    /// Whether `user` has a confirmed factor.
    pub async fn has_factor(&self, user: UserId) -> Result<bool, ServiceError> {
        Ok(store::count_confirmed(&self.pool.get().await?, user).await? > 0)
    }

    // ----- Enrolment and management -----

    /// A pending TOTP factor for `user`: its id and what the app needs. It counts once a
    /// code confirms it.
    pub async fn enrol_totp(&self, user: UserId) -> Result<(Uuid, Enrolment), ServiceError> {
        let client = self.pool.get().await?;
        let (email, _) = users::profile(&client, user)
            .await?
            .ok_or(ServiceError::SessionEnded)?;
        let secret = TotpSecret::generate();
        let id = Uuid::new_v4();
        let sealed = secret.seal(self.key.factor_sealing_key(), id.as_bytes())?;
        store::insert_totp(&client, id, user, "Authenticator app", &sealed).await?;
        let enrolment = secret.enrolment(&self.settings.issuer, &email)?;
        tracing::info!(user_id = %user, factor_id = %id, "TOTP factor pending");
        Ok((id, enrolment))
    }

    /// Confirms `user`'s pending TOTP `factor` with a `code` from the app; returns new
    /// recovery codes when it is the account's first factor, none otherwise.
    pub async fn confirm_totp(
        &self,
        user: UserId,
        session: SessionId,
        factor: Uuid,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        // Serialises the account's factor changes (the first factor's codes are made once).
        users::lock_hash(&transaction, user).await?;
        let Some((sealed, confirmed)) = store::totp_secret(&transaction, user, factor).await?
        else {
            return Err(ServiceError::FactorNotFound);
        };
        self.check_account_limit(&transaction, user).await?;
        // A confirmed factor is confirmed once: its codes are for signing in.
        let matches = !confirmed && {
            let secret =
                TotpSecret::open(&sealed, self.key.factor_sealing_key(), factor.as_bytes())?;
            secret.matching_step(code, SystemTime::now()).is_some()
        };
        if !matches {
            drop(transaction);
            return Err(self.wrong_code(user, None, ip).await);
        }
        let had_factor = store::count_confirmed(&transaction, user).await? > 0;
        if !store::confirm_totp(&transaction, user, factor).await? {
            return Err(ServiceError::InvalidCode);
        }
        let codes = if had_factor {
            Vec::new()
        } else {
            let (shown, stored) = recovery_codes::generate(&self.key);
            store::replace_recovery_codes(&transaction, user, &stored).await?;
            shown
        };
        let kind = FactorKind::Totp;
        self.factor_added(&transaction, user, session, kind, ip)
            .await?;
        transaction.commit().await?;
        tracing::info!(user_id = %user, factor_id = %factor, "TOTP factor confirmed");
        Ok(codes)
    }

    /// The user's confirmed factors.
    pub async fn list(&self, user: UserId) -> Result<Vec<FactorRow>, ServiceError> {
        store::list(&self.pool.get().await?, user).await
    }

    /// Removes `user`'s `factor`. When it was the last, the recovery codes go with it and
    /// every other session of the user is revoked: they may have been opened by whoever
    /// made the account single-factor again.
    pub async fn remove(
        &self,
        user: UserId,
        session: SessionId,
        factor: Uuid,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        users::lock_hash(&transaction, user).await?;
        let Some((kind, confirmed)) = store::delete(&transaction, user, factor).await? else {
            return Err(ServiceError::FactorNotFound);
        };
        if !confirmed {
            transaction.commit().await?;
            return Ok(());
        }
        let last = store::count_confirmed(&transaction, user).await? == 0;
        let reason = RevokeReason::LastFactorRemoved;
        let scope = BulkScope::User {
            user,
            except: Some(session),
        };
        let revoked = if last {
            store::replace_recovery_codes(&transaction, user, &[]).await?;
            Some(sessions::revoke_before(&transaction, scope, reason).await?)
        } else {
            None
        };
        let revoked_sessions = revoked.map_or(0, |bulk| bulk.count);
        let subject = Subject {
            user: Some(user),
            session: Some(session),
            ip,
        };
        let event = Event::MfaFactorRemoved {
            kind: kind.as_str(),
            revoked_sessions,
        };
        events::record(&transaction, event, subject).await?;
        self.tell_owner(&transaction, user, FactorChange::Removed(kind_words(kind)))
            .await?;
        transaction.commit().await?;
        if let Some(bulk) = revoked {
            self.revocations.committed_bulk(scope, bulk, reason);
        }
        tracing::info!(user_id = %user, factor_id = %factor, last, revoked = revoked_sessions, "factor removed");
        Ok(())
    }

    /// New recovery codes for `user`, whose old ones stop working. Only for an account
    /// with a factor.
    pub async fn regenerate_recovery_codes(
        &self,
        user: UserId,
        session: SessionId,
        ip: Option<IpAddr>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        users::lock_hash(&transaction, user).await?;
        if store::count_confirmed(&transaction, user).await? == 0 {
            return Err(ServiceError::NoFactor);
        }
        let (shown, stored) = recovery_codes::generate(&self.key);
        store::replace_recovery_codes(&transaction, user, &stored).await?;
        let subject = Subject {
            user: Some(user),
            session: Some(session),
            ip,
        };
        events::record(&transaction, Event::RecoveryCodesRegenerated, subject).await?;
        self.tell_owner(&transaction, user, FactorChange::RecoveryCodesRegenerated)
            .await?;
        transaction.commit().await?;
        tracing::info!(user_id = %user, "recovery codes regenerated");
        Ok(shown)
    }

    // ----- Passkeys -----

    /// Begins registering a passkey for `user`: the ceremony's id and the options for
    /// `navigator.credentials.create`.
    pub async fn passkey_registration_options(
        &self,
        user: UserId,
    ) -> Result<(Uuid, serde_json::Value), ServiceError> {
        let client = self.pool.get().await?;
        let (email, _) = users::profile(&client, user)
            .await?
            .ok_or(ServiceError::SessionEnded)?;
        let existing = store::passkeys(&client, user)
            .await?
            .into_iter()
            .filter_map(|(_, record)| serde_json::from_value::<Passkey>(record).ok())
            .map(|passkey| passkey.cred_id().clone())
            .collect();
        let (options, ceremony) = self
            .rp()?
            .registration_options(user, &email, existing)
            .map_err(|e| ServiceError::internal("starting a passkey registration", e))?;
        let id = self
            .keep_ceremony(
                &client,
                Some(user),
                CeremonyPurpose::Registration,
                &ceremony,
            )
            .await?;
        Ok((id, options))
    }

    /// Finishes registering a passkey for `user` with the browser's answer to ceremony
    /// `id`; returns the new factor's id.
    pub async fn register_passkey(
        &self,
        user: UserId,
        session: SessionId,
        id: Uuid,
        name: Option<String>,
        credential: &RegisterPublicKeyCredential,
        ip: Option<IpAddr>,
    ) -> Result<Uuid, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        users::lock_hash(&transaction, user).await?;
        let Some((Some(owner), state)) =
            store::take_ceremony(&transaction, id, CeremonyPurpose::Registration).await?
        else {
            return Err(ServiceError::InvalidChallenge);
        };
        if owner != user {
            return Err(ServiceError::InvalidChallenge);
        }
        let Ok(Ceremony::Registration(state)) = serde_json::from_value::<Ceremony>(state) else {
            return Err(ServiceError::InvalidChallenge);
        };
        let passkey = self.rp()?.finish_registration(credential, &state).map_err(|e| {
            tracing::info!(user_id = %user, error = %crate::error::chain(&e), "passkey registration refused");
            ServiceError::InvalidCredential
        })?;
        let record = serde_json::to_value(&passkey)
            .map_err(|e| ServiceError::internal("storing a passkey", e))?;
        let name = name.unwrap_or_else(|| "Passkey".to_owned());
        let Some(factor) = store::insert_passkey(
            &transaction,
            user,
            &name,
            passkey.cred_id().as_ref(),
            &record,
        )
        .await?
        else {
            return Err(ServiceError::InvalidCredential);
        };
        self.factor_added(&transaction, user, session, FactorKind::Passkey, ip)
            .await?;
        transaction.commit().await?;
        tracing::info!(user_id = %user, factor_id = %factor, "passkey registered");
        Ok(factor)
    }

    /// Begins a passkey sign-in (or step-up): with the passkeys of the account of `email`
    /// when it has any, else with whatever passkey the device holds for this site (an
    /// unknown address gets the same, so the answer does not tell whether it exists).
    pub async fn passkey_authentication_options(
        &self,
        email: Option<&str>,
    ) -> Result<(Uuid, serde_json::Value), ServiceError> {
        let client = self.pool.get().await?;
        let mut user = None;
        let mut known = Vec::new();
        if let Some(email) = email
            && let Some(account) = users::by_email(&client, email).await?
        {
            known = store::passkeys(&client, account.id)
                .await?
                .into_iter()
                .filter_map(|(_, record)| serde_json::from_value::<Passkey>(record).ok())
                .collect();
            user = (!known.is_empty()).then_some(account.id);
        }
        let (options, ceremony) = self
            .rp()?
            .authentication_options(&known)
            .map_err(|e| ServiceError::internal("starting a passkey sign-in", e))?;
        let id = self
            .keep_ceremony(&client, user, CeremonyPurpose::Authentication, &ceremony)
            .await?;
        Ok((id, options))
    }

    /// Signs in with a passkey: alone (user verification makes it two factors), or to
    /// finish the login of `mfa_token`. `device` and `transport` are the request's; a
    /// login's own are used when finishing one. `same_site` says whether the request
    /// comes from `PUBLIC_URL`'s pages, which a login in cookie transport needs.
    pub async fn sign_in_with_passkey(
        &self,
        ceremony: Uuid,
        credential: &PublicKeyCredential,
        mfa_token: Option<&str>,
        device: Device,
        (transport, same_site): (&str, bool),
    ) -> Result<Finished, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let challenge = match mfa_token {
            Some(token) => Some(self.lock_challenge(&transaction, token, same_site).await?),
            None => None,
        };
        let (user, assurance) = self
            .verify_passkey(&transaction, ceremony, credential, None)
            .await?;
        if let Some((hash, challenge)) = challenge {
            if challenge.user != user {
                return Err(ServiceError::InvalidCredential);
            }
            return self
                .finish_challenge(transaction, &hash, challenge, assurance)
                .await;
        }
        if self.require_verified_email {
            let verified = users::profile(&transaction, user)
                .await?
                .is_some_and(|(_, verified)| verified);
            if !verified {
                return Err(ServiceError::EmailNotVerified);
            }
        }
        let pair = self
            .sign_in
            .open(transaction, user, device, &assurance)
            .await?;
        Ok(Finished {
            pair,
            transport: transport.to_owned(),
        })
    }

    // ----- The login that waits for a factor -----

    /// In the login's `transaction`, after its password checked out: `None` when `user`
    /// has no factor (the login opens its session), else a new `mfa_token` for the login
    /// (its `device`, its `transport`, the `password_hash` it verified).
    pub async fn challenge_login(
        &self,
        transaction: &Transaction<'_>,
        user: UserId,
        device: &Device,
        transport: &str,
        password_hash: &str,
    ) -> Result<Option<SecondFactorNeeded>, ServiceError> {
        let factors = store::list(transaction, user).await?;
        if factors.is_empty() {
            return Ok(None);
        }
        let token = AccountToken::generate();
        let row = ChallengeRow {
            user,
            transport: transport.to_owned(),
            user_agent: device.user_agent.clone(),
            device_label: device.label.clone(),
            device_name: device.name.clone(),
            ip: device.ip,
            password_hash: password_hash.to_owned(),
            failures: 0,
        };
        store::insert_challenge(
            transaction,
            &token.hash(&self.key),
            &row,
            self.settings.challenge_ttl,
        )
        .await?;
        tracing::info!(user_id = %user, "password accepted; a second factor is needed");
        Ok(Some(SecondFactorNeeded {
            mfa_token: token.expose(),
            factors: factors.iter().map(|f| (f.id, f.kind)).collect(),
        }))
    }

    /// Finishes the login of `mfa_token` with `code`: opens its session at `aal2`. A wrong
    /// code counts against the token (which is void after `MFA_MAX_FAILURES_PER_TOKEN`)
    /// and the account (`MFA_MAX_FAILURES_PER_ACCOUNT` per 15 minutes, then 429).
    /// `same_site` says whether the request comes from `PUBLIC_URL`'s pages, which a
    /// login in cookie transport needs.
    pub async fn verify_login(
        &self,
        mfa_token: &str,
        code: Code,
        same_site: bool,
    ) -> Result<Finished, ServiceError> {
        let mut client = self.pool.get().await?;
        let transaction = client.transaction().await?;
        let (hash, challenge) = self
            .lock_challenge(&transaction, mfa_token, same_site)
            .await?;
        let user = challenge.user;
        self.check_account_limit(&transaction, user).await?;
        let recovery = matches!(code, Code::Recovery(_));
        if !self.check_code(&transaction, user, code).await? {
            let ip = challenge.ip;
            let failures = store::fail_challenge(&transaction, &hash).await?;
            if failures >= self.settings.max_failures_per_token {
                store::delete_challenge(&transaction, &hash).await?;
                tracing::info!(user_id = %user, "mfa_token voided after too many wrong codes");
            }
            transaction.commit().await?;
            return Err(self.wrong_code(user, None, ip).await);
        }
        if recovery {
            self.recovery_code_used(&transaction, user, None, challenge.ip)
                .await?;
        }
        self.finish_challenge(
            transaction,
            &hash,
            challenge,
            Assurance::password_and_code(),
        )
        .await
    }

    // ----- Step-up -----

    /// A new proof of who the user of `session` is: records it on the session (with the
    /// client that gave it) and returns a new access token saying so. The refresh token
    /// is left as it is.
    pub async fn step_up(
        &self,
        user: UserId,
        session: SessionId,
        proof: Proof,
        device: Device,
    ) -> Result<SteppedUp, Refusal> {
        let ip = device.ip;
        let assurance = match proof {
            Proof::Password(password) => {
                let stored = users::by_id(&self.pool.get().await?, user)
                    .await?
                    .map(|(_, hash)| hash);
                if !matches!(
                    self.passwords.verify(password, stored).await,
                    Verified::Match { .. }
                ) {
                    return Err(Refusal {
                        error: ServiceError::WrongCurrentPassword,
                        counts: true,
                    });
                }
                Assurance::password()
            }
            Proof::Code(code) => {
                let mut client = self.pool.get().await?;
                let transaction = client.transaction().await?;
                self.check_account_limit(&transaction, user).await?;
                let recovery = matches!(code, Code::Recovery(_));
                if !self.check_code(&transaction, user, code).await? {
                    drop(transaction);
                    return Err(self.wrong_code(user, Some(session), ip).await.into());
                }
                if recovery {
                    self.recovery_code_used(&transaction, user, Some(session), ip)
                        .await?;
                }
                transaction.commit().await?;
                Assurance::code()
            }
            Proof::Passkey {
                ceremony,
                credential,
            } => {
                let mut client = self.pool.get().await?;
                let transaction = client.transaction().await?;
                let (_, assurance) = self
                    .verify_passkey(&transaction, ceremony, &credential, Some(user))
                    .await?;
                transaction.commit().await?;
                assurance
            }
        };
        let client = self.pool.get().await?;
        if !sessions::record_proof(&client, user, session, &assurance, &device).await? {
            return Err(ServiceError::SessionEnded.into());
        }
        let subject = Subject {
            user: Some(user),
            session: Some(session),
            ip,
        };
        let event = Event::SteppedUp {
            aal: assurance.aal.as_str(),
        };
        events::record(&client, event, subject).await?;
        let access_token = self.tokens.access_token(user, session, &assurance)?;
        tracing::info!(user_id = %user, session_id = %session, aal = %assurance.aal, "stepped up");
        Ok(SteppedUp {
            access_token,
            expires_in: self.tokens.access_ttl_secs(),
            assurance,
        })
    }

    // ----- Shared steps -----

    /// The relying party, or the refusal when passkeys are off.
    fn rp(&self) -> Result<&RelyingParty, ServiceError> {
        self.rp.as_ref().ok_or(ServiceError::PasskeysUnavailable)
    }

    /// The live challenge of `mfa_token` (locked) and its stored hash. A login in cookie
    /// transport continued from another site is refused before anything is used up.
    async fn lock_challenge(
        &self,
        transaction: &Transaction<'_>,
        mfa_token: &str,
        same_site: bool,
    ) -> Result<(Vec<u8>, ChallengeRow), ServiceError> {
        let hash = AccountToken::parse(mfa_token)
            .map(|token| token.hash(&self.key))
            .ok_or(ServiceError::InvalidMfaToken)?;
        let challenge = store::lock_challenge(transaction, &hash)
            .await?
            .ok_or(ServiceError::InvalidMfaToken)?;
        if challenge.transport == "cookie" && !same_site {
            return Err(ServiceError::CrossSiteSignIn);
        }
        Ok((hash, challenge))
    }

    /// Ends the challenge and opens its session at `assurance`, unless the password
    /// changed since the login (then the token is void).
    async fn finish_challenge(
        &self,
        transaction: Transaction<'_>,
        hash: &[u8],
        challenge: ChallengeRow,
        assurance: Assurance,
    ) -> Result<Finished, ServiceError> {
        let user = challenge.user;
        store::delete_challenge(&transaction, hash).await?;
        if users::lock_hash(&transaction, user).await?.as_deref()
            != Some(challenge.password_hash.as_str())
        {
            transaction.commit().await?;
            tracing::info!(user_id = %user, "mfa_token of a password changed since: void");
            return Err(ServiceError::InvalidMfaToken);
        }
        store::clear_account_failures(&transaction, user).await?;
        let device = Device {
            user_agent: challenge.user_agent,
            label: challenge.device_label,
            name: challenge.device_name,
            ip: challenge.ip,
        };
        let pair = self
            .sign_in
            .open(transaction, user, device, &assurance)
            .await?;
        Ok(Finished {
            pair,
            transport: challenge.transport,
        })
    }

    /// Whether `code` proves `user`: a TOTP code of a confirmed factor of theirs, for a
    /// time step after the last one accepted (each code works once), or an unused
    /// recovery code (used now).
    async fn check_code(
        &self,
        client: &impl GenericClient,
        user: UserId,
        code: Code,
    ) -> Result<bool, ServiceError> {
        match code {
            Code::Totp { factor, code } => {
                if code.len() > MAX_CODE_CHARS {
                    return Ok(false);
                }
                let Some((sealed, true)) = store::totp_secret(client, user, factor).await? else {
                    return Ok(false);
                };
                let secret =
                    TotpSecret::open(&sealed, self.key.factor_sealing_key(), factor.as_bytes())?;
                let Some(step) = secret.matching_step(code.trim(), SystemTime::now()) else {
                    return Ok(false);
                };
                let fresh = store::use_totp_step(client, user, factor, step).await?;
                if !fresh {
                    tracing::warn!(user_id = %user, factor_id = %factor, "a TOTP code was replayed");
                }
                Ok(fresh)
            }
            Code::Recovery(code) => {
                let Some(hash) = recovery_codes::stored_hash(&self.key, &code) else {
                    return Ok(false);
                };
                store::use_recovery_code(client, user, &hash).await
            }
        }
    }

    /// Verifies a passkey's answer to ceremony `id` (of `expected` user, when stepping
    /// up); moves its stored counter on. Returns its user and the assurance it gives.
    async fn verify_passkey(
        &self,
        transaction: &Transaction<'_>,
        id: Uuid,
        credential: &PublicKeyCredential,
        expected: Option<UserId>,
    ) -> Result<(UserId, Assurance), ServiceError> {
        let (owner, state) = store::take_ceremony(transaction, id, CeremonyPurpose::Authentication)
            .await?
            .ok_or(ServiceError::InvalidChallenge)?;
        let ceremony: Ceremony =
            serde_json::from_value(state).map_err(|_| ServiceError::InvalidChallenge)?;
        let (factor, user, record) =
            store::passkey_by_credential(transaction, credential.get_credential_id())
                .await?
                .ok_or(ServiceError::InvalidCredential)?;
        let handle = passkeys::user_handle(credential);
        if owner.is_some_and(|owner| owner != user)
            || expected.is_some_and(|expected| expected != user)
            || handle.is_some_and(|handle| handle != user)
        {
            return Err(ServiceError::InvalidCredential);
        }
        let mut passkey: Passkey = serde_json::from_value(record)
            .map_err(|e| ServiceError::internal("reading a stored passkey", e))?;
        let result = self
            .rp()?
            .finish_authentication(credential, ceremony, &passkey)
            .map_err(|e| {
                tracing::info!(user_id = %user, error = %crate::error::chain(&e), "passkey answer refused");
                ServiceError::InvalidCredential
            })?;
        if !result.user_verified() {
            return Err(ServiceError::InvalidCredential);
        }
        passkey.update_credential(&result);
        let record = serde_json::to_value(&passkey)
            .map_err(|e| ServiceError::internal("storing a passkey", e))?;
        store::update_passkey(transaction, factor, &record).await?;
        Ok((user, Assurance::passkey(result.backup_eligible())))
    }

    /// Refuses with 429 when the account has had too many wrong codes lately.
    async fn check_account_limit(
        &self,
        client: &impl GenericClient,
        user: UserId,
    ) -> Result<(), ServiceError> {
        let failures = store::account_failures(client, user, FAILURE_WINDOW).await?;
        if failures >= self.settings.max_failures_per_account {
            tracing::warn!(user_id = %user, failures, "second-factor codes limited for the account");
            return Err(ServiceError::RateLimited(FAILURE_WINDOW));
        }
        Ok(())
    }

    /// Counts a wrong code against the account, records it, and returns the error to
    /// answer (`invalid_code`, or the database's failure).
    async fn wrong_code(
        &self,
        user: UserId,
        session: Option<SessionId>,
        ip: Option<IpAddr>,
    ) -> ServiceError {
        let recorded = async {
            let client = self.pool.get().await?;
            let failures = store::record_account_failure(&client, user, FAILURE_WINDOW).await?;
            let subject = Subject {
                user: Some(user),
                session,
                ip,
            };
            events::record(&client, Event::MfaFailed { failures }, subject).await?;
            tracing::info!(user_id = %user, failures, "wrong second-factor code");
            Ok::<_, ServiceError>(())
        };
        metrics::counter!("session_mfa_failures_total").increment(1);
        match recorded.await {
            Ok(()) => ServiceError::InvalidCode,
            Err(error) => error,
        }
    }

    async fn recovery_code_used(
        &self,
        client: &impl GenericClient,
        user: UserId,
        session: Option<SessionId>,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let subject = Subject {
            user: Some(user),
            session,
            ip,
        };
        events::record(client, Event::RecoveryCodeUsed, subject).await?;
        self.tell_owner(client, user, FactorChange::RecoveryCodeUsed)
            .await?;
        tracing::warn!(user_id = %user, "a recovery code was used");
        Ok(())
    }

    async fn factor_added(
        &self,
        client: &impl GenericClient,
        user: UserId,
        session: SessionId,
        kind: FactorKind,
        ip: Option<IpAddr>,
    ) -> Result<(), ServiceError> {
        let subject = Subject {
            user: Some(user),
            session: Some(session),
            ip,
        };
        let event = Event::MfaFactorAdded {
            kind: kind.as_str(),
        };
        events::record(client, event, subject).await?;
        self.tell_owner(client, user, FactorChange::Added(kind_words(kind)))
            .await
    }

    async fn tell_owner(
        &self,
        client: &impl GenericClient,
        user: UserId,
        change: FactorChange,
    ) -> Result<(), ServiceError> {
        if let Some((email, _)) = users::profile(client, user).await? {
            self.mail
                .queue_factor_change(client, &email, change)
                .await?;
        }
        Ok(())
    }

    async fn keep_ceremony(
        &self,
        client: &impl GenericClient,
        user: Option<UserId>,
        purpose: CeremonyPurpose,
        ceremony: &Ceremony,
    ) -> Result<Uuid, ServiceError> {
        let state = serde_json::to_value(ceremony)
            .map_err(|e| ServiceError::internal("keeping a passkey ceremony", e))?;
        store::insert_ceremony(client, user, purpose, &state, self.settings.challenge_ttl).await
    }
}

/// A factor's kind as a mail names it.
fn kind_words(kind: FactorKind) -> &'static str {
    match kind {
        FactorKind::Totp => "An authenticator app",
        FactorKind::Passkey => "A passkey",
    }
}
