/*!
The store loader: journal → store (SQLite or PostgreSQL), exactly once.

Each batch goes into the store in one transaction together with the loader's offset, and only
then is the offset committed to the journal (which may delete the segments below it). After a
crash the loader resumes from the offset the store holds, so nothing is loaded twice and nothing
acknowledged is lost. A store that cannot be reached at start, or fails a batch (down,
restarting, busy, disk full), is retried with backoff until it answers: a batch is never skipped,
and ingest goes on into the journal meanwhile. A store that refuses a record itself (a constraint
it breaks, a value the database cannot hold) would refuse it forever: that one record is found,
moved to the dead-letter area with the database's reason, and loading goes on past it.


The store keeps the journal's id beside the offset. At start the loader resumes only from an
offset of this journal that the journal has reached; an offset of another journal (a new or
restored data directory) or one past this journal's end would skip acknowledged records, so the
loader refuses to start and says how to go on (`sluice store adopt-journal`).
*/

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{Backoff, ConsumerStatus, NeedsOperator};

use serde_json::value::RawValue;

use crate::dead_letter::{DeadLetters, Rejection};
use crate::journal::{Entry, Journal};
use crate::privacy::Privacy;
use crate::record::DedupMode;
use crate::store::{self, ConsumerPosition, FilterIndexes, LoadOutcome, Store, StoreError, StoreTarget};

/// The loader's consumer name, in the journal and in the store's `consumer_offsets`.
pub const CONSUMER: &str = "store";

/// Store loader settings: its part of `[store]`, resolved by [`crate::config`] (whose defaults
/// these are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderConfig {
    /// Most journal entries loaded in one transaction; larger batches load faster, smaller ones
    /// show up in queries sooner.
    pub batch_rows: usize,
    /// Which impressions count as the same and are stored once.
    pub dedup: DedupMode,
    /// How long to wait for new entries before loading a partial batch.
    pub idle: Duration,
    /// The optional impression filter indexes the loader creates at start.
    pub filter_indexes: FilterIndexes,
}

/// The loader's live state, for `/readyz` and metrics.
pub type LoaderStatus = ConsumerStatus;

/// The loader's row in the store's `consumer_offsets`: one per journal when the journal is shared
/// by a cluster (`store@<stream id>`), so that a store loaded from another journal before (the
/// embedded one of a single node, a stream since recreated) keeps that row and this journal's
/// records load from its oldest; `store` on the embedded journal, whose data directory must
/// adopt the row (`sluice store adopt-journal`).
pub fn store_row(journal: &dyn Journal) -> String {
    if journal.shared() { format!("{CONSUMER}@{}", journal.id()) } else { CONSUMER.to_owned() }
}

/// A fresh status for the store loader.
pub fn new_status() -> LoaderStatus {
    ConsumerStatus::new(CONSUMER)
}

