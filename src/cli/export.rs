/*!
`sluice export impressions`: the same filters as `GET /api/impressions`, straight from the store.
*/

use std::fs::File;
use std::io::{self, IsTerminal as _, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::query::{ImpressionQuery, write_impressions};
use crate::store::Store;

/// What `sluice export` can write.
#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// Split impressions, ordered by time (CSV is the seed's report: User Key, Split, Environment, Treatment, Rule, Time).
    Impressions(ImpressionArgs),
}

/// Filters and output of `sluice export impressions`. Repeat a filter for "any of".
#[derive(Debug, Args)]
pub struct ImpressionArgs {
    /// Environment name (or id).
    #[arg(long, value_name = "NAME")]
    pub environment: Vec<String>,
    /// Feature flag (split) name.
    #[arg(long, value_name = "NAME")]
    pub split: Vec<String>,
    /// User key.
    #[arg(long, value_name = "KEY")]
    pub key: Vec<String>,
    /// Treatment.
    #[arg(long, value_name = "NAME")]
    pub treatment: Vec<String>,
    /// Targeting rule (label), e.g. "default rule".
    #[arg(long, value_name = "LABEL")]
    pub label: Vec<String>,
    /// From this time, inclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Until this time, exclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Output format: csv, ndjson or json.
    #[arg(long, value_name = "FORMAT", default_value = "csv")]
    pub format: String,
    /// CSV columns: `report` (the seed's six) or `all`.
    #[arg(long, value_name = "COLUMNS", default_value = "report")]
    pub columns: String,
    /// At most this many rows.
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Write here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl ImpressionArgs {
    /// The flags as query parameters, so the CLI and the HTTP API share one parser.
    fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut push =
            |name: &str, values: &[String]| pairs.extend(values.iter().map(|v| (name.to_owned(), v.clone())));
        push("environment", &self.environment);
        push("split", &self.split);
        push("key", &self.key);
        push("treatment", &self.treatment);
        push("label", &self.label);
        push("from", self.from.as_slice());
        push("to", self.to.as_slice());
        push("format", std::slice::from_ref(&self.format));
        push("columns", std::slice::from_ref(&self.columns));
        push("limit", self.limit.as_slice());
        pairs
    }
}

/// Runs `sluice export …`.
pub fn run(config: &Config, what: ExportWhat) -> anyhow::Result<()> {
    let ExportWhat::Impressions(args) = what;
    let (query, format) = ImpressionQuery::from_pairs(&args.to_pairs()).map_err(|e| {
        // Name the flag, not the query parameter the message was written for.
        anyhow::anyhow!("{}", e.to_string().replace(&format!("parameter `{}`", e.param), &format!("--{}", e.param)))
    })?;
    let target = config.store_target()?;
    let mut store = Store::open_read_only(&target).with_context(|| format!("cannot read the store at {target}"))?;

    let (mut out, show_progress): (Box<dyn Write>, bool) = match &args.output {
        Some(file) => {
            let f = File::create(file).with_context(|| format!("cannot create {}", file.display()))?;
            (Box::new(f), io::stderr().is_terminal())
        }
        None => (Box::new(io::stdout().lock()), io::stderr().is_terminal() && !io::stdout().is_terminal()),
    };
    let bar = if show_progress { ProgressBar::new_spinner() } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} rows  {per_sec}  {elapsed}")
            .context("the progress template is invalid")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let rows = write_impressions(&mut store, &query, &format, &mut out, &mut |n| bar.set_position(n))
        .context("the export failed")?;
    out.flush().context("could not finish writing the output")?;
    bar.finish_and_clear();
    if let Some(file) = &args.output {
        eprintln!("wrote {rows} impressions to {}", file.display());
    }
    Ok(())
}
