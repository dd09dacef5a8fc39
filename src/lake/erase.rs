/*!
Erasing records from the lake: every object holding a record of the person is read, decoded,
re-encoded without those records by the writer's own encoder (same compression, same Parquet
schema; the other records' NDJSON lines stay byte for byte) and uploaded whole in its place,
which object stores do atomically: a reader sees the old object or the new one. Objects holding
no such record are not written. Error objects (`errors/…`) are searched too: their lines carry
the refused record's text.

An object left with no record stays, empty: its name is how the lake writer knows that its
offsets are archived (a restarted writer would otherwise archive them again).

A person's records may be in any object (their events are partitioned by time, not by person),
so an erasure lists and reads the whole lake. Doing it again finds nothing more to remove, so an
interrupted erasure simply runs again.
*/

use std::io::Read as _;
use std::sync::Arc;

use arrow_array::{Array as _, BooleanArray, RecordBatch, StringArray};
use bytes::Bytes;
use futures_util::StreamExt as _;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};

use super::LakeError;
use super::encode::{self, LakeFormat};
use super::objects::{Lake, offsets};
use crate::record::RecordKind;
use crate::record::json::{Json, Members};

/// What an erasure did to the lake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LakeErased {
    /// Objects uploaded again without the person's records.
    pub objects_rewritten: u64,
    /// Records removed from them.
    pub records_removed: u64,
}

/// Removes from every object of `lake` the records `erased` says are the person's: an
/// impression by its key, an event by its userId or anonymousId. `rewritten` is called after
/// each object is replaced (the caller keeps its count durable).
pub async fn erase(
    lake: &Lake,
    part_bytes: usize,
    erased: &(dyn Fn(&str) -> bool + Sync),
    rewritten: &mut (dyn FnMut(LakeErased) + Send),
) -> Result<LakeErased, LakeError> {
    let mut names = Vec::new();
    let mut listing = std::pin::pin!(lake.list(""));
    while let Some(meta) = listing.next().await {
        names.push(meta?.location);
    }
    let mut total = LakeErased::default();
    for path in names {
        let name = lake.relative(&path);
        let Some(object) = Object::of(&name) else { continue };
        let Some(bytes) = lake.read(&name).await? else { continue };
        let unreadable = |reason: String| LakeError::Unreadable { object: name.clone(), reason };
        let Some((rewrite, removed)) = object.without(bytes, erased).map_err(unreadable)? else { continue };
        lake.put(&path, Bytes::from(rewrite), part_bytes).await?;
        let done = LakeErased { objects_rewritten: 1, records_removed: removed };
        total.objects_rewritten += 1;
        total.records_removed += removed;
        rewritten(done);
        tracing::info!(object = %name, removed, "erasure: rewrote a lake object without the person's records");
    }
    Ok(total)
}

/// What an object's name says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Object {
    /// `None` for an error object.
    kind: Option<RecordKind>,
    format: LakeFormat,
}

impl Object {
    /// Recognises one of the writer's objects by its folder and extension.
    fn of(name: &str) -> Option<Object> {
        let file = name.rsplit('/').next()?;
        offsets(file)?;
        let (errors, rest) = match name.strip_prefix("errors/") {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let kind = [RecordKind::SplitImpression, RecordKind::SegmentEvent]
            .into_iter()
            .find(|k| rest.strip_prefix(k.name()).is_some_and(|r| r.starts_with('/')))?;
        let format = [LakeFormat::Parquet, LakeFormat::NdjsonGzip, LakeFormat::NdjsonZstd]
            .into_iter()
            .find(|f| file.ends_with(&format!(".{}", f.extension())))?;
        if errors && format == LakeFormat::Parquet {
            return None;
        }
        Some(Object { kind: (!errors).then_some(kind), format })
    }

    /// The object's bytes without the erased records, and how many went; `None` when it holds none.
    fn without(self, bytes: Bytes, erased: &dyn Fn(&str) -> bool) -> Result<Option<(Vec<u8>, u64)>, String> {
        match (self.format, self.kind) {
            (LakeFormat::Parquet, Some(kind)) => parquet_without(bytes, kind, erased),
            (format, kind) => {
                let text = decompress(format, &bytes)?;
                let mut kept = Vec::with_capacity(text.len());
                let mut removed = 0;
                for line in text.split_inclusive(|b| *b == b'\n') {
                    if line_is_erased(line, kind, erased)? {
                        removed += 1;
                    } else {
                        kept.extend_from_slice(line);
                    }
                }
                if removed == 0 {
                    return Ok(None);
                }
                Ok(Some((encode::compress(format, &kept).map_err(|e| e.to_string())?, removed)))
            }
        }
    }
}

/// Whether an NDJSON line of an object of `kind` (`None`: an error object, whose refused record
/// is text in its `payload`) names the person by one of its [`RecordKind::person_ids`].
fn line_is_erased(line: &[u8], kind: Option<RecordKind>, erased: &dyn Fn(&str) -> bool) -> Result<bool, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let text = std::str::from_utf8(line).map_err(|e| format!("a line is not UTF-8: {e}"))?;
    let members = Members::parse(text).ok_or_else(|| "a line is not a JSON object".to_owned())?;
    let named = |members: &Members<'_>, kind: RecordKind| {
        kind.person_ids().iter().any(|name| members.get(name).and_then(Json::as_str).is_some_and(|id| erased(&id)))
    };
    Ok(match kind {
        Some(kind) => named(&members, kind),
        None => {
            // One that is not JSON names nobody.
            let kind = members.get("kind").and_then(Json::as_str);
            let kind = RecordKind::ALL.into_iter().find(|k| kind.as_deref() == Some(k.name()));
            let payload = members.get("payload").and_then(Json::as_str);
            match (kind, payload) {
                (Some(kind), Some(payload)) => Members::parse(&payload).is_some_and(|record| named(&record, kind)),
                _ => false,
            }
        }
    })
}