/// Loads the journal into the store at `target` until `shutdown` is cancelled, then finishes
/// what the journal already holds (until a read comes back empty) and returns. `start_end` is
/// the journal's end when sluice started, before it accepted anything: a store offset past it
/// (and past what this loader committed itself) belongs to records this journal never had.
#[expect(
    clippy::too_many_arguments,
    reason = "each is one thing the supervisor hands the loader; a struct of them would be built in one place and taken apart in the next line"
)]
pub async fn run(
    journal: Arc<dyn Journal>,
    target: StoreTarget,
    config: LoaderConfig,
    shutdown: CancellationToken,
    status: Arc<LoaderStatus>,
    dead_letters: Arc<DeadLetters>,
    start_end: u64,
    privacy: Arc<Privacy>,
) -> anyhow::Result<()> {
    let row: Arc<str> = store_row(journal.as_ref()).into();
    let (mut store, offset, fingerprint) =
        open_until_ready(target, journal.as_ref(), &row, start_end, config.filter_indexes, &shutdown, &status).await?;
    status.committed(offset);
    // Where the journal still holds the last entry the store loaded, read it again and compare:
    // a journal restored from an older copy keeps its id and may since have given that offset to
    // another record, and resuming there would skip the records that took the store's offsets.
    let check = fingerprint.filter(|_| offset > journal.stats().first_offset);
    let from = if check.is_some() { offset - 1 } else { offset };
    let mut reader = journal
        .reader(CONSUMER, from)
        .with_context(|| format!("store loader: opening the journal at offset {from}"))?;
    let idle = config.idle;
    let mut first = Vec::new();
    if let Some(expected) = check {
        let batch = reader
            .next_batch(1, idle)
            .await
            .with_context(|| format!("store loader: reading journal entry {from} to check it"))?;
        match batch.first() {
            Some(entry) if entry.offset == from && entry.fingerprint() != expected => {
                let error = NeedsOperator(format!(
                    "the store loader will not start: the journal's record at offset {from} is not the one the store loaded there, so this journal (id {}) is an older copy or another journal under the same id, and its records from offset {from} on were never loaded; resuming at the store's offset {offset} would skip them. To load this data directory's journal into the store from its oldest record, stop sluice and run `sluice store adopt-journal` with the same --data-dir and --store (records already stored are recognised and not stored twice); or start sluice with the data directory whose journal the store was loading",
                    journal.id()
                ));
                status.failing(&error);
                return Err(error.into());
            }
            // The check passed: the journal's position for this consumer is the store's offset,
            // not the entry re-read (its lag would otherwise show 1 until a new record came).
            Some(entry) if entry.offset == from => journal.commit(CONSUMER, offset),
            // The entry was recorded lost by `sluice journal repair`: nothing to compare, and
            // what was read instead is the next to load.
            _ => first = batch,
        }
    }
    tracing::info!(offset, "store loader started");
    loop {
        let batch = if first.is_empty() {
            reader.next_batch(config.batch_rows.max(1), idle).await.with_context(|| {
                format!("store loader: reading the journal after offset {}", status.committed_offset())
            })?
        } else {
            std::mem::take(&mut first)
        };
        if batch.is_empty() {
            // Checked only between reads, never by abandoning one midway: shutdown waits at most
            // one idle period, and everything journaled before it is loaded first.
            if shutdown.is_cancelled() {
                tracing::info!(offset = status.committed_offset(), "store loader caught up; stopping");
                return Ok(());
            }
            continue;
        }
        // Records an erasure named are not loaded; when the batch ends with one, the offset
        // is committed past it all the same, so that the erasure sees this loader pass it.
        let last = batch.last().cloned();
        let read = batch.len();
        let kept: Vec<Entry> = batch.into_iter().filter(|e| !privacy.erased(e)).collect();
        metrics::counter!("sluice_store_rows_total", "result" => "erased").increment((read - kept.len()) as u64);
        let mut next = status.committed_offset();
        if !kept.is_empty() {
            let outcome;
            (store, outcome) =
                load_until_stored(store, &row, kept, config.dedup, &shutdown, &status, &dead_letters).await?;
            next = outcome.next_offset;
        }
        if let Some(last) = last.filter(|last| last.offset >= next) {
            let skipped;
            let waiting = [last.clone()];
            let row = row.clone();
            (store, skipped) = retrying(store, &shutdown, &status, &waiting, move |s| s.skip_past(&row, &last)).await?;
            skipped.context("store loader: committing the offset past records an erasure named")?;
            next = waiting[0].offset + 1;
        }
        journal.commit(CONSUMER, next);
        status.committed(next);
    }
}

