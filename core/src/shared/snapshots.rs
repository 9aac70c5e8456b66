//! Per-process snapshots a fleet exchanges (the adaptive router's statistics, say): each
//! process writes its own bytes under `{prefix}{group}:{instance}` with an expiry, notes itself
//! in the sorted set `{prefix}{group}:members` (scored by when it last wrote), and reads the
//! other live members' bytes, in two round trips. What the bytes mean is the caller's.
//!
//! `{group}` is a Redis Cluster hash tag (the key name puts it in braces): a group's members
//! set and snapshots share one slot, so one `MGET` reads them all.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::SharedStore;

/// An exchange's budget: off the call path, so longer than a call's.
const EXCHANGE_BUDGET: Duration = Duration::from_secs(2);

impl SharedStore {
    /// Writes `mine` as `instance`'s snapshot in `group` for `ttl`, and gives back every other
    /// member's (written within `ttl`, not yet expired) as `(instance, bytes)`; `None` when
    /// Redis is unavailable (counted and warned about as every operation is).
    pub async fn exchange_snapshots(
        &self,
        group: &str,
        instance: &str,
        mine: Vec<u8>,
        ttl: Duration,
    ) -> Option<Vec<(String, Vec<u8>)>> {
        let prefix = &self.config().key_prefix;
        let key = |id: &str| format!("{prefix}{{{group}}}:{id}");
        let members = format!("{prefix}{{{group}}}:members");
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
        let since = now.saturating_sub(ttl_ms);
        let (own_key, members_key) = (key(instance), members.clone());
        let (listed,) = self
            .state()
            .run("snapshot exchange", EXCHANGE_BUDGET, |mut connection| async move {
                redis::pipe()
                    .cmd("SET")
                    .arg(&own_key)
                    .arg(mine)
                    .arg("PX")
                    .arg(ttl_ms)
                    .ignore()
                    .zadd(&members_key, instance, now)
                    .ignore()
                    .zrembyscore(&members_key, "-inf", since)
                    .ignore()
                    .zrangebyscore(&members_key, since, "+inf")
                    .query_async::<(Vec<String>,)>(&mut connection)
                    .await
            })
            .await?;
        let others: Vec<String> = listed.into_iter().filter(|id| id != instance).collect();
        if others.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = others.iter().map(|id| key(id)).collect();
        let snapshots = self
            .state()
            .run("snapshot exchange", EXCHANGE_BUDGET, |mut connection| async move {
                redis::cmd("MGET").arg(keys).query_async::<Vec<Option<Vec<u8>>>>(&mut connection).await
            })
            .await?;
        Some(others.into_iter().zip(snapshots).filter_map(|(id, bytes)| Some((id, bytes?))).collect())
    }
}
