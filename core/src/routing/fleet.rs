//! The adaptive router's statistics shared by a fleet (with `[shared]`): every process learns
//! from every other's outcomes.
//!
//! Each process publishes a snapshot of its *own* evidence (never what it read from others)
//! as its member of the shared store's `routing` snapshot group, with an expiry of
//! `routing_ttl_s`, and every `routing_sync_ms`, off the call path, reads the other live
//! members' snapshots, sums them, and hands the sum to its [`OutcomeStats`] as the fleet's
//! part, which replaces the previous sum. So no evidence is counted twice, however often it is
//! read:
//! - a process that dies leaves its last snapshot until it expires; restarted with the same
//!   ledger file it comes back as the same instance and overwrites it;
//! - a flushed Redis is rebuilt within one period, every live process publishing again, and
//!   each process keeps its last copy of every other's snapshot meanwhile;
//! - while Redis is away those copies are kept (they are still evidence) and local learning
//!   goes on; a copy not refreshed for the expiry is dropped, as its process may be gone.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stats::{ClusterId, ClusterStats, OutcomeStats};
use crate::shared::SharedStore;

const GROUP: &str = "routing";
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    clusters: Vec<(String, String, ClusterStats)>,
}

/// Starts sharing `stats` through `store` as `instance` (see the module documentation), on the
/// store's runtime, until the store goes.
pub fn share_routing_stats(store: &Arc<SharedStore>, stats: Arc<OutcomeStats>, instance: String) {
    store.runtime().spawn(synchronise(Arc::downgrade(store), stats, instance));
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

/// The other processes' snapshots as last read, and when.
type Known = HashMap<String, (Instant, Vec<(ClusterId, ClusterStats)>)>;

async fn synchronise(store: Weak<SharedStore>, stats: Arc<OutcomeStats>, instance: String) {
    let mut known = Known::new();
    loop {
        // Held only for one round: the store's last owner going ends the loop.
        let Some(store) = store.upgrade() else { return };
        let period = Duration::from_millis(store.config().routing_sync_ms);
        let ttl = Duration::from_secs(store.config().routing_ttl_s);
        let mut clusters: Vec<(String, String, ClusterStats)> =
            stats.local_snapshot().into_iter().map(|(id, cluster)| (id.key, id.model, cluster)).collect();
        clusters.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        if let Ok(mine) = serde_json::to_vec(&Snapshot { version: FORMAT_VERSION, clusters }) {
            // `None`: Redis is away; the copies already read stay.
            if let Some(others) = store.exchange_snapshots(GROUP, &instance, mine, ttl).await {
                let read = Instant::now();
                for (id, bytes) in others {
                    // An unreadable snapshot (another version's, or damaged) is skipped.
                    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(&bytes) else { continue };
                    if snapshot.version == FORMAT_VERSION {
                        let clusters = snapshot
                            .clusters
                            .into_iter()
                            .map(|(key, model, cluster)| (ClusterId { key, model }, cluster))
                            .collect();
                        known.insert(id, (read, clusters));
                    }
                }
            }
        }
        drop(store);
        // A process unseen for the expiry has died (or left): its evidence goes.
        known.retain(|_, (seen, _)| seen.elapsed() <= ttl);
        let mut fleet: HashMap<ClusterId, ClusterStats> = HashMap::new();
        for (_, clusters) in known.values() {
            for (id, cluster) in clusters {
                fleet.entry(id.clone()).or_default().merge(cluster);
            }
        }
        stats.set_fleet(fleet);
        tokio::time::sleep(period).await;
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
