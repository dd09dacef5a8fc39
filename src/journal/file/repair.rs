/*!
`sluice journal repair`: find every damaged region in every segment, move the damaged segment
files into `quarantine/`, write back every intact record that keeps a certain offset, and record
the offsets lost in between (the rules are in [`super`], under "Damage and repair").
*/

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::format::{self, ENTRY_HEADER_LEN, HEADER_LEN};
use super::io_error;
use super::lost::{self, Lost, LostRanges};
use super::segment::{self, REPAIR_SUFFIX};
use crate::journal::JournalError;

/// The folder, inside the journal directory, where damaged segment files are moved.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The file, inside the journal directory, that records the offsets lost (format in [`super`]).
pub const LOST_OFFSETS_FILE: &str = lost::FILE_NAME;

/// What [`repair`] did to one segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repaired {
    /// The segment file as it was named in the journal.
    pub segment: PathBuf,
    /// What was wrong with it.
    pub problem: String,
    /// Where its original bytes are now; `None` when the file itself was fine (a missing segment after it).
    pub quarantined: Option<PathBuf>,
    /// The offsets of the records written back, one range per new segment file.
    pub kept: Vec<Range<u64>>,
    /// The offsets given up, each with the note recorded in the lost-offsets file.
    pub lost: Vec<(Range<u64>, String)>,
    /// The base of the new, empty segment appends continue in, when one had to be created.
    pub new_active: Option<u64>,
}

/// What a previous, interrupted repair left and what this run did about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interrupted {
    /// The damaged file was still in place: its half-written replacements were deleted and the repair redone.
    Undone(Vec<PathBuf>),
    /// The damaged file was already in quarantine: its replacements were put in place.
    Finished(Vec<PathBuf>),
}

/// Everything [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// An interrupted earlier repair that this run cleaned up or completed.
    pub interrupted: Option<Interrupted>,
    /// Each damaged segment, in offset order.
    pub repaired: Vec<Repaired>,
}

/// Why [`repair`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Reading or writing the journal failed; what was finished stays, and a rerun resumes.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The records of a segment cannot be given offsets without risking a reused or repeated offset.
    #[error(
        "cannot repair {path} safely: {reason}. Nothing in that segment was changed; keep a copy of the journal directory and put the segment files back as they were, or ask for help"
    )]
    Unsafe {
        /// The segment file.
        path: PathBuf,
        /// What does not add up.
        reason: String,
    },
}

/// Repairs the journal in `dir`, which no server may be using. See the module docs of
/// [`FileJournal`](super::FileJournal) for what is kept and what is recorded as lost. Stops,
/// changing nothing in that segment, when a segment's intact records cannot be given offsets
/// safely (segments before it stay repaired).
pub fn repair(dir: &Path) -> Result<RepairReport, RepairError> {
    let interrupted = finish_interrupted(dir)?;
    let mut report = RepairReport { interrupted, repaired: Vec::new() };
    let found = segment::list(dir)?;
    for (index, (base, path)) in found.iter().enumerate() {
        let following = found.get(index + 1).map(|(base, _)| *base);
        let bytes = std::fs::read(path).map_err(io_error(path))?;
        // Loaded again each time: a repair of an earlier segment may have added ranges.
        let recorded = LostRanges::load(dir)?;
        let unsafe_ = |reason| RepairError::Unsafe { path: path.clone(), reason };
        if let Some(plan) = plan(*base, &bytes, following, &recorded).map_err(unsafe_)? {
            report.repaired.push(apply(dir, path, &bytes, plan)?);
        }
    }
    Ok(report)
}

/// Intact entries back to back: their byte range in the file and how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Run {
    bytes: Range<usize>,
    count: u64,
}

/// A damaged region between two runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gap {
    /// Byte position of the first broken entry.
    at: usize,
    /// The broken entry's own length field points exactly at the next run: one entry was lost.
    exact: bool,
}

