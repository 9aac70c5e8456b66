//! Answers, deletions and single-flight locks in Redis, as bytes under an id the cache
//! chooses. Keys: `{prefix}answer:{id}` and `{prefix}lock:{id}`.
//!
//! Single flight: the first process to `SET lock NX PX ttl` with a random token makes the
//! call; the others poll for the answer with backoff (a poll is one round trip, and costs
//! Redis nothing while the call runs) until it appears, the lock goes (the holder failed:
//! they race for it again), or the lock's expiry passes. The holder releases with a script
//! that deletes the lock only if it still holds its token, so a holder whose lock expired
//! never frees a successor's.

use std::time::{Duration, Instant};

use redis::AsyncCommands;

use super::SharedStore;

/// What trying for a single-flight lock gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// This process makes the call; release with the token.
    Acquired(String),
    /// Another process is making it: wait for its answer.
    Held,
    /// Redis is unavailable: make the call locally.
    Unavailable,
}

/// How waiting for another process's answer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Its answer, as stored.
    Answer(Vec<u8>),
    /// The lock went without an answer (the holder failed, or its lock expired): try again.
    Released,
    /// Waited the lock's whole expiry, or Redis went away: make the call locally.
    GaveUp,
}

const RELEASE: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

const POLL_START: Duration = Duration::from_millis(2);
const POLL_MAX: Duration = Duration::from_millis(50);

impl SharedStore {
    /// The answer stored under `id`, if Redis has it and answers within the budget.
    pub async fn get_answer(&self, id: &str) -> Option<Vec<u8>> {
        let key = self.key("answer", id);
        self.run("cache read", |mut connection| async move { connection.get::<_, Option<Vec<u8>>>(key).await })
            .await
            .flatten()
    }

    /// Stores `bytes` under `id` for `ttl` (none: no expiry), unless larger than the
    /// section's `max_entry_bytes`. Whether it was stored.
    pub async fn put_answer(&self, id: &str, bytes: Vec<u8>, ttl: Option<Duration>) -> bool {
        if bytes.len() > self.config().max_entry_bytes {
            return false;
        }
        let key = self.key("answer", id);
        self.run("cache write", |mut connection| async move {
            match ttl {
                Some(ttl) => {
                    let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(millis)
                        .query_async::<()>(&mut connection)
                        .await
                }
                None => connection.set::<_, _, ()>(&key, bytes).await,
            }
        })
        .await
        .is_some()
    }

    /// Deletes the answer under `id` fleet-wide. Whether Redis confirmed it.
    pub async fn delete_answer(&self, id: &str) -> bool {
        let key = self.key("answer", id);
        self.run("cache delete", |mut connection| async move { connection.del::<_, u64>(key).await }).await.is_some()
    }

    /// Tries for the single-flight lock of `id`.
    pub async fn lock(&self, id: &str) -> LockOutcome {
        let key = self.key("lock", id);
        let token = format!("{:032x}", rand::random::<u128>());
        let ttl = self.config().lock_ttl_ms;
        let reply = self
            .run("lock", |mut connection| {
                let token = token.clone();
                async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(token)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<Option<String>>(&mut connection)
                        .await
                }
            })
            .await;
        match reply {
            Some(Some(_)) => LockOutcome::Acquired(token),
            Some(None) => LockOutcome::Held,
            None => LockOutcome::Unavailable,
        }
    }

    /// Releases the lock of `id` if `token` still holds it.
    pub async fn release(&self, id: &str, token: &str) {
        let key = self.key("lock", id);
        let token = token.to_owned();
        self.run("unlock", |mut connection| async move {
            redis::Script::new(RELEASE).key(key).arg(token).invoke_async::<i64>(&mut connection).await
        })
        .await;
    }

    /// Waits for the answer of the process holding `id`'s lock, polling with backoff, at
    /// most the lock's expiry.
    pub async fn wait_for(&self, id: &str) -> Wait {
        let answer_key = self.key("answer", id);
        let lock_key = self.key("lock", id);
        let deadline = Instant::now() + Duration::from_millis(self.config().lock_ttl_ms);
        let mut pause = POLL_START;
        while Instant::now() < deadline {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(POLL_MAX);
            let (answer_key, lock_key) = (answer_key.clone(), lock_key.clone());
            let polled = self
                .run("single-flight wait", |mut connection| async move {
                    redis::pipe()
                        .get(answer_key)
                        .exists(lock_key)
                        .query_async::<(Option<Vec<u8>>, bool)>(&mut connection)
                        .await
                })
                .await;
            match polled {
                Some((Some(answer), _)) => return Wait::Answer(answer),
                Some((None, false)) => return Wait::Released,
                Some((None, true)) => {}
                None => return Wait::GaveUp,
            }
        }
        Wait::GaveUp
    }
}
