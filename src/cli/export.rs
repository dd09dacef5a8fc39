/*!
`sluice export impressions` and `sluice export events`: the same filters as `GET /api/impressions`
and `GET /api/events`, straight from the store.
*/

use std::fs::File;
use std::io::{self, IsTerminal as _, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::query::{EventQuery, ImpressionQuery, write_events, write_impressions};
use crate::store::StoreTarget;

/// What `sluice export` can write.
#[derive(Debug, Subcommand)]
pub enum ExportWhat {
    /// Split impressions, ordered by time (CSV is the seed's report: User Key, Split, Environment, Treatment, Rule, Time).
    Impressions(ImpressionArgs),
    /// Segment events, ordered by timestamp, each whole as stored (NDJSON, or one JSON array).
    Events(EventArgs),
}

/// Filters and output of `sluice export events`. Repeat a filter for "any of".
#[derive(Debug, Args)]
pub struct EventArgs {
    /// `messageId`.
    #[arg(long, value_name = "ID")]
    pub message_id: Vec<String>,
    /// Call type: track, page, identify, alias, group or screen.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Vec<String>,
    /// `track` event name, e.g. "Order Completed".
    #[arg(long, value_name = "NAME")]
    pub event: Vec<String>,
    /// `userId`.
    #[arg(long, value_name = "ID")]
    pub user_id: Vec<String>,
    /// `anonymousId`.
    #[arg(long, value_name = "ID")]
    pub anonymous_id: Vec<String>,
    /// From this time, inclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Until this time, exclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Output format: ndjson or json.
    #[arg(long, value_name = "FORMAT", default_value = "ndjson")]
    pub format: String,
    /// At most this many events.
    #[arg(long, value_name = "N")]
    pub limit: Option<String>,
    /// Write here instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl EventArgs {
    /// The flags as query parameters, so the CLI and the HTTP API share one parser.
    fn to_pairs(&self) -> Vec<(String, String)> {
        let mut pairs = Vec::new();
        let mut push =
            |name: &str, values: &[String]| pairs.extend(values.iter().map(|v| (name.to_owned(), v.clone())));
        push("messageId", &self.message_id);
        push("type", &self.event_type);
        push("event", &self.event);
        push("userId", &self.user_id);
        push("anonymousId", &self.anonymous_id);
        push("from", self.from.as_slice());
        push("to", self.to.as_slice());
        push("format", std::slice::from_ref(&self.format));
        push("limit", self.limit.as_slice());
        pairs
    }
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
pub fn run(target: &StoreTarget, what: ExportWhat) -> anyhow::Result<()> {
    match what {
        ExportWhat::Impressions(args) => impressions(target, args),
        ExportWhat::Events(args) => events(target, args),
    }
}

/// A query parameter's error, naming the flag instead (`userId` → `--user-id`).
fn flag_error(e: crate::query::ParamError) -> anyhow::Error {
    let flag: String = e
        .param
        .chars()
        .flat_map(|c| if c.is_ascii_uppercase() { vec!['-', c.to_ascii_lowercase()] } else { vec![c] })
        .collect();
    anyhow::anyhow!("{}", e.to_string().replace(&format!("parameter `{}`", e.param), &format!("--{flag}")))
}

fn events(target: &StoreTarget, args: EventArgs) -> anyhow::Result<()> {
    let (query, format) = EventQuery::from_pairs(&args.to_pairs()).map_err(flag_error)?;
    let mut store = super::open_store(target)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(file) => Box::new(File::create(file).with_context(|| format!("cannot create {}", file.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let n = write_events(&mut store, &query, format, &mut out).context("the export failed")?;
    out.flush().context("could not finish writing the output")?;
    if let Some(file) = &args.output {
        eprintln!("wrote {n} events to {}", file.display());
    }
    Ok(())
}

fn impressions(target: &StoreTarget, args: ImpressionArgs) -> anyhow::Result<()> {
    let (query, format) = ImpressionQuery::from_pairs(&args.to_pairs()).map_err(flag_error)?;
    let mut store = super::open_store(target)?;

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
