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

use arrow_array::builder::{Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use super::LakeError;
use crate::record::{FieldLimits, Impression, RecordKind};
use crate::store::ImpressionView;

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

/// One buffered record: what the journal gave, plus why it cannot be encoded, if it cannot.
#[derive(Debug, Clone)]
pub struct Row {
    /// Journal offset.
    pub offset: u64,
    /// What the payload is.
    pub kind: RecordKind,
    /// Arrival time, epoch ms.
    pub received_at_ms: i64,
    /// The record as journaled.
    pub payload: Bytes,
    /// Set for records headed for the error prefix.
    pub error: Option<String>,
}

/// The event time a record is partitioned by, or why it has none usable.
pub fn event_time(kind: RecordKind, payload: &[u8]) -> Result<DateTime<Utc>, String> {
    match kind {
        RecordKind::SplitImpression => {
            let imp = parse_impression(payload)?;
            DateTime::from_timestamp_millis(imp.time)
                .ok_or_else(|| format!("field `time`: {} ms is outside the calendar sluice can partition", imp.time))
        }
    }
}

/// The arrival time of an error record, for its partition (the epoch if it is out of range).
pub fn arrival_time(received_at_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(received_at_ms).unwrap_or_default()
}

fn parse_impression(payload: &[u8]) -> Result<Impression<'_>, String> {
    let text = std::str::from_utf8(payload).map_err(|e| format!("the record is not UTF-8: {e}"))?;
    Impression::parse(text, &FieldLimits::NONE).map_err(|e| format!("not a valid impression: {e}"))
}

/// Encodes `rows` as one object: data rows in `format`, or error rows as NDJSON.
pub fn encode(format: LakeFormat, rows: &[Row], errors: bool) -> Result<Vec<u8>, LakeError> {
    if errors {
        return compress_ndjson(format, rows, write_error_line);
    }
    match format {
        LakeFormat::NdjsonGzip | LakeFormat::NdjsonZstd => compress_ndjson(format, rows, write_impression_line),
        LakeFormat::Parquet => encode_parquet(rows),
    }
}

/// Writes one NDJSON line per row through gzip or zstd.
fn compress_ndjson(
    format: LakeFormat,
    rows: &[Row],
    line: fn(&mut Vec<u8>, &Row) -> Result<(), LakeError>,
) -> Result<Vec<u8>, LakeError> {
    let io = |e: std::io::Error| LakeError::Encode { what: "an NDJSON object".into(), reason: e.to_string() };
    // Lines are built in a scratch buffer and handed to the compressor in large writes.
    let mut text = Vec::with_capacity(256 << 10);
    let mut write_all = |sink: &mut dyn Write| -> Result<(), LakeError> {
        for row in rows {
            line(&mut text, row)?;
            if text.len() >= 256 << 10 {
                sink.write_all(&text).map_err(io)?;
                text.clear();
            }
        }
        sink.write_all(&text).map_err(io)
    };
    match format {
        LakeFormat::NdjsonZstd => {
            let mut encoder = zstd::Encoder::new(Vec::new(), 3).map_err(io)?;
            write_all(&mut encoder)?;
            encoder.finish().map_err(io)
        }
        LakeFormat::NdjsonGzip | LakeFormat::Parquet => {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            write_all(&mut encoder)?;
            encoder.finish().map_err(io)
        }
    }
}

