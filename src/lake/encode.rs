/*!
Object formats: NDJSON compressed with gzip or zstd, and Parquet.

NDJSON lines are exactly the lines of `sluice export impressions --format ndjson`: the webhook's
field names, absent values as `null`, `receivedAt` (sluice's arrival time, epoch ms) and unknown
fields kept as sent. The Parquet schema follows Split's own impression export; see
[`parquet_schema`].

Records that cannot be encoded (not an impression, an event time outside the calendar) become
error lines instead: `{"offset", "kind", "receivedAt", "reason", "payload"}`, with the payload as
text, or as `payloadHex` when it is not UTF-8.
*/

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::LakeError;
use crate::record::impression::{self, ImpressionView};
use crate::record::schema::{self as columns, Column, Kind, Value as Cell};
use crate::record::{self, Decoded, RecordKind, segment_columns};

/// How the lake's objects are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LakeFormat {
    /// One JSON object per line, gzip-compressed (`.json.gz`): what Firehose writes.
    NdjsonGzip,
    /// One JSON object per line, zstd-compressed (`.json.zst`): smaller and faster than gzip.
    NdjsonZstd,
    /// Columnar and typed (`.parquet`, zstd-compressed pages).
    Parquet,
}

impl LakeFormat {
    /// The file name extension of data objects, without the leading dot.
    pub fn extension(self) -> &'static str {
        match self {
            LakeFormat::NdjsonGzip => "json.gz",
            LakeFormat::NdjsonZstd => "json.zst",
            LakeFormat::Parquet => "parquet",
        }
    }

    /// The extension of error objects, which are NDJSON in every format.
    pub fn error_extension(self) -> &'static str {
        match self {
            LakeFormat::NdjsonZstd => "json.zst",
            LakeFormat::NdjsonGzip | LakeFormat::Parquet => "json.gz",
        }
    }
}

/// The event time a record is partitioned by and the record itself, decoded once
/// ([`record::decode`]): the same decode routes the record and is appended to its object; or why
/// the record cannot be encoded.
pub fn parse(kind: RecordKind, payload: &[u8]) -> Result<(DateTime<Utc>, Decoded<'_>), String> {
    let decoded = record::decode(kind, payload).map_err(|e| e.to_string())?;
    let (ms, field) = match &decoded {
        Decoded::Impression(imp) => (imp.time, "time"),
        Decoded::Event(event, _) => (event.timestamp, "timestamp"),
    };
    let time = DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| format!("field `{field}`: {ms} ms is outside the calendar sluice can partition"))?;
    Ok((time, decoded))
}

/// The arrival time of an error record, for its partition (the epoch if it is out of range).
pub fn arrival_time(received_at_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(received_at_ms).unwrap_or_default()
}

/// The records of one object while they are buffered, already in their final form (NDJSON text,
/// or Arrow columns for Parquet), so that [`finish`](Pending::finish) only compresses or writes
/// the file. Error objects are always NDJSON lines.
pub struct Pending {
    format: LakeFormat,
    body: Body,
}

enum Body {
    Lines(Vec<u8>),
    Columns(Box<Columns>),
}

impl Pending {
    /// An empty data object of `kind` records in `format`.
    pub fn data(format: LakeFormat, kind: RecordKind) -> Pending {
        let body = match (format, kind) {
            (LakeFormat::NdjsonGzip | LakeFormat::NdjsonZstd, _) => Body::Lines(Vec::new()),
            (LakeFormat::Parquet, RecordKind::SplitImpression) => {
                Body::Columns(Box::new(Columns::new(&impression::COLUMNS, "impressions")))
            }
            (LakeFormat::Parquet, RecordKind::SegmentEvent) => {
                Body::Columns(Box::new(Columns::new(&segment_columns::COLUMNS, "events")))
            }
        };
        Pending { format, body }
    }

    /// An empty error object (NDJSON, compressed as `format`'s errors are).
    pub fn errors(format: LakeFormat) -> Pending {
        Pending { format, body: Body::Lines(Vec::new()) }
    }

    /// Appends a record as an NDJSON line or a row of columns. Only records of the object's kind.
    pub fn push(&mut self, record: &Decoded<'_>, received_at_ms: i64) {
        match (record, &mut self.body) {
            (Decoded::Impression(imp), Body::Lines(text)) => {
                let extra = imp.extra_json();
                // Writing into a Vec cannot fail.
                let _ = crate::query::write_object(text, &ImpressionView::of(imp, extra.as_deref(), received_at_ms));
                text.push(b'\n');
            }
            (Decoded::Impression(imp), Body::Columns(columns)) => {
                let extra = imp.extra_json();
                columns.push(&ImpressionView::of(imp, extra.as_deref(), received_at_ms).values())
            }
            (Decoded::Event(_, json), Body::Lines(text)) => {
                text.extend_from_slice(json.as_bytes());
                text.push(b'\n');
            }
            (Decoded::Event(event, json), Body::Columns(columns)) => {
                columns.push(&segment_columns::values(event, json, received_at_ms))
            }
        }
    }

