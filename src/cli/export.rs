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

/// `--from` and `--to`, as both exports take them.
#[derive(Debug, Args)]
pub struct TimeRange {
    /// From this time, inclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Until this time, exclusive: epoch ms, RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
}

/// Flags as query parameters, so the CLI and the HTTP API share one parser: each flag's values
/// under its parameter's name, `from` and `to` included.
fn query_pairs(flags: &[(&str, &[String])], range: &TimeRange) -> Vec<(String, String)> {
    let range = [("from", range.from.as_slice()), ("to", range.to.as_slice())];
    flags
        .iter()
        .chain(&range)
        .flat_map(|(name, values)| values.iter().map(|v| ((*name).to_owned(), v.clone())))
        .collect()
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
    /// The time range.
    #[command(flatten)]
    pub range: TimeRange,
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
        let flags: [(&str, &[String]); 7] = [
            ("messageId", &self.message_id),
            ("type", &self.event_type),
            ("event", &self.event),
            ("userId", &self.user_id),
            ("anonymousId", &self.anonymous_id),
            ("format", std::slice::from_ref(&self.format)),
            ("limit", self.limit.as_slice()),
        ];
        query_pairs(&flags, &self.range)
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
    /// The time range.
    #[command(flatten)]
    pub range: TimeRange,
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
        let flags: [(&str, &[String]); 8] = [
            ("environment", &self.environment),
            ("split", &self.split),
            ("key", &self.key),
            ("treatment", &self.treatment),
            ("label", &self.label),
            ("format", std::slice::from_ref(&self.format)),
            ("columns", std::slice::from_ref(&self.columns)),
            ("limit", self.limit.as_slice()),
        ];
        query_pairs(&flags, &self.range)
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

/// The `--output` file, readable by its owner only (`0600`, as sluice's data files): an export
/// holds people's ids and events. An existing file is truncated and made `0600` too.
fn create_output(file: &std::path::Path) -> anyhow::Result<File> {
    use std::os::unix::fs::PermissionsExt as _;
    let out = crate::files::options()
        .create(true)
        .write(true)
        .truncate(true)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.set_permissions(std::fs::Permissions::from_mode(crate::files::FILE_MODE))
        .with_context(|| format!("cannot make {} private (chmod 600)", file.display()))?;
    Ok(out)
}

fn events(target: &StoreTarget, args: EventArgs) -> anyhow::Result<()> {
    let (query, format) = EventQuery::from_pairs(&args.to_pairs()).map_err(flag_error)?;
    let mut store = super::open_store(target)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(file) => Box::new(create_output(file)?),
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
            let f = create_output(file)?;
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
