/*!
Segment files as files: their names, listing them in the directory, and creating one durably.
*/

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::format::{HEADER_LEN, encode_header};
use super::io_error;
use crate::journal::JournalError;

/// What the journal knows about one retained segment without touching the disk.
#[derive(Debug, Clone)]
pub(super) struct Segment {
    /// Offset of the segment's first entry.
    pub base: u64,
    /// The segment file.
    pub path: PathBuf,
    /// Size of the file, header included.
    pub bytes: u64,
    /// When an entry was last written to it, which starts its replay window.
    pub last_write: SystemTime,
}

impl Segment {
    /// Opens the segment file for the writer, which only ever appends.
    pub fn open_for_append(&self) -> Result<File, JournalError> {
        OpenOptions::new().append(true).open(&self.path).map_err(io_error(&self.path))
    }
}

/// The file name of the segment starting at `base`.
pub(super) fn file_name(base: u64) -> String {
    format!("{base:020}.seg")
}

/// The base offset named by a segment file name, or `None` for any other file.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() == 20 && digits.bytes().all(|byte| byte.is_ascii_digit()) { digits.parse().ok() } else { None }
}

/// The segment files in `dir` as `(base, path)`, oldest first.
pub(super) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for dir_entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let dir_entry = dir_entry.map_err(io_error(dir))?;
        if let Some(base) = dir_entry.file_name().to_str().and_then(parse_file_name) {
            found.push((base, dir_entry.path()));
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);
    Ok(found)
}

/// What `sluice journal repair` appends to a segment file name while it writes the file (see
/// [`repair`](super::repair)): such a file is complete only once renamed to the plain name.
pub(super) const REPAIR_SUFFIX: &str = ".repair";

/// The files in `dir` that an interrupted repair left under temporary names, as `(base, path)`.
pub(super) fn repair_leftovers(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut found = Vec::new();
    for dir_entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let dir_entry = dir_entry.map_err(io_error(dir))?;
        let name = dir_entry.file_name();
        let base = name.to_str().and_then(|name| name.strip_suffix(REPAIR_SUFFIX)).and_then(parse_file_name);
        if let Some(base) = base {
            found.push((base, dir_entry.path()));
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);
    Ok(found)
}

/// Creates the segment starting at `base`, with its header, durably; returns it open for appending.
pub(super) fn create(dir: &Path, base: u64) -> Result<(File, Segment), JournalError> {
    create_with(dir, base, |file| file.write_all(&encode_header(base)))
}

/// [`create`], with the header written by `write_header` (tests make it fail half-way).
///
/// If anything fails once the file exists (a full disk can refuse even the 16 header bytes),
/// the file is removed again, so that a later attempt can create it: a half-created segment must
/// not stay in the way of `create_new`. The removal is not made durable: after a crash, opening
/// finds it as the newest segment, holding no entry (a torn header is rewritten), and its base
/// is the offset appends continue at anyway.
pub(super) fn create_with(
    dir: &Path,
    base: u64,
    write_header: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(File, Segment), JournalError> {
    let path = dir.join(file_name(base));
    // `create_new`: an existing file of that name would hold entries we must not overwrite.
    let mut file = crate::files::options().append(true).create_new(true).open(&path).map_err(io_error(&path))?;
    let init = || -> Result<(), JournalError> {
        write_header(&mut file).map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        // fsync the directory so the new file's name is durable
        File::open(dir).and_then(|dir_file| dir_file.sync_all()).map_err(io_error(dir))
    };
    if let Err(error) = init() {
        drop(file);
        if let Err(remove) = std::fs::remove_file(&path) {
            tracing::error!(path = %path.display(), error = %remove, "journal: could not remove a half-created segment");
        }
        return Err(error);
    }
    Ok((file, Segment { base, path, bytes: HEADER_LEN, last_write: SystemTime::now() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_other_files_are_ignored() {
        assert_eq!(file_name(1024), "00000000000000001024.seg");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("00000000000000001024.seg.bad"), None);
        assert_eq!(parse_file_name("1024.seg"), None);
        assert_eq!(parse_file_name("0000000000000000102x.seg"), None);
    }
}
