/*!
Opening after damage: a torn tail of the newest segment is cut off, anything else is refused.
*/

use std::fs::OpenOptions;
use std::io::Write;

use super::*;
use crate::journal::JournalError;
use crate::journal::file::format::{ENTRY_HEADER_LEN, HEADER_LEN};

/// Size of the newest segment of a journal holding exactly records `0..count`.
fn segment_len(count: u64) -> u64 {
    HEADER_LEN + (0..count).map(|i| (ENTRY_HEADER_LEN + record(i).payload.len()) as u64).sum::<u64>()
}

fn newest_segment(dir: &Path) -> PathBuf {
    segment_files(dir).pop().unwrap()
}

fn rewrite(path: &Path, change: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    change(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Appends records 0..5 one by one, closes, applies `damage` to the segment file and reopens:
/// exactly records `0..intact` must be back, and appending must continue right after them.
async fn reopen_after_damage(damage: impl FnOnce(&Path), intact: u64) {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    for i in 0..5 {
        journal.append(records(i..i + 1)).await.unwrap();
    }
    journal.close().await;
    let path = newest_segment(dir.path());
    assert_eq!(path.metadata().unwrap().len(), segment_len(5));
    damage(&path);

    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!(journal.stats().next_offset, intact);
    assert_eq!(path.metadata().unwrap().len(), segment_len(intact), "truncated right after the last intact entry");
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..intact));
    assert_eq!(journal.append(records(intact..7)).await.unwrap().offsets, (intact..7).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..7));
}

#[tokio::test]
async fn a_chopped_tail_is_cut_back_to_the_last_whole_entry() {
    let chop = |path: &Path| rewrite(path, |bytes| bytes.truncate(bytes.len() - 3));
    reopen_after_damage(chop, 4).await;
}

#[tokio::test]
async fn garbage_after_the_last_entry_is_dropped() {
    let garbage = |path: &Path| rewrite(path, |bytes| bytes.extend_from_slice(b"\x10\0\0\0not an entry at all"));
    reopen_after_damage(garbage, 5).await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_payload_drops_only_that_entry() {
    let flip = |path: &Path| rewrite(path, |bytes| *bytes.last_mut().unwrap() ^= 0x20);
    reopen_after_damage(flip, 4).await;
}

#[tokio::test]
async fn an_unknown_kind_in_the_newest_segment_refuses_to_open_rather_than_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    journal.append(records(0..2)).await.unwrap();
    journal.close().await;
    let path = newest_segment(dir.path());
    // Rewrite the last entry as a well-formed one of a kind this version does not know.
    rewrite(&path, |bytes| {
        let at = segment_len(1) as usize;
        bytes[at + 8] = 200;
        let checksum = crc32c::crc32c(&bytes[at + 8..]);
        bytes[at + 4..at + 8].copy_from_slice(&checksum.to_le_bytes());
    });

    let refused = FileJournal::open(dir.path(), FileJournalConfig::default()).err().unwrap();
    assert!(matches!(&refused, JournalError::Corrupt { path: named, .. } if *named == path), "{refused}");
    assert_eq!(path.metadata().unwrap().len(), segment_len(2), "nothing was truncated");
}

#[tokio::test]
async fn a_newest_segment_with_a_torn_header_is_rewritten_and_appends_continue_at_its_base() {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    for i in 0..10 {
        journal.append(records(i * 2..i * 2 + 2)).await.unwrap();
    }
    journal.close().await;
    let segments = segment_files(dir.path()).len();
    // As if a rotation crashed after creating the file but before its header was complete.
    std::fs::write(dir.path().join("00000000000000000020.seg"), b"SLUICE").unwrap();

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    assert_eq!((journal.stats().next_offset, journal.stats().segments), (20, segments + 1));
    assert_eq!(journal.append(records(20..22)).await.unwrap().offsets, (20..22).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &records(0..22));
}

#[tokio::test]
async fn a_lone_segment_with_a_torn_header_keeps_its_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00000000000000000042.seg"), b"SLU").unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    assert_eq!((journal.stats().first_offset, journal.stats().next_offset), (42, 42));
    assert_eq!(journal.append(records(42..43)).await.unwrap().offsets, (42..43).collect::<Vec<_>>());
    assert_entries(&read_to_end(&journal, "loader", 42).await, 42, &records(42..43));
}

