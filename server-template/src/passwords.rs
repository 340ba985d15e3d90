//! Password hashing: Argon2id with the crate's default parameters, off the async runtime.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs in `spawn_blocking`
//! behind a semaphore sized to the cores: a burst of logins queues instead of starving
//! every other request. Unknown emails are verified against a dummy hash so that the
//! response time does not tell which accounts exist.
//!
//! Argon2's working memory (19 MiB with the default parameters) is kept and reused, one
//! buffer per permit, instead of being allocated for every hash: a fresh allocation is
//! zeroed and page-faulted in every time, which took about a tenth of a login's CPU
//! (`perf` on the release server under login load: `memset` 5.7%, the kernel's
//! `clear_page` 4%). The process keeps `permits × 19 MiB` for it once logins have run.

use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
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
    /// Argon2 working memory, at most one buffer per permit.
    memory: Arc<MemoryPool>,
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
        let memory = Arc::new(MemoryPool::default());
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = memory.with(|blocks| hash_with(blocks, &random));
        let current_prefix = dummy
            .rsplitn(3, '$')
            .nth(2)
            .map(|prefix| format!("{prefix}$"))
            .unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            memory,
            dummy: dummy.into(),
            current_prefix: current_prefix.into(),
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: String) -> String {
        self.blocking(move |blocks| hash_with(blocks, &password))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account, so both cases cost the same.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Verified {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let prefix = Arc::clone(&self.current_prefix);
        self.blocking(move |blocks| {
            let matches = verify_with(blocks, &password, &stored);
            if !(known && matches) {
                return Verified::Mismatch;
            }
            let rehash = (!stored.starts_with(&*prefix)).then(|| hash_with(blocks, &password));
            Verified::Match { rehash }
        })
        .await
    }

    /// Runs `work` on the blocking pool with a permit and a working-memory buffer.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> T {
        // The semaphore is never closed, so acquiring cannot fail.
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let memory = Arc::clone(&self.memory);
        tokio::task::spawn_blocking(move || memory.with(work))
            .await
            .expect("password hashing does not panic")
    }
}

/// Argon2 working memory for reuse. Hashes run only while holding a permit, so the pool
/// never holds more buffers than there are permits.
#[derive(Default)]
struct MemoryPool(Mutex<Vec<Vec<Block>>>);

impl MemoryPool {
    /// Lends `work` a buffer (a new, empty one when none is free) and takes it back.
    fn with<T>(&self, work: impl FnOnce(&mut Vec<Block>) -> T) -> T {
        let mut blocks = self.lock().pop().unwrap_or_default();
        let result = work(&mut blocks);
        // A stored hash with more memory than today's grew the buffer: give that back.
        let usual = Params::default().block_count();
        if blocks.len() > usual {
            blocks.truncate(usual);
            blocks.shrink_to_fit();
        }
        self.lock().push(blocks);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        // The buffers hold no invariant a panic could break.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The first `count` blocks of `blocks`, grown to that size if needed. Argon2 overwrites
/// every block before reading it, so what a buffer held before does not matter.
fn take(blocks: &mut Vec<Block>, count: usize) -> &mut [Block] {
    if blocks.len() < count {
        blocks.resize(count, Block::default());
    }
    &mut blocks[..count]
}

/// The PHC string of `password` with a fresh salt and today's parameters, computed in
/// `blocks`. The same string `argon2`'s `PasswordHasher` makes.
fn hash_with(blocks: &mut Vec<Block>, password: &str) -> String {
    let argon2 = Argon2::default();
    let params = argon2.params();
    let salt = Salt::generate();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    let memory = take(blocks, params.block_count());
    argon2
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, memory)
        .expect("Argon2 with default parameters and a generated salt cannot fail");
    PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(params).expect("default parameters encode"),
        salt: Some(salt),
        hash: Some(Output::new(&out).expect("default output length")),
    }
    .to_string()
}

/// Whether `password` matches the PHC string `stored`, with the parameters `stored`
/// names, computed in `blocks`. A string that does not parse matches nothing. The
/// outputs are compared in constant time (`Output`'s `PartialEq`).
fn verify_with(blocks: &mut Vec<Block>, password: &str, stored: &str) -> bool {
    let Ok(phc) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(phc.algorithm.as_str()) else {
        return false;
    };
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&phc) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = [0u8; Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let memory = take(blocks, argon2.params().block_count());
    if argon2
        .hash_password_into_with_memory(password.as_bytes(), salt, out, memory)
        .is_err()
    {
        return false;
    }
    Output::new(out).is_ok_and(|computed| computed == *expected)
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};

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

    #[test]
    fn hashes_match_the_argon2_crates_own_in_both_directions() {
        let mut blocks = Vec::new();
        let ours = hash_with(&mut blocks, "correct horse");
        assert!(
            Argon2::default()
                .verify_password(b"correct horse", ours.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"wrong horse", ours.as_str())
                .is_err()
        );
        let theirs = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        // Same parameters, same PHC layout up to the salt and the output.
        assert_eq!(
            ours.rsplitn(3, '$').nth(2),
            theirs.rsplitn(3, '$').nth(2),
            "{ours} vs {theirs}"
        );
        assert!(verify_with(&mut blocks, "correct horse", &theirs));
        assert!(!verify_with(&mut blocks, "wrong horse", &theirs));
        // The reused buffer kept working and kept its size.
        assert_eq!(blocks.len(), Params::default().block_count());
    }

    #[test]
    fn a_stored_string_that_is_not_an_argon2_hash_matches_nothing() {
        let mut blocks = Vec::new();
        let good = hash_with(&mut blocks, "correct horse");
        let (head, output) = good.rsplit_once('$').unwrap();
        for stored in [
            String::new(),
            "not a hash".to_owned(),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ".to_owned(),
            good.replacen("argon2id", "scrypt", 1),
            good.replacen("v=19", "v=7", 1),
            good.replacen("t=2", "t=0", 1),
            format!("{head}$"),
            format!("{head}${}", &output[..output.len() - 4]),
            format!("{head}${output}{output}{output}"),
        ] {
            assert!(
                !verify_with(&mut blocks, "correct horse", &stored),
                "{stored:?}"
            );
        }
    }

    #[test]
    fn the_pool_reuses_buffers_and_gives_back_what_a_larger_hash_took() {
        let pool = MemoryPool::default();
        let usual = Params::default().block_count();
        let first = pool.with(|blocks| {
            take(blocks, usual);
            blocks.as_ptr()
        });
        // Sequential use gets the same buffer back, already sized.
        let second = pool.with(|blocks| {
            assert_eq!(blocks.len(), usual);
            blocks.as_ptr()
        });
        assert_eq!(first, second);
        pool.with(|blocks| take(blocks, usual * 2).len());
        pool.with(|blocks| assert_eq!(blocks.len(), usual));
        assert_eq!(pool.lock().len(), 1);
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
