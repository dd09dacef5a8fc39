/*!
The dead-letter area: every record a source rejects, with its reason, under `<data-dir>/dead-letter/`.

Files are NDJSON, one rejected record per line:
`{"receivedAt":…,"source":"split","index":3,"field":"time","reason":"…","record":<the JSON as sent>}`.
The newest file is `current.ndjson`; it is renamed to `<epoch-ms>-<n>.ndjson` once it passes a quarter
of the budget, and the oldest renamed files are deleted while the area is over its budget. Only
files with that name pattern are counted or deleted: anything else an operator keeps in the
directory (notes, a subdirectory of saved files) is left alone. The
client is always told about each rejection in the response, so eviction loses no unreported data;
it is counted in `sluice_dead_letter_evicted_bytes_total`.
*/

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::files;

/// One rejected record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection<'a> {
    /// Position of the record in the request's batch.
    pub index: usize,
    /// The field at fault, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
    /// Why it was rejected.
    pub reason: &'a str,
    /// The record exactly as sent.
    #[serde(skip)]
    pub record: &'a RawValue,
}

/// The bounded, append-only area of rejected records.
#[derive(Debug)]
pub struct DeadLetters {
    dir: PathBuf,
    max_bytes: u64,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    file: File,
    bytes: u64,
    rotations: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Line<'a> {
    received_at: i64,
    source: &'a str,
    #[serde(flatten)]
    rejection: &'a Rejection<'a>,
    record: &'a RawValue,
}

impl DeadLetters {
    /// Opens (creating) the area in `dir`, keeping at most about `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<DeadLetters> {
        files::create_dir_all(dir)?;
        let file = files::options().create(true).append(true).open(dir.join("current.ndjson"))?;
        let bytes = file.metadata()?.len();
        Ok(DeadLetters { dir: dir.to_owned(), max_bytes, current: Mutex::new(Current { file, bytes, rotations: 0 }) })
    }

    /// Appends `rejections` from one request of `source`.
    pub fn write(&self, source: &str, received_at: i64, rejections: &[Rejection<'_>]) -> std::io::Result<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for rejection in rejections {
            let line = Line { received_at, source, rejection, record: rejection.record };
            serde_json::to_writer(&mut buf, &line)?;
            buf.push(b'\n');
        }
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // A file deleted under us (the data directory removed while sluice runs) still takes
        // writes, into nothing anyone can read: start a new one where it belongs.
        if std::os::unix::fs::MetadataExt::nlink(&current.file.metadata()?) == 0 {
            tracing::warn!(dir = %self.dir.display(), "the dead-letter file was deleted while sluice ran; starting a new one");
            files::create_dir_all(&self.dir)?;
            current.file = files::options().create(true).append(true).open(self.dir.join("current.ndjson"))?;
            current.bytes = 0;
        }
        current.file.write_all(&buf)?;
        current.bytes += buf.len() as u64;
        metrics::counter!("sluice_dead_letter_records_total", "source" => source.to_owned())
            .increment(rejections.len() as u64);
        if current.bytes > self.max_bytes / 4 {
            self.rotate(&mut current)?;
        }
        Ok(())
    }

    fn rotate(&self, current: &mut Current) -> std::io::Result<()> {
        // The counter keeps two rotations within one millisecond from overwriting each other.
        current.rotations += 1;
        let name = format!("{:013}-{:06}.ndjson", chrono::Utc::now().timestamp_millis(), current.rotations);
        fs::rename(self.dir.join("current.ndjson"), self.dir.join(name))?;
        current.file = files::options().create(true).append(true).open(self.dir.join("current.ndjson"))?;
        current.bytes = 0;
        let mut rotated: Vec<(PathBuf, u64)> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_str().is_some_and(is_rotated_name))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                meta.is_file().then(|| (e.path(), meta.len()))
            })
            .collect();
        rotated.sort();
        let mut total: u64 = rotated.iter().map(|(_, len)| len).sum();
        for (path, len) in rotated {
            if total <= self.max_bytes {
                break;
            }
            fs::remove_file(&path)?;
            total -= len;
            metrics::counter!("sluice_dead_letter_evicted_bytes_total").increment(len);
            tracing::warn!(file = %path.display(), bytes = len, "dead-letter area over its budget: deleted the oldest file");
        }
        Ok(())
    }

    /// Removes every line whose refused record `erased` says is a person's (an erasure), from
    /// every file of the area, and says how many. Each changed file is rewritten whole (a
    /// private temporary file, fsynced, renamed over it) with the other lines byte for byte;
    /// writers wait meanwhile. A line that is not a dead letter's JSON is kept.
    pub fn erase(&self, erased: &dyn Fn(&RawValue) -> bool) -> std::io::Result<u64> {
        #[derive(serde::Deserialize)]
        struct Stored<'a> {
            #[serde(borrow)]
            record: &'a RawValue,
        }
        let mut current = self.current.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut removed = 0;
        let names: Vec<String> = fs::read_dir(&self.dir)?
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| name == "current.ndjson" || is_rotated_name(name))
            .collect();
        for name in names {
            let path = self.dir.join(&name);
            if !path.is_file() {
                continue;
            }
            let text = fs::read(&path)?;
            let mut kept = Vec::with_capacity(text.len());
            let mut dropped = 0;
            for line in text.split_inclusive(|b| *b == b'\n') {
                match serde_json::from_slice::<Stored<'_>>(line) {
                    Ok(stored) if erased(stored.record) => dropped += 1,
                    _ => kept.extend_from_slice(line),
                }
            }
            if dropped == 0 {
                continue;
            }
            files::replace(&path, &kept)?;
            if name == "current.ndjson" {
                current.file = files::options().create(true).append(true).open(&path)?;
                current.bytes = kept.len() as u64;
            }
            removed += dropped;
        }
        Ok(removed)
    }
}