/// A closed journal of records 0..40 in several small segments; returns its segment files.
async fn several_segments(dir: &Path) -> Vec<PathBuf> {
    let journal = FileJournal::open(dir, small_segments()).unwrap();
    for i in 0..20 {
        journal.append(records(i * 2..i * 2 + 2)).await.unwrap();
    }
    journal.close().await;
    let files = segment_files(dir);
    assert!(files.len() >= 4, "{} segments", files.len());
    files
}

#[tokio::test]
async fn a_damaged_header_in_an_older_segment_refuses_to_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let older = several_segments(dir.path()).await.remove(1);
    rewrite(&older, |bytes| bytes[0] = b'X');

    let refused = FileJournal::open(dir.path(), small_segments()).err().unwrap();
    assert!(matches!(&refused, JournalError::Corrupt { path, .. } if *path == older), "{refused}");
    let message = refused.to_string();
    assert!(message.contains(&older.display().to_string()) && message.contains("sluice journal repair"), "{message}");
}

/// Reads from offset 0 until an error; panics if every entry reads back fine.
async fn first_read_error(journal: &FileJournal) -> JournalError {
    let mut reader = journal.reader("loader", 0).unwrap();
    loop {
        match reader.next_batch(100, Duration::from_secs(1)).await {
            Ok(batch) => assert!(!batch.is_empty(), "every entry read back fine"),
            Err(error) => return error,
        }
    }
}

#[tokio::test]
async fn a_flipped_byte_in_an_older_segment_fails_the_reader_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let older = several_segments(dir.path()).await.remove(1);
    rewrite(&older, |bytes| *bytes.last_mut().unwrap() ^= 0x20);

    // Older segments are not read at open (that would make start-up proportional to the data).
    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    let error = first_read_error(&journal).await;
    assert!(
        matches!(&error, JournalError::Corrupt { path, reason, .. } if *path == older && reason.contains("checksum")),
        "{error}"
    );
}

#[tokio::test]
async fn a_missing_segment_fails_the_reader_at_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let files = several_segments(dir.path()).await;
    std::fs::remove_file(&files[2]).unwrap();

    let journal = FileJournal::open(dir.path(), small_segments()).unwrap();
    let error = first_read_error(&journal).await;
    assert!(
        matches!(&error, JournalError::Corrupt { path, reason, .. } if *path == files[1] && reason.contains("missing")),
        "{error}"
    );
}

#[tokio::test]
async fn trailing_zeros_after_a_crash_are_treated_as_a_torn_tail() {
    let zeros = |path: &Path| {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&[0; 100]).unwrap();
    };
    reopen_after_damage(zeros, 5).await;
}

/// Appends records 0..5 one by one, closes, applies `damage` to entry 2 (of 0..5) in the newest
/// segment, and returns the directory, the segment and the error opening it again.
async fn open_after_damage_to_entry_2(
    damage: impl FnOnce(&mut Vec<u8>, usize),
) -> (tempfile::TempDir, PathBuf, JournalError) {
    let dir = tempfile::tempdir().unwrap();
    let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
    for i in 0..5 {
        journal.append(records(i..i + 1)).await.unwrap();
    }
    journal.close().await;
    let path = newest_segment(dir.path());
    rewrite(&path, |bytes| damage(bytes, segment_len(2) as usize));
    let refused = FileJournal::open(dir.path(), FileJournalConfig::default()).err().expect("the journal opened");
    (dir, path, refused)
}

#[tokio::test]
async fn a_flipped_payload_byte_in_the_middle_of_the_newest_segment_refuses_to_open_rather_than_truncate() {
    let flip = |bytes: &mut Vec<u8>, entry: usize| bytes[entry + ENTRY_HEADER_LEN + 3] ^= 0x20;
    let (_dir, path, refused) = open_after_damage_to_entry_2(flip).await;
    assert!(
        matches!(&refused, JournalError::Corrupt { path: named, position, .. } if *named == path && *position == segment_len(2)),
        "{refused}"
    );
    assert_eq!(path.metadata().unwrap().len(), segment_len(5), "nothing was truncated: records 3 and 4 are intact");
}

#[tokio::test]
async fn a_zeroed_length_in_the_middle_of_the_newest_segment_refuses_to_open_rather_than_truncate() {
    let zero_length = |bytes: &mut Vec<u8>, entry: usize| bytes[entry..entry + 4].fill(0);
    let (_dir, path, refused) = open_after_damage_to_entry_2(zero_length).await;
    assert!(matches!(&refused, JournalError::Corrupt { path: named, .. } if *named == path), "{refused}");
    assert_eq!(path.metadata().unwrap().len(), segment_len(5), "nothing was truncated: records 3 and 4 are intact");
}