/// Opens the store and reads the loader's position, retrying with backoff while the database is
/// unreachable (a PostgreSQL server that is down when sluice starts), and returns the offset to
/// resume from once it is one of `journal`'s (see [`resume_from`]). A store that answers but
/// cannot be used (a schema from a newer sluice, a failed migration) is an error at once.
async fn open_until_ready(
    target: StoreTarget,
    journal: &dyn Journal,
    row: &Arc<str>,
    start_end: u64,
    filter_indexes: FilterIndexes,
    shutdown: &CancellationToken,
    status: &LoaderStatus,
) -> anyhow::Result<(Store, u64, Option<u32>)> {
    let target = Arc::new(target);
    let mut backoff = Backoff::default();
    loop {
        let (t, r) = (target.clone(), row.clone());
        type Opened = (Store, Option<ConsumerPosition>, Option<u32>);
        let result = tokio::task::spawn_blocking(move || -> Result<Opened, StoreError> {
            let mut store = Store::open(&t)?;
            store.ensure_filter_indexes(filter_indexes)?;
            let position = store.consumer_position(&r)?;
            let fingerprint = store.consumer_fingerprint(&r)?;
            Ok((store, position, fingerprint))
        })
        .await
        .context("the store loader's start-up task panicked")?;
        match result {
            Ok((mut store, position, mut fingerprint)) => {
                if status.recovered() {
                    tracing::info!(store = %target, "store loader reached the store");
                }
                // The journal's end when sluice started, not now: records acknowledged since
                // (while the store was down) would otherwise cover for a journal that lost its
                // end, and the loader would resume past them. Offsets this loader committed
                // itself are past it legitimately.
                let end = start_end.max(status.committed_offset());
                let first = journal.stats().first_offset;
                let resume = resume_from(position.as_ref(), journal.id(), first, end)
                    .map_err(|reason| {
                        let error = NeedsOperator(format!(
                            "the store loader will not start: {reason}. To load this data directory's journal into the store from its oldest record, stop sluice and run `sluice store adopt-journal` with the same --data-dir and --store (records already stored are recognised and not stored twice); or start sluice with the data directory whose journal the store was loading"
                        ));
                        status.failing(&error);
                        error
                    })?;
                let offset = resume.offset;
                store.bind_journal(journal.id());
                if position.as_ref() != Some(&resume) {
                    // A new position: whatever fingerprint was kept belonged to the old one.
                    fingerprint = None;
                    if let Some(old) = &position {
                        tracing::info!(
                            offset = old.offset,
                            journal = journal.id(),
                            "store loader: the store's offset predates journal identities; it is adopted for this journal"
                        );
                    }
                    let row = row.clone();
                    store = tokio::task::spawn_blocking(move || -> Result<Store, StoreError> {
                        store.set_consumer_position(&row, &resume)?;
                        Ok(store)
                    })
                    .await
                    .context("the store loader's start-up task panicked")?
                    .with_context(|| {
                        format!("store loader: cannot record the journal's id in the store at {target}")
                    })?;
                }
                return Ok((store, offset, fingerprint));
            }
            Err(e) if e.is_unavailable() => {
                if status.failing(&e) {
                    tracing::error!(error = %e, "store loader cannot reach the store; ingest continues into the journal, retrying with backoff");
                }
                if !backoff.sleep(shutdown).await {
                    anyhow::bail!(
                        "store loader stopped before the store could be reached ({e}); the journal keeps every entry for the next start"
                    );
                }
            }
            Err(e) => return Err(e).with_context(|| format!("store loader: cannot open the store at {target}")),
        }
    }
}

/// Where the loader resumes in the journal `journal_id` (retaining `first..end`), given the
/// position the store holds; `Err` says why resuming would skip or misplace records. An offset
/// written before journals had ids is adopted if it fits in this journal; a store that never
/// loaded starts at the oldest retained record.
fn resume_from(
    position: Option<&ConsumerPosition>,
    journal_id: &str,
    first: u64,
    end: u64,
) -> Result<ConsumerPosition, String> {
    let here = |offset| ConsumerPosition { offset, journal_id: Some(journal_id.to_owned()) };
    let Some(position) = position else { return Ok(here(first)) };
    if let Some(other) = position.journal_id.as_deref().filter(|other| *other != journal_id) {
        return Err(format!(
            "the store's offset {} belongs to journal {other}, but this data directory's journal is {journal_id} (a new or replaced data directory?), whose offsets are other records",
            position.offset
        ));
    }
    if position.offset > end {
        return Err(format!(
            "the store has loaded up to offset {}, but this data directory's journal (id {journal_id}) ends at offset {end}: it is not the journal the store was loading from, or it lost records; loading from the store's offset would skip records the journal acknowledged",
            position.offset
        ));
    }
    if position.offset < first {
        return Err(format!(
            "the store has loaded up to offset {}, but the journal's oldest record is at offset {first}: records {}..{first} were deleted before they were loaded and cannot be loaded any more",
            position.offset, position.offset
        ));
    }
    Ok(here(position.offset))
}