/// What repairing one segment file means, decided before touching anything.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    problem: String,
    /// Whether the file is replaced (and moved to quarantine), not only followed by a recorded gap.
    rewrite: bool,
    /// New segment files: their offsets and byte range in the original file. The first one
    /// always starts at the segment's base and keeps its name (it may hold no entry).
    kept: Vec<(Range<u64>, Range<usize>)>,
    lost: Vec<Lost>,
    new_active: Option<u64>,
}

/// Decides how to repair the segment starting at `base` holding `bytes`, followed by the segment
/// starting at `following` (`None`: it is the newest). `None` when nothing needs repair; an
/// error (why) when its records cannot be given offsets safely.
fn plan(base: u64, bytes: &[u8], following: Option<u64>, recorded: &LostRanges) -> Result<Option<Plan>, String> {
    let header_len = HEADER_LEN as usize;
    let header_ok = bytes.get(..header_len) == Some(&format::encode_header(base)[..]);

    // Split the entries into runs of intact ones, separated by damaged regions.
    let (mut runs, mut gaps, mut tail) = (Vec::new(), Vec::<Gap>::new(), None);
    let mut position = header_len.min(bytes.len());
    let (mut start, mut count) = (position, 0);
    while position < bytes.len() {
        if let Some(len) = format::whole_entry_at(bytes, position) {
            (position, count) = (position + len, count + 1);
            continue;
        }
        if let Some(tag) = format::unknown_kind_at(bytes, position) {
            return Err(format!(
                "the entry at byte {position} is intact but of unknown kind {tag} (written by a newer sluice?); repair with that version"
            ));
        }
        runs.push(Run { bytes: start..position, count });
        match format::resync(bytes, position + 1) {
            Some(next) => {
                gaps.push(Gap { at: position, exact: format::declared_end(bytes, position) == Some(next) });
                (start, count, position) = (next, 0, next);
            }
            None => {
                tail = Some(position);
                break;
            }
        }
    }
    if tail.is_none() {
        runs.push(Run { bytes: start..position, count });
    }
    let damage = if !header_ok {
        Some("its 16-byte header is damaged".to_owned())
    } else if let Some(gap) = gaps.first() {
        Some(format!("entries are damaged from byte {}", gap.at))
    } else {
        tail.map(|at| format!("the entries from byte {at} to the end of the file are broken"))
    };

    // Offsets are implicit, so each run needs an anchor. The first run starts at the base; a run
    // after an exact gap starts one past the run before it. In a sealed segment, a run that
    // reaches the end of the file ends where the following segment begins, and runs before it
    // across exact gaps follow from that. A run with no anchor (after a gap whose count of lost
    // entries a damaged length field made unknowable) cannot be placed without risking giving
    // two records one offset or a consumer one record twice: it stays only in quarantine.
    let mut first: Vec<Option<u64>> = vec![None; runs.len()];
    first[0] = Some(base);
    for i in 1..runs.len() {
        if gaps[i - 1].exact {
            first[i] = first[i - 1].map(|offset| offset + runs[i - 1].count + 1);
        }
    }
    if let (Some(following), None) = (following, tail) {
        let mut i = runs.len() - 1;
        if first[i].is_none() {
            let mut offset = following.checked_sub(runs[i].count);
            first[i] = offset;
            while i > 0 && gaps[i - 1].exact && first[i - 1].is_none() {
                offset = offset.and_then(|offset| offset.checked_sub(1 + runs[i - 1].count));
                first[i - 1] = offset;
                i -= 1;
            }
            if offset.is_none() {
                return Err(format!(
                    "its intact entries do not fit below offset {following}, where the next segment starts; was a segment file renamed by hand?"
                ));
            }
        }
    }

    // Walk the runs in order: the kept ones with their offsets, and the offsets between them lost.
    let mut kept = Vec::new();
    let mut lost = Vec::new();
    let mut next = base; // the offset after the last kept entry
    let mut at_least = 0; // entries certainly lost since: one per gap, and every unkept run
    let mut kept_end = header_len.min(bytes.len()); // the byte after the last kept entry
    for (i, (run, first)) in runs.iter().zip(&first).enumerate() {
        let exactly_after_kept = i > 0 && gaps[i - 1].exact && at_least == 0;
        if i > 0 {
            at_least += 1;
        }
        let Some(first) = *first else {
            at_least += run.count;
            continue;
        };
        if first < next + at_least || exactly_after_kept && first != next + 1 {
            return Err(format!(
                "the intact entries at bytes {}..{} would start at offset {first}, which does not fit after offset {next}; was a segment file renamed or removed by hand?",
                run.bytes.start, run.bytes.end
            ));
        }
        if first > next {
            lost.push(Lost { range: next..first, note: String::new() });
        }
        kept.push((first..first + run.count, run.bytes.clone()));
        (next, at_least, kept_end) = (first + run.count, 0, run.bytes.end);
    }

    let mut new_active = None;
    let problem = match following {
        Some(following) => {
            if next > following {
                return Err(format!(
                    "it holds entries up to offset {next}, past offset {following} where the next segment starts; was a segment file renamed by hand?"
                ));
            }
            if next < following {
                let range = next..following;
                if damage.is_none() && recorded.covers(&range) {
                    return Ok(None); // a gap an earlier repair recorded
                }
                lost.push(Lost { range, note: String::new() });
            }
            match &damage {
                Some(damage) => damage.clone(),
                None if next < following => format!(
                    "it ends at offset {next}, but the next segment starts at {following}: a segment file is missing"
                ),
                None => return Ok(None),
            }
        }
        None => {
            // Nothing says how many entries the newest segment held past the last kept one, and
            // consumers may have read all of them. Entries tile the bytes back to back and each
            // takes at least ENTRY_HEADER_LEN bytes, so there were at most (bytes left) / 17:
            // appends continue after that bound, which never reuses an offset a consumer saw.
            // A broken tail with nothing intact after it is a torn write: never acknowledged,
            // never read, so it is dropped without recording a loss, as opening does.
            if format::first_entry_after(bytes, kept_end).is_some() {
                let bound = ((bytes.len() - kept_end) / ENTRY_HEADER_LEN) as u64;
                lost.push(Lost {
                    range: next..next + bound,
                    note: "at most; how many of these offsets held records cannot be known".to_owned(),
                });
                new_active = Some(next + bound);
            }
            match &damage {
                Some(damage) => damage.clone(),
                None => return Ok(None),
            }
        }
    };
    Ok(Some(Plan { problem, rewrite: damage.is_some(), kept, lost, new_active }))
}

