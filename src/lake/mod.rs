/*!
The lake: every journaled record archived as objects in a directory or an object store.

This module knows formats ([`encode`]), the time layout ([`layout`]) and how objects are named
and stored ([`objects`]); the consumer that feeds it from the journal is
[`consumers::lake_writer`](crate::consumers::lake_writer).

# On-store naming
Every object lives under the lake's root (the directory, or the bucket and prefix of the URL):

```text
<root>/<kind>/<partition>/<first>-<last>.<ext>           records that were encoded
<root>/errors/<kind>/<partition>/<first>-<last>.<ext>    records that could not be, with the reason
```

- `<kind>` is the record kind (`split_impression`, `segment_event`).
- `<partition>` is the record's own event time in UTC, rendered by the layout: `2026/11/23/07`
  (Firehose, the default), `dt=2026-11-23/hour=07` (Hive) or a custom strftime template. Error
  records have no trustworthy event time, so they are partitioned by arrival time.
- `<first>` and `<last>` are the journal offsets of the first and last record in the object,
  20 zero-padded digits so that names sort in offset order. The object holds *every* record of
  that partition whose offset lies between them, and no other.
- `<ext>` is `json.gz`, `json.zst` or `parquet` (error objects are always NDJSON: `json.gz`, or
  `json.zst` when the lake is zstd).

# Exactly once
A partition's records are written in offset order, one object at a time (objects of different
partitions upload concurrently, but a partition's next upload waits for its previous one), so for
each partition the highest `<last>` among its objects is a watermark: every record of that
partition at or below it is in an object. The writer commits the lowest offset any open buffer or
unfinished upload still holds, and only after the PUT that made it so succeeded. After a crash it re-reads from that offset; for each
re-read record (those below the journal's end at start-up) it lists the record's partition once
and skips the record if its offset is at or below the partition's watermark. So a record that
already reached an object is never written again, whatever the new cut points are, and one that
did not is written exactly once. A PUT that failed is retried with the same contents and the same
name, so an upload that succeeded without our hearing of it is simply rewritten.

The watermark scheme depends on offsets being unique to one journal: a lake belongs to one data
directory. The writer keeps its checkpoint (the lake it writes to and its committed offset) in
`<data-dir>/lake-writer.json`; with no checkpoint for the lake it refuses to start on a lake that
already holds objects, since they would come from another journal, unless the lake's mark (below)
names its own journal: then it archives from the committed offset the mark carries (else the
oldest retained record), and what the lake already holds is recognised as after a crash
(`lake.url` changed, then changed back; or another node of a cluster wrote the lake until this
one took its lease over). Before it uploads an object it raises a
mark in the lake itself, `<root>/_sluice-writer.json` (`{"journal": id, "offset": n, "last": f,
"committed": c}`: no object holds an offset of that journal at or past `n`, `f` is the
fingerprint of the record at `n - 1`, and every record below `c` is in an object). The mark is what a copy of the data directory cannot restore:
- a writer whose journal ends before the mark's offset refuses to start (an older backup: its
  new records would take offsets the lake already holds);
- a writer that reads the record at `n - 1` again and finds another fingerprint stops (a backup
  ran while this copy was down and archived its own records under offsets this one holds);
- a writer whose checkpoint names this lake while the mark names another journal refuses, and
  one that finds the mark moved when it goes to raise it stops (another sluice writes the lake).

What it cannot see: two writers that read the mark in the same instant before either raises it
(the next raise stops one of them, but their first objects may clash; object stores offer no
compare-and-swap that every backend here supports), and a lake whose mark was deleted by hand.
*/

pub mod encode;
pub mod erase;
pub mod layout;
pub mod objects;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use encode::LakeFormat;
pub use layout::Layout;
pub use objects::Lake;