/// Loads one batch, retrying with exponential backoff and jitter until the store takes it.
/// Gives up only if shutdown is requested while the store is failing: the batch stays in the
/// journal, uncommitted, and loads on the next start.
///
/// A store that refuses the rows themselves ([`StoreError::is_refusal_of_data`]: a constraint they
/// break, a value it cannot hold) would refuse them on every retry and stop loading for good. The
/// batch is split in halves instead, each half loaded in turn, until the record at fault is alone:
/// it goes to the dead-letter area with the database's reason, the offset is committed past it,
/// and loading goes on. One bad record in a batch of n costs about 2·log₂(n) failed attempts.
async fn load_until_stored(
    mut store: Store,
    row: &Arc<str>,
    batch: Vec<Entry>,
    mode: DedupMode,
    shutdown: &CancellationToken,
    status: &LoaderStatus,
    dead_letters: &DeadLetters,
) -> anyhow::Result<(Store, LoadOutcome)> {
    let entries: Arc<[Entry]> = batch.into();
    let mut total = LoadOutcome::default();
    // Ranges of `entries` still to load, the next one last: popped in journal order.
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..entries.len());
    while let Some(range) = pending.pop() {
        let result;
        let started = Instant::now();
        let (part, rows, consumer) = (entries.clone(), range.clone(), row.clone());
        (store, result) = retrying(store, shutdown, status, &entries[range.start..], move |s| {
            s.load(&consumer, &part[rows.clone()], mode)
        })
        .await?;
        match result {
            Ok(outcome) => {
                metrics::histogram!("sluice_store_batch_seconds").record(started.elapsed().as_secs_f64());
                for (result, n) in [
                    ("inserted", outcome.inserted),
                    ("duplicate", outcome.duplicates),
                    ("unparseable", outcome.unparseable),
                ] {
                    metrics::counter!("sluice_store_rows_total", "result" => result).increment(n);
                }
                if outcome.unparseable > 0 {
                    // Skipped (and logged) by the store; kept in the dead-letter area, not only the log.
                    for (entry, reason) in store::unparseable(&entries[range]) {
                        let reason = format!("the store loader cannot read journal entry {}: {reason}", entry.offset);
                        dead_letter(dead_letters, entry, &reason)
                            .with_context(|| format!("store loader: dead-lettering journal entry {}", entry.offset))?;
                    }
                }
                total.inserted += outcome.inserted;
                total.duplicates += outcome.duplicates;
                total.unparseable += outcome.unparseable;
                total.next_offset = outcome.next_offset;
            }
            Err(refusal) if range.len() > 1 => {
                let (first, last) = (entries[range.start].offset, entries[range.end - 1].offset);
                tracing::warn!(error = %refusal, first, last, "the store refuses this batch's data; splitting it to find the record at fault");
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
            Err(refusal) => {
                let entry = &entries[range.start];
                let reason = format!("the store refused journal entry {}: {refusal}", entry.offset);
                dead_letter(dead_letters, entry, &reason)
                    .with_context(|| format!("store loader: dead-lettering journal entry {}", entry.offset))?;
                let next_offset = entry.offset + 1;
                let skipped;
                let (all, at, consumer) = (entries.clone(), range.start, row.clone());
                (store, skipped) = retrying(store, shutdown, status, &entries[range.start..], move |s| {
                    s.skip_past(&consumer, &all[at])
                })
                .await?;
                skipped.with_context(|| {
                    format!("store loader: committing the offset past journal entry {}", entry.offset)
                })?;
                metrics::counter!("sluice_store_rows_total", "result" => "dead_lettered").increment(1);
                tracing::error!(error = %refusal, offset = entry.offset, kind = entry.kind.name(), "the store refuses this record; it is in the dead-letter area and loading goes on");
                total.next_offset = next_offset;
            }
        }
    }
    Ok((store, total))
}

