/*!
Retention: store rows older than `[retention]`'s horizons are deleted in the background.

A row's age is measured by its own time, the one queries filter on and the lake partitions by:
an impression's `time` (when the SDK saw the treatment), an event's `timestamp` (when it
happened, corrected for clock skew). A row is deleted once that time is *before* now minus the
horizon; a row exactly at the horizon stays until the next pass. A late arrival (a mobile backfill,
a replayed journal) already past the horizon is loaded and then deleted by the next pass: what is
kept is "the last N days of activity", whatever day it arrived.

Deleting must never hold the store loader up for long: each statement deletes at most
[`BATCH_ROWS`] rows, in a transaction of its own, and the job then pauses for as long as that
statement took (at least [`MIN_PAUSE`], at most [`MAX_PAUSE`]): on SQLite, where a delete holds
the one write lock, the loader then gets it at least as long as retention had it. A pass runs at start and then every
`retention.interval_secs`; shutdown stops it after the statement running, within [`MAX_PAUSE`].
The lake is left alone: object storage expires objects by itself (the README's "Retention").
*/

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::record::RecordKind;
use crate::store::{Store, StoreError, StoreTarget};

/// Most rows one delete statement removes.
pub const BATCH_ROWS: u64 = 10_000;
/// Shortest pause between two delete statements of a pass.
pub const MIN_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two delete statements: also how long shutdown may wait for a pass.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// A pass that failed (the store down, say) is tried again after this, or the interval if shorter.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the retention job deletes, resolved from `[retention]` by [`crate::config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long impressions are kept, by their `time`; `None`: for ever.
    pub impressions: Option<Duration>,
    /// How long Segment events are kept, by their `timestamp`; `None`: for ever.
    pub events: Option<Duration>,
    /// Time between the starts of two passes.
    pub interval: Duration,
}

impl Policy {
    /// Whether anything is ever deleted.
    pub fn is_enabled(&self) -> bool {
        self.impressions.is_some() || self.events.is_some()
    }

    /// Each record kind with its metric label and horizon.
    fn horizons(&self) -> [(RecordKind, &'static str, Option<Duration>); 2] {
        [
            (RecordKind::SplitImpression, "impressions", self.impressions),
            (RecordKind::SegmentEvent, "events", self.events),
        ]
    }
}

/// The rows one pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Impressions deleted.
    pub impressions: u64,
    /// Segment events deleted.
    pub events: u64,
}

/// One pass over `store`: deletes, kind by kind, the rows whose time is before `now_ms` minus the
/// kind's horizon, [`BATCH_ROWS`] per statement with a pause between statements (see the module
/// docs), counting them in `sluice_retention_deleted_rows_total{kind}` as it goes. Returns early,
/// with what it deleted so far, once `stop` is cancelled.
pub fn sweep(store: &mut Store, policy: &Policy, now_ms: i64, stop: &CancellationToken) -> Result<Deleted, StoreError> {
    let mut deleted = Deleted::default();
    for (kind, label, horizon) in policy.horizons() {
        let Some(horizon) = horizon else { continue };
        let before = now_ms.saturating_sub(i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX));
        loop {
            if stop.is_cancelled() {
                return Ok(deleted);
            }
            let started = Instant::now();
            let n = store.delete_older_than(kind, before, BATCH_ROWS)?;
            metrics::counter!("sluice_retention_deleted_rows_total", "kind" => label).increment(n);
            match kind {
                RecordKind::SplitImpression => deleted.impressions += n,
                RecordKind::SegmentEvent => deleted.events += n,
            }
            if n < BATCH_ROWS {
                break;
            }
            std::thread::sleep(started.elapsed().clamp(MIN_PAUSE, MAX_PAUSE));
        }
    }
    Ok(deleted)
}

/// Runs a pass over the store at `target` now and then every `policy.interval` until `stop` is
/// cancelled; returns at once when the policy deletes nothing. A failed pass is logged, counted in
/// `sluice_retention_errors_total` and tried again (ingest and loading go on meanwhile).
pub async fn run(target: StoreTarget, policy: Policy, stop: CancellationToken) {
    if !policy.is_enabled() {
        return;
    }
    for (_, label, horizon) in policy.horizons() {
        if horizon.is_some() {
            // Shown as 0 from the start, so a dashboard can tell "nothing old yet" from "off".
            metrics::counter!("sluice_retention_deleted_rows_total", "kind" => label).increment(0);
        }
    }
    let days = |horizon: Option<Duration>| horizon.map(|h| h.as_secs() / 86_400);
    tracing::info!(
        impressions_days = days(policy.impressions),
        events_days = days(policy.events),
        interval_secs = policy.interval.as_secs(),
        "retention: deleting store rows older than their horizon"
    );
    loop {
        let pass = {
            let (target, stop) = (target.clone(), stop.clone());
            tokio::task::spawn_blocking(move || {
                let mut store = Store::open(&target)?;
                sweep(&mut store, &policy, chrono::Utc::now().timestamp_millis(), &stop)
            })
            .await
        };
        let wait = match pass {
            Ok(Ok(deleted)) => {
                if deleted != Deleted::default() {
                    tracing::info!(
                        impressions = deleted.impressions,
                        events = deleted.events,
                        "retention deleted store rows past their horizon"
                    );
                }
                policy.interval
            }
            Ok(Err(e)) => {
                metrics::counter!("sluice_retention_errors_total").increment(1);
                tracing::warn!(error = %e, "a retention pass failed; trying again later");
                policy.interval.min(RETRY_AFTER)
            }
            Err(e) => {
                metrics::counter!("sluice_retention_errors_total").increment(1);
                tracing::error!(error = %e, "a retention pass panicked; trying again later");
                policy.interval.min(RETRY_AFTER)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
    }
}
