/*!
Erasure jobs: `DELETE /api/user/{id}` and `sluice forget user ID`.

A job is written to `<data-dir>/privacy/erasures/<id>.json` (atomically, 0600) before anything
is done, then goes through steps that may each run again: a crash at any point leaves a pending
job that the next `sluice serve` (or the next erasure) finishes. The steps:

1. the person's ids: the identity cluster `GET /api/user/{id}` computes, with the id itself
   (and the ids of earlier erasures of the id, whose clusters the store no longer shows); a
   cluster over `attribution.max_cluster_ids` is refused whole, never erased in part; the job is
   saved;
2. with `suppress`, the suppression is recorded and ingest drops the person's records from now
   on; every ingest permit is then taken once, so that no record checked before lies between
   the check and the journal;
3. the journal's end, the horizon, is taken and saved, and the ledger entry recorded: from now
   on no consumer delivers a record below the horizon carrying one of the ids;
4. wait until every consumer has passed the horizon, so that nothing read before step 3 is still
   on its way to the store or the lake (the lake writer flushes its buffers when the ledger
   changes);
5. delete from the store; 6. rewrite the lake's objects; 7. remove the person's refused records
   from the dead-letter area; 8. append to the audit log, and mark the job done with its counts
   and without the ids in clear.

The job file holds the ids in clear from step 2 to step 8: after a crash the store no longer
tells who the person was.
*/

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::audit::AuditLog;
use super::ledger::LedgerEntry;
use super::suppression::Suppression;
use super::{Privacy, PrivacyError, read_json, write_atomically};
use crate::dead_letter::DeadLetters;
use crate::journal::Journal;
use crate::lake::erase::LakeErased;
use crate::lake::{Lake, LakeError};
use crate::record::RecordKind;
use crate::store::{ErasedRows, QueryError, Store, StoreError, StoreTarget};

/// Where the lake is, for erasures.
#[derive(Debug, Clone)]
pub struct LakeTarget {
    /// The lake.
    pub lake: Lake,
    /// `lake.part_bytes`.
    pub part_bytes: usize,
}

/// Runs erasures, one at a time.
pub struct Eraser {
    privacy: Arc<Privacy>,
    journal: Arc<dyn Journal>,
    store: StoreTarget,
    lake: Option<LakeTarget>,
    max_ids: usize,
    wait: Duration,
    running: tokio::sync::Mutex<()>,
    /// Ingest's permits and how many there are: taken all at once after a suppression.
    ingest: Option<(Arc<tokio::sync::Semaphore>, u32)>,
    /// The dead-letter area, whose refused records may name the person too.
    dead_letters: Option<Arc<DeadLetters>>,
}

/// What one erasure did, per place: the answer of `DELETE /api/user/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The erasure's id (also the suppression's, when one was made).
    pub erasure: String,
    /// How many ids the person's cluster has (the id asked for included).
    pub ids: usize,
    /// Rows deleted from the store.
    pub store: ErasedRows,
    /// Objects rewritten in the lake; absent when there is no lake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake: Option<LakeErased>,
    /// Refused records of the person removed from the dead-letter area.
    pub dead_letters: u64,
    /// What the journal's consumers skip.
    pub journal: JournalErased,
    /// Whether later records of the person are dropped at ingest.
    pub suppressed: bool,
}

/// The journal's part of an erasure: the records are not rewritten, the ledger skips them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalErased {
    /// Entries below this offset carrying one of the ids are never delivered again.
    pub horizon: u64,
    /// Records journaled but not yet delivered to every consumer when the erasure ran: those
    /// the ledger kept out of the store and the lake (the person's among them).
    pub undelivered_at_erasure: u64,
}

/// A job as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Job {
    erasure: String,
    who: String,
    requested_at: String,
    suppress: bool,
    /// The ids in clear, only while the job is pending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ids: Vec<String>,
    hashes: Vec<String>,
    /// Taken once the suppression (if any) applies.
    journal: Option<JournalErased>,
    store: Option<ErasedRows>,
    lake: Option<LakeErased>,
    #[serde(default)]
    dead_letters: Option<u64>,
    done: bool,
}

