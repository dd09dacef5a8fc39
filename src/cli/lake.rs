/*!
`sluice lake ls`: what the lake writer has written.
*/

use std::io::Write as _;

use anyhow::Context as _;
use clap::Subcommand;
use futures_util::TryStreamExt as _;

use crate::lake::{Lake, LakeSettings};

/// The `lake` subcommands.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// List the lake's objects (size in bytes, last modified, name), sorted by name, then totals.
    Ls {
        /// Only objects under this folder, e.g. `split_impression/2026/11` or `errors`.
        prefix: Option<String>,
    },
}

/// Runs a `lake` subcommand against the configured lake (no server needed).
pub fn run(settings: &LakeSettings, command: LakeCommand) -> anyhow::Result<()> {
    let LakeCommand::Ls { prefix } = command;
    let lake = Lake::open(&settings.config, &settings.default_dir).context("cannot open the lake; check lake.url")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let mut objects: Vec<_> = runtime
        .block_on(lake.list(prefix.as_deref().unwrap_or_default()).try_collect::<Vec<_>>())
        .with_context(|| format!("cannot list the lake at {}", lake.description()))?
        .into_iter()
        .map(|meta| (lake.relative(&meta.location), meta.size, meta.last_modified))
        .collect();
    objects.sort();
    let mut out = std::io::stdout().lock();
    let mut total = 0;
    for (name, size, modified) in &objects {
        total += size;
        writeln!(out, "{size:>12}  {}  {name}", modified.format("%Y-%m-%dT%H:%M:%SZ"))?;
    }
    let plural = if objects.len() == 1 { "" } else { "s" };
    writeln!(out, "{} object{plural}, {total} bytes in {}", objects.len(), lake.description())?;
    Ok(())
}
