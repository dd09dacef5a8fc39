/*!
`sluice journal repair` on real damage: what it keeps (at the same offsets), what it records as
lost, what it quarantines, and that readers then go past the loss.
*/

use super::*;
use crate::journal::JournalError;
use crate::journal::file::format::{ENTRY_HEADER_LEN, HEADER_LEN, whole_entry_at};
use crate::journal::file::{Interrupted, LOST_OFFSETS_FILE, QUARANTINE_DIR, RepairError, repair};

/// A closed journal of records `0..count`, one append each, in small segments (about six
/// records each); returns its segment files.
async fn journal_of(dir: &Path, count: u64) -> Vec<PathBuf> {
    let journal = FileJournal::open(dir, small_segments()).unwrap();
    for i in 0..count {
        journal.append(records(i..i + 1)).await.unwrap();
    }
    journal.close().await;
    let files = segment_files(dir);
    assert!(files.len() >= 4, "{} segments", files.len());
    files
}

/// Like [`journal_of`], but goes on past `at_least` records until the newest segment holds four
/// records, so that it has intact entries after a damaged second one; returns the record count too.
async fn journal_with_four_in_the_newest(dir: &Path, at_least: u64) -> (Vec<PathBuf>, u64) {
    let journal = FileJournal::open(dir, small_segments()).unwrap();
    let mut count = 0;
    while count < at_least || entry_starts(&std::fs::read(segment_files(dir).pop().unwrap()).unwrap()).len() != 4 {
        journal.append(records(count..count + 1)).await.unwrap();
        count += 1;
    }
    journal.close().await;
    (segment_files(dir), count)
}

/// The byte position of each entry of the segment file `bytes`.
fn entry_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut position = HEADER_LEN as usize;
    while let Some(len) = whole_entry_at(bytes, position) {
        starts.push(position);
        position += len;
    }
    assert_eq!(position, bytes.len(), "an undamaged segment");
    starts
}

/// Changes the bytes of entry `index` of the segment file `path` with `damage`; returns the
/// offset that entry had.
fn damage_entry(path: &Path, index: usize, damage: impl FnOnce(&mut [u8])) -> u64 {
    let mut bytes = std::fs::read(path).unwrap();
    let starts = entry_starts(&bytes);
    let end = starts.get(index + 1).copied().unwrap_or(bytes.len());
    damage(&mut bytes[starts[index]..end]);
    std::fs::write(path, bytes).unwrap();
    let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
    base + index as u64
}

fn flip_payload(entry: &mut [u8]) {
    entry[ENTRY_HEADER_LEN + 2] ^= 0x20;
}

fn zero_length(entry: &mut [u8]) {
    entry[..4].fill(0);
}

/// Every entry a reader returns from offset 0 until it has caught up.
async fn read_everything(journal: &FileJournal) -> Vec<Entry> {
    let mut reader = journal.reader("loader", 0).unwrap();
    let mut entries = Vec::new();
    loop {
        let batch = reader.next_batch(100, Duration::from_millis(300)).await.unwrap();
        if batch.is_empty() {
            return entries;
        }
        entries.extend(batch);
    }
}

/// Asserts that `entries` are records `0..count` but those at the offsets `lost`, each at its own offset.
fn assert_all_but(entries: &[Entry], count: u64, lost: impl IntoIterator<Item = u64>) {
    let lost: Vec<u64> = lost.into_iter().collect();
    let expected: Vec<u64> = (0..count).filter(|offset| !lost.contains(offset)).collect();
    let found: Vec<u64> = entries.iter().map(|entry| entry.offset).collect();
    assert_eq!(found, expected);
    for entry in entries {
        assert_eq!(entry.payload, record(entry.offset).payload, "offset {}", entry.offset);
    }
}

#[tokio::test]
async fn one_flipped_byte_in_a_sealed_segment_loses_exactly_that_record() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let original = std::fs::read(&files[1]).unwrap();
    let lost = damage_entry(&files[1], 2, flip_payload);

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.repaired.len(), 1, "{report:?}");
    let repaired = &report.repaired[0];
    assert_eq!(repaired.lost.iter().map(|(range, _)| range.clone()).collect::<Vec<_>>(), vec![lost..lost + 1]);
    let quarantined = repaired.quarantined.clone().unwrap();
    assert_eq!(quarantined, dir.path().join(QUARANTINE_DIR).join(files[1].file_name().unwrap()));
    let mut damaged = original;
    let third = entry_starts(&damaged)[2];
    damaged[third + ENTRY_HEADER_LEN + 2] ^= 0x20;
    assert_eq!(std::fs::read(&quarantined).unwrap(), damaged, "the damaged bytes are kept, all of them");
    assert!(
        std::fs::read_to_string(dir.path().join(LOST_OFFSETS_FILE)).unwrap().contains(&format!("{lost}..{}", lost + 1))
    );

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, [lost]);
    assert_eq!(
        journal.append(records(40..41)).await.unwrap().offsets,
        (40..41).collect::<Vec<_>>(),
        "appends continue where they did"
    );
    assert_eq!(repair(dir.path()).unwrap().repaired, vec![], "a second repair finds nothing to do");
}