/// Lake settings (`[lake]` in the configuration file, `SLUICE_LAKE__*` in the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LakeConfig {
    /// Archive the journal to the lake at all.
    pub enabled: bool,
    /// Where: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`, `file:///dir`
    /// or a directory path. Unset: `<data-dir>/lake`.
    pub url: Option<String>,
    /// How objects are encoded.
    pub format: LakeFormat,
    /// `firehose` (`YYYY/MM/DD/HH`), `hive` (`dt=YYYY-MM-DD/hour=HH`) or a strftime template.
    pub layout: String,
    /// Flush a partition's buffer once its records reach this many bytes (as received).
    pub flush_bytes: u64,
    /// Flush a partition's buffer once its oldest record has waited this many seconds.
    pub flush_secs: u64,
    /// Most bytes buffered across all partitions; above it the oldest buffer is flushed early.
    pub max_buffered_bytes: u64,
    /// Objects larger than this are uploaded in parts of this size (at least 5 MiB, as S3 needs).
    pub part_bytes: usize,
    /// S3-compatible endpoint, e.g. `http://127.0.0.1:9000` (MinIO, s3s, R2, …). Unset: AWS.
    pub endpoint: Option<String>,
    /// Address buckets as `endpoint/bucket` (path style) rather than `bucket.endpoint`.
    pub path_style: bool,
    /// Further object_store settings by key (`aws_region`, `google_service_account`, …).
    pub options: BTreeMap<String, String>,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            enabled: true,
            url: None,
            format: LakeFormat::NdjsonGzip,
            layout: "firehose".into(),
            flush_bytes: 8 << 20,
            flush_secs: 60,
            max_buffered_bytes: 64 << 20,
            part_bytes: 8 << 20,
            endpoint: None,
            path_style: true,
            options: BTreeMap::new(),
        }
    }
}

/// The lake's settings resolved: the layout parsed, and where a local lake and the writer's
/// checkpoint live.
#[derive(Debug, Clone)]
pub struct LakeSettings {
    /// The settings as written.
    pub config: LakeConfig,
    /// `config.layout`, parsed.
    pub layout: Layout,
    /// The lake's directory when `url` is unset.
    pub default_dir: PathBuf,
    /// The lake writer's checkpoint: its lake and committed offset.
    pub checkpoint: PathBuf,
}

impl LakeConfig {
    /// Checks the values and parses the layout, for a lake whose directory is `default_dir` when
    /// `url` is unset and whose writer keeps its checkpoint in `checkpoint`.
    pub fn resolve(self, default_dir: PathBuf, checkpoint: PathBuf) -> Result<LakeSettings, LakeError> {
        let layout = self.validate()?;
        Ok(LakeSettings { config: self, layout, default_dir, checkpoint })
    }

    /// Checks the values that can be checked without touching the store; the layout, parsed.
    fn validate(&self) -> Result<Layout, LakeError> {
        let layout = Layout::parse(&self.layout)?;
        let invalid = |reason: String| Err(LakeError::Config(reason));
        if self.flush_bytes == 0 {
            return invalid("lake.flush_bytes must be above 0".into());
        }
        if self.flush_secs == 0 {
            return invalid("lake.flush_secs must be above 0".into());
        }
        if self.max_buffered_bytes < self.flush_bytes {
            return invalid(format!(
                "lake.max_buffered_bytes ({}) must be at least lake.flush_bytes ({})",
                self.max_buffered_bytes, self.flush_bytes
            ));
        }
        // S3 refuses every part but the last below 5 MiB (EntityTooSmall), and only when the
        // upload completes; refuse it here, where the setting is, for every store alike.
        if self.part_bytes < 5 << 20 {
            return invalid(format!(
                "lake.part_bytes ({}) must be at least 5242880 (5 MiB), the smallest part S3 accepts",
                self.part_bytes
            ));
        }
        Ok(layout)
    }
}

/// What can go wrong in the lake.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// A setting is invalid.
    #[error("{0}")]
    Config(String),
    /// The object store refused or failed a request.
    #[error("{operation} {location} on {lake} failed: {source}")]
    Store {
        /// What was being done (`PUT`, `LIST`).
        operation: &'static str,
        /// The object or prefix.
        location: String,
        /// The lake, as configured.
        lake: String,
        /// The store's error (boxed: it is large, and failures are rare).
        source: Box<object_store::Error>,
    },
    /// A local file (a written object, during fsync) could not be synced.
    #[error("cannot sync {path} to disk: {source}")]
    Sync {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Leftover upload staging files in a local lake could not be removed.
    #[error("cannot remove leftover upload files under the lake directory {dir}: {source}; check its permissions")]
    Cleanup {
        /// The lake's directory.
        dir: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An object could not be read back to erase records from it.
    #[error(
        "cannot read {object} to erase records from it: {reason}; move it out of the lake if sluice did not write it, then ask for the erasure again (it resumes where it stopped)"
    )]
    Unreadable {
        /// The object, relative to the lake's root.
        object: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// Encoding a batch failed for a reason that is not the records' fault.
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_below_the_s3_minimum_are_refused_with_the_minimum() {
        let config = LakeConfig { part_bytes: 1 << 20, ..LakeConfig::default() };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("lake.part_bytes (1048576) must be at least 5242880"), "{err}");
        assert!(LakeConfig { part_bytes: 5 << 20, ..LakeConfig::default() }.validate().is_ok());
    }
}