fn decompress(format: LakeFormat, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut text = Vec::new();
    match format {
        LakeFormat::NdjsonZstd => return zstd::stream::decode_all(bytes).map_err(|e| e.to_string()),
        LakeFormat::NdjsonGzip | LakeFormat::Parquet => {
            flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut text).map_err(|e| e.to_string())?;
        }
    }
    Ok(text)
}

/// A Parquet object without the erased rows, written as the writer writes its objects.
fn parquet_without(
    bytes: Bytes,
    kind: RecordKind,
    erased: &dyn Fn(&str) -> bool,
) -> Result<Option<(Vec<u8>, u64)>, String> {
    // The Parquet columns are named as the JSON members.
    let columns = kind.person_ids();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).and_then(|b| b.build()).map_err(|e| e.to_string())?;
    let mut kept = Vec::new();
    let mut removed = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let mut keep = vec![true; batch.num_rows()];
        for name in columns {
            let column = batch.column_by_name(name).ok_or_else(|| format!("no `{name}` column"))?;
            let column =
                column.as_any().downcast_ref::<StringArray>().ok_or_else(|| format!("`{name}` is not text"))?;
            for (row, keep) in keep.iter_mut().enumerate() {
                if column.is_valid(row) && erased(column.value(row)) {
                    *keep = false;
                }
            }
        }
        removed += keep.iter().filter(|k| !**k).count() as u64;
        kept.push(
            arrow_select::filter::filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(|e| e.to_string())?,
        );
    }
    if removed == 0 {
        return Ok(None);
    }
    let schema = Arc::new(match kind {
        RecordKind::SplitImpression => encode::parquet_schema(),
        RecordKind::SegmentEvent => encode::event_parquet_schema(),
    });
    let all: RecordBatch = arrow_select::concat::concat_batches(&schema, &kept).map_err(|e| e.to_string())?;
    let rows = all.num_rows();
    let bytes = encode::write_parquet(schema, all.columns().to_vec(), &format!("{rows} {} records", kind.name()))
        .map_err(|e| e.to_string())?;
    Ok(Some((bytes, removed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_recognised_by_folder_and_extension_and_nothing_else_is() {
        let of = |name: &str| Object::of(name);
        assert_eq!(
            of("split_impression/2026/11/23/07/00000000000000000000-00000000000000000009.parquet"),
            Some(Object { kind: Some(RecordKind::SplitImpression), format: LakeFormat::Parquet })
        );
        assert_eq!(
            of("errors/segment_event/2026/11/23/07/00000000000000000000-00000000000000000009.json.gz"),
            Some(Object { kind: None, format: LakeFormat::NdjsonGzip })
        );
        assert_eq!(of("_sluice-writer.json"), None);
        assert_eq!(of("other/2026/00000000000000000000-00000000000000000009.json.gz"), None);
    }

    #[test]
    fn an_ndjson_object_loses_only_the_persons_lines_and_keeps_the_others_bytes() {
        let text = b"{\"key\":\"ann\",\"split\":\"s\"}\n{\"key\":\"bob\",\"split\":\"s\",\"x\":[1, 2]}\n";
        let object = Object { kind: Some(RecordKind::SplitImpression), format: LakeFormat::NdjsonZstd };
        let bytes = Bytes::from(encode::compress(LakeFormat::NdjsonZstd, text).unwrap());
        let (rewritten, removed) = object.without(bytes.clone(), &|id| id == "ann").unwrap().unwrap();
        assert_eq!(removed, 1);
        assert_eq!(
            decompress(LakeFormat::NdjsonZstd, &rewritten).unwrap(),
            b"{\"key\":\"bob\",\"split\":\"s\",\"x\":[1, 2]}\n"
        );
        assert!(object.without(bytes, &|id| id == "carl").unwrap().is_none(), "nothing to remove: not rewritten");
    }

    #[test]
    fn an_error_line_is_the_persons_when_its_refused_record_names_them() {
        let line = serde_json::json!({"offset": 3, "kind": "segment_event", "reason": "r",
            "payload": r#"{"type":"track","userId":"ann"}"#})
        .to_string();
        assert!(line_is_erased(line.as_bytes(), None, &|id| id == "ann").unwrap());
        assert!(!line_is_erased(line.as_bytes(), None, &|id| id == "bob").unwrap());
        let not_json = r#"{"offset":3,"kind":"segment_event","payloadHex":"ff"}"#;
        assert!(!line_is_erased(not_json.as_bytes(), None, &|_| true).unwrap());
    }
}
