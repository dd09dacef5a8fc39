/*!
`sluice experiment SPLIT` and `sluice experiments`: the read-out and the list of
`GET /api/experiments/{split}` and `GET /api/experiments`, straight from the store (no server
needed; safe while one runs). The flags become the API's query parameters, so both share one
parser; on a terminal the read-out prints as an aligned table.
*/

use std::io::{IsTerminal as _, Write};

use anyhow::Context as _;
use clap::Args;

use crate::config::Settings;
use crate::experiments::Group;
use crate::query::experiments::{self, ReadoutAnswer, ReadoutFormat, ReadoutRequest};

/// The flags of `sluice experiment`.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// The split (flag) name.
    pub split: String,
    /// The environment whose exposures count (name or id).
    #[arg(long, value_name = "ENV")]
    pub environment: String,
    /// A metric: conversion:EVENT, count:EVENT or sum:EVENT:PROPERTY (repeat for several).
    #[arg(long, value_name = "METRIC")]
    pub metric: Vec<String>,
    /// The control treatment [default: control, else off, else the one with most units].
    #[arg(long, value_name = "TREATMENT")]
    pub control: Option<String>,
    /// Exposures from this time, inclusive: epoch ms, RFC 3339 or YYYY-MM-DD.
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// Exposures until this time, exclusive.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// Only exposures of this splitVersionNumber (the API's `version`; `--version` prints sluice's).
    #[arg(long, value_name = "N")]
    pub split_version: Option<String>,
    /// Conversion window after each unit's first exposure, e.g. 72h [default: until --to].
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Significance level of the confidence intervals.
    #[arg(long, value_name = "ALPHA")]
    pub alpha: Option<String>,
    /// Expected traffic split in the treatments' byte order, e.g. 50,50 [default: equal].
    #[arg(long, value_name = "W,W,…")]
    pub weights: Option<String>,
    /// Break the read-out down by targeting rule or flag version: label or version.
    #[arg(long, value_name = "BY")]
    pub by: Option<String>,
    /// table, json or csv [default: table on a terminal, else json].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

/// Prints the read-out.
pub fn run(settings: &Settings, args: ExperimentArgs) -> anyhow::Result<()> {
    let table = match args.format.as_deref() {
        Some("table") => true,
        None => std::io::stdout().is_terminal(),
        Some(_) => false,
    };
    let mut pairs = vec![("environment".to_owned(), args.environment.clone())];
    pairs.extend(args.metric.iter().map(|m| ("metric".to_owned(), m.clone())));
    for (name, value) in [
        ("control", &args.control),
        ("from", &args.from),
        ("to", &args.to),
        ("version", &args.split_version),
        ("window", &args.window),
        ("alpha", &args.alpha),
        ("weights", &args.weights),
        ("by", &args.by),
        ("format", &args.format.clone().filter(|f| f != "table")),
    ] {
        if let Some(value) = value {
            pairs.push((name.to_owned(), value.clone()));
        }
    }
    let request = ReadoutRequest::from_pairs(&pairs).map_err(|e| {
        let flag = if e.param == "version" { "split-version" } else { e.param.as_str() };
        anyhow::anyhow!("--{flag}: {}", e.reason)
    })?;
    let mut store = super::open_store(&settings.store)?;
    let answer = experiments::readout(
        &mut store,
        &args.split,
        &request,
        &settings.config.experiments,
        settings.config.attribution.max_cluster_ids,
    )?;
    let mut out = std::io::stdout().lock();
    if table {
        write!(out, "{}", render_table(&answer)).context("could not write the read-out")?;
    } else if request.format == ReadoutFormat::Csv {
        experiments::write_csv(&answer, &mut out)?;
    } else {
        let json = serde_json::to_string_pretty(&answer).context("could not encode the read-out")?;
        writeln!(out, "{json}").context("could not write the read-out")?;
    }
    Ok(())
}

