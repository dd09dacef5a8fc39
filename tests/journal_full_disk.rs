//! The journal on a really full filesystem (a small tmpfs): appends are refused with "disk is
//! full" without poisoning the journal, nothing of a refused batch is left behind, and once the
//! filesystem is grown appends succeed again without a restart, with dense offsets.
//!
//! Mounting needs root (CI runs as root); elsewhere the test says why it did nothing and passes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use sluice::journal::file::{FileJournal, FileJournalConfig};
use sluice::journal::{Journal, JournalError, Record};
use sluice::record::{RecordId, RecordKind};

/// A tmpfs mounted for the test, unmounted when dropped (also when an assertion fails).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(status.success(), "remounting {} failed", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.0).status().is_ok_and(|status| status.success());
        if !unmounted {
            // Something still holds a file open (a failed assertion skipped `close`): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Record `i`, with a payload of about 1 KiB saying which one it is.
fn record(i: u64) -> Record {
    let payload = format!(r#"{{"key":"user-{i}","pad":"{}"}}"#, "x".repeat(1000));
    Record {
        kind: RecordKind::SplitImpression,
        received_at_ms: i as i64,
        payload: Bytes::from(payload),
        id: RecordId(u128::from(i)),
    }
}

/// Every payload in `journal` from offset 0 to its end.
async fn payloads(journal: &FileJournal) -> Vec<Bytes> {
    let end = journal.stats().next_offset;
    let mut reader = journal.reader("check", 0).unwrap();
    let mut found = Vec::new();
    while (found.len() as u64) < end {
        let batch = reader.next_batch(100, Duration::from_secs(5)).await.unwrap();
        assert!(!batch.is_empty(), "the reader stopped at offset {} of {end}", found.len());
        found.extend(batch.into_iter().map(|entry| entry.payload));
    }
    found
}

#[tokio::test]
async fn a_full_disk_refuses_appends_without_wedging_and_leaves_no_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    let tmpfs = match Tmpfs::mount(dir.path(), "256k") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: cannot mount a tmpfs here (needs root): {why}");
            return;
        }
    };
    let journal_dir = dir.path().join("journal");
    // Small segments, so the disk fills up both while writing groups and while starting segments.
    let config = FileJournalConfig { segment_bytes: 16 << 10, ..FileJournalConfig::default() };
    let journal = FileJournal::open(&journal_dir, config.clone()).unwrap();

    // Fill the disk: batches of 7 records (about 7 KiB) until one is refused.
    let mut acknowledged = Vec::new();
    let mut next_record = 0;
    let mut batch = || {
        next_record += 7;
        (next_record - 7..next_record).map(record).collect::<Vec<_>>()
    };
    let refused = loop {
        let batch = batch();
        match journal.append(batch.clone()).await {
            Ok(appended) => {
                assert_eq!(appended.offsets[0], acknowledged.len() as u64, "offsets are dense");
                acknowledged.extend(batch);
            }
            Err(error) => break error,
        }
        assert!(acknowledged.len() < 10_000, "256 KiB never filled up");
    };
    assert!(matches!(refused, JournalError::Unwritten { .. }), "{refused:?}");
    assert!(refused.to_string().contains("disk holding the journal is full"), "{refused}");
    let stats = journal.stats();
    assert!(!stats.poisoned, "a full disk does not poison the journal");
    assert!(stats.write_error.is_some());
    assert_eq!(stats.next_offset, acknowledged.len() as u64);

    // Still full: refused again, the same way, and nothing is acknowledged.
    let again = journal.append(batch()).await;
    assert!(matches!(again, Err(JournalError::Unwritten { .. })), "{again:?}");

    // Space comes back: appends succeed again without a restart, at the next offset.
    tmpfs.resize("2m");
    let batch = batch();
    let appended = journal.append(batch.clone()).await.expect("appends succeed once space is freed");
    let next = acknowledged.len() as u64;
    assert_eq!(appended.offsets, (next..next + 7).collect::<Vec<_>>());
    acknowledged.extend(batch);
    assert_eq!(journal.stats().write_error, None);
    journal.close().await;
    drop(journal);

    // After a restart: exactly the acknowledged records, nothing of the refused batches.
    let journal = FileJournal::open(&journal_dir, config).unwrap();
    assert_eq!(journal.stats().next_offset, acknowledged.len() as u64);
    let expected: Vec<_> = acknowledged.iter().map(|record| record.payload.clone()).collect();
    assert!(payloads(&journal).await == expected, "the journal holds exactly the acknowledged records");
    journal.close().await;
    drop(journal);
    drop(tmpfs);
}
