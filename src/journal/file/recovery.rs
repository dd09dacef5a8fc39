/*!
Opening a journal directory: find the segments, check their headers, and cut a torn tail off
the newest one (the policy is in [`super`]).
*/

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::format::{self, HEADER_LEN, ReadFailure, SegmentReader};
use super::segment::{self, Segment};
use super::{io_error, lost};
use crate::journal::JournalError;

/// The journal as found on disk, ready for the writer.
pub(super) struct Recovered {
    /// Every segment but the newest, oldest first.
    pub sealed: VecDeque<Segment>,
    /// The newest segment, where appends continue.
    pub active: Segment,
    /// The offset the next appended record gets.
    pub next_offset: u64,
}

/// Checks and repairs the segments in `dir`; an empty directory gets a first segment at offset 0.
pub(super) fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    // Appending next to a half-done repair could give new records the offsets of saved ones.
    if let Some((_, leftover)) = segment::repair_leftovers(dir)?.into_iter().next() {
        let reason = "`sluice journal repair` was interrupted and left this file behind".to_owned();
        return Err(JournalError::Corrupt { path: leftover, position: 0, reason });
    }
    // Read now so that a malformed file stops the start, not a consumer later.
    lost::LostRanges::load(dir)?;
    let mut found = segment::list(dir)?;
    let Some((newest_base, newest_path)) = found.pop() else {
        let (_, active) = segment::create(dir, 0)?;
        return Ok(Recovered { sealed: VecDeque::new(), active, next_offset: 0 });
    };
    let sealed = found.into_iter().map(|(base, path)| check_sealed(base, path)).collect::<Result<_, _>>()?;
    let (active, count) = repair_newest(newest_base, newest_path)?;
    Ok(Recovered { sealed, active, next_offset: newest_base + count })
}

/// Checks an older segment's header and takes its size and age, without reading its entries.
fn check_sealed(base: u64, path: PathBuf) -> Result<Segment, JournalError> {
    let mut file = File::open(&path).map_err(io_error(&path))?;
    format::check_header(&mut file, &path, base)?;
    describe(base, path)
}

/// Reads the newest segment whole, truncating it after its last intact entry; returns it and its entry count.
fn repair_newest(base: u64, path: PathBuf) -> Result<(Segment, u64), JournalError> {
    let len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
    if len < HEADER_LEN {
        // Torn while being created: it cannot hold an entry. Keep the name (its base is where
        // appends continue, even if retention deleted every older segment) and rewrite the header.
        tracing::warn!(path = %path.display(), len, "journal: rewriting the torn header of the newest segment");
        let mut file = OpenOptions::new().write(true).truncate(true).open(&path).map_err(io_error(&path))?;
        file.write_all(&format::encode_header(base)).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        return Ok((describe(base, path)?, 0));
    }

    let mut reader = SegmentReader::open(&path, base)?;
    let mut count = 0;
    let broken = loop {
        match reader.next_entry() {
            Ok(Some(_)) => count += 1,
            Ok(None) => break None,
            Err(ReadFailure::Broken { reason, .. }) => break Some(reason),
            Err(other) => return Err(other.into_error(&path)),
        }
    };
    let good_end = reader.position();
    if let Some(reason) = broken {
        // A crash tears only what was being written last, so nothing written can follow a torn
        // tail. An intact entry after the break means the disk damaged bytes in the middle:
        // truncating would drop records that were acknowledged, so refuse instead.
        let tail = read_from(&path, good_end)?;
        if let Some(intact) = format::first_entry_after(&tail, 1) {
            return Err(JournalError::Corrupt {
                position: good_end,
                reason: format!(
                    "{reason}, yet an intact entry follows at byte {}: this is damage, not a torn tail",
                    good_end + intact as u64
                ),
                path,
            });
        }
        let file = OpenOptions::new().write(true).open(&path).map_err(io_error(&path))?;
        file.set_len(good_end).and_then(|()| file.sync_all()).map_err(io_error(&path))?;
        tracing::warn!(
            path = %path.display(),
            dropped_bytes = len - good_end,
            at = good_end,
            intact_entries = count,
            reason,
            "journal: dropped a torn tail of the newest segment"
        );
    }
    Ok((describe(base, path)?, count))
}

/// The bytes of the file `path` from byte `position` to its end.
fn read_from(path: &Path, position: u64) -> Result<Vec<u8>, JournalError> {
    let mut file = File::open(path).map_err(io_error(path))?;
    file.seek(SeekFrom::Start(position)).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    Ok(bytes)
}

/// The in-memory description of the segment file `path`.
fn describe(base: u64, path: PathBuf) -> Result<Segment, JournalError> {
    let metadata = std::fs::metadata(&path).map_err(io_error(&path))?;
    let last_write = metadata.modified().map_err(io_error(&path))?;
    Ok(Segment { base, path, bytes: metadata.len(), last_write })
}
