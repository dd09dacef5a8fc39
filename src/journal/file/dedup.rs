/*!
Entrance dedup: the ids of the records appended within the dedup window
([`dedup_window_secs`](super::FileJournalConfig::dedup_window_secs)), so that a record sent again
(a client's retry, a re-posted batch) is stored once, and every consumer (store, lake, stream
outputs) sees it once. It is what JetStream's `Nats-Msg-Id` duplicate window does for the
JetStream journal.

The index belongs to the writer thread, which consults it while it encodes a group: no lock on
the hot path. A record whose id is held is not written, takes no offset and is counted in
[`Appended::duplicates`](crate::journal::Appended::duplicates); inside a group the first
occurrence wins, whichever request it came in. The group's ids are added as it is encoded and
taken back out if its write or fsync fails: an id stays only once its record is durable, so a
retry after a failed write is written, not dropped as a duplicate of nothing.

An id is remembered from its record's `received_at_ms` for the window (judged against the
wall clock when a group is written); a record that arrived before the window is not remembered
at all. The arrival order is kept in runs of about a second, so an id can outlive the window by
up to [`RUN_MS`].

# Memory
At most [`dedup_max_ids`](super::FileJournalConfig::dedup_max_ids) ids are held; past that the
oldest are evicted first, and the window that is really covered shrinks (shown by
`sluice_journal_dedup_window_seconds` and [`JournalStats::dedup_window_secs`](crate::journal::JournalStats::dedup_window_secs)).
Each id is held twice: in a hash set (16 bytes and a control byte per slot) and in the arrival
order (16 bytes per slot), both with a power of two of slots. Ids come and go all the time
(expired or evicted), and every removal leaves a tombstone in the set: once those fill it, the
set doubles unless at most 7/16 of its slots are live, so in the steady state it has about
2.3 slots per id. Measured with std's `HashSet` (an insert and an eviction per id, six times
the cap): 1.8 million ids settle in 2^22 set slots (71 MB) and 2^21 order slots (34 MB), about
105 MB or 58 bytes per id; 3.5 million in 2^23 and 2^22 slots, about 210 MB. Caps just under
7/16 of a power of two use their memory best (1,835,008; 3,670,016; 7,340,032 ids). The runs
add 16 bytes per second of the window (1.4 MB for a day).

The default of 1.8 million ids (about 105 MB) covers the whole day up to 20 records a second on
average, and half an hour at 1,000 a second: far longer than Split's retry (once, after 300
ms) and the retries of Segment's libraries, which is what dedup is for.

# Start-up
[`rebuild`] fills the index from the retained segments when the journal opens: only segments
last written within the window are read (a record is written after it arrived, so an older
file holds no record inside the window), and of those only entries that arrived within it,
their ids computed again from the payload with [`RecordId::of_payload`]. Start-up therefore
costs a read of the last window's records: `cargo bench --bench journal -- open` measured 2.14 s
to open a journal holding 1 million ~300-byte impressions (317 MB) that all arrived within the
window, against 41 ms with dedup off (2-core development machine, load average 5.7 from other
builds; BENCHMARKS.md): about 2 µs per record, most of it parsing the impression for its id.
A record whose payload does not decode is skipped, with one warning counting them.
*/

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::format::SegmentReader;
use super::segment::Segment;
use crate::record::RecordId;

/// The arrival order is kept in runs whose ids arrived within this many milliseconds of each
/// other, so the order costs one run per second rather than one time per id.
pub(super) const RUN_MS: i64 = 1000;

/// Hashes an id by folding its bits: ids are 128-bit xxh3 hashes already, so hashing them again
/// (SipHash, the default) would only cost time on the hot path.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, id: u128) {
        self.0 = (id as u64) ^ ((id >> 64) as u64);
    }
}

/// Ids that arrived within about [`RUN_MS`] of each other, in the arrival order.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// The latest arrival of the run's ids: the run is forgotten once this leaves the window.
    newest_ms: i64,
    /// How many ids of the arrival order the run covers.
    ids: usize,
}

/// The ids appended within the dedup window, bounded in number.
pub(super) struct DedupIndex {
    /// The window in milliseconds; 0 turns dedup off.
    window_ms: i64,
    /// The most ids held.
    max_ids: usize,
    /// Every id held.
    held: HashSet<u128, BuildHasherDefault<IdHasher>>,
    /// The ids held, oldest first.
    order: VecDeque<u128>,
    /// When the ids of `order` arrived, in runs covering it exactly.
    runs: VecDeque<Run>,
    /// Ids added by the group being written, which a failed write takes back out.
    pending: usize,
    /// The latest arrival among ids the cap evicted: dedup covers only what arrived after it.
    evicted_newest_ms: Option<i64>,
}

