/*!
Consumer leases: with several nodes on one shared journal, exactly one node at a time runs each
consumer (the store loader, the lake writer, each stream output).

A lease is one key of a JetStream key-value bucket (`SLUICE_LEASES` by default) whose value names
the node holding it. The bucket's `max_age` is the lease's time to live: a node takes a free lease
with a *create* (which fails while the key exists), renews it every third of the TTL with an
*update* that names the revision it last wrote (which fails once anyone else wrote the key), and
a key nobody renews expires with the bucket's age limit, so another node takes over within the
TTL plus one poll after the holder died (10 s + 1 s by default, inside the 15 s).

The holder gives a lease up before the server could hand it to someone else: when no renewal has
succeeded for two thirds of the TTL (NATS unreachable, say) it counts the lease as lost and stops
the consumer, so the new holder, which can take the key only once a whole TTL has passed since
the last write, never runs beside it. Clocks do not matter: both times are measured from the
holder's own sending of its last successful write, which is before the server stamped it.

This lease is an optimisation of who works, not the only guard of correctness: the store
deduplicates every record by its identity and the lake skips what its watermarks show archived,
so a consumer that outlived its lease (a process paused past the TTL) repeats work but neither
duplicates nor loses records.

Key-value entries are written by async-nats' `kv` API, which the 2.9 servers of this workplace
support (per-key TTLs would need 2.11; the bucket-wide `max_age` does the same job here).
*/

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// The key, in the offsets bucket, naming the journal stream the cluster's leases serve.
const STREAM_KEY: &str = "journal-stream";

/// How often a node that waits for a lease tries to take it.
const POLL: Duration = Duration::from_secs(1);

/// What can go wrong opening the lease bucket.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The bucket could not be created or opened.
    #[error(
        "cannot open the lease bucket {bucket:?} in JetStream ({reason}); check that the NATS servers are reachable and that JetStream is enabled with room for a small key-value bucket"
    )]
    Bucket {
        /// The bucket's name.
        bucket: String,
        /// What NATS said.
        reason: String,
    },
    /// The bucket serves the nodes of another journal stream.
    #[error(
        "the lease bucket {bucket:?} serves the nodes whose journal is the stream {found}, but this node's is {wanted}: their consumers would never run this node's records. Give every node of one cluster the same [journal] stream, and another cluster.lease_bucket to another cluster (or, to move a whole cluster to another stream, stop every node and delete the key: `nats kv del {bucket}_OFFSETS {STREAM_KEY}`)"
    )]
    StreamDiffers {
        /// The bucket's name.
        bucket: String,
        /// The stream the bucket serves.
        found: String,
        /// This node's stream.
        wanted: String,
    },
    /// An existing bucket keeps its entries for a different time than this node's TTL.
    #[error(
        "the lease bucket {bucket:?} keeps entries for {found:?}, but this node's lease TTL is {wanted:?}; every node must use the same TTL (or delete the bucket while no node runs: `nats kv del {bucket}`)"
    )]
    TtlDiffers {
        /// The bucket's name.
        bucket: String,
        /// The bucket's `max_age`.
        found: Duration,
        /// This node's TTL.
        wanted: Duration,
    },
}

/// The leases of one cluster, as seen by one node.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    /// Offsets a consumer keeps where every node can read them (`<bucket>_OFFSETS`, no expiry):
    /// a stream output's, which has no shared destination to keep it in.
    offsets: kv::Store,
    node: Arc<str>,
    ttl: Duration,
    held: Arc<Mutex<Vec<Holder>>>,
}

/// A lease's name and the node last seen holding it (`None`: free).
type Holder = (String, Option<String>);

impl Leases {
    /// Opens (creating it if needed) the lease bucket `bucket`, for node `node` with leases that
    /// live `ttl` without renewal, replicated like the journal (`replicas`).
    pub async fn open(
        jetstream: &jetstream::Context,
        bucket: &str,
        replicas: usize,
        ttl: Duration,
        node: &str,
    ) -> Result<Leases, LeaseError> {
        let failed =
            |e: &dyn std::fmt::Display| LeaseError::Bucket { bucket: bucket.to_owned(), reason: e.to_string() };
        let created = jetstream
            .get_or_create_stream(kv_stream(bucket, "which sluice node runs which consumer", ttl, replicas))
            .await
            .map_err(|e| failed(&e))?;
        let found = created.cached_info().config.max_age;
        if found != ttl {
            return Err(LeaseError::TtlDiffers { bucket: bucket.to_owned(), found, wanted: ttl });
        }
        let kv = jetstream.get_key_value(bucket).await.map_err(|e| failed(&e))?;
        let offsets_bucket = format!("{bucket}_OFFSETS");
        let description = "where each sluice stream output has sent the journal up to";
        jetstream
            .get_or_create_stream(kv_stream(&offsets_bucket, description, Duration::ZERO, replicas))
            .await
            .map_err(|e| failed(&e))?;
        let offsets = jetstream.get_key_value(&offsets_bucket).await.map_err(|e| failed(&e))?;
        Ok(Leases { kv, offsets, node: node.into(), ttl, held: Arc::default() })
    }