/// Prints the flags seen in `environment` as JSON.
pub fn list(settings: &Settings, environment: &str) -> anyhow::Result<()> {
    let mut store = super::open_store(&settings.store)?;
    let list = experiments::list(&mut store, environment)?;
    let json = serde_json::to_string_pretty(&serde_json::json!({"environment": environment, "experiments": list}))
        .context("could not encode the list")?;
    writeln!(std::io::stdout().lock(), "{json}").context("could not write the list")?;
    Ok(())
}

/// The read-out as aligned text: a header of units and warnings, then one table per metric.
pub fn render_table(answer: &ReadoutAnswer) -> String {
    let mut text = format!("{} in {} (control: {})\n", answer.split, answer.environment, answer.analysis.control);
    group_table(&mut text, &answer.analysis.top, answer.settings.alpha);
    if let Some(breakdown) = &answer.analysis.breakdown {
        for segment in &breakdown.segments {
            let value = serde_json::to_string(&segment.value).unwrap_or_default();
            text.push_str(&format!("\n{} {value}\n", breakdown.by));
            group_table(&mut text, &segment.analysis, answer.settings.alpha);
        }
    }
    text
}

fn group_table(text: &mut String, group: &Group, alpha: f64) {
    let srm = group.srm.p_value.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.3e}"));
    text.push_str(&format!(
        "units {}, multiple exposures {} ({:.2}%){}, SRM p = {srm}{}\n",
        group.units,
        group.multiple_exposures.units,
        group.multiple_exposures.share * 100.0,
        if group.multiple_exposures.warning { " WARNING" } else { "" },
        if group.srm.warning { " WARNING: sample ratio mismatch" } else { "" },
    ));
    let level = format!("{:.0}% CI", (1.0 - alpha) * 100.0);
    for metric in &group.metrics {
        let mut rows = vec![[
            "treatment".to_owned(),
            "units".to_owned(),
            "mean".to_owned(),
            "absolute".to_owned(),
            "relative".to_owned(),
            format!("relative {level}"),
            "p-value".to_owned(),
            "chance to beat".to_owned(),
        ]];
        let fmt = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |x| format!("{x:.4}"));
        let pct = |x: Option<f64>| x.map_or_else(|| "–".to_owned(), |x| format!("{:+.2}%", x * 100.0));
        for t in &metric.treatments {
            let c = t.comparison.as_ref();
            let rel = c.and_then(|c| c.relative);
            rows.push([
                t.treatment.clone(),
                t.units.to_string(),
                fmt(t.mean),
                fmt(c.and_then(|c| c.absolute).map(|e| e.estimate)),
                pct(rel.map(|e| e.estimate)),
                rel.and_then(|e| e.ci)
                    .map_or_else(|| "–".to_owned(), |[lo, hi]| format!("{} … {}", pct(Some(lo)), pct(Some(hi)))),
                c.and_then(|c| c.p_value).map_or_else(|| "–".to_owned(), |p| format!("{p:.4}")),
                pct(c.and_then(|c| c.chance_to_beat_control)).trim_start_matches('+').to_owned(),
            ]);
        }
        text.push_str(&format!("\n{}\n", metric.metric));
        text.push_str(&aligned(&rows));
        for t in &metric.treatments {
            if let Some(reason) = t.comparison.as_ref().and_then(|c| c.reason) {
                text.push_str(&format!("  {}: {reason}\n", t.treatment));
            }
        }
        if let Some(n) = metric.non_numeric.filter(|n| *n > 0) {
            text.push_str(&format!("  {n} events had no numeric value (counted as 0)\n"));
        }
    }
}

/// Rows as aligned text: the first column left-aligned, the others right-aligned, two spaces apart.
pub(super) fn aligned<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.iter().map(|r| r.as_ref().len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().filter_map(|r| r.as_ref().get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                let pad = w - cell.chars().count();
                if i == 0 { format!("{cell}{}", " ".repeat(pad)) } else { format!("{}{cell}", " ".repeat(pad)) }
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}
