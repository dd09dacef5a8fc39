/*!
Properties over generated data: any records round-trip, any cut of the newest segment loses
only the entries the cut went through, and any damage to it either loses only entries from the
damage on with nothing intact after them, or refuses to open.
*/

use proptest::prelude::*;

use super::*;
use crate::journal::file::format::{ENTRY_HEADER_LEN, HEADER_LEN};

fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future)
}

/// Payloads up to 300 bytes, empty ones included.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..300)
}

/// A record with a fresh id: the property tests give equal payloads too, which are distinct records.
fn to_record((received_at_ms, payload): (i64, Vec<u8>)) -> Record {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let id = crate::record::RecordId(u128::from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    Record { kind: RecordKind::SplitImpression, received_at_ms, payload: Bytes::from(payload), id }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_records_round_trip_across_segments_and_reopen(
        batches in prop::collection::vec(prop::collection::vec((any::<i64>(), payload()), 0..6), 1..8),
        segment_bytes in 0u64..2048,
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let config = FileJournalConfig { segment_bytes, ..FileJournalConfig::default() };
            let journal = FileJournal::open(dir.path(), config.clone()).unwrap();
            let mut all = Vec::new();
            for batch in batches {
                let batch: Vec<_> = batch.into_iter().map(to_record).collect();
                let start = all.len() as u64;
                assert_eq!(journal.append(batch.clone()).await.unwrap().offsets, (start..start + batch.len() as u64).collect::<Vec<_>>());
                all.extend(batch);
            }
            assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &all);
            journal.close().await;

            let journal = FileJournal::open(dir.path(), config).unwrap();
            assert_eq!(journal.stats().next_offset, all.len() as u64);
            assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &all);
        });
    }

    #[test]
    fn any_cut_of_the_newest_segment_keeps_exactly_the_whole_entries_before_it(
        written in prop::collection::vec((any::<i64>(), payload()), 0..20),
        cut in any::<prop::sample::Index>(),
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
            let written: Vec<_> = written.into_iter().map(to_record).collect();
            for record in &written {
                journal.append(vec![record.clone()]).await.unwrap();
            }
            journal.close().await;

            let path = segment_files(dir.path()).remove(0);
            let len = path.metadata().unwrap().len();
            let cut = cut.index(len as usize + 1) as u64;
            std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
            let mut end = HEADER_LEN;
            let intact = written
                .iter()
                .take_while(|record| {
                    end += (ENTRY_HEADER_LEN + record.payload.len()) as u64;
                    end <= cut
                })
                .count();

            let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
            assert_eq!(journal.stats().next_offset, intact as u64);
            assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &written[..intact]);
            let next = record(1);
            assert_eq!(journal.append(vec![next.clone()]).await.unwrap().offsets, [intact as u64]);
            assert_entries(&read_to_end(&journal, "loader", intact as u64).await, intact as u64, &[next]);
        });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_damage_to_the_newest_segment_never_invents_nor_silently_drops_a_record(
        written in prop::collection::vec((any::<i64>(), payload()), 1..20),
        at in any::<prop::sample::Index>(),
        len in 1usize..64,
        damage in Damage::any(),
    ) {
        block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let journal = FileJournal::open(dir.path(), FileJournalConfig::default()).unwrap();
            let written: Vec<_> = written.into_iter().map(to_record).collect();
            for record in &written {
                journal.append(vec![record.clone()]).await.unwrap();
            }
            journal.close().await;

            let path = segment_files(dir.path()).remove(0);
            let before = std::fs::read(&path).unwrap();
            let start = HEADER_LEN as usize + at.index(before.len() - HEADER_LEN as usize);
            let mut after = before.clone();
            damage.apply(&mut after, start, len);
            std::fs::write(&path, &after).unwrap();

            // An entry is intact when every one of its bytes is still there, unchanged.
            let mut spans = Vec::new();
            let mut position = HEADER_LEN as usize;
            for record in &written {
                let next = position + ENTRY_HEADER_LEN + record.payload.len();
                spans.push(position..next);
                position = next;
            }
            let intact = |span: &std::ops::Range<usize>| after.get(span.clone()) == Some(&before[span.clone()]);
            let first_damaged = spans.iter().position(|span| !intact(span)).unwrap_or(written.len());
            let intact_after_damage = spans[first_damaged..].iter().any(intact);

            match FileJournal::open(dir.path(), FileJournalConfig::default()) {
                Ok(journal) => {
                    prop_assert!(!intact_after_damage, "entries after the damage were intact, yet the tail was cut");
                    prop_assert_eq!(journal.stats().next_offset, first_damaged as u64);
                    assert_entries(&read_to_end(&journal, "loader", 0).await, 0, &written[..first_damaged]);
                }
                Err(refused) => {
                    prop_assert!(matches!(refused, crate::journal::JournalError::Corrupt { .. }), "{}", refused);
                    prop_assert!(intact_after_damage, "refused to open though nothing intact follows the damage: {}", refused);
                    prop_assert_eq!(std::fs::read(&path).unwrap(), after, "a refused segment is left as it was");
                }
            }
            Ok(())
        })?;
    }
}