    /// Appends a record that cannot be encoded, with the reason and its payload as text (or
    /// `payloadHex` when it is not UTF-8). Only for objects made with [`Pending::errors`].
    pub fn push_error(&mut self, offset: u64, kind: RecordKind, received_at_ms: i64, reason: &str, payload: &[u8]) {
        let Body::Lines(text) = &mut self.body else {
            unreachable!("error records go to error objects, which are NDJSON")
        };
        let mut line = serde_json::json!({
            "offset": offset,
            "kind": kind.name(),
            "receivedAt": received_at_ms,
            "reason": reason,
        });
        match std::str::from_utf8(payload) {
            Ok(payload) => line["payload"] = payload.into(),
            Err(_) => line["payloadHex"] = payload.iter().map(|b| format!("{b:02x}")).collect::<String>().into(),
        }
        // Serialising a Value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *text, &line);
        text.push(b'\n');
    }

    /// The object's bytes: the lines compressed, or the columns as a Parquet file.
    pub fn finish(self) -> Result<Vec<u8>, LakeError> {
        match self.body {
            Body::Lines(text) => compress(self.format, &text),
            Body::Columns(columns) => columns.finish(),
        }
    }
}

/// gzip level of `.json.gz` objects. Level 1 compresses several times faster than the default
/// (6) and keeps the writer ahead of ingest on one core; the objects come out somewhat larger.
const GZIP_LEVEL: u32 = 1;
/// zstd level of `.json.zst` objects and Parquet pages: zstd's own default.
const ZSTD_LEVEL: i32 = 3;

/// Compresses NDJSON text with gzip, or zstd for a zstd lake.
pub(super) fn compress(format: LakeFormat, text: &[u8]) -> Result<Vec<u8>, LakeError> {
    let io = |e: std::io::Error| LakeError::Encode { what: "an NDJSON object".into(), reason: e.to_string() };
    match format {
        LakeFormat::NdjsonZstd => zstd::bulk::compress(text, ZSTD_LEVEL).map_err(io),
        LakeFormat::NdjsonGzip | LakeFormat::Parquet => {
            let out = Vec::with_capacity(text.len() / 4);
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(text).map_err(io)?;
            encoder.finish().map_err(io)
        }
    }
}

/// The Parquet schema of impressions, named as in Split's impression export: `splitName` and
/// `splitVersion` for the webhook's `split` and `splitVersionNumber`, `timestamp` for `time`,
/// `receptionTimestamp` for sluice's arrival time; `extra` holds unknown fields as a JSON object.
pub fn parquet_schema() -> Schema {
    schema_of(&impression::COLUMNS)
}

/// The Parquet schema of Segment events: the typed fields the store indexes, in Segment's own
/// names, and `raw`, the whole event as JSON text (everything else: `properties`, `traits`,
/// `context`…), since events have no fixed shape to give columns to.
pub fn event_parquet_schema() -> Schema {
    schema_of(&segment_columns::COLUMNS)
}

/// The Parquet schema of a column table: its Parquet columns, in their order.
fn schema_of(table: &[Column]) -> Schema {
    let fields = columns::parquet_columns(table).into_iter().map(|(_, column, parquet)| {
        let data_type = match column.kind {
            Kind::Text | Kind::Json | Kind::Extra => DataType::Utf8,
            Kind::Int => DataType::Int64,
            Kind::Millis => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            Kind::Bool => DataType::Boolean,
            Kind::Bytes => DataType::Binary,
        };
        Field::new(parquet.name, data_type, column.nullable)
    });
    Schema::new(fields.collect::<Vec<_>>())
}

/// Records as Arrow columns, one builder per Parquet column of their table, in Parquet order.
struct Columns {
    table: &'static [Column],
    /// Each builder with the index in the table of the value it takes.
    builders: Vec<(usize, Builder)>,
    rows: usize,
    /// What the records are, for errors.
    what: &'static str,
}

/// One Arrow column being built, typed by its column's [`Kind`].
enum Builder {
    Text(StringBuilder),
    Int(Int64Builder),
    Millis(TimestampMillisecondBuilder),
    Bool(BooleanBuilder),
    Bytes(BinaryBuilder),
}

