/*!
`sluice journal repair`: make a damaged journal open again, keeping every record it can and
saying which offsets were lost (the rules are in the docs of [`crate::journal::file`]).
*/

use std::ops::Range;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Config;
use crate::journal::file::{self, Interrupted, RepairReport};

/// The `journal` subcommands.
#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Quarantine damaged journal segments, keep their intact records, record the offsets lost.
    /// The server must be stopped.
    Repair,
}

/// Runs a `journal` subcommand against the data directory's journal (the server must not run).
pub fn run(config: &Config, command: JournalCommand) -> anyhow::Result<()> {
    let JournalCommand::Repair = command;
    let dir = config.journal_dir();
    anyhow::ensure!(dir.is_dir(), "there is no journal at {}; pass the --data-dir the server runs with", dir.display());
    // Held until the repair is done, so that no server appends meanwhile.
    let _lock = super::serve::lock_data_dir(&config.data_dir)?;
    let report = file::repair(&dir).with_context(|| {
        format!(
            "`sluice journal repair` stopped in {}; what it finished stays done, and running it again once the cause is fixed resumes safely",
            dir.display()
        )
    })?;
    print_report(&mut std::io::stdout().lock(), &dir, &report)?;
    Ok(())
}

/// Tells what the repair did: which files, which offsets were kept and lost, where the bytes went.
fn print_report(out: &mut impl std::io::Write, dir: &std::path::Path, report: &RepairReport) -> std::io::Result<()> {
    match &report.interrupted {
        Some(Interrupted::Undone(files)) => {
            writeln!(
                out,
                "an earlier repair was interrupted before it changed anything; deleted its {} temporary file(s) and started over",
                files.len()
            )?;
        }
        Some(Interrupted::Finished(files)) => {
            for file in files {
                writeln!(out, "finished an interrupted repair: put {} in place", file.display())?;
            }
        }
        None => {}
    }
    if report.repaired.is_empty() {
        writeln!(out, "no damage found in the journal at {}; nothing to repair", dir.display())?;
        return Ok(());
    }
    for repaired in &report.repaired {
        writeln!(out, "{}: {}", repaired.segment.display(), repaired.problem)?;
        if let Some(quarantined) = &repaired.quarantined {
            writeln!(out, "  moved the original file to {}", quarantined.display())?;
        }
        let kept = repaired.kept.iter().map(|range| (range, "kept"));
        let lost = repaired.lost.iter().map(|(range, _)| (range, "LOST"));
        let mut ranges: Vec<_> = kept.chain(lost).collect();
        ranges.sort_by_key(|(range, _)| range.start);
        for (range, what) in ranges {
            writeln!(out, "  {what} offsets {} ({})", show(range), records(range))?;
        }
        if let Some(active) = repaired.new_active {
            writeln!(out, "  new records will start at offset {active}")?;
        }
    }
    let lost: u64 =
        report.repaired.iter().flat_map(|repaired| &repaired.lost).map(|(range, _)| range.end - range.start).sum();
    writeln!(
        out,
        "repaired {} segment file(s); {lost} offset(s) recorded as lost in {}; consumers skip them with an error in the log and sluice_journal_lost_records_total",
        report.repaired.len(),
        dir.join(file::LOST_OFFSETS_FILE).display()
    )
}

/// An offset range as `FIRST..=LAST`, the way an operator reads it.
fn show(range: &Range<u64>) -> String {
    format!("{}..={}", range.start, range.end - 1)
}

fn records(range: &Range<u64>) -> String {
    match range.end - range.start {
        1 => "1 record".to_owned(),
        n => format!("{n} records"),
    }
}
