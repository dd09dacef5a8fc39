/*!
The byte layout of segments (documented in [`super`]): encoding entries for the writer, and
decoding them with every check for recovery and readers.
*/

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{MAX_RECORD_BYTES, io_error};
use crate::journal::{JournalError, Record};
use crate::record::RecordKind;

/// The first bytes of every segment file.
const MAGIC: &[u8; 8] = b"SLUICEJ1";
/// Length of the segment header: magic and base offset.
pub(super) const HEADER_LEN: u64 = 16;
/// Length of an entry's fixed part: length, checksum, kind tag and `received_at_ms`.
pub(super) const ENTRY_HEADER_LEN: usize = 17;
/// Readers fill their buffer this much at a time, so reading small entries costs one syscall
/// per MiB rather than one per entry.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The header of the segment starting at `base`.
pub(super) fn encode_header(base: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..].copy_from_slice(&base.to_le_bytes());
    header
}

/// Appends `record` as one entry to `buf`. The caller has checked it against [`MAX_RECORD_BYTES`].
pub(super) fn encode_entry(buf: &mut Vec<u8>, record: &Record) {
    let start = buf.len();
    // At most MAX_RECORD_BYTES (16 MiB), so the length fits a u32.
    buf.put_u32_le(record.payload.len() as u32);
    buf.put_u32_le(0); // the checksum, written below once the bytes it covers are in place
    buf.put_u8(record.kind.tag());
    buf.put_i64_le(record.received_at_ms);
    buf.extend_from_slice(&record.payload);
    let checksum = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Reads and checks the header of the segment file `path`, which should start at `base`.
pub(super) fn check_header(file: &mut impl Read, path: &Path, base: u64) -> Result<(), JournalError> {
    let corrupt = |position, reason: String| JournalError::Corrupt { path: path.to_owned(), position, reason };
    let mut header = [0; HEADER_LEN as usize];
    file.read_exact(&mut header).map_err(|error| match error.kind() {
        io::ErrorKind::UnexpectedEof => corrupt(0, "the 16-byte segment header is incomplete".to_owned()),
        _ => io_error(path)(error),
    })?;
    if header[..8] != MAGIC[..] {
        return Err(corrupt(0, "the file does not start with SLUICEJ1: not a sluice journal segment".to_owned()));
    }
    let found = (&header[8..]).get_u64_le();
    if found != base {
        return Err(corrupt(8, format!("the header says base offset {found} but the file name says {base}")));
    }
    Ok(())
}

/// The length of the entry that starts at `at` in `bytes`, if it is whole, of a known kind and
/// its checksum matches: what a resync scan accepts as an entry that was really written.
///
/// The kind tag is checked before the checksum, because it makes false matches inside payloads
/// impossible and keeps the scan cheap: every payload sluice writes is JSON text, which never
/// holds the bytes 1 or 2 (control characters must be escaped in JSON), so a candidate whose tag
/// byte falls inside a payload is rejected without computing a checksum. What remains are
/// candidates inside entry headers, and each of those must still match a CRC-32C by chance.
pub(super) fn whole_entry_at(bytes: &[u8], at: usize) -> Option<usize> {
    checked_entry_at(bytes, at, |tag| RecordKind::from_tag(tag).is_some())
}

/// The tag of a whole, checksum-valid entry at `at` in `bytes` whose kind this sluice does not
/// know: written by a newer sluice, not damage, so repair must not throw it away.
pub(super) fn unknown_kind_at(bytes: &[u8], at: usize) -> Option<u8> {
    let unknown = |tag| RecordKind::from_tag(tag).is_none();
    checked_entry_at(bytes, at, unknown).and_then(|_| bytes.get(at + 8).copied())
}

/// The length of the whole entry at `at` whose tag `kind` accepts and whose checksum matches.
fn checked_entry_at(bytes: &[u8], at: usize, kind: impl Fn(u8) -> bool) -> Option<usize> {
    let header = bytes.get(at..at.checked_add(ENTRY_HEADER_LEN)?)?;
    let mut fields = header;
    let len = fields.get_u32_le() as usize;
    let checksum = fields.get_u32_le();
    if len > MAX_RECORD_BYTES || !kind(fields.get_u8()) {
        return None;
    }
    let payload = bytes.get(at + ENTRY_HEADER_LEN..at + ENTRY_HEADER_LEN + len)?;
    let matches = crc32c::crc32c_append(crc32c::crc32c(&header[8..]), payload) == checksum;
    matches.then_some(ENTRY_HEADER_LEN + len)
}

/// The first position at or after `from` where [`whole_entry_at`] finds an entry.
///
/// Recovery uses it to tell a torn tail (nothing written survives after the break) from damage
/// (something does). A false match only makes recovery refuse to open, never keeps a record, so
/// one entry is evidence enough here; [`resync`] is the stricter rule for keeping records.
pub(super) fn first_entry_after(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| whole_entry_at(bytes, at).is_some())
}

