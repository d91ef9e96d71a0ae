//! argon2id password hashing with one of OWASP's parameter sets, on a few
//! dedicated threads, each hashing in one memory buffer of its own for life:
//! one hash takes tens of milliseconds of CPU and would stall every request
//! sharing an async worker, and its memory (7 MiB) is what sign-ins cost in
//! RSS. Bounded threads with reused buffers keep that cost fixed per
//! replica, where a hash per blocking-pool thread grew it without bound
//! (the peak RSS under concurrent sign-ins is a row of `scripts/bench`).

use std::cell::RefCell;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use rand::RngCore;
use tokio::sync::oneshot;

use crate::error::ApiError;

/// OWASP password storage cheat sheet, argon2id: "m=7168 (7 MiB), t=5, p=1",
/// one of its equivalent sets; the same CPU cost as m=19 MiB, t=2 with a
/// third of the memory. Hashes made with other parameters still verify (the
/// PHC string carries them).
const MEMORY_KIB: u32 = 7 * 1024;
const ITERATIONS: u32 = 5;

/// A sign-in that waits longer than this for a hashing thread gets 503 and
/// `Retry-After` instead of queueing without bound.
const QUEUE_WAIT: Duration = Duration::from_secs(3);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Clone, Debug)]
pub struct Passwords {
    /// Hash of a random password, verified when the email is unknown so that a
    /// wrong email costs the same time as a wrong password.
    dummy_hash: Arc<str>,
    /// Work for the hashing threads.
    jobs: mpsc::Sender<Job>,
    /// Longest wait for a hashing thread before giving up with 503.
    queue_wait: Duration,
}

const SALT_BYTES: usize = 16;
const OUTPUT_BYTES: usize = 32;

thread_local! {
    /// This thread's argon2 memory, grown to the largest `m` it has met and
    /// reused by every hash it computes.
    static MEMORY: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// `argon2` computed in this thread's reused memory.
fn hash_into(
    argon2: &Argon2<'_>,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), argon2::Error> {
    let blocks = params.block_count();
    if blocks > MEMORY_KIB as usize {
        // A hash stored with more memory (e.g. OWASP's 19 MiB set): computed
        // in memory of its own, freed at once, so the threads stay at 7 MiB.
        let mut memory = vec![Block::default(); blocks];
        return argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..]);
    }
    MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            memory.resize(blocks, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
    })
}

/// PHC string (`$argon2id$v=19$m=7168,t=5,p=1$salt$hash`) of a new hash.
fn hash_new(password: &[u8]) -> Result<String, String> {
    let params =
        Params::new(MEMORY_KIB, ITERATIONS, 1, Some(OUTPUT_BYTES)).map_err(|e| e.to_string())?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut salt = [0u8; SALT_BYTES];
    rand::rng().fill_bytes(&mut salt);
    let mut out = [0u8; OUTPUT_BYTES];
    hash_into(&argon2, &params, password, &salt, &mut out).map_err(|e| e.to_string())?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(Salt::new(&salt).map_err(|e| e.to_string())?),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Stored hashes asking for more than this are refused, not computed: a
/// corrupted `m=` must not make a sign-in allocate gigabytes.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
const MAX_ITERATIONS: u32 = 16;
const MAX_LANES: u32 = 4;

/// Whether `password` matches the PHC string `hash`, with the parameters the
/// string carries (within sane bounds).
fn matches(password: &[u8], hash: &str) -> bool {
    let Ok(phc) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(phc.algorithm.as_str()),
        Params::try_from(&phc),
    ) else {
        return false;
    };
    if params.m_cost() > MAX_MEMORY_KIB
        || params.t_cost() > MAX_ITERATIONS
        || params.p_cost() > MAX_LANES
    {
        return false;
    }
    let version = match phc.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let argon2 = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    if hash_into(&argon2, &params, password, salt, &mut out).is_err() {
        return false;
    }
    // Output's equality is constant-time.
    Output::new(&out).is_ok_and(|actual| &actual == expected)
}

impl Passwords {
    /// Starts `threads` hashing threads (0: one per CPU core), which run as
    /// long as the process.
    pub fn new(threads: usize) -> Self {
        Self::with_queue_wait(threads, QUEUE_WAIT)
    }