/// Runs `op` on a blocking thread (both backends' drivers block), retrying with exponential
/// backoff and jitter while it fails for a reason retrying can fix. Returns the store and `op`'s
/// result: its value, or the store's refusal of the data. `waiting` are the entries not yet
/// stored, named if shutdown interrupts the retries.
async fn retrying<T: Send + 'static>(
    mut store: Store,
    shutdown: &CancellationToken,
    status: &LoaderStatus,
    waiting: &[Entry],
    op: impl Fn(&mut Store) -> Result<T, StoreError> + Send + Sync + 'static,
) -> anyhow::Result<(Store, Result<T, StoreError>)> {
    let op = Arc::new(op);
    let mut backoff = Backoff::default();
    loop {
        let run = op.clone();
        let result;
        (store, result) = tokio::task::spawn_blocking(move || {
            let result = run(&mut store);
            (store, result)
        })
        .await
        .context("the store loader's load task panicked")?;
        match result {
            Ok(value) => {
                if status.recovered() {
                    tracing::info!("store loader recovered; loading again");
                }
                return Ok((store, Ok(value)));
            }
            Err(e) if e.is_refusal_of_data() => return Ok((store, Err(e))),
            Err(e @ StoreError::JournalChanged { .. }) => return Err(NeedsOperator(e.to_string()).into()),
            Err(e) => {
                let first = waiting.first().map_or(0, |e| e.offset);
                if status.failing(&e) {
                    tracing::error!(error = %e, offset = first, "store loader cannot write to the store; retrying with backoff until it can");
                }
                if !backoff.sleep(shutdown).await {
                    anyhow::bail!(
                        "store loader stopped while the store was failing ({e}); entries from offset {first} stay in the journal and load on the next start"
                    );
                }
            }
        }
    }
}

/// Writes a journal entry the store cannot take to the dead-letter area, with the reason.
fn dead_letter(dead_letters: &DeadLetters, entry: &Entry, reason: &str) -> std::io::Result<()> {
    // Every journaled record is JSON; should one not be, it is kept as a JSON string.
    let text = String::from_utf8_lossy(&entry.payload);
    let record = match serde_json::from_str::<Box<RawValue>>(&text) {
        Ok(raw) => raw,
        Err(_) => RawValue::from_string(serde_json::to_string(&text)?)?,
    };
    let reason = format!("{reason} ({})", entry.kind.name());
    // For the store, `index` is the entry's journal offset.
    let index = usize::try_from(entry.offset).unwrap_or(usize::MAX);
    dead_letters.write(
        "store",
        entry.received_at_ms,
        &[Rejection { index, field: None, reason: &reason, record: &record }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64, journal: Option<&str>) -> ConsumerPosition {
        ConsumerPosition { offset, journal_id: journal.map(str::to_owned) }
    }

    #[test]
    fn the_loader_resumes_only_from_an_offset_of_this_journal_within_it() {
        assert_eq!(resume_from(None, "j1", 3, 10), Ok(at(3, Some("j1"))), "a store that never loaded");
        assert_eq!(resume_from(Some(&at(7, Some("j1"))), "j1", 3, 10), Ok(at(7, Some("j1"))));
        assert_eq!(resume_from(Some(&at(10, Some("j1"))), "j1", 3, 10), Ok(at(10, Some("j1"))), "at the end");
        assert_eq!(resume_from(Some(&at(7, None)), "j1", 3, 10), Ok(at(7, Some("j1"))), "adopted");
        let other = resume_from(Some(&at(7, Some("j0"))), "j1", 3, 10).unwrap_err();
        assert!(other.contains("belongs to journal j0"), "{other}");
        let ahead = resume_from(Some(&at(11, Some("j1"))), "j1", 3, 10).unwrap_err();
        assert!(ahead.contains("ends at offset 10"), "{ahead}");
        let ahead_unknown = resume_from(Some(&at(11, None)), "j1", 3, 10).unwrap_err();
        assert!(ahead_unknown.contains("ends at offset 10"), "{ahead_unknown}");
        let gone = resume_from(Some(&at(2, Some("j1"))), "j1", 3, 10).unwrap_err();
        assert!(gone.contains("deleted before they were loaded"), "{gone}");
    }
}
