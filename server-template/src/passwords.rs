//! Password hashing: Argon2id with the crate's default parameters, off the async runtime.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs in `spawn_blocking`
//! behind a semaphore sized to the cores: a burst of logins queues instead of starving
//! every other request. Unknown emails are verified against a dummy hash so that the
//! response time does not tell which accounts exist.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tokio::sync::Semaphore;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in characters.
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Why a password is refused before hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordPolicyError {
    /// Fewer than [`MIN_PASSWORD_CHARS`] characters.
    #[error("the password must have at least 8 characters")]
    TooShort,
    /// More than [`MAX_PASSWORD_CHARS`] characters.
    #[error("the password must have at most 1024 characters")]
    TooLong,
}

/// Checks the length rules.
pub fn check_policy(password: &str) -> Result<(), PasswordPolicyError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        Err(PasswordPolicyError::TooShort)
    } else if chars > MAX_PASSWORD_CHARS {
        Err(PasswordPolicyError::TooLong)
    } else {
        Ok(())
    }
}

/// What verifying a password found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// It matches.
    Match {
        /// A new hash when the stored one used other parameters than today's.
        rehash: Option<String>,
    },
    /// It does not match (or there was no account; the caller cannot tell).
    Mismatch,
}

/// Hashes and verifies passwords on the blocking pool, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against for unknown accounts.
    dummy: Arc<str>,
    /// `$argon2id$v=19$m=…,t=…,p=…$` of today's parameters: a stored hash without this
    /// prefix was made with other parameters and is replaced at the next login.
    current_prefix: Arc<str>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher allowing `concurrency` hashes at once (the number of cores is right).
    pub fn new(concurrency: usize) -> Self {
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hash_now(&random);
        let current_prefix = dummy
            .rsplitn(3, '$')
            .nth(2)
            .map(|prefix| format!("{prefix}$"))
            .unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            dummy: dummy.into(),
            current_prefix: current_prefix.into(),
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> String {
        self.blocking(move || hash_now(&password)).await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account, so both cases cost the same.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Verified {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let prefix = Arc::clone(&self.current_prefix);
        self.blocking(move || {
            let matches = Argon2::default()
                .verify_password(password.as_bytes(), stored.as_str())
                .is_ok();
            if !(known && matches) {
                return Verified::Mismatch;
            }
            let rehash = (!stored.starts_with(&*prefix)).then(|| hash_now(&password));
            Verified::Match { rehash }
        })
        .await
    }

    async fn blocking<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        tokio::task::spawn_blocking(work)
            .await
            .expect("password hashing does not panic")
    }
}

fn hash_now(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("Argon2 with default parameters and a generated salt cannot fail")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_rules_count_characters_not_bytes() {
        assert_eq!(check_policy("short"), Err(PasswordPolicyError::TooShort));
        assert_eq!(check_policy("ééééééé"), Err(PasswordPolicyError::TooShort));
        assert_eq!(check_policy("éééééééé"), Ok(()));
        assert_eq!(check_policy(&"a".repeat(1024)), Ok(()));
        assert_eq!(
            check_policy(&"a".repeat(1025)),
            Err(PasswordPolicyError::TooLong)
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_old_parameters_are_rehashed() {
        let hasher = PasswordHasher::new(2);
        let hash = hasher.hash("correct horse".into()).await;
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(
            hasher
                .verify("correct horse".into(), Some(hash.clone()))
                .await,
            Verified::Match { rehash: None }
        );
        assert_eq!(
            hasher.verify("wrong horse".into(), Some(hash)).await,
            Verified::Mismatch
        );
        assert_eq!(
            hasher.verify("anything".into(), None).await,
            Verified::Mismatch
        );

        // A hash made with weaker parameters is upgraded on a successful login.
        let weak = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(8 * 1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse")
        .unwrap()
        .to_string();
        match hasher.verify("correct horse".into(), Some(weak)).await {
            Verified::Match { rehash: Some(new) } => {
                assert!(new.starts_with(&*hasher.current_prefix), "{new}");
            }
            other => panic!("{other:?}"),
        }
    }
}
