//! Password hashing: Argon2id with the crate's default parameters, off the async runtime.
//!
//! Hashing is deliberately slow (tens of milliseconds), so it runs on threads of its own,
//! one per core, behind a semaphore of as many permits: a burst of logins queues instead
//! of starving every other request. On Linux those threads run under `SCHED_IDLE`: any
//! other thread that wakes up (a runtime worker with a cheap request, a PostgreSQL
//! backend) takes the core from a hashing thread at once, instead of waiting for the end
//! of its time slice as it does behind a thread that is merely niced; logins lose nothing
//! while the cores are otherwise idle. (In `portcullis-bench`'s figure 4 on two cores,
//! `GET /me`'s p50 and p99 under a login flood fell by about 3 and 4.5 times against
//! nice 10, at the same logins per second; see docs/database-cost.md.) The price: work
//! that keeps every core busy on its own makes logins wait for a free moment. Elsewhere
//! the threads are niced ([`HASHING_NICE`]). Unknown emails are verified against a dummy
//! hash so that the response time does not tell which accounts exist.
//!
//! Argon2's working memory (19 MiB with the default parameters) belongs to each hashing
//! thread and is reused, instead of being allocated for every hash: a fresh allocation is
//! zeroed and page-faulted in every time, which took about a tenth of a login's CPU
//! (`perf` on the release server under login load: `memset` 5.7%, the kernel's
//! `clear_page` 4%). The process keeps `threads × 19 MiB` for it once logins have run.

use secrecy::{ExposeSecret as _, SecretString};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{Semaphore, oneshot};

/// The nice value of the hashing threads where `SCHED_IDLE` does not exist: lower
/// priority than the runtime's threads (0).
pub const HASHING_NICE: i32 = 10;
/// What the hashing threads are called (`ps -T`, `/proc/<pid>/task/*/comm`).
pub const HASHING_THREAD_NAME: &str = "password-hash";

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

/// Hashes and verifies passwords on its own threads, a bounded number at a time.
#[derive(Clone)]
pub struct PasswordHasher {
    /// One per hashing thread: a job is sent only while holding one.
    permits: Arc<Semaphore>,
    /// The hashing threads' queue; they end when every clone of this is gone.
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, verified against for unknown accounts.
    dummy: Arc<str>,
    /// `$argon2id$v=19$m=…,t=…,p=…$` of today's parameters: a stored hash without this
    /// prefix was made with other parameters and is replaced at the next login.
    current_prefix: Arc<str>,
}

/// Work for a hashing thread, given that thread's working memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A hasher with `concurrency` hashing threads (the number of cores is right).
    ///
    /// # Panics
    ///
    /// When the operating system refuses to start a thread.
    pub fn new(concurrency: usize) -> Self {
        let threads = concurrency.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(HASHING_THREAD_NAME.to_owned())
                .spawn(move || hashing_thread(&queue))
                .expect("starting a password hashing thread");
        }
        let random = uuid::Uuid::new_v4().to_string();
        let dummy = hash_with(&mut Vec::new(), &random);
        let current_prefix = dummy
            .rsplitn(3, '$')
            .nth(2)
            .map(|prefix| format!("{prefix}$"))
            .unwrap_or_default();
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            jobs,
            dummy: dummy.into(),
            current_prefix: current_prefix.into(),
        }
    }

    /// The PHC string of `password` with a fresh salt.
    pub async fn hash(&self, password: SecretString) -> String {
        self.on_hashing_thread(move |blocks| hash_with(blocks, password.expose_secret()))
            .await
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is no
    /// account, so both cases cost the same.
    pub async fn verify(&self, password: SecretString, stored: Option<String>) -> Verified {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.to_string());
        let prefix = Arc::clone(&self.current_prefix);
        self.on_hashing_thread(move |blocks| {
            let password = password.expose_secret();
            let matches = verify_with(blocks, password, &stored);
            if !(known && matches) {
                return Verified::Mismatch;
            }
            let rehash = (!stored.starts_with(&*prefix)).then(|| hash_with(blocks, password));
            Verified::Match { rehash }
        })
        .await
    }

    /// Runs `work` on a hashing thread and waits for its result. The job holds its permit
    /// until it has run, so callers that give up waiting never pile up jobs.
    async fn on_hashing_thread<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> T {
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            // The caller may have gone away meanwhile; then no one wants the result.
            let _ = done.send(work(blocks));
            drop(permit);
        });
        // The threads outlive every sender, and a job does not panic.
        self.jobs
            .send(job)
            .expect("the hashing threads are running");
        result.await.expect("password hashing does not panic")
    }
}

/// A hashing thread: lowers its own priority, then runs jobs in its working memory until
/// the hasher is gone.
fn hashing_thread(queue: &Mutex<mpsc::Receiver<Job>>) {
    if let Err(e) = lower_priority() {
        tracing::warn!(error = %e, "password hashing runs at normal priority");
    }
    let mut blocks = Vec::new();
    loop {
        // The queue holds no invariant a panic could break.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else { return };
        job(&mut blocks);
        // A stored hash with more memory than today's grew the buffer: give that back.
        let usual = Params::default().block_count();
        if blocks.len() > usual {
            blocks.truncate(usual);
            blocks.shrink_to_fit();
        }
    }
}

/// Puts the calling thread (only it: the policy belongs to the thread) under
/// `SCHED_IDLE`, which needs no privilege.
#[cfg(target_os = "linux")]
fn lower_priority() -> Result<(), thread_priority::Error> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, thread_native_id,
    };
    // `Min` is the only priority `SCHED_IDLE` has; it applies to the calling thread alone.
    thread_priority::set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
}

/// Sets the calling thread's nice value to [`HASHING_NICE`], where there is no
/// `SCHED_IDLE`.
#[cfg(not(target_os = "linux"))]
fn lower_priority() -> std::io::Result<()> {
    rustix::process::setpriority_process(None, HASHING_NICE).map_err(std::io::Error::from)
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

    #[tokio::test]
    async fn a_hashing_thread_reuses_its_buffer_and_gives_back_what_a_larger_hash_took() {
        let hasher = PasswordHasher::new(1);
        let usual = Params::default().block_count();
        let first = hasher
            .on_hashing_thread(move |blocks| take(blocks, usual).as_ptr() as usize)
            .await;
        // The next job on that thread gets the same buffer, already sized.
        let (second, len) = hasher
            .on_hashing_thread(|blocks| (blocks.as_ptr() as usize, blocks.len()))
            .await;
        assert_eq!((first, len), (second, usual));
        hasher
            .on_hashing_thread(move |blocks| take(blocks, usual * 2).len())
            .await;
        let len = hasher.on_hashing_thread(|blocks| blocks.len()).await;
        assert_eq!(len, usual, "the larger buffer was given back");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_runs_on_named_threads_under_sched_idle() {
        let hasher = PasswordHasher::new(1);
        let (name, stat) = hasher
            .on_hashing_thread(|_| {
                (
                    std::thread::current().name().map(str::to_owned),
                    std::fs::read_to_string("/proc/thread-self/stat").unwrap(),
                )
            })
            .await;
        assert_eq!(name.as_deref(), Some(HASHING_THREAD_NAME));
        // proc(5): the scheduling policy is field 41 (SCHED_IDLE is 5); fields 3 onwards
        // follow the `)` of `comm`.
        let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
        let policy: i32 = after_comm
            .split_whitespace()
            .nth(41 - 3)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(policy, 5, "SCHED_IDLE");
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