/// Why an erasure did not complete.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// The person's cluster is over the bound.
    #[error(
        "the identity cluster of this id has more than {max} ids (attribution.max_cluster_ids), so it cannot be erased whole; nothing was erased. Raise attribution.max_cluster_ids above the cluster's size, or erase the ids that are this person one by one"
    )]
    TooLarge {
        /// `attribution.max_cluster_ids`.
        max: usize,
    },
    /// A consumer did not pass the horizon in time.
    #[error(
        "erasure {erasure} is recorded and its records are already kept out of the store and the lake, but consumer `{consumer}` is still at journal offset {at}, behind the erasure's horizon {horizon}, after {} s; it completes when the erasure is asked for again or at sluice's next start (see /readyz for why the consumer lags)",
        waited.as_secs()
    )]
    ConsumerBehind {
        /// The erasure.
        erasure: String,
        /// The consumer lagging.
        consumer: String,
        /// Its offset.
        at: u64,
        /// The erasure's horizon.
        horizon: u64,
        /// How long it was waited for.
        waited: Duration,
    },
    /// In-flight ingest did not finish in time after a suppression.
    #[error(
        "erasure {erasure} recorded its suppression, but ingest requests in flight did not finish within {} s; it completes when the erasure is asked for again or at sluice's next start",
        waited.as_secs()
    )]
    IngestBusy {
        /// The erasure.
        erasure: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The store failed.
    #[error("erasing from the store failed: {0}; the erasure resumes when asked again or at sluice's next start")]
    Store(#[from] StoreError),
    /// Reading the person's cluster failed.
    #[error("finding the person's ids failed: {0}")]
    Query(#[from] QueryError),
    /// The lake failed.
    #[error("erasing from the lake failed: {0}; the erasure resumes when asked again or at sluice's next start")]
    Lake(#[from] LakeError),
    /// Rewriting the dead-letter area failed.
    #[error(
        "erasing from the dead-letter area failed: {0}; check that the data directory is writable and the disk not full; the erasure resumes when asked again or at sluice's next start"
    )]
    DeadLetters(String),
    /// A privacy file failed.
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    /// A blocking task panicked (a bug).
    #[error("an erasure task failed: {0}; please report this as a bug")]
    Join(String),
}

impl EraseError {
    /// True when retrying later can succeed (the store or lake is failing, a consumer lags).
    pub fn is_transient(&self) -> bool {
        match self {
            EraseError::ConsumerBehind { .. } | EraseError::IngestBusy { .. } | EraseError::Lake(_) => true,
            EraseError::Store(e) | EraseError::Query(QueryError::Store(e)) => e.is_unavailable(),
            _ => false,
        }
    }
}

impl Eraser {
    /// An eraser over the store at `store` and the lake, if any; `max_ids` is
    /// `attribution.max_cluster_ids`; `wait` how long a consumer may take to pass an erasure's horizon.
    pub fn new(
        privacy: Arc<Privacy>,
        journal: Arc<dyn Journal>,
        store: StoreTarget,
        lake: Option<LakeTarget>,
        max_ids: usize,
        wait: Duration,
    ) -> Eraser {
        Eraser {
            privacy,
            journal,
            store,
            lake,
            max_ids,
            wait,
            running: tokio::sync::Mutex::new(()),
            ingest: None,
            dead_letters: None,
        }
    }

    /// Erases the person's refused records from `dead_letters` too.
    pub fn with_dead_letters(mut self, dead_letters: Arc<DeadLetters>) -> Eraser {
        self.dead_letters = Some(dead_letters);
        self
    }

    /// Makes a suppressing erasure wait for ingest requests holding one of these `count`
    /// permits (the pipeline checks suppressions under its permit).
    pub fn with_ingest(mut self, permits: Arc<tokio::sync::Semaphore>, count: u32) -> Eraser {
        self.ingest = Some((permits, count));
        self
    }

    /// The privacy state the eraser records in.
    pub fn privacy(&self) -> &Arc<Privacy> {
        &self.privacy
    }

    /// Erases the person `id` is (see the module's steps), for `who`; with `suppress`, their later
    /// records are dropped at ingest too. Pending erasures are finished first.
    pub async fn erase(&self, id: &str, suppress: bool, who: &str) -> Result<Outcome, EraseError> {
        let _one_at_a_time = self.running.lock().await;
        self.resume_pending().await?;
        let ids = self.cluster(id).await?;
        let mut hashes: BTreeSet<String> = ids.iter().map(|i| self.privacy.hasher.hash(i)).collect();
        hashes.extend(self.privacy.ledger.erased_with(&self.privacy.hasher.hash(id)));
        let erasure = format!("{}-{:08x}", chrono::Utc::now().timestamp_millis(), rand::random::<u32>());
        let job = Job {
            hashes: hashes.into_iter().collect(),
            ids,
            erasure,
            who: who.to_owned(),
            requested_at: chrono::Utc::now().to_rfc3339(),
            suppress,
            journal: None,
            store: None,
            lake: None,
            dead_letters: None,
            done: false,
        };
        self.save(&job)?;
        self.run(job).await
    }

    /// Finishes every erasure a crash (or a failure) left pending; returns what each did.
    pub async fn resume(&self) -> Result<Vec<Outcome>, EraseError> {
        let _one_at_a_time = self.running.lock().await;
        self.resume_pending().await
    }

    async fn resume_pending(&self) -> Result<Vec<Outcome>, EraseError> {
        let mut done = Vec::new();
        for job in self.pending()? {
            tracing::info!(erasure = %job.erasure, "resuming a pending erasure");
            done.push(self.run(job).await?);
        }
        Ok(done)
    }

    /// The person's ids: `id` and its identity cluster, unless the cluster is over the bound.
    async fn cluster(&self, id: &str) -> Result<Vec<String>, EraseError> {
        let (target, id, max) = (self.store.clone(), id.to_owned(), self.max_ids);
        let found = tokio::task::spawn_blocking(move || -> Result<_, EraseError> {
            let mut store = Store::open(&target)?;
            let (cluster, truncated) = crate::query::attribution::cluster(&mut store, &id, max)?;
            let mut ids: BTreeSet<String> = cluster.user_ids.into_iter().chain(cluster.anonymous_ids).collect();
            ids.insert(id);
            Ok((ids, truncated))
        })
        .await
        .map_err(|e| EraseError::Join(e.to_string()))??;
        match found {
            (_, true) => Err(EraseError::TooLarge { max }),
            (ids, false) => Ok(ids.into_iter().collect()),
        }
    }

    /// Steps 3 to 7 of the module's list, each skipped when a previous run did it.
    async fn run(&self, mut job: Job) -> Result<Outcome, EraseError> {
        if job.suppress {
            self.privacy.suppressions.add(Suppression {
                id: job.erasure.clone(),
                created_at: job.requested_at.clone(),
                created_by: job.who.clone(),
                ids: job.hashes.clone(),
            })?;
        }
        let journal = match job.journal {
            Some(journal) => journal,
            None => {
                if job.suppress {
                    self.drain_ingest(&job.erasure).await?;
                }
                let stats = self.journal.stats();
                let horizon = stats.next_offset;
                let oldest = stats.consumers.iter().map(|(_, offset)| *offset).min().unwrap_or(horizon);
                let journal = JournalErased { horizon, undelivered_at_erasure: horizon.saturating_sub(oldest) };
                job.journal = Some(journal);
                self.save(&job)?;
                journal
            }
        };
        let horizon = journal.horizon;
        self.privacy.ledger.record(LedgerEntry { erasure: job.erasure.clone(), horizon, ids: job.hashes.clone() })?;
        self.wait_for_consumers(&job.erasure, horizon).await?;
        if job.store.is_none() {
            let (target, ids) = (self.store.clone(), job.ids.clone());
            let erased = tokio::task::spawn_blocking(move || Store::open(&target)?.erase(&ids))
                .await
                .map_err(|e| EraseError::Join(e.to_string()))??;
            // The same count as the rows the loader skips by the ledger: a person's rows gone.
            metrics::counter!("sluice_store_rows_total", "result" => "erased")
                .increment(erased.events + erased.impressions);
            job.store = Some(erased);
            self.save(&job)?;
        }
        if let Some(target) = &self.lake {
            let ids: HashSet<&str> = job.ids.iter().map(String::as_str).collect();
            let mut progress = job.clone();
            let mut saved = Ok(());
            let erased =
                crate::lake::erase::erase(&target.lake, target.part_bytes, &|id| ids.contains(id), &mut |one| {
                    // Each rewrite is counted durably, so a resumed run reports what the first did.
                    let lake = progress.lake.get_or_insert_default();
                    lake.objects_rewritten += one.objects_rewritten;
                    lake.records_removed += one.records_removed;
                    if saved.is_ok() {
                        saved = self.save(&progress);
                    }
                })
                .await;
            saved?;
            erased?;
            job.lake = Some(progress.lake.unwrap_or_default());
        }
        if let (Some(area), None) = (&self.dead_letters, job.dead_letters) {
            let (area, ids) = (area.clone(), job.ids.clone());
            let removed = tokio::task::spawn_blocking(move || {
                let ids: HashSet<&str> = ids.iter().map(String::as_str).collect();
                area.erase(&|record| names_one_of(record, &ids))
            })
            .await
            .map_err(|e| EraseError::Join(e.to_string()))?
            .map_err(|e| EraseError::DeadLetters(e.to_string()))?;
            job.dead_letters = Some(removed);
            self.save(&job)?;
        }
        let outcome = Outcome {
            erasure: job.erasure.clone(),
            ids: job.hashes.len(),
            store: job.store.unwrap_or_default(),
            lake: job.lake,
            dead_letters: job.dead_letters.unwrap_or_default(),
            journal,
            suppressed: job.suppress,
        };
        audit_erasure(&self.privacy.audit, &job, &outcome)?;
        job.done = true;
        job.ids = Vec::new();
        self.save(&job)?;
        tracing::info!(erasure = %job.erasure, ids = outcome.ids, "erasure done");
        Ok(outcome)
    }

    /// Waits until no ingest request holds a permit it took before now: each had checked its
    /// records against the suppressions of that time, and is now journaled.
    async fn drain_ingest(&self, erasure: &str) -> Result<(), EraseError> {
        let Some((permits, count)) = &self.ingest else { return Ok(()) };
        match tokio::time::timeout(self.wait, permits.acquire_many(*count)).await {
            // Released at once: new requests meanwhile were answered 503 with Retry-After.
            Ok(_all) => Ok(()),
            Err(_) => Err(EraseError::IngestBusy { erasure: erasure.to_owned(), waited: self.wait }),
        }
    }

    /// Waits until every consumer has delivered everything below `horizon`.
    async fn wait_for_consumers(&self, erasure: &str, horizon: u64) -> Result<(), EraseError> {
        let started = std::time::Instant::now();
        let mut polls = 0u32;
        loop {
            let stats = self.journal.stats();
            let Some((consumer, at)) = stats.consumers.into_iter().find(|(_, at)| *at < horizon) else {
                return Ok(());
            };
            // Every second, so that a lake writer that re-read records after a restart flushes them too.
            if polls.is_multiple_of(20) {
                self.privacy.ledger.nudge();
            }
            polls += 1;
            if started.elapsed() >= self.wait {
                return Err(EraseError::ConsumerBehind {
                    erasure: erasure.to_owned(),
                    consumer,
                    at,
                    horizon,
                    waited: self.wait,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn jobs_dir(&self) -> PathBuf {
        self.privacy.dir.join("erasures")
    }

    fn save(&self, job: &Job) -> Result<(), PrivacyError> {
        let dir = self.jobs_dir();
        std::fs::create_dir_all(&dir).map_err(|e| PrivacyError::io(&dir, e))?;
        let json = serde_json::to_vec_pretty(job)
            .map_err(|e| PrivacyError::Damaged { path: dir.join(&job.erasure), reason: e.to_string() })?;
        write_atomically(&dir.join(format!("{}.json", job.erasure)), &json)
    }

    /// The jobs not done, oldest first.
    fn pending(&self) -> Result<Vec<Job>, PrivacyError> {
        let dir = self.jobs_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PrivacyError::io(&dir, e)),
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut jobs = Vec::new();
        for path in paths {
            if let Some(job) = read_json::<Job>(&path)?.filter(|j| !j.done) {
                jobs.push(job);
            }
        }
        Ok(jobs)
    }
}

/// The audit entry of an erasure: who, what (hashed ids only) and the counts.
/// Whether a refused record (any JSON: it was refused) names one of `ids` where a record of
/// either kind names a person ([`RecordKind::person_ids`]), as a string or a number.
fn names_one_of(record: &serde_json::value::RawValue, ids: &HashSet<&str>) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(record.get()) else { return false };
    RecordKind::ALL.iter().flat_map(|kind| kind.person_ids()).any(|name| match fields.get(*name) {
        Some(serde_json::Value::String(id)) => ids.contains(id.as_str()),
        Some(serde_json::Value::Number(n)) => ids.contains(n.to_string().as_str()),
        _ => false,
    })
}

fn audit_erasure(audit: &AuditLog, job: &Job, outcome: &Outcome) -> Result<(), PrivacyError> {
    audit.append(&serde_json::json!({
        "who": job.who,
        "what": "erase user",
        "requestedAt": job.requested_at,
        "erasure": job.erasure,
        "suppress": job.suppress,
        "ids": job.hashes,
        "counts": outcome,
    }))
}
