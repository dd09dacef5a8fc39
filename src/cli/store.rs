/*!
`sluice store adopt-journal`: point the store loader at this data directory's journal.

The store keeps, beside the loader's offset, the id of the journal that offset is in. After a
data directory was replaced or restored, the loader refuses to start rather than skip records
(see `consumers::store_loader`); this command is the way forward. It sets the loader's offset to
the oldest record this journal still holds, so the next `sluice serve` loads the whole journal
again. Records the store already holds are recognised by their natural keys (an impression's
identity, an event's messageId) and not stored twice, so reloading is safe.
*/

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Settings;
use crate::consumers::store_loader;
use crate::journal::Journal as _;
use crate::journal::file::{FileJournal, FileJournalConfig};
use crate::store::{ConsumerPosition, Store};

/// What `sluice store` does.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Make the store load this data directory's journal from its oldest record (after the data
    /// directory was replaced or restored; sluice must not be running). Records already stored
    /// are not stored twice.
    AdoptJournal,
}

/// Runs `sluice store …`.
pub fn run(settings: &Settings, what: StoreCommand) -> anyhow::Result<()> {
    match what {
        StoreCommand::AdoptJournal => adopt_journal(settings),
    }
}

fn adopt_journal(settings: &Settings) -> anyhow::Result<()> {
    let config = &settings.config;
    let journal_dir = config.journal_dir();
    anyhow::ensure!(
        journal_dir.is_dir(),
        "there is no journal in {}: pass the --data-dir that `sluice serve` uses",
        journal_dir.display()
    );
    // Not while a server runs: its loader would go on from the offset it holds in memory.
    let _lock = super::serve::lock_data_dir(&config.data_dir)?;
    let (id, first) = {
        let runtime = tokio::runtime::Builder::new_current_thread().build().context("could not start a runtime")?;
        // Nothing is appended here: no dedup index to rebuild from the segments.
        let settings = FileJournalConfig { dedup_window_secs: 0, ..config.journal.file() };
        let journal = FileJournal::open(&journal_dir, settings)
            .with_context(|| format!("cannot open the journal in {}", journal_dir.display()))?;
        let stats = journal.stats();
        runtime.block_on(journal.close());
        (journal.id().to_owned(), stats.first_offset)
    };
    let target = &settings.store;
    let mut store = Store::open(target).with_context(|| format!("cannot open the store at {target}"))?;
    let old = store.consumer_position(store_loader::CONSUMER)?;
    let new = ConsumerPosition { offset: first, journal_id: Some(id.clone()) };
    store
        .set_consumer_position(store_loader::CONSUMER, &new)
        .with_context(|| format!("cannot update the store at {target}"))?;
    let was = match old {
        Some(ConsumerPosition { offset, journal_id: Some(old_id) }) => format!("offset {offset} of journal {old_id}"),
        Some(ConsumerPosition { offset, journal_id: None }) => format!("offset {offset}"),
        None => "nothing loaded".to_owned(),
    };
    println!(
        "the store at {target} now loads journal {id} (in {}) from offset {first} (it was at {was}); start `sluice serve` to load it",
        journal_dir.display()
    );
    Ok(())
}