    pub fn with_queue_wait(threads: usize, queue_wait: Duration) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("password-hash-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only to take one job.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A panicking hash must not take the thread
                            // with it: its caller sees its reply dropped.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return,
                        }
                    }
                })
                .expect("a hashing thread starts");
        }
        // On a hashing thread, which keeps the memory: this thread would not.
        let (reply, dummy) = mpsc::channel();
        let random = uuid::Uuid::new_v4().to_string();
        jobs.send(Box::new(move || {
            let _ = reply.send(hash_new(random.as_bytes()));
        }))
        .expect("the hashing threads run");
        let dummy = dummy
            .recv()
            .expect("a hashing thread answers")
            .expect("hashing a fresh password cannot fail");
        Self {
            dummy_hash: dummy.into(),
            jobs,
            queue_wait,
        }
    }

    /// Runs `work` on a hashing thread, unless it waited too long for one.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let (reply, result) = oneshot::channel();
        let queued = Instant::now();
        let queue_wait = self.queue_wait;
        let job: Job = Box::new(move || {
            // The caller gave up (503) or went away: spend no CPU on it.
            if queued.elapsed() > queue_wait || reply.is_closed() {
                return;
            }
            let _ = reply.send(work());
        });
        self.jobs
            .send(job)
            .map_err(|_| ApiError::Internal("the hashing threads are gone".into()))?;
        match tokio::time::timeout(self.queue_wait + Duration::from_secs(2), result).await {
            Ok(Ok(value)) => Ok(value),
            _ => Err(ApiError::Unavailable(
                "too many sign-ins at once; retry shortly".into(),
            )),
        }
    }

    /// PHC string of a new argon2id hash with a fresh salt.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        self.run(move || hash_new(password.as_bytes()))
            .await?
            .map_err(|e| ApiError::Internal(format!("cannot hash password: {e}")))
    }

    /// Whether `password` matches `hash`; with `None` (unknown user) a dummy
    /// hash is checked and the answer is always `false`.
    pub async fn verify(&self, password: String, hash: Option<String>) -> Result<bool, ApiError> {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy_hash.to_string());
        let matched = self
            .run(move || matches(password.as_bytes(), &hash))
            .await?;
        Ok(known && matched)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_of_the_argon2_crate_verify_both_ways() {
        use argon2::{PasswordHasher, PasswordVerifier};
        // As stored before the switch to reused memory (m=19456, t=2).
        let theirs = Argon2::default()
            .hash_password(b"old-password")
            .expect("hash")
            .to_string();
        assert!(
            theirs.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{theirs}"
        );
        assert!(matches(b"old-password", &theirs));
        assert!(!matches(b"old-passwore", &theirs));

        let ours = hash_new(b"new-password").expect("hash");
        assert!(
            Argon2::default()
                .verify_password(b"new-password", ours.as_str())
                .is_ok()
        );
        assert!(
            Argon2::default()
                .verify_password(b"new-passwore", ours.as_str())
                .is_err()
        );
    }

    #[test]
    fn a_malformed_hash_matches_nothing() {
        for hash in [
            "",
            "plain",
            "$md5$x$y",
            // No hash part.
            "$argon2id$v=19$m=7168,t=5,p=1$c2FsdHNhbHRzYWx0",
            // A salt of 4 bytes, below argon2's minimum of 8.
            "$argon2id$v=19$m=7168,t=5,p=1$c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
            // 4 GiB of memory asked for.
            "$argon2id$v=19$m=4194304,t=5,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            assert!(!matches(b"anything", hash), "{hash}");
        }
    }

    #[actix_web::test]
    async fn sign_ins_beyond_the_hashing_threads_get_unavailable_after_the_wait_and_cost_nothing() {
        let passwords = Passwords::with_queue_wait(1, Duration::from_millis(200));
        let hash = passwords
            .hash("s3cret-passw0rd".to_owned())
            .await
            .expect("hash");
        let started = Instant::now();
        let results = futures_util::future::join_all(
            (0..40).map(|_| passwords.verify("s3cret-passw0rd".to_owned(), Some(hash.clone()))),
        )
        .await;
        let took = started.elapsed();
        let verified = results.iter().filter(|r| matches!(r, Ok(true))).count();
        let refused = results
            .iter()
            .filter(|r| matches!(r, Err(ApiError::Unavailable(_))))
            .count();
        println!(
            "40 sign-ins on 1 thread, 200 ms wait: {verified} verified, {refused} refused in {took:?}"
        );
        assert_eq!(verified + refused, 40, "nothing else: {results:?}");
        assert!(
            verified >= 1 && refused >= 1,
            "{verified} verified, {refused} refused"
        );
        // Refused work is skipped, not computed late: the 40 hashes take over
        // 1 s on one thread here; the wait plus the hash under way, ~0.25 s.
        assert!(took < Duration::from_millis(900), "took {took:?}");
    }

    #[actix_web::test]
    async fn a_hash_verifies_its_password_only() {
        let passwords = Passwords::new(0);
        let hash = passwords
            .hash("s3cret-passw0rd".to_owned())
            .await
            .expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        assert!(
            passwords
                .verify("s3cret-passw0rd".to_owned(), Some(hash.clone()))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("wrong".to_owned(), Some(hash))
                .await
                .expect("verify")
        );
        assert!(
            !passwords
                .verify("anything".to_owned(), None)
                .await
                .expect("verify")
        );
    }
}
