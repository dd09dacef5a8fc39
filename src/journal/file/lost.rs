/*!
The lost-offsets file (format in [`super`]): the offset ranges `sluice journal repair` could not
save, which readers skip loudly instead of failing on them forever.
*/

use std::io;
use std::ops::Range;
use std::path::Path;

use super::io_error;
use crate::journal::JournalError;

/// The file's name in the journal directory.
pub(super) const FILE_NAME: &str = "lost-offsets.txt";

/// The first line of a new lost-offsets file.
const PREAMBLE: &str = "# Journal offsets lost to damage, recorded by `sluice journal repair`; readers skip them.\n\
                        # One range a line: FIRST..END (END excluded), then what happened.\n";

/// One recorded range and the note written next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Lost {
    /// The offsets lost, end excluded.
    pub range: Range<u64>,
    /// What happened to them: the damage and where its bytes went.
    pub note: String,
}

/// Every recorded range, sorted by first offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LostRanges(Vec<Lost>);

impl LostRanges {
    /// Reads the file in `dir`; no file means nothing was lost.
    pub fn load(dir: &Path) -> Result<LostRanges, JournalError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(LostRanges::default()),
            Err(error) => return Err(io_error(&path)(error)),
        };
        let mut ranges = Vec::new();
        for (number, line) in (1..).zip(text.lines()) {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (range, note) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let parsed = range.split_once("..").and_then(|(first, end)| Some(first.parse().ok()?..end.parse().ok()?));
            match parsed {
                Some(range) if range.start < range.end => {
                    ranges.push(Lost { range, note: note.trim().to_owned() });
                }
                _ => {
                    let reason = format!(
                        "line {number} is not FIRST..END with FIRST below END: {line:?}; fix or remove the line (the format is in the journal's documentation)"
                    );
                    return Err(JournalError::Io { path, source: io::Error::new(io::ErrorKind::InvalidData, reason) });
                }
            }
        }
        ranges.sort_by_key(|lost| lost.range.start);
        Ok(LostRanges(ranges))
    }

    /// The recorded range holding `offset`, if any.
    pub fn containing(&self, offset: u64) -> Option<&Lost> {
        let after = self.0.partition_point(|lost| lost.range.start <= offset);
        self.0[..after].iter().rev().find(|lost| lost.range.contains(&offset))
    }

    /// Whether every offset of `range` is already recorded.
    pub fn covers(&self, range: &Range<u64>) -> bool {
        let mut next = range.start;
        while next < range.end {
            match self.containing(next) {
                Some(lost) => next = lost.range.end,
                None => return false,
            }
        }
        true
    }
}

/// Adds the ranges of `lost` not recorded yet (a repair run again after an interruption finds
/// the same ones) to the file in `dir`, durably: the whole file is rewritten under a temporary
/// name, synced, and renamed over the old one, so a crash leaves either the old or the new file.
pub(super) fn record(dir: &Path, lost: &[Lost]) -> Result<(), JournalError> {
    let recorded = LostRanges::load(dir)?;
    let lost: Vec<&Lost> = lost.iter().filter(|lost| !recorded.covers(&lost.range)).collect();
    if lost.is_empty() {
        return Ok(());
    }
    let path = dir.join(FILE_NAME);
    let mut text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => PREAMBLE.to_owned(),
        Err(error) => return Err(io_error(&path)(error)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for Lost { range, note } in lost {
        text.push_str(&format!("{}..{} {note}\n", range.start, range.end));
    }
    crate::files::replace(&path, text.as_bytes()).map_err(io_error(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(range: Range<u64>) -> Lost {
        Lost { range, note: "a note".to_owned() }
    }

    #[test]
    fn recorded_ranges_read_back_sorted_and_answer_which_offsets_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LostRanges::load(dir.path()).unwrap(), LostRanges::default(), "no file: nothing lost");
        record(dir.path(), &[lost(40..50)]).unwrap();
        record(dir.path(), &[lost(10..12), lost(12..13)]).unwrap();
        record(dir.path(), &[lost(11..12)]).unwrap(); // already recorded: not written twice

        let ranges = LostRanges::load(dir.path()).unwrap();
        assert_eq!(ranges.0, vec![lost(10..12), lost(12..13), lost(40..50)]);
        assert_eq!(ranges.containing(9), None);
        assert_eq!(ranges.containing(11).map(|found| found.range.clone()), Some(10..12));
        assert_eq!(ranges.containing(49).map(|found| found.range.clone()), Some(40..50));
        assert_eq!(ranges.containing(50), None);
        assert!(ranges.covers(&(10..13)) && ranges.covers(&(41..45)));
        assert!(!ranges.covers(&(12..14)));
    }

    #[test]
    fn a_malformed_line_is_refused_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "# comment\n5..3 backwards\n").unwrap();
        let refused = LostRanges::load(dir.path()).unwrap_err().to_string();
        assert!(refused.contains(FILE_NAME) && refused.contains("line 2"), "{refused}");
    }
}