impl Columns {
    fn new(table: &'static [Column], what: &'static str) -> Columns {
        let builders = columns::parquet_columns(table)
            .into_iter()
            .map(|(i, column, _)| {
                let builder = match column.kind {
                    Kind::Text | Kind::Json | Kind::Extra => Builder::Text(StringBuilder::new()),
                    Kind::Int => Builder::Int(Int64Builder::new()),
                    Kind::Millis => Builder::Millis(TimestampMillisecondBuilder::new().with_timezone("UTC")),
                    Kind::Bool => Builder::Bool(BooleanBuilder::new()),
                    Kind::Bytes => Builder::Bytes(BinaryBuilder::new()),
                };
                (i, builder)
            })
            .collect();
        Columns { table, builders, rows: 0, what }
    }

    /// Appends one record: its values in table order (those the store adds may be left out).
    fn push(&mut self, values: &[Cell<'_>]) {
        for (i, builder) in &mut self.builders {
            match (builder, values[*i]) {
                (Builder::Text(b), Cell::Text(s)) => b.append_value(s),
                (Builder::Text(b), _) => b.append_null(),
                (Builder::Int(b), Cell::Int(n)) => b.append_value(n),
                (Builder::Int(b), _) => b.append_null(),
                (Builder::Millis(b), Cell::Int(n)) => b.append_value(n),
                (Builder::Millis(b), _) => b.append_null(),
                (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
                (Builder::Bool(b), _) => b.append_null(),
                (Builder::Bytes(b), Cell::Bytes(v)) => b.append_value(v),
                (Builder::Bytes(b), _) => b.append_null(),
            }
        }
        self.rows += 1;
    }

    fn finish(mut self) -> Result<Vec<u8>, LakeError> {
        let columns: Vec<ArrayRef> = self
            .builders
            .iter_mut()
            .map(|(_, builder)| match builder {
                Builder::Text(b) => Arc::new(b.finish()) as ArrayRef,
                Builder::Int(b) => Arc::new(b.finish()),
                Builder::Millis(b) => Arc::new(b.finish()),
                Builder::Bool(b) => Arc::new(b.finish()),
                Builder::Bytes(b) => Arc::new(b.finish()),
            })
            .collect();
        write_parquet(Arc::new(schema_of(self.table)), columns, &format!("{} {}", self.rows, self.what))
    }
}

/// One Parquet file holding `columns` as one row group, zstd-compressed.
pub(super) fn write_parquet(schema: Arc<Schema>, columns: Vec<ArrayRef>, what: &str) -> Result<Vec<u8>, LakeError> {
    let failed = |reason: String| LakeError::Encode { what: format!("{what} as Parquet"), reason };
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| failed(e.to_string()))?;
    let level = ZstdLevel::try_new(ZSTD_LEVEL).map_err(|e| failed(e.to_string()))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(level)).build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(props)).map_err(|e| failed(e.to_string()))?;
    writer.write(&batch).map_err(|e| failed(e.to_string()))?;
    writer.into_inner().map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    const FULL: &str = r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","newField":[1]}"#;

    /// Encodes `payloads` (received at 1000, 1001, …) as one data object.
    fn data(format: LakeFormat, payloads: &[&str]) -> Vec<u8> {
        data_of(format, RecordKind::SplitImpression, payloads)
    }

    fn data_of(format: LakeFormat, kind: RecordKind, payloads: &[&str]) -> Vec<u8> {
        let mut pending = Pending::data(format, kind);
        for (i, payload) in payloads.iter().enumerate() {
            let (_, record) = parse(kind, payload.as_bytes()).unwrap();
            pending.push(&record, 1000 + i as i64);
        }
        pending.finish().unwrap()
    }

    const EVENT: &str = r#"{"type":"page","messageId":"m1","anonymousId":"a","timestamp":"2025-11-29T12:00:00.000Z","context":{"page":{"url":"https://x.test/"}},"sluice":{"arrivedAt":1000,"via":"webhook"}}"#;

    #[test]
    fn event_lines_are_the_journaled_events_partitioned_by_their_timestamp() {
        let (time, _) = parse(RecordKind::SegmentEvent, EVENT.as_bytes()).unwrap();
        assert_eq!(time.timestamp_millis(), 1_764_417_600_000);
        let text = gunzip(&data_of(LakeFormat::NdjsonGzip, RecordKind::SegmentEvent, &[EVENT, EVENT]));
        assert_eq!(text, format!("{EVENT}\n{EVENT}\n"));
        let err = parse(RecordKind::SegmentEvent, br#"{"type":"page"}"#).unwrap_err();
        assert!(err.starts_with("not a valid Segment event"), "{err}");
    }

    #[test]
    fn event_parquet_has_the_typed_columns_and_the_raw_event() {
        let bytes = data_of(LakeFormat::Parquet, RecordKind::SegmentEvent, &[EVENT]);
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
        let batch = &batches[0];
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema().fields().len(), event_parquet_schema().fields().len());
        let column = |name: &str| {
            let c = batch.column_by_name(name).unwrap();
            arrow_array::cast::AsArray::as_string::<i32>(c.as_ref()).value(0).to_owned()
        };
        assert_eq!(column("messageId"), "m1");
        assert_eq!(column("pageUrl"), "https://x.test/");
        assert_eq!(column("raw"), EVENT);
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn ndjson_lines_are_the_export_lines_with_arrival_time_and_unknown_fields() {
        let payloads = [FULL, r#"{"key":"b","split":"s","treatment":"on","time":5}"#];
        let text = gunzip(&data(LakeFormat::NdjsonGzip, &payloads));
        assert_eq!(
            text,
            concat!(
                r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","receivedAt":1000,"newField":[1]}"#,
                "\n",
                r#"{"key":"b","split":"s","environmentId":null,"environmentName":null,"treatment":"on","time":5,"bucketingKey":null,"label":null,"machineName":null,"machineIp":null,"splitVersionNumber":null,"sdk":null,"sdkVersion":null,"properties":null,"receivedAt":1001}"#,
                "\n"
            )
        );
        let zst = data(LakeFormat::NdjsonZstd, &payloads);
        assert_eq!(String::from_utf8(zstd::decode_all(&zst[..]).unwrap()).unwrap(), text);
    }

    #[test]
    fn error_lines_carry_the_reason_and_the_payload_as_text_or_hex() {
        let kind = RecordKind::SplitImpression;
        let mut pending = Pending::errors(LakeFormat::Parquet);
        let reason = parse(kind, b"not json").unwrap_err();
        pending.push_error(7, kind, 1000, &reason, b"not json");
        pending.push_error(8, kind, 1000, &parse(kind, &[0xff, 0x00]).unwrap_err(), &[0xff, 0x00]);
        let text = gunzip(&pending.finish().unwrap());
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["offset"], 7);
        assert_eq!(lines[0]["payload"], "not json");
        assert!(lines[0]["reason"].as_str().unwrap().starts_with("not a valid impression"), "{}", lines[0]);
        assert!(lines[1]["reason"].as_str().unwrap().starts_with("the record is not UTF-8"), "{}", lines[1]);
        assert_eq!(lines[1]["payloadHex"], "ff00");
    }

    #[test]
    fn parse_refuses_event_times_outside_the_calendar() {
        let far = r#"{"key":"k","split":"s","treatment":"on","time":9223372036854775807}"#;
        assert!(parse(RecordKind::SplitImpression, far.as_bytes()).unwrap_err().contains("`time`"));
    }

    #[test]
    fn parquet_objects_have_the_column_tables_schemas() {
        for (kind, table, payload) in [
            (RecordKind::SplitImpression, &impression::COLUMNS[..], FULL),
            (RecordKind::SegmentEvent, &segment_columns::COLUMNS[..], EVENT),
        ] {
            let bytes = data_of(LakeFormat::Parquet, kind, &[payload]);
            let builder =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
                    .unwrap();
            let got: Vec<(String, DataType, bool)> = builder
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect();
            let mut want: Vec<(usize, String, DataType, bool)> = table
                .iter()
                .filter_map(|c| {
                    let p = c.parquet?;
                    let ty = match c.kind {
                        Kind::Millis => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                        Kind::Int => DataType::Int64,
                        _ => DataType::Utf8,
                    };
                    Some((p.at, p.name.to_owned(), ty, c.nullable))
                })
                .collect();
            want.sort_by_key(|w| w.0);
            let want: Vec<_> = want.into_iter().map(|(_, name, ty, nullable)| (name, ty, nullable)).collect();
            assert_eq!(got, want, "{kind:?}");
        }
        // Split's own impression export, in its order: lake readers may read columns by position.
        let names: Vec<String> = parquet_schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(
            names,
            [
                "key",
                "bucketingKey",
                "label",
                "treatment",
                "splitName",
                "splitVersion",
                "properties",
                "environmentId",
                "environmentName",
                "sdk",
                "sdkVersion",
                "machineName",
                "machineIp",
                "timestamp",
                "receptionTimestamp",
                "extra"
            ]
        );
    }

    #[test]
    fn parquet_starts_and_ends_with_the_magic() {
        let bytes = data(LakeFormat::Parquet, &[FULL]);
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    }
}