    /// Records that these leases serve the nodes of journal stream `stream`, or refuses when
    /// they serve another one: a node given another stream would accept records that the
    /// consumers of its cluster, all run by nodes of the first stream, never read.
    pub async fn claim_stream(&self, stream: &str, bucket: &str) -> Result<(), LeaseError> {
        let failed =
            |e: &dyn std::fmt::Display| LeaseError::Bucket { bucket: bucket.to_owned(), reason: e.to_string() };
        // A bucket just created may not have its leader yet (nodes of a new cluster starting
        // together): its first writes time out for a few seconds.
        let mut attempts = 0;
        loop {
            match self.offsets.create(STREAM_KEY, Bytes::from(stream.to_owned())).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) if attempts < 20 => {
                    attempts += 1;
                    tracing::debug!(error = %e, "the lease bucket did not take the journal's stream yet; trying again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
                Err(e) => return Err(failed(&e)),
            }
            // Created by another node; read it (a deleted key is created again).
            let Some(found) = self.offsets.get(STREAM_KEY).await.map_err(|e| failed(&e))? else { continue };
            let found = String::from_utf8_lossy(&found).into_owned();
            if found == stream {
                return Ok(());
            }
            return Err(LeaseError::StreamDiffers { bucket: bucket.to_owned(), found, wanted: stream.to_owned() });
        }
    }

    /// Keeps `offset` of journal `journal` as consumer `key`'s, for whichever node runs it next.
    pub async fn save_offset(&self, key: &str, journal: &str, offset: u64) -> anyhow::Result<()> {
        let value = serde_json::to_vec(&serde_json::json!({"journal": journal, "offset": offset}))?;
        self.offsets
            .put(key, value.into())
            .await
            .map_err(|e| anyhow::anyhow!("cannot keep the offset of {key} in NATS: {e}"))?;
        Ok(())
    }

    /// The offset consumer `key` last kept with [`Leases::save_offset`], and its journal.
    pub async fn offset(&self, key: &str) -> anyhow::Result<Option<(String, u64)>> {
        let Some(value) =
            self.offsets.get(key).await.map_err(|e| anyhow::anyhow!("cannot read the offset of {key} in NATS: {e}"))?
        else {
            return Ok(None);
        };
        let kept: serde_json::Value = serde_json::from_slice(&value)?;
        match (kept["journal"].as_str(), kept["offset"].as_u64()) {
            (Some(journal), Some(offset)) => Ok(Some((journal.to_owned(), offset))),
            _ => anyhow::bail!("the offset kept for {key} in NATS is not sluice's: {kept}"),
        }
    }

    /// How long a lease lives without renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// This node's name, as lease values carry it.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Each lease this node has asked for, with the node holding it as last seen (`None`: free).
    pub fn holders(&self) -> Vec<Holder> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn saw(&self, name: &str, holder: Option<&str>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.iter_mut().find(|(n, _)| n == name) {
            Some(entry) => entry.1 = holder.map(str::to_owned),
            None => held.push((name.to_owned(), holder.map(str::to_owned))),
        }
        let mine = holder == Some(&*self.node);
        metrics::gauge!("sluice_lease_held", "lease" => name.to_owned()).set(if mine { 1.0 } else { 0.0 });
    }

