//! Shared routing state: every process learns from every other's outcomes.
//!
//! Each process publishes a snapshot of its *own* evidence (never what it read from others)
//! under `{prefix}{routing}:{instance}`, with an expiry of `routing_ttl_s`, and notes itself in
//! the sorted set `{prefix}{routing}:members` (scored by the time it last published). Every
//! `routing_sync_ms`, off the call path, it reads the other live members' snapshots, sums
//! them, and hands the sum to its [`OutcomeStats`] as the fleet's part, which replaces the
//! previous sum. So no evidence is counted twice, however often it is read:
//! - a process that dies leaves its last snapshot until it expires; restarted with the same
//!   ledger file it comes back as the same instance and overwrites it;
//! - a flushed Redis is rebuilt within one period, every live process publishing again, and
//!   each process keeps its last copy of every other's snapshot meanwhile;
//! - while Redis is away those copies are kept (they are still evidence) and local learning
//!   goes on; a copy not refreshed for the expiry is dropped, as its process may be gone.
//!
//! `{routing}` is a Redis Cluster hash tag: the members set and the snapshots share one slot,
//! so one `MGET` reads them all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SharedStore, State};
use crate::routing::stats::{ClusterId, ClusterStats, OutcomeStats};

/// One synchronisation's budget: off the call path, so longer than a call's.
const SYNC_BUDGET: Duration = Duration::from_secs(2);
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    clusters: Vec<(String, String, ClusterStats)>,
}

/// Starts sharing `stats` through `store` as `instance` (see the module documentation),
/// until the store goes.
pub fn share_routing_stats(store: &SharedStore, stats: Arc<OutcomeStats>, instance: String) {
    store.runtime().spawn(synchronise(Arc::downgrade(store.state()), stats, instance));
}

/// A stable name for this process in the fleet: the configured one, else one derived from the
/// host and the statistics file (so a restart overwrites its own snapshot), else a random one
/// (statistics kept in memory die with the process).
pub fn instance_id(configured: Option<&str>, stats_file: Option<&std::path::Path>) -> String {
    if let Some(id) = configured {
        return id.to_owned();
    }
    let Some(file) = stats_file else { return format!("{:016x}", rand::random::<u64>()) };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default();
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_owned());
    let digest = Sha256::digest(format!("{}\n{}", host.trim(), file.display()).as_bytes());
    digest.iter().take(8).map(|byte| format!("{byte:02x}")).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |now| u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
}

/// The other processes' snapshots as last read, and when.
type Known = HashMap<String, (Instant, Vec<(ClusterId, ClusterStats)>)>;

async fn synchronise(state: std::sync::Weak<State>, stats: Arc<OutcomeStats>, instance: String) {
    let mut known = Known::new();
    loop {
        let Some(state) = state.upgrade() else { return };
        if state.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let period = Duration::from_millis(state.config.routing_sync_ms);
        let ttl = Duration::from_secs(state.config.routing_ttl_s);
        sync_once(&state, &stats, &instance, &mut known).await;
        // A process unseen for the expiry has died (or left): its evidence goes.
        known.retain(|_, (seen, _)| seen.elapsed() <= ttl);
        let mut fleet: HashMap<ClusterId, ClusterStats> = HashMap::new();
        for (_, clusters) in known.values() {
            for (id, cluster) in clusters {
                fleet.entry(id.clone()).or_default().merge(cluster);
            }
        }
        stats.set_fleet(fleet);
        drop(state);
        tokio::time::sleep(period).await;
    }
}

/// Publishes this process's evidence and reads the live others' into `known`. A snapshot
/// missing from Redis (expired, or flushed and not yet published again) keeps its last copy.
async fn sync_once(state: &State, stats: &OutcomeStats, instance: &str, known: &mut Known) {
    let prefix = &state.config.key_prefix;
    let members = format!("{prefix}{{routing}}:members");
    let key = |id: &str| format!("{prefix}{{routing}}:{id}");
    let ttl_ms = state.config.routing_ttl_s.saturating_mul(1000).max(1);
    let mut clusters: Vec<(String, String, ClusterStats)> =
        stats.local_snapshot().into_iter().map(|(id, cluster)| (id.key, id.model, cluster)).collect();
    clusters.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let Ok(mine) = serde_json::to_vec(&Snapshot { version: FORMAT_VERSION, clusters }) else { return };
    let now = now_ms();
    let (own_key, members_key) = (key(instance), members.clone());
    let listed = state
        .run("routing statistics", SYNC_BUDGET, |mut connection| async move {
            redis::pipe()
                .cmd("SET")
                .arg(&own_key)
                .arg(mine)
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .zadd(&members_key, instance, now)
                .ignore()
                .zrembyscore(&members_key, "-inf", now.saturating_sub(ttl_ms))
                .ignore()
                .zrangebyscore(&members_key, now.saturating_sub(ttl_ms), "+inf")
                .query_async::<(Vec<String>,)>(&mut connection)
                .await
        })
        .await;
    let Some((listed,)) = listed else { return };
    let others: Vec<String> = listed.into_iter().filter(|id| id != instance).collect();
    if others.is_empty() {
        return;
    }
    let keys: Vec<String> = others.iter().map(|id| key(id)).collect();
    let snapshots = state
        .run("routing statistics", SYNC_BUDGET, |mut connection| async move {
            redis::cmd("MGET").arg(keys).query_async::<Vec<Option<Vec<u8>>>>(&mut connection).await
        })
        .await;
    let Some(snapshots) = snapshots else { return };
    let read = Instant::now();
    for (id, bytes) in others.into_iter().zip(snapshots) {
        // An unreadable snapshot (another version's, or damaged) is skipped, not fatal.
        let Some(snapshot) = bytes.and_then(|bytes| serde_json::from_slice::<Snapshot>(&bytes).ok()) else { continue };
        if snapshot.version != FORMAT_VERSION {
            continue;
        }
        let clusters =
            snapshot.clusters.into_iter().map(|(key, model, cluster)| (ClusterId { key, model }, cluster)).collect();
        known.insert(id, (read, clusters));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_stable_for_one_file_and_distinct_across_files() {
        let a = instance_id(None, Some(std::path::Path::new("/tmp/a/ledger.routing.json")));
        assert_eq!(a, instance_id(None, Some(std::path::Path::new("/tmp/a/ledger.routing.json"))));
        assert_ne!(a, instance_id(None, Some(std::path::Path::new("/tmp/b/ledger.routing.json"))));
        assert_ne!(instance_id(None, None), instance_id(None, None));
        assert_eq!(instance_id(Some("edge-1"), None), "edge-1");
    }
}