#[tokio::test]
async fn a_zeroed_length_in_a_sealed_segment_keeps_the_records_after_it_at_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    // The broken entry's length no longer says where the next one starts; the next segment's
    // base still says where the intact ones after it end.
    let lost = damage_entry(&files[2], 1, zero_length);

    let report = repair(dir.path()).unwrap();
    assert_eq!(
        report.repaired[0].lost.iter().map(|(range, _)| range.clone()).collect::<Vec<_>>(),
        vec![lost..lost + 1]
    );
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, [lost]);
}

#[tokio::test]
async fn one_flipped_byte_in_the_newest_segment_loses_exactly_that_record_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (files, count) = journal_with_four_in_the_newest(dir.path(), 30).await;
    let lost = damage_entry(files.last().unwrap(), 1, flip_payload);
    let refused = FileJournal::open(dir.path(), small_segments()).err().unwrap();
    assert!(refused.to_string().contains("sluice journal repair"), "{refused}");

    let report = repair(dir.path()).unwrap();
    assert_eq!(
        report.repaired[0].lost.iter().map(|(range, _)| range.clone()).collect::<Vec<_>>(),
        vec![lost..lost + 1]
    );
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(journal.stats().next_offset, count);
    assert_eq!(
        journal.append(records(count..count + 2)).await.unwrap().offsets,
        (count..count + 2).collect::<Vec<_>>()
    );
    assert_all_but(&read_everything(&journal).await, count + 2, [lost]);
}

#[tokio::test]
async fn a_zeroed_length_in_the_newest_segment_skips_past_every_offset_the_records_may_have_had() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = journal_with_four_in_the_newest(dir.path(), 30).await;
    let newest = files.last().unwrap().clone();
    let newest_len = newest.metadata().unwrap().len();
    let lost = damage_entry(&newest, 1, zero_length);

    let report = repair(dir.path()).unwrap();
    let repaired = &report.repaired[0];
    // How many entries followed is unknowable: the loss runs to the most there could have been.
    let bytes_from_damage = newest_len - entry_starts_before_damage(&repaired.quarantined.clone().unwrap());
    let bound = lost + bytes_from_damage / ENTRY_HEADER_LEN as u64;
    assert_eq!(repaired.lost.iter().map(|(range, _)| range.clone()).collect::<Vec<_>>(), vec![lost..bound]);
    assert_eq!(repaired.new_active, Some(bound));

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!(journal.stats().next_offset, bound, "no offset a consumer may have seen is given again");
    assert_eq!(
        journal.append(records(bound..bound + 2)).await.unwrap().offsets,
        (bound..bound + 2).collect::<Vec<_>>()
    );
    let entries = read_everything(&journal).await;
    assert_all_but(&entries, bound + 2, lost..bound);
}

/// The byte position where the first broken entry of the (quarantined) segment file `path` starts.
fn entry_starts_before_damage(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let mut position = HEADER_LEN as usize;
    while let Some(len) = whole_entry_at(&bytes, position) {
        position += len;
    }
    position as u64
}

#[tokio::test]
async fn a_torn_tail_is_quarantined_without_recording_a_loss() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let newest = files.last().unwrap();
    let len = newest.metadata().unwrap().len();
    std::fs::OpenOptions::new().write(true).open(newest).unwrap().set_len(len - 3).unwrap();

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.repaired[0].lost, vec![]);
    assert!(report.repaired[0].quarantined.as_ref().unwrap().exists());
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 39, []);
}

#[tokio::test]
async fn a_segment_file_removed_by_hand_is_recorded_as_lost_and_readers_go_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let bases = bases_on_disk(dir.path());
    std::fs::remove_file(&files[1]).unwrap();

    let report = repair(dir.path()).unwrap();
    let repaired = &report.repaired[0];
    assert_eq!((repaired.quarantined.clone(), repaired.lost[0].0.clone()), (None, bases[1]..bases[2]));
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, bases[1]..bases[2]);
}

#[tokio::test]
async fn damage_in_several_segments_is_all_repaired_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let first = damage_entry(&files[0], 0, flip_payload);
    let second = damage_entry(&files[2], 3, flip_payload);

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.repaired.len(), 2);
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, [first, second]);
}