    /// Waits until this node holds lease `name` (`None` once `stop` is cancelled first); the
    /// lease is then renewed in the background until it is released or lost.
    pub async fn acquire(&self, name: &str, stop: &CancellationToken) -> Option<Lease> {
        let mut logged_wait = false;
        loop {
            let sent = Instant::now();
            match self.kv.create(name, Bytes::copy_from_slice(self.node.as_bytes())).await {
                Ok(revision) => {
                    tracing::info!(lease = name, node = %self.node, "this node holds the lease and runs the consumer");
                    self.saw(name, Some(&self.node));
                    return Some(self.hold(name, revision, sent));
                }
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    let holder = match self.kv.get(name).await {
                        Ok(Some(value)) => Some(String::from_utf8_lossy(&value).into_owned()),
                        _ => None,
                    };
                    if !logged_wait {
                        tracing::info!(
                            lease = name,
                            holder = holder.as_deref().unwrap_or("?"),
                            "another node holds the lease; this one takes over if that node stops renewing it"
                        );
                        logged_wait = true;
                    }
                    self.saw(name, holder.as_deref());
                }
                Err(e) => {
                    tracing::warn!(lease = name, error = %e, "could not ask for the lease; trying again");
                    self.saw(name, None);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    fn hold(&self, name: &str, revision: u64, sent: Instant) -> Lease {
        let lost = CancellationToken::new();
        let release = CancellationToken::new();
        let task = tokio::spawn(renew(self.clone(), name.to_owned(), revision, sent, lost.clone(), release.clone()));
        Lease { lost, release, task }
    }
}

/// Keeps a held lease alive until released (then deletes it, so a waiting node need not wait
/// for the TTL) or lost (then cancels `lost`).
async fn renew(
    leases: Leases,
    name: String,
    mut revision: u64,
    mut last_sent_ok: Instant,
    lost: CancellationToken,
    release: CancellationToken,
) {
    let every = leases.ttl / 3;
    // Past this without a successful renewal, another node may take the key soon: stop first.
    let give_up = leases.ttl * 2 / 3;
    loop {
        tokio::select! {
            () = release.cancelled() => {
                // Only our own revision: a lease someone else took in the meantime stays theirs.
                let _ = leases.kv.delete_expect_revision(&name, Some(revision)).await;
                leases.saw(&name, None);
                return;
            }
            () = tokio::time::sleep(every) => {}
        }
        let sent = Instant::now();
        let renewal = tokio::time::timeout(
            give_up.saturating_sub(last_sent_ok.elapsed()).max(Duration::from_millis(1)),
            leases.kv.update(&name, Bytes::copy_from_slice(leases.node.as_bytes()), revision),
        )
        .await;
        match renewal {
            Ok(Ok(next)) => {
                revision = next;
                last_sent_ok = sent;
            }
            Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(lease = %name, "another node took the lease over; stopping the consumer here");
                break;
            }
            Ok(Err(e)) => tracing::warn!(lease = %name, error = %e, "could not renew the lease; trying again"),
            Err(_) => {}
        }
        if last_sent_ok.elapsed() >= give_up {
            tracing::warn!(lease = %name, "the lease could not be renewed in time; stopping the consumer here so that another node can take over");
            break;
        }
    }
    leases.saw(&name, None);
    lost.cancel();
}

/// A lease this node holds.
pub struct Lease {
    lost: CancellationToken,
    release: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Cancelled once the lease is lost: the consumer must stop at once.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Gives the lease up (after the consumer stopped), so that another node can take it at once.
    pub async fn release(self) {
        self.release.cancel();
        let _ = self.task.await;
    }
}

/// The stream behind key-value bucket `bucket`, laid out as NATS lays a bucket out (one value per
/// key, kept `max_age`, zero for ever). It is made by hand: async-nats' `create_key_value` first
/// reads the account's info, whose answer from a 2.9 server it cannot parse ("data did not match
/// any variant of untagged enum Response").
fn kv_stream(bucket: &str, description: &str, max_age: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description.to_owned()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas.max(1),
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn leases(bucket: &str, node: &str, ttl: Duration) -> Leases {
        let client = crate::journal::jetstream::test_servers::local_nats().await;
        Leases::open(&jetstream::new(client), bucket, 1, ttl, node).await.unwrap()
    }

    fn bucket(test: &str) -> String {
        format!("T_LEASE_{test}_{}", std::process::id())
    }

    async fn delete(bucket: &str) {
        let client = crate::journal::jetstream::test_servers::local_nats().await;
        let js = jetstream::new(client);
        let _ = js.delete_stream(format!("KV_{bucket}")).await;
        let _ = js.delete_stream(format!("KV_{bucket}_OFFSETS")).await;
    }

    #[tokio::test]
    async fn one_node_at_a_time_holds_a_lease_and_a_released_one_passes_on_at_once() {
        let bucket = bucket("release");
        let (a, b) =
            (leases(&bucket, "a", Duration::from_secs(10)).await, leases(&bucket, "b", Duration::from_secs(10)).await);
        let stop = CancellationToken::new();
        let held = a.acquire("store", &stop).await.unwrap();
        let waiting = tokio::spawn({
            let (b, stop) = (b.clone(), stop.clone());
            async move { b.acquire("store", &stop).await }
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiting.is_finished(), "b took a lease a holds");
        assert_eq!(b.holders(), vec![("store".to_owned(), Some("a".to_owned()))]);
        let released = Instant::now();
        held.release().await;
        let taken = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap().unwrap();
        assert!(released.elapsed() < Duration::from_secs(3), "b waited {:?} for a released lease", released.elapsed());
        assert!(!taken.lost().is_cancelled());
        taken.release().await;
        delete(&bucket).await;
    }

    #[tokio::test]
    async fn an_offset_kept_by_one_node_is_read_by_another() {
        let bucket = bucket("offsets");
        let (a, b) =
            (leases(&bucket, "a", Duration::from_secs(10)).await, leases(&bucket, "b", Duration::from_secs(10)).await);
        assert_eq!(b.offset("output.kafka").await.unwrap(), None);
        a.save_offset("output.kafka", "SLUICE@1", 42).await.unwrap();
        assert_eq!(b.offset("output.kafka").await.unwrap(), Some(("SLUICE@1".to_owned(), 42)));
        delete(&bucket).await;
    }

    #[tokio::test]
    async fn a_lease_its_holder_stops_renewing_moves_to_another_node_within_the_ttl() {
        let bucket = bucket("expiry");
        let ttl = Duration::from_secs(3);
        let (a, b) = (leases(&bucket, "a", ttl).await, leases(&bucket, "b", ttl).await);
        let stop = CancellationToken::new();
        let held = a.acquire("lake", &stop).await.unwrap();
        // The holder dies: its renewal task ends without deleting the key.
        held.task.abort();
        let died = Instant::now();
        let taken = tokio::time::timeout(Duration::from_secs(10), b.acquire("lake", &stop)).await.unwrap().unwrap();
        let moved = died.elapsed();
        assert!(moved >= ttl / 2 && moved <= ttl + POLL * 2, "the lease moved after {moved:?} (ttl {ttl:?})");
        taken.release().await;
        delete(&bucket).await;
    }

    #[tokio::test]
    async fn a_holder_whose_lease_was_taken_over_is_told_it_lost_it() {
        let bucket = bucket("taken");
        let ttl = Duration::from_secs(3);
        let a = leases(&bucket, "a", ttl).await;
        let stop = CancellationToken::new();
        let held = a.acquire("output", &stop).await.unwrap();
        // Someone else overwrites the key (an operator, or a node that saw it expire).
        a.kv.put("output", Bytes::from_static(b"b")).await.unwrap();
        tokio::time::timeout(ttl, held.lost().cancelled()).await.expect("the holder noticed within the TTL");
        delete(&bucket).await;
    }

    #[tokio::test]
    async fn a_node_of_another_journal_stream_is_refused_the_clusters_leases() {
        let bucket = bucket("stream");
        let ttl = Duration::from_secs(10);
        let (a, b) = (leases(&bucket, "a", ttl).await, leases(&bucket, "b", ttl).await);
        a.claim_stream("SLUICE", &bucket).await.unwrap();
        b.claim_stream("SLUICE", &bucket).await.unwrap();
        let refused = b.claim_stream("SLUICE2", &bucket).await;
        delete(&bucket).await;
        let message = refused.expect_err("another stream is refused").to_string();
        assert!(message.contains("the stream SLUICE, but this node's is SLUICE2"), "{message}");
        assert!(message.contains("nats kv del") && message.contains("journal-stream"), "{message}");
    }

    #[tokio::test]
    async fn nodes_with_different_ttls_are_refused_with_what_differs() {
        let bucket = bucket("ttl");
        let _a = leases(&bucket, "a", Duration::from_secs(10)).await;
        let client = crate::journal::jetstream::test_servers::local_nats().await;
        let refused = Leases::open(&jetstream::new(client), &bucket, 1, Duration::from_secs(5), "b").await;
        let message = refused.err().expect("a different TTL is refused").to_string();
        assert!(message.contains("10s") && message.contains("5s"), "{message}");
        delete(&bucket).await;
    }
}