/// The first position at or after `from` where intact entries start again: an entry that
/// [`whole_entry_at`] accepts, followed either by the end of `bytes` or by another such entry.
///
/// Repair keeps the entries found from there on, so a false match would invent a record. One
/// chance CRC-32C match is about 2^-32 per candidate; asking for a second entry right after it
/// (or for the first to end exactly where the file does) makes inventing one need two
/// independent matches that also line up, which is why this rule is safe to keep records by.
pub(super) fn resync(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len()).find(|&at| {
        whole_entry_at(bytes, at)
            .is_some_and(|len| at + len == bytes.len() || whole_entry_at(bytes, at + len).is_some())
    })
}

/// Where the entry starting at `at` ends by its own length field, if its header is there and
/// the length is allowed; nothing about its checksum.
pub(super) fn declared_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut header = bytes.get(at..at.checked_add(ENTRY_HEADER_LEN)?)?;
    let len = header.get_u32_le() as usize;
    (len <= MAX_RECORD_BYTES).then_some(at + ENTRY_HEADER_LEN + len)
}

/// One entry as decoded, without its offset (implicit in its position).
pub(super) struct Decoded {
    pub kind: RecordKind,
    pub received_at_ms: i64,
    pub payload: Bytes,
}

/// Why the next entry could not be decoded.
pub(super) enum ReadFailure {
    /// Reading the file failed.
    Io(io::Error),
    /// A broken entry starts at `position`: what a crash in the middle of a write leaves.
    Broken { position: u64, reason: String },
    /// A well-formed entry at `position` has a kind this sluice does not know.
    UnknownKind { position: u64, tag: u8 },
}

impl ReadFailure {
    /// The error to report for a failure in the segment file `path`.
    pub fn into_error(self, path: &Path) -> JournalError {
        let corrupt = |position, reason| JournalError::Corrupt { path: path.to_owned(), position, reason };
        match self {
            ReadFailure::Io(source) => JournalError::Io { path: path.to_owned(), source },
            ReadFailure::Broken { position, reason } => corrupt(position, reason),
            ReadFailure::UnknownKind { position, tag } => {
                corrupt(position, format!("unknown record kind tag {tag} (written by a newer sluice?)"))
            }
        }
    }
}

/// Decodes the entries of one segment file in order, through a large buffer.
pub(super) struct SegmentReader {
    path: PathBuf,
    base: u64,
    file: BufReader<File>,
    /// Byte position of the next entry in the file.
    position: u64,
}