fn write_impression_line(out: &mut Vec<u8>, row: &Row) -> Result<(), LakeError> {
    let unencodable = |reason: String| LakeError::Encode { what: format!("journal offset {}", row.offset), reason };
    let imp = parse_impression(&row.payload).map_err(unencodable)?;
    let extra = imp.extra_json();
    crate::query::write_object(out, &view(&imp, extra.as_deref(), row.received_at_ms))
        .map_err(|e| unencodable(e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

fn write_error_line(out: &mut Vec<u8>, row: &Row) -> Result<(), LakeError> {
    let mut line = serde_json::json!({
        "offset": row.offset,
        "kind": row.kind.name(),
        "receivedAt": row.received_at_ms,
        "reason": row.error.as_deref().unwrap_or("unknown"),
    });
    match std::str::from_utf8(&row.payload) {
        Ok(text) => line["payload"] = text.into(),
        Err(_) => line["payloadHex"] = row.payload.iter().map(|b| format!("{b:02x}")).collect::<String>().into(),
    }
    serde_json::to_writer(&mut *out, &line)
        .map_err(|e| LakeError::Encode { what: format!("error record {}", row.offset), reason: e.to_string() })?;
    out.push(b'\n');
    Ok(())
}

/// An impression seen the way the export formatter sees stored rows.
fn view<'a>(imp: &'a Impression<'a>, extra: Option<&'a str>, received_at: i64) -> ImpressionView<'a> {
    ImpressionView {
        key: &imp.key,
        split: &imp.split,
        environment: imp.environment_name.as_deref(),
        environment_id: imp.environment_id.as_deref(),
        treatment: &imp.treatment,
        label: imp.label.as_deref(),
        time: imp.time,
        bucketing_key: imp.bucketing_key.as_deref(),
        machine_name: imp.machine_name.as_deref(),
        machine_ip: imp.machine_ip.as_deref(),
        split_version_number: imp.split_version_number,
        sdk: imp.sdk.as_deref(),
        sdk_version: imp.sdk_version.as_deref(),
        properties: imp.properties.as_deref(),
        extra,
        received_at,
    }
}

/// The Parquet schema of impressions, named as in Split's impression export: `splitName` and
/// `splitVersion` for the webhook's `split` and `splitVersionNumber`, `timestamp` for `time`,
/// `receptionTimestamp` for sluice's arrival time; `extra` holds unknown fields as a JSON object.
pub fn parquet_schema() -> Schema {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    let millis = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    Schema::new(vec![
        text("key", false),
        text("bucketingKey", true),
        text("label", true),
        text("treatment", false),
        text("splitName", false),
        Field::new("splitVersion", DataType::Int64, true),
        text("properties", true),
        text("environmentId", true),
        text("environmentName", true),
        text("sdk", true),
        text("sdkVersion", true),
        text("machineName", true),
        text("machineIp", true),
        Field::new("timestamp", millis.clone(), false),
        Field::new("receptionTimestamp", millis, false),
        text("extra", true),
    ])
}

fn encode_parquet(rows: &[Row]) -> Result<Vec<u8>, LakeError> {
    let failed = |reason: String| LakeError::Encode { what: format!("{} impressions as Parquet", rows.len()), reason };
    let n = rows.len();
    let mut texts: Vec<StringBuilder> = (0..13).map(|_| StringBuilder::with_capacity(n, n * 16)).collect();
    let mut version = Int64Builder::with_capacity(n);
    let mut timestamp = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut reception = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    for row in rows {
        let imp = parse_impression(&row.payload)
            .map_err(|reason| LakeError::Encode { what: format!("journal offset {}", row.offset), reason })?;
        let extra = imp.extra_json();
        let values = [
            Some(&*imp.key),
            imp.bucketing_key.as_deref(),
            imp.label.as_deref(),
            Some(&*imp.treatment),
            Some(&*imp.split),
            imp.properties.as_deref(),
            imp.environment_id.as_deref(),
            imp.environment_name.as_deref(),
            imp.sdk.as_deref(),
            imp.sdk_version.as_deref(),
            imp.machine_name.as_deref(),
            imp.machine_ip.as_deref(),
            extra.as_deref(),
        ];
        for (builder, value) in texts.iter_mut().zip(values) {
            builder.append_option(value);
        }
        version.append_option(imp.split_version_number);
        timestamp.append_value(imp.time);
        reception.append_value(row.received_at_ms);
    }
    let mut text: Vec<ArrayRef> = texts.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
    let extra = text.pop().expect("13 text columns");
    let rest = text.split_off(5);
    let mut columns = text;
    columns.push(Arc::new(version.finish()));
    columns.extend(rest);
    columns.push(Arc::new(timestamp.finish()));
    columns.push(Arc::new(reception.finish()));
    columns.push(extra);

    let schema = Arc::new(parquet_schema());
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| failed(e.to_string()))?;
    let level = ZstdLevel::try_new(3).map_err(|e| failed(e.to_string()))?;
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

    fn row(offset: u64, payload: &str) -> Row {
        Row {
            offset,
            kind: RecordKind::SplitImpression,
            received_at_ms: 1000 + offset as i64,
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            error: None,
        }
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn ndjson_lines_are_the_export_lines_with_arrival_time_and_unknown_fields() {
        let rows = [row(0, FULL), row(1, r#"{"key":"b","split":"s","treatment":"on","time":5}"#)];
        let text = gunzip(&encode(LakeFormat::NdjsonGzip, &rows, false).unwrap());
        assert_eq!(
            text,
            concat!(
                r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","receivedAt":1000,"newField":[1]}"#,
                "\n",
                r#"{"key":"b","split":"s","environmentId":null,"environmentName":null,"treatment":"on","time":5,"bucketingKey":null,"label":null,"machineName":null,"machineIp":null,"splitVersionNumber":null,"sdk":null,"sdkVersion":null,"properties":null,"receivedAt":1001}"#,
                "\n"
            )
        );
        let zst = encode(LakeFormat::NdjsonZstd, &rows, false).unwrap();
        assert_eq!(String::from_utf8(zstd::decode_all(&zst[..]).unwrap()).unwrap(), text);
    }

    #[test]
    fn error_lines_carry_the_reason_and_the_payload_as_text_or_hex() {
        let mut bad = row(7, "not json");
        bad.error = Some(event_time(bad.kind, &bad.payload).unwrap_err());
        let mut binary = row(8, "");
        binary.payload = Bytes::from_static(&[0xff, 0x00]);
        binary.error = Some("the record is not UTF-8".into());
        let text = gunzip(&encode(LakeFormat::Parquet, &[bad, binary], true).unwrap());
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines[0]["offset"], 7);
        assert_eq!(lines[0]["payload"], "not json");
        assert!(lines[0]["reason"].as_str().unwrap().starts_with("not a valid impression"), "{}", lines[0]);
        assert_eq!(lines[1]["payloadHex"], "ff00");
    }

    #[test]
    fn event_time_refuses_times_outside_the_calendar() {
        let far = r#"{"key":"k","split":"s","treatment":"on","time":9223372036854775807}"#;
        assert!(event_time(RecordKind::SplitImpression, far.as_bytes()).unwrap_err().contains("`time`"));
    }

    #[test]
    fn parquet_starts_and_ends_with_the_magic() {
        let bytes = encode(LakeFormat::Parquet, &[row(0, FULL)], false).unwrap();
        assert!(bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"));
    }
}