/// Carries out `plan` for the segment at `path`, in an order that a crash cannot make unsafe:
/// the replacements are written under temporary names and synced; the lost offsets are
/// recorded; the damaged file is moved into quarantine (the commit point); then the
/// replacements are renamed into place, the one with the original name last. A crash before
/// the move leaves the damaged file and temporary files: the next repair deletes them and
/// starts over. After it, the next repair renames them (see [`finish_interrupted`]).
fn apply(dir: &Path, path: &Path, bytes: &[u8], plan: Plan) -> Result<Repaired, JournalError> {
    let Plan { problem, rewrite, kept, lost, new_active } = plan;
    let quarantined = if rewrite { Some(quarantine_path(dir, path)?) } else { None };
    let note = |lost: &Lost| {
        let place = quarantined.as_ref().map_or_else(
            || "no bytes: the segment file holding them is missing".to_owned(),
            |quarantined| format!("damaged bytes in {}", quarantined.display()),
        );
        let extra = if lost.note.is_empty() { String::new() } else { format!(" ({})", lost.note) };
        format!("{problem} in {}{extra}; {place}", path.display())
    };
    let lost: Vec<Lost> = lost.iter().map(|each| Lost { range: each.range.clone(), note: note(each) }).collect();

    let mut replacements = Vec::new();
    if let Some(quarantined) = &quarantined {
        // The file keeping the original name goes first, so that a crash while writing the
        // others still leaves it behind as the sign that the move did not happen yet.
        for (offsets, range) in &kept {
            replacements.push(write_temporary(dir, offsets.start, &bytes[range.clone()])?);
        }
        if let Some(active) = new_active {
            replacements.push(write_temporary(dir, active, &[])?);
        }
        sync_dir(dir)?;
        lost::record(dir, &lost)?;
        let quarantine = quarantined.parent().unwrap_or(dir);
        crate::files::create_dir_all(quarantine).map_err(io_error(quarantine))?;
        sync_dir(dir)?;
        std::fs::rename(path, quarantined).map_err(io_error(path))?;
        sync_dir(quarantine)?;
        sync_dir(dir)?;
        put_in_place(dir, &replacements)?;
    } else {
        lost::record(dir, &lost)?;
    }
    let kept = kept.into_iter().map(|(offsets, _)| offsets).filter(|offsets| !offsets.is_empty()).collect();
    Ok(Repaired {
        segment: path.to_owned(),
        problem,
        quarantined,
        kept,
        lost: lost.into_iter().map(|lost| (lost.range, lost.note)).collect(),
        new_active,
    })
}