/// Whether `name` is one [`DeadLetters::rotate`] gives: `<13 digits>-<6 digits>.ndjson`.
fn is_rotated_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".ndjson") else { return false };
    let Some((ms, n)) = stem.split_once('-') else { return false };
    ms.len() == 13 && n.len() == 6 && ms.bytes().chain(n.bytes()).all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    #[test]
    fn a_dead_letter_directory_deleted_while_running_is_made_again_and_written() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("dead-letters");
        let dl = DeadLetters::open(&dir, 1 << 20).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let record = raw(r#"{"key":5}"#);
        let r = Rejection { index: 0, field: Some("key"), reason: "expected a string", record: &record };
        dl.write("split", 1, &[r]).unwrap();
        let text = std::fs::read_to_string(dir.join("current.ndjson")).expect("the rejection is on disk again");
        assert!(text.contains(r#""record":{"key":5}"#), "{text}");
    }

    #[test]
    fn writes_one_line_per_rejection_with_the_record_verbatim() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(dir.path(), 1 << 20).unwrap();
        let record = raw(r#"{"key":5}"#);
        let r = Rejection { index: 2, field: Some("key"), reason: "expected a string", record: &record };
        dl.write("split", 42, &[r]).unwrap();
        let text = fs::read_to_string(dir.path().join("current.ndjson")).unwrap();
        assert_eq!(
            text,
            "{\"receivedAt\":42,\"source\":\"split\",\"index\":2,\"field\":\"key\",\"reason\":\"expected a string\",\"record\":{\"key\":5}}\n"
        );
    }

    #[test]
    fn stays_within_its_budget_by_dropping_the_oldest_files() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(dir.path(), 4096).unwrap();
        let record = raw(&format!("\"{}\"", "x".repeat(500)));
        for i in 0..100 {
            let r = Rejection { index: i, field: None, reason: "not an object", record: &record };
            dl.write("split", i as i64, &[r]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let total: u64 = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        assert!(total <= 4096 + 4096 / 4 + 600, "dead letters use {total} bytes");
        assert!(fs::read_dir(dir.path()).unwrap().count() > 1, "rotated at least once");
    }

    #[test]
    fn rotation_deletes_only_its_own_files_and_survives_a_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("notes.txt"), "x".repeat(8192)).unwrap();
        fs::create_dir(dir.path().join("0000000000001-000001.ndjson")).unwrap();
        fs::create_dir(dir.path().join("saved")).unwrap();
        let dl = DeadLetters::open(dir.path(), 1024).unwrap();
        let record = raw(&format!("\"{}\"", "x".repeat(300)));
        for i in 0..20 {
            let r = Rejection { index: i, field: None, reason: "not an object", record: &record };
            dl.write("split", i as i64, &[r]).unwrap();
        }
        assert_eq!(fs::read_to_string(dir.path().join("notes.txt")).unwrap().len(), 8192);
        assert!(dir.path().join("saved").is_dir());
        assert!(dir.path().join("0000000000001-000001.ndjson").is_dir());
    }

    #[test]
    fn an_erasure_removes_the_persons_lines_from_every_file_and_keeps_the_others_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetters::open(dir.path(), 4096).unwrap();
        let write = |i: usize, record: &str| {
            let record = raw(record);
            dl.write("segment", i as i64, &[Rejection { index: i, field: None, reason: "bad", record: &record }])
                .unwrap();
        };
        for i in 0..40 {
            // Enough to rotate: the person's lines end up in rotated files and in the current one.
            write(
                i,
                &format!(r#"{{"userId":"{}","pad":"{}"}}"#, if i % 3 == 0 { "ann" } else { "bob" }, "x".repeat(100)),
            );
        }
        let all = |dir: &Path| -> String {
            let mut names: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            names.iter().map(|p| fs::read_to_string(p).unwrap()).collect()
        };
        let before = all(dir.path());
        let is_ann = |r: &RawValue| r.get().contains(r#""userId":"ann""#);
        let removed = dl.erase(&is_ann).unwrap();
        let after = all(dir.path());
        assert_eq!(removed as usize, before.lines().filter(|l| l.contains(r#""userId":"ann""#)).count());
        assert!(removed > 0 && !after.contains(r#""userId":"ann""#));
        let others: Vec<&str> = before.lines().filter(|l| !l.contains(r#""userId":"ann""#)).collect();
        assert_eq!(after.lines().collect::<Vec<_>>(), others, "the others' lines, byte for byte, in order");
        // Writing goes on in the rewritten current file.
        write(99, r#"{"userId":"cid"}"#);
        assert!(
            fs::read_to_string(dir.path().join("current.ndjson"))
                .unwrap()
                .ends_with("\"record\":{\"userId\":\"cid\"}}\n")
        );
        assert_eq!(dl.erase(&is_ann).unwrap(), 0, "again: nothing");
    }

    #[test]
    fn rotated_names_are_recognised_exactly() {
        assert!(is_rotated_name("1764417600000-000001.ndjson"));
        assert!(!is_rotated_name("current.ndjson"));
        assert!(!is_rotated_name("1764417600000-000001.ndjson.bak"));
        assert!(!is_rotated_name("backup-000001.ndjson"));
        assert!(!is_rotated_name("176441760000-000001.ndjson"));
    }
}