impl DedupIndex {
    /// An empty index over `window_secs` holding at most `max_ids` ids (either 0: dedup off).
    pub fn new(window_secs: u64, max_ids: u64) -> DedupIndex {
        let window_ms = i64::try_from(window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        DedupIndex {
            window_ms: if max_ids == 0 { 0 } else { window_ms },
            max_ids: usize::try_from(max_ids).unwrap_or(usize::MAX),
            held: HashSet::default(),
            order: VecDeque::new(),
            runs: VecDeque::new(),
            pending: 0,
            evicted_newest_ms: None,
        }
    }

    /// False when dedup is turned off.
    pub fn enabled(&self) -> bool {
        self.window_ms > 0
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The earliest arrival still inside the window at `now_ms`.
    fn cutoff(&self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.window_ms)
    }

    /// Forgets the ids whose arrival has left the window at `now_ms`. Call between groups.
    pub fn expire(&mut self, now_ms: i64) {
        let cutoff = self.cutoff(now_ms);
        while let Some(run) = self.runs.front().copied().filter(|run| run.newest_ms < cutoff) {
            for id in self.order.drain(..run.ids) {
                self.held.remove(&id);
            }
            self.runs.pop_front();
        }
    }

    /// Whether the record `id` that arrived at `at_ms` is new; a new one is held from now on
    /// (pending until [`keep`](Self::keep) or [`take_back`](Self::take_back)). A record that
    /// arrived before the window is new unless held, and is not remembered.
    pub fn admit(&mut self, id: RecordId, at_ms: i64, now_ms: i64) -> bool {
        if !self.enabled() {
            return true;
        }
        if at_ms < self.cutoff(now_ms) {
            return !self.held.contains(&id.0);
        }
        if !self.held.insert(id.0) {
            return false;
        }
        self.order.push_back(id.0);
        match self.runs.back_mut() {
            Some(run) if at_ms <= run.newest_ms.saturating_add(RUN_MS) => {
                run.newest_ms = run.newest_ms.max(at_ms);
                run.ids += 1;
            }
            _ => self.runs.push_back(Run { newest_ms: at_ms, ids: 1 }),
        }
        self.pending += 1;
        if self.order.len() > self.max_ids {
            self.evict_oldest();
        }
        true
    }

    /// The pending ids' records are durable: keep them.
    pub fn keep(&mut self) {
        self.pending = 0;
    }

    /// The pending ids' records were not written: forget them, so that a retry is written.
    pub fn take_back(&mut self) {
        // The cap may have evicted some of them already (a group larger than the cap).
        for _ in 0..self.pending.min(self.order.len()) {
            let Some(id) = self.order.pop_back() else { break };
            self.held.remove(&id);
            if let Some(run) = self.runs.back_mut() {
                run.ids -= 1;
                if run.ids == 0 {
                    self.runs.pop_back();
                }
            }
        }
        self.pending = 0;
    }

    /// Evicts the oldest id to make room.
    fn evict_oldest(&mut self) {
        let Some(id) = self.order.pop_front() else { return };
        self.held.remove(&id);
        if let Some(run) = self.runs.front_mut() {
            self.evicted_newest_ms = Some(self.evicted_newest_ms.map_or(run.newest_ms, |ms| ms.max(run.newest_ms)));
            run.ids -= 1;
            if run.ids == 0 {
                self.runs.pop_front();
            }
        }
        self.pending = self.pending.min(self.order.len());
    }

    /// How far back, at `now_ms`, a record sent again is surely recognised: the window, or less
    /// once the cap evicted ids that were still inside it. 0 when dedup is off.
    pub fn covered_ms(&self, now_ms: i64) -> i64 {
        match self.evicted_newest_ms {
            Some(evicted) if evicted >= self.cutoff(now_ms) => now_ms.saturating_sub(evicted).max(0),
            _ => self.window_ms,
        }
    }
}

/// The current wall-clock time in epoch milliseconds (what sources stamp `received_at_ms` with).
pub(super) fn now_ms() -> i64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX)
}

/// Fills `index` from the retained `segments` (oldest first): the ids of every record that
/// arrived within the window, read from the segments last written inside it.
///
/// The index is an optimisation of delivery, not part of durability: a segment that cannot be
/// read to its end is warned about and the rest of it skipped, for the reader that reaches it
/// reports the damage (as it always has).
pub(super) fn rebuild<'a>(index: &mut DedupIndex, segments: impl IntoIterator<Item = &'a Segment>) {
    if !index.enabled() {
        return;
    }
    let started = std::time::Instant::now();
    let now = now_ms();
    let cutoff = index.cutoff(now);
    let since = UNIX_EPOCH + Duration::from_millis(u64::try_from(cutoff).unwrap_or(0));
    let (mut read, mut undecodable) = (0u64, 0u64);
    let mut first_undecodable = None;
    // A file last written before the window began holds no record that arrived inside it.
    for segment in segments.into_iter().filter(|segment| segment.last_write >= since) {
        let mut reader = match SegmentReader::open(&segment.path, segment.base) {
            Ok(reader) => reader,
            Err(error) => {
                tracing::warn!(%error, "journal: could not read a segment to rebuild the dedup index; its records may be accepted again");
                continue;
            }
        };
        let mut offset = segment.base;
        loop {
            let entry = match reader.next_entry() {
                Ok(Some(entry)) => entry,
                Ok(None) => break,
                // Damage, or a kind this sluice does not know: the reader reports either.
                Err(failure) => {
                    let error = failure.into_error(reader.path());
                    tracing::warn!(%error, "journal: stopped reading a segment to rebuild the dedup index; the rest of its records may be accepted again");
                    break;
                }
            };
            if entry.received_at_ms >= cutoff {
                read += 1;
                match RecordId::of_payload(entry.kind, &entry.payload) {
                    Ok(id) => {
                        index.admit(id, entry.received_at_ms, now);
                    }
                    Err(_) => {
                        undecodable += 1;
                        first_undecodable.get_or_insert(offset);
                    }
                }
            }
            offset += 1;
        }
    }
    index.keep();
    if let Some(offset) = first_undecodable {
        tracing::warn!(
            undecodable,
            first_offset = offset,
            "journal: records whose payload does not decode were left out of the dedup index"
        );
    }
    tracing::info!(
        ids = index.len(),
        read,
        seconds = started.elapsed().as_secs_f64(),
        "journal: rebuilt the dedup index from the retained segments"
    );
}