#[tokio::test]
async fn a_repair_interrupted_before_moving_the_damaged_file_is_started_over() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let lost = damage_entry(&files[1], 2, flip_payload);
    // What a crash right after writing the first temporary file leaves behind.
    let leftover = dir.path().join(format!("{}.repair", files[1].file_name().unwrap().to_str().unwrap()));
    std::fs::write(&leftover, b"half written").unwrap();
    let refused = FileJournal::open(dir.path(), small_segments()).err().unwrap();
    assert!(matches!(&refused, JournalError::Corrupt { path, .. } if *path == leftover), "{refused}");

    let report = repair(dir.path()).unwrap();
    assert_eq!(report.interrupted, Some(Interrupted::Undone(vec![leftover])));
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, [lost]);
}

#[tokio::test]
async fn a_repair_interrupted_after_moving_the_damaged_file_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let lost = damage_entry(&files[1], 2, flip_payload);
    repair(dir.path()).unwrap();
    // Put the state back to just after the commit point: the replacements under their
    // temporary names, the original name free.
    let replacements: Vec<PathBuf> =
        segment_files(dir.path()).into_iter().filter(|path| !files.contains(path) || *path == files[1]).collect();
    assert_eq!(replacements.len(), 2, "the records before and after the damage");
    for path in &replacements {
        std::fs::rename(path, format!("{}.repair", path.display())).unwrap();
    }

    let report = repair(dir.path()).unwrap();
    assert!(matches!(report.interrupted, Some(Interrupted::Finished(ref placed)) if placed.len() == 2), "{report:?}");
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_all_but(&read_everything(&journal).await, 40, [lost]);
}

#[tokio::test]
async fn a_segment_file_renamed_by_hand_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let files = journal_of(dir.path(), 40).await;
    let bases = bases_on_disk(dir.path());
    // Segment 1's records run up to bases[2]; a following segment claiming to start earlier
    // leaves no offsets they could have.
    let renamed = dir.path().join(format!("{:020}.seg", bases[2] - 1));
    std::fs::rename(&files[2], &renamed).unwrap();
    let listing = || {
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|entry| entry.unwrap().path()).collect();
        names.sort();
        names
    };
    let before = listing();

    let refused = repair(dir.path()).unwrap_err();
    assert!(matches!(&refused, RepairError::Unsafe { path, .. } if *path == files[1]), "{refused}");
    assert!(refused.to_string().contains("safely"), "{refused}");
    assert_eq!(listing(), before, "nothing was moved or written");
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn after_any_damage_and_a_repair_every_record_read_is_the_one_written_at_its_offset_and_every_other_is_recorded_lost(
            count in 20u64..50,
            segment in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            len in 1usize..300,
            damage in Damage::any(),
        ) {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
                for i in 0..count {
                    journal.append(records(i..i + 1)).await.unwrap();
                }
                journal.close().await;
                let files = segment_files(dir.path());
                let path = segment.get(&files);
                let mut bytes = std::fs::read(path).unwrap();
                let start = HEADER_LEN as usize + at.index(bytes.len() - HEADER_LEN as usize);
                damage.apply(&mut bytes, start, len);
                std::fs::write(path, &bytes).unwrap();

                let report = repair(dir.path()).unwrap();
                let lost: Vec<Range<u64>> =
                    report.repaired.iter().flat_map(|repaired| &repaired.lost).map(|(range, _)| range.clone()).collect();
                let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
                let next = journal.stats().next_offset;
                let entries = read_everything(&journal).await;
                let mut previous = None;
                for entry in &entries {
                    prop_assert!(entry.offset < count, "offset {} was never written", entry.offset);
                    prop_assert_eq!(&entry.payload, &record(entry.offset).payload, "a record under another's offset");
                    prop_assert!(previous < Some(entry.offset), "offset {} read twice or out of order", entry.offset);
                    prop_assert!(!lost.iter().any(|range| range.contains(&entry.offset)), "offset {} is read yet recorded lost", entry.offset);
                    previous = Some(entry.offset);
                }
                for offset in 0..count {
                    let read = entries.iter().any(|entry| entry.offset == offset);
                    let recorded = lost.iter().any(|range| range.contains(&offset));
                    // Past `next`: a broken end of the newest segment with nothing intact after
                    // it, which repair treats as the torn write it looks like (never read).
                    prop_assert!(read || recorded || offset >= next, "offset {} vanished without a record of it", offset);
                }
                prop_assert!(lost.iter().all(|range| range.end <= next.max(count)), "{:?} beyond the journal", lost);
                if path != files.last().unwrap() {
                    prop_assert_eq!(next, count, "damage to a sealed segment moved where appends continue");
                }
                prop_assert_eq!(journal.append(records(0..1)).await.unwrap().offsets, (next..next + 1).collect::<Vec<_>>());
                Ok(())
            })?;
        }
    }
}