impl SegmentReader {
    /// Opens the segment file `path`, which should start at `base`, positioned at its first entry.
    pub fn open(path: &Path, base: u64) -> Result<SegmentReader, JournalError> {
        let mut file = File::open(path).map_err(io_error(path))?;
        check_header(&mut file, path, base)?;
        let file = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        Ok(SegmentReader { path: path.to_owned(), base, file, position: HEADER_LEN })
    }

    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Offset of the segment's first entry.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Byte position of the next entry, which is the end of the entries decoded so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next entry, or `None` at the end of the file (or of what the writer has written so far).
    pub fn next_entry(&mut self) -> Result<Option<Decoded>, ReadFailure> {
        let at = self.position;
        if self.file.fill_buf().map_err(ReadFailure::Io)?.is_empty() {
            return Ok(None);
        }
        let mut header = [0; ENTRY_HEADER_LEN];
        self.read_exact(&mut header, "entry header")?;
        let mut fields = &header[..];
        let len = fields.get_u32_le() as usize;
        let checksum = fields.get_u32_le();
        let tag = fields.get_u8();
        let received_at_ms = fields.get_i64_le();
        if len > MAX_RECORD_BYTES {
            let reason = format!("payload length {len} is over the {MAX_RECORD_BYTES}-byte limit");
            return Err(ReadFailure::Broken { position: at, reason });
        }
        let mut payload = BytesMut::zeroed(len);
        self.read_exact(&mut payload, "payload")?;
        if crc32c::crc32c_append(crc32c::crc32c(&header[8..]), &payload) != checksum {
            return Err(ReadFailure::Broken { position: at, reason: "checksum mismatch".to_owned() });
        }
        let kind = RecordKind::from_tag(tag).ok_or(ReadFailure::UnknownKind { position: at, tag })?;
        self.position += (ENTRY_HEADER_LEN + len) as u64;
        Ok(Some(Decoded { kind, received_at_ms, payload: payload.freeze() }))
    }

    /// Fills `buf` from the file; running out of bytes means the entry at `position` is broken.
    fn read_exact(&mut self, buf: &mut [u8], part: &str) -> Result<(), ReadFailure> {
        self.file.read_exact(buf).map_err(|error| match error.kind() {
            io::ErrorKind::UnexpectedEof => {
                ReadFailure::Broken { position: self.position, reason: format!("the file ends inside an {part}") }
            }
            _ => ReadFailure::Io(error),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn record(payload: &[u8]) -> Record {
        Record {
            kind: RecordKind::SplitImpression,
            received_at_ms: -42,
            payload: Bytes::copy_from_slice(payload),
            id: crate::record::RecordId(0),
        }
    }

    fn segment_with(dir: &Path, bytes: &[u8]) -> PathBuf {
        let path = dir.join("segment");
        let mut file = File::create(&path).unwrap();
        file.write_all(&encode_header(7)).unwrap();
        file.write_all(bytes).unwrap();
        path
    }

    #[test]
    fn encoded_entries_decode_with_their_fields_and_positions() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        encode_entry(&mut buf, &record(b"{\"a\":1}"));
        encode_entry(&mut buf, &record(b""));
        assert_eq!(buf.len(), 2 * ENTRY_HEADER_LEN + 7);
        let mut reader = SegmentReader::open(&segment_with(dir.path(), &buf), 7).unwrap();

        let first = reader.next_entry().ok().flatten().unwrap();
        assert_eq!(
            (first.kind, first.received_at_ms, &first.payload[..]),
            (RecordKind::SplitImpression, -42, &b"{\"a\":1}"[..])
        );
        assert_eq!(reader.position(), HEADER_LEN + ENTRY_HEADER_LEN as u64 + 7);
        assert!(reader.next_entry().ok().flatten().unwrap().payload.is_empty());
        assert!(matches!(reader.next_entry(), Ok(None)));
    }

    #[test]
    fn an_oversized_length_is_broken_without_allocating_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        encode_entry(&mut buf, &record(b"x"));
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut reader = SegmentReader::open(&segment_with(dir.path(), &buf), 7).unwrap();
        assert!(matches!(reader.next_entry(), Err(ReadFailure::Broken { position: HEADER_LEN, .. })));
    }

    #[test]
    fn a_valid_entry_of_unknown_kind_is_not_mistaken_for_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut buf = Vec::new();
        encode_entry(&mut buf, &record(b"x"));
        buf[8] = 200;
        let checksum = crc32c::crc32c(&buf[8..]);
        buf[4..8].copy_from_slice(&checksum.to_le_bytes());
        let mut reader = SegmentReader::open(&segment_with(dir.path(), &buf), 7).unwrap();
        assert!(matches!(reader.next_entry(), Err(ReadFailure::UnknownKind { tag: 200, .. })));
    }

    #[test]
    fn a_header_naming_another_base_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_with(dir.path(), &[]);
        assert!(matches!(SegmentReader::open(&path, 8), Err(JournalError::Corrupt { position: 8, .. })));
    }
}