/// Writes the segment starting at `first` holding `entries` under its temporary name, synced.
fn write_temporary(dir: &Path, first: u64, entries: &[u8]) -> Result<PathBuf, JournalError> {
    let path = dir.join(format!("{}{REPAIR_SUFFIX}", segment::file_name(first)));
    let mut file = crate::files::create(&path).map_err(io_error(&path))?;
    file.write_all(&format::encode_header(first))
        .and_then(|()| file.write_all(entries))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    Ok(path)
}

/// Renames temporary files to their segment names, the lowest base (the original name) last.
fn put_in_place(dir: &Path, temporaries: &[PathBuf]) -> Result<Vec<PathBuf>, JournalError> {
    let mut placed = Vec::new();
    let mut ordered: Vec<&PathBuf> = temporaries.iter().collect();
    ordered.sort();
    for temporary in ordered.into_iter().rev() {
        let name = temporary.file_name().and_then(|name| name.to_str()).unwrap_or_default();
        let target = dir.join(name.strip_suffix(REPAIR_SUFFIX).unwrap_or(name));
        std::fs::rename(temporary, &target).map_err(io_error(temporary))?;
        placed.push(target);
    }
    sync_dir(dir)?;
    Ok(placed)
}

/// Deals with the temporary files of an interrupted repair (see [`apply`]): if the file whose
/// name the first of them takes is still there, the damaged file was never moved, so they are
/// deleted; otherwise they are complete and are put in place.
fn finish_interrupted(dir: &Path) -> Result<Option<Interrupted>, JournalError> {
    let leftovers = segment::repair_leftovers(dir)?;
    let Some((first_base, _)) = leftovers.first() else { return Ok(None) };
    let paths: Vec<PathBuf> = leftovers.iter().map(|(_, path)| path.clone()).collect();
    if dir.join(segment::file_name(*first_base)).exists() {
        for path in &paths {
            std::fs::remove_file(path).map_err(io_error(path))?;
        }
        sync_dir(dir)?;
        return Ok(Some(Interrupted::Undone(paths)));
    }
    Ok(Some(Interrupted::Finished(put_in_place(dir, &paths)?)))
}

/// A name in the quarantine folder for the segment file `path` that no earlier repair used.
fn quarantine_path(dir: &Path, path: &Path) -> Result<PathBuf, JournalError> {
    let quarantine = dir.join(QUARANTINE_DIR);
    let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("segment");
    (0..)
        .map(|n| if n == 0 { quarantine.join(name) } else { quarantine.join(format!("{name}.{n}")) })
        .find(|candidate| !candidate.exists())
        .ok_or_else(|| io_error(&quarantine)(std::io::Error::other("no free name in the quarantine folder")))
}

/// fsyncs the directory `dir`, so the names created, renamed or removed in it are durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|dir_file| dir_file.sync_all()).map_err(io_error(dir))
}
