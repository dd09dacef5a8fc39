/*!
Retention: deciding which old segments may go (the rule is in [`super`]) and deleting them.
*/

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use super::segment::Segment;
use super::{FileJournalConfig, Shared, lock};

/// Deletes the segments retention allows. Runs on the writer thread, the only one that changes
/// the segment list, so the list cannot change under it.
pub(super) fn enforce(shared: &Shared) {
    let committed = lock(&shared.consumers).values().map(|place| place.offset).min();
    let doomed: Vec<_> = {
        let segments = lock(&shared.segments);
        let count = deletable_prefix(&segments, committed, &shared.config, SystemTime::now());
        segments.iter().take(count).map(|segment| segment.path.clone()).collect()
    };
    for path in doomed {
        // Unlink before forgetting: a reader that finds the segment in the list meanwhile gets
        // NotFound on open and reports OffsetGone. Readers that already hold it open keep reading.
        // No directory fsync: a deletion lost in a crash only brings back a segment to delete again.
        if let Err(error) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %error, "journal: could not delete a consumed segment");
            return;
        }
        lock(&shared.segments).pop_front();
        tracing::info!(path = %path.display(), "journal: deleted a consumed segment");
    }
}

/// How many of the oldest `segments` may be deleted, given the lowest committed offset of all
/// consumers (`None`: no consumer registered). The active (last) segment never is.
fn deletable_prefix(
    segments: &VecDeque<Segment>,
    committed: Option<u64>,
    config: &FileJournalConfig,
    now: SystemTime,
) -> usize {
    let Some(committed) = committed else { return 0 };
    let window = Duration::from_secs(config.replay_window_secs);
    let mut disk_bytes: u64 = segments.iter().map(|segment| segment.bytes).sum();
    let mut count = 0;
    for (segment, following) in segments.iter().zip(segments.iter().skip(1)) {
        let consumed = committed >= following.base;
        // A last write in the future (clock stepped back) counts as recent.
        let expired = now.duration_since(segment.last_write).is_ok_and(|age| age >= window);
        if !(consumed && (expired || disk_bytes > config.max_bytes / 2)) {
            break;
        }
        disk_bytes -= segment.bytes;
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// Segments of 100 bytes starting at offsets 0, 10, 20, … written `ages` ago.
    fn segments(now: SystemTime, ages: &[Duration]) -> VecDeque<Segment> {
        (0u64..)
            .zip(ages)
            .map(|(i, age)| Segment { base: i * 10, path: PathBuf::new(), bytes: 100, last_write: now - *age })
            .collect()
    }

    fn config(max_bytes: u64) -> FileJournalConfig {
        FileJournalConfig { segment_bytes: 100, max_bytes, replay_window_secs: 3600, ..FileJournalConfig::default() }
    }

    #[test]
    fn only_segments_consumed_and_out_of_the_replay_window_go() {
        let now = SystemTime::now();
        let list = segments(now, &[2 * HOUR, 2 * HOUR, 2 * HOUR, HOUR / 2]);
        assert_eq!(
            deletable_prefix(&list, Some(20), &config(u64::MAX), now),
            2,
            "committed to the third segment's base"
        );
        assert_eq!(
            deletable_prefix(&list, Some(19), &config(u64::MAX), now),
            1,
            "second segment's last entry unconsumed"
        );
        assert_eq!(deletable_prefix(&list, None, &config(u64::MAX), now), 0, "no consumer");
        let young = segments(now, &[HOUR / 2, 2 * HOUR]);
        assert_eq!(deletable_prefix(&young, Some(10), &config(u64::MAX), now), 0, "within the replay window");
    }

    #[test]
    fn the_active_segment_is_never_deleted() {
        let now = SystemTime::now();
        let list = segments(now, &[2 * HOUR]);
        assert_eq!(deletable_prefix(&list, Some(u64::MAX), &config(0), now), 0);
    }

    #[test]
    fn over_half_the_budget_consumed_segments_go_despite_the_window_until_back_under_half() {
        let now = SystemTime::now();
        let list = segments(now, &[Duration::ZERO; 5]);
        // 500 bytes on disk, budget 500: delete down to at most 250, consumed segments only.
        assert_eq!(deletable_prefix(&list, Some(40), &config(500), now), 3);
        assert_eq!(deletable_prefix(&list, Some(10), &config(500), now), 1);
    }
}
