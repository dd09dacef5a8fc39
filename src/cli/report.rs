/*!
`sluice report attribution`: the report of `GET /api/reports/attribution`, straight from the
store (no server needed; safe while one runs). The flags become the API's query parameters, so
both share one parser; on a terminal the report prints as one aligned table per model.
*/

use std::io::{IsTerminal as _, Write};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::config::Settings;
use crate::query::attribution_report::{self, ReportAnswer, ReportFormat, ReportRequest};

/// What `sluice report` reports.
#[derive(Debug, Subcommand)]
pub enum ReportWhat {
    /// Which channels, sources, campaigns or referrer types earn the conversions, by model.
    Attribution(AttributionArgs),
}

/// The flags of `sluice report attribution`.
#[derive(Debug, Args)]
pub struct AttributionArgs {
    /// A model: first, last, last_non_direct, linear, time_decay, position_based or data_driven
    /// (repeat for several side by side) [default: last_non_direct].
    #[arg(long, value_name = "MODEL")]
    pub model: Vec<String>,
    /// A conversion event (repeatable) [default: [attribution] conversions].
    #[arg(long, value_name = "EVENT")]
    pub conversion: Vec<String>,
    /// Conversions from this time, inclusive: epoch ms, RFC 3339 or YYYY-MM-DD.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Conversions until this time, exclusive.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// The rows: channel, source, campaign or referrer [default: channel].
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// How far before a conversion its touches may lie, e.g. 30d [default: [attribution] lookback].
    #[arg(long, value_name = "DURATION")]
    pub lookback: Option<String>,
    /// time_decay's half-life, e.g. 7d [default: [attribution] half_life].
    #[arg(long, value_name = "DURATION")]
    pub half_life: Option<String>,
    /// table, json or csv [default: table on a terminal, else json].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// Prints the report.
pub fn run(settings: &Settings, what: ReportWhat) -> anyhow::Result<()> {
    let ReportWhat::Attribution(args) = what;
    let table = match args.format.as_deref() {
        Some("table") => true,
        None => std::io::stdout().is_terminal(),
        Some(_) => false,
    };
    let mut pairs: Vec<(String, String)> = args.model.iter().map(|m| ("model".to_owned(), m.clone())).collect();
    pairs.extend(args.conversion.iter().map(|c| ("conversion".to_owned(), c.clone())));
    for (name, value) in [
        ("from", &args.from),
        ("to", &args.to),
        ("group", &args.group),
        ("lookback", &args.lookback),
        ("half_life", &args.half_life),
        ("format", &args.format.clone().filter(|f| f != "table")),
    ] {
        if let Some(value) = value {
            pairs.push((name.to_owned(), value.clone()));
        }
    }
    let request = ReportRequest::from_pairs(&pairs)
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.param.replace('_', "-"), e.reason))?;
    let mut store = super::open_store(&settings.store)?;
    let answer = attribution_report::report(&mut store, &request, &settings.config.attribution)?;
    let mut out = std::io::stdout().lock();
    if table {
        write!(out, "{}", render_table(&answer)).context("could not write the report")?;
    } else if request.format == ReportFormat::Csv {
        attribution_report::write_csv(&answer, &mut out)?;
    } else {
        let json = serde_json::to_string_pretty(&answer).context("could not encode the report")?;
        writeln!(out, "{json}").context("could not write the report")?;
    }
    Ok(())
}

/// The report as aligned text: its totals and warnings, then one table per model.
pub fn render_table(answer: &ReportAnswer) -> String {
    let mut text = format!(
        "{} conversions worth {} ({}; lookback {}), by {}\n",
        answer.conversions,
        answer.value,
        answer.settings.conversions.join(", "),
        answer.settings.lookback,
        answer.settings.group
    );
    for warning in &answer.warnings {
        text.push_str(&format!("warning: {warning}\n"));
    }
    for report in &answer.reports {
        let mut rows = vec![[answer.settings.group.to_owned(), "conversions".into(), "value".into(), "share".into()]];
        rows.extend(report.rows.iter().map(|r| {
            [
                r.group.clone(),
                format!("{:.2}", r.conversions),
                format!("{:.2}", r.value),
                format!("{:.1}%", r.share * 100.0),
            ]
        }));
        text.push_str(&format!("\n{}\n", report.model));
        text.push_str(&super::experiment::aligned(&rows));
    }
    text
}
