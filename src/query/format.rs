/*!
Output formats for impression exports, written progressively as rows stream out of the store.

- CSV, `report` columns (the default): the seed's report, byte for byte —
  `User Key, Split, Environment, Treatment, Rule, Time`.
- CSV, `all` columns: every webhook field under its webhook name, plus `receivedAt` and `extra`.
- NDJSON / JSON: one object per impression with the webhook's field names, `receivedAt`, and the
  fields sluice did not know merged back in, so a row reads like what Split sent. Absent values
  are written as `null` (never omitted), so every object has the same keys.

CSV follows RFC 4180 (CRLF, quoting by the `csv` crate) and defuses spreadsheet formulas: a text
cell starting with `=`, `+`, `-`, `@`, TAB or CR gets a leading `'` (OWASP's CSV-injection
advice). Numbers are never altered.
*/

use std::borrow::Cow;
use std::io::{BufWriter, Write};

use super::{ImpressionQuery, QueryError};
use crate::record::impression;
use crate::record::schema::{Column, Kind, Value};
use crate::store::{ImpressionView, Store};

/// How an export is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Comma-separated values; `all_columns` picks every field over the seed's report columns.
    Csv {
        /// Every stored field instead of the six report columns.
        all_columns: bool,
    },
    /// One JSON object per line.
    Ndjson,
    /// One JSON array of objects.
    Json,
}

impl Default for OutputFormat {
    fn default() -> Self {
        OutputFormat::Csv { all_columns: false }
    }
}

impl OutputFormat {
    /// The HTTP `Content-Type` of this format.
    pub fn content_type(&self) -> &'static str {
        match self {
            OutputFormat::Csv { .. } => "text/csv; charset=utf-8",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Json => "application/json",
        }
    }
}

/// How often `progress` hears about the rows written so far.
const PROGRESS_EVERY: u64 = 10_000;

/// Output buffer size: large enough that the writer is called rarely, small enough to stream.
const BUFFER_BYTES: usize = 64 * 1024;

/// The seed report's header, spaces included.
const REPORT_HEADER: [&str; 6] = ["User Key", " Split", " Environment", " Treatment", " Rule", " Time"];

/// The columns exports write, in their order, with [`ImpressionView::values`].
fn exported() -> impl Iterator<Item = &'static Column> {
    impression::COLUMNS[..impression::VIEW_COLUMNS].iter()
}

/// Counts rows and reports every [`PROGRESS_EVERY`].
struct Progress<'p> {
    rows: u64,
    report: &'p mut dyn FnMut(u64),
}

impl Progress<'_> {
    fn row(&mut self) {
        self.rows += 1;
        if self.rows.is_multiple_of(PROGRESS_EVERY) {
            (self.report)(self.rows);
        }
    }
}

/// Writes the impressions matching `q` to `out` as `format` — header, rows, footer — and returns
/// the number of rows. `progress` is called with the running row count every 10,000 rows and at the end.
pub fn write_impressions(
    store: &mut Store,
    q: &ImpressionQuery,
    format: &OutputFormat,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, QueryError> {
    let mut p = Progress { rows: 0, report: progress };
    let rows = match *format {
        OutputFormat::Csv { all_columns } => write_csv(store, q, all_columns, out, &mut p)?,
        OutputFormat::Ndjson => write_json(store, q, false, out, &mut p)?,
        OutputFormat::Json => write_json(store, q, true, out, &mut p)?,
    };
    (p.report)(rows);
    Ok(rows)
}

fn write_csv(
    store: &mut Store,
    q: &ImpressionQuery,
    all_columns: bool,
    out: &mut dyn Write,
    p: &mut Progress<'_>,
) -> Result<u64, QueryError> {
    let mut w = CsvOut {
        w: csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).buffer_capacity(BUFFER_BYTES).from_writer(out),
        number: String::new(),
    };
    if all_columns {
        w.w.write_record(exported().filter_map(|c| c.field))?;
    } else {
        w.w.write_record(REPORT_HEADER)?;
    }
    let rows = store.query_impressions(q, &mut |v| {
        if all_columns {
            for value in v.values() {
                w.cell(value)?;
            }
        } else {
            // The report's one environment column shows the name, or the id when Split sent no name.
            for value in [
                Value::Text(v.key),
                Value::Text(v.split),
                Value::text(v.environment.or(v.environment_id)),
                Value::Text(v.treatment),
                Value::text(v.label),
                Value::Int(v.time),
            ] {
                w.cell(value)?;
            }
        }
        w.w.write_record(None::<&[u8]>)?;
        p.row();
        Ok(())
    })?;
    w.w.flush()?;
    Ok(rows)
}

/// A CSV writer plus a scratch buffer for formatting numbers without allocating per cell.
struct CsvOut<W: Write> {
    w: csv::Writer<W>,
    number: String,
}

impl<W: Write> CsvOut<W> {
    fn cell(&mut self, value: Value<'_>) -> csv::Result<()> {
        use std::fmt::Write as _;
        self.number.clear();
        match value {
            Value::Null => self.w.write_field(""),
            Value::Text(s) => self.w.write_field(defuse(s).as_bytes()),
            Value::Bytes(b) => self.w.write_field(b),
            Value::Int(n) => {
                let _ = write!(self.number, "{n}");
                self.w.write_field(&self.number)
            }
            Value::Bool(b) => {
                let _ = write!(self.number, "{b}");
                self.w.write_field(&self.number)
            }
        }
    }
}

/// Prefixes `'` to text a spreadsheet would run as a formula.
pub(super) fn defuse(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) { Cow::Owned(format!("'{s}")) } else { Cow::Borrowed(s) }
}

fn write_json(
    store: &mut Store,
    q: &ImpressionQuery,
    array: bool,
    out: &mut dyn Write,
    p: &mut Progress<'_>,
) -> Result<u64, QueryError> {
    let mut w = BufWriter::with_capacity(BUFFER_BYTES, out);
    if array {
        w.write_all(b"[")?;
    }
    let rows = store.query_impressions(q, &mut |v| {
        if array {
            w.write_all(if p.rows == 0 { b"\n" } else { b",\n" })?;
        }
        write_object(&mut w, v)?;
        if !array {
            w.write_all(b"\n")?;
        }
        p.row();
        Ok(())
    })?;
    if array {
        w.write_all(if rows == 0 { b"]\n" } else { b"\n]\n" })?;
    }
    w.flush()?;
    Ok(rows)
}

/// Writes one impression as a JSON object: the exported columns (the webhook fields, `receivedAt`)
/// by name, then the unknown fields.
/// The lake writes its NDJSON objects with it too, so a lake line reads like an export line.
pub(crate) fn write_object(w: &mut impl Write, v: &ImpressionView<'_>) -> std::io::Result<()> {
    w.write_all(b"{")?;
    let mut first = true;
    for (column, value) in exported().zip(v.values()) {
        // Unknown fields are written as members of their own, below.
        let Some(name) = column.field.filter(|_| column.kind != Kind::Extra) else { continue };
        if !std::mem::take(&mut first) {
            w.write_all(b",")?;
        }
        // The names are plain ASCII identifiers: nothing to escape.
        write!(w, "\"{name}\":")?;
        match value {
            Value::Null => w.write_all(b"null")?,
            Value::Text(s) => serde_json::to_writer(&mut *w, s)?,
            Value::Int(n) => write!(w, "{n}")?,
            Value::Bool(b) => write!(w, "{b}")?,
            Value::Bytes(b) => serde_json::to_writer(&mut *w, &String::from_utf8_lossy(b))?,
        }
    }
    // The loader stores `extra` as a non-empty JSON object written by `Impression::extra_json`, so
    // its members splice in as they are, keeping each raw value byte for byte; one named like a
    // field sluice writes (`receivedAt`) is renamed, so that sluice's value is the only one.
    let aside = v.extra.and_then(crate::record::impression::extra_aside);
    if let Some(members) =
        aside.as_deref().or(v.extra).and_then(|e| e.strip_prefix('{')).and_then(|e| e.strip_suffix('}'))
        && !members.is_empty()
    {
        w.write_all(b",")?;
        w.write_all(members.as_bytes())?;
    }
    w.write_all(b"}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::DedupMode;
    use crate::store::StoreTarget;
    use crate::store::test_support::{entry, impression};

    const ALPHONSO: &str = r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","newField":[1, {"a":"b"}]}"#;
    const BOB: &str = r#"{"key":"bob","split":"sample_feature","environmentName":"Production","treatment":"on","time":1572632224436,"label":"whitelisted"}"#;

    fn store_with(payloads: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&StoreTarget::Sqlite(dir.path().join("sluice.db"))).unwrap();
        let entries: Vec<_> = payloads.iter().enumerate().map(|(i, p)| entry(i as u64, p)).collect();
        let outcome = store.load("store", &entries, DedupMode::Exact).unwrap();
        assert_eq!(outcome.inserted as usize, payloads.len());
        (dir, store)
    }

    fn export(store: &mut Store, format: OutputFormat) -> String {
        let mut out = Vec::new();
        write_impressions(store, &ImpressionQuery::default(), &format, &mut out, &mut |_| {}).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn report(store: &mut Store) -> String {
        export(store, OutputFormat::Csv { all_columns: false })
    }

    #[test]
    fn csv_report_reproduces_the_seed_report() {
        // The seed's sample report, loaded as impressions; sluice writes it ordered by time, with CRLF.
        let seed = "User Key, Split, Environment, Treatment, Rule, Time
alphonso,sample_feature,Production,off,default rule,1572632114350
bob,sample_feature,Production,on,whitelisted,1572632224436
anonymous80008,front_end_packages_anonymous,Production,checked,default rule,1572894348393
anonymous652788,front_end_packages_anonymous,Production,checked,default rule,1572894351426
anonymous484843,front_end_packages_anonymous,Production,unchecked,default rule,1572894350414
anonymous854427,front_end_packages_anonymous,Production,unchecked,default rule,1572894349404
anonymous652788,front_end_discount_coupon_anonymous,Production,high,default rule,1572894351425
anonymous854427,front_end_discount_coupon_anonymous,Production,high,default rule,1572894349403
anonymous484843,front_end_discount_coupon_anonymous,Production,high,default rule,1572894350413
anonymous80008,front_end_discount_coupon_anonymous,Production,low,default rule,1572894348392
anonymous28108,front_end_discount_coupon_anonymous,Production,off,default rule,1572894352430";
        let mut lines: Vec<&str> = seed.lines().collect();
        let header = lines.remove(0);
        let payloads: Vec<String> = lines
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                impression(f[0], f[1], f[2], f[3], f[4], f[5].parse().unwrap())
            })
            .collect();
        let (_dir, mut store) = store_with(&payloads.iter().map(String::as_str).collect::<Vec<_>>());
        lines.sort_by_key(|l| l.rsplit(',').next().unwrap().to_owned());
        let expected: String = std::iter::once(header).chain(lines).map(|l| format!("{l}\r\n")).collect();
        assert_eq!(report(&mut store), expected);
    }

    #[test]
    fn csv_report_exact_bytes() {
        let (_dir, mut store) = store_with(&[ALPHONSO, BOB]);
        assert_eq!(
            report(&mut store),
            "User Key, Split, Environment, Treatment, Rule, Time\r\n\
             alphonso,sample_feature,Production,off,default rule,1572632114350\r\n\
             bob,sample_feature,Production,on,whitelisted,1572632224436\r\n"
        );
    }

    #[test]
    fn csv_report_shows_the_environment_id_when_there_is_no_name_and_empty_for_no_label() {
        let (_dir, mut store) =
            store_with(&[r#"{"key":"k","split":"s","environmentId":"env9","treatment":"on","time":7}"#]);
        assert_eq!(report(&mut store), "User Key, Split, Environment, Treatment, Rule, Time\r\nk,s,env9,on,,7\r\n");
    }

    #[test]
    fn csv_all_columns_exact_bytes() {
        let (_dir, mut store) = store_with(&[ALPHONSO, BOB]);
        assert_eq!(
            export(&mut store, OutputFormat::Csv { all_columns: true }),
            "key,split,environmentId,environmentName,treatment,time,bucketingKey,label,machineName,machineIp,\
             splitVersionNumber,sdk,sdkVersion,properties,receivedAt,extra\r\n\
             alphonso,sample_feature,env1,Production,off,1572632114350,,default rule,ip-10-0-0-1,10.0.0.1,\
             1572632100000,java,4.1.0,{},1000,\"{\"\"newField\"\":[1, {\"\"a\"\":\"\"b\"\"}]}\"\r\n\
             bob,sample_feature,,Production,on,1572632224436,,whitelisted,,,,,,,1001,\r\n"
        );
    }

    #[test]
    fn ndjson_exact_bytes() {
        let (_dir, mut store) = store_with(&[ALPHONSO, BOB]);
        assert_eq!(
            export(&mut store, OutputFormat::Ndjson),
            concat!(
                r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}","receivedAt":1000,"newField":[1, {"a":"b"}]}"#,
                "\n",
                r#"{"key":"bob","split":"sample_feature","environmentId":null,"environmentName":"Production","treatment":"on","time":1572632224436,"bucketingKey":null,"label":"whitelisted","machineName":null,"machineIp":null,"splitVersionNumber":null,"sdk":null,"sdkVersion":null,"properties":null,"receivedAt":1001}"#,
                "\n",
            )
        );
    }

    #[test]
    fn json_is_one_array_of_the_ndjson_objects() {
        let (_dir, mut store) = store_with(&[ALPHONSO, BOB]);
        let ndjson = export(&mut store, OutputFormat::Ndjson);
        let objects: Vec<&str> = ndjson.lines().collect();
        assert_eq!(export(&mut store, OutputFormat::Json), format!("[\n{}\n]\n", objects.join(",\n")));
        let (_dir, mut empty) = store_with(&[]);
        assert_eq!(export(&mut empty, OutputFormat::Json), "[]\n");
        assert_eq!(export(&mut empty, OutputFormat::Ndjson), "");
        assert_eq!(report(&mut empty), "User Key, Split, Environment, Treatment, Rule, Time\r\n");
    }

    #[test]
    fn unknown_fields_round_trip_into_ndjson() {
        let sent = r#"{"key":"k","split":"s","treatment":"on","time":5,"label":"r","bucketingKey":"b","impressionsDisabled":false,"rule":{"id":7,"tags":["x"]},"note":"h\u00e9 \"q\""}"#;
        let (_dir, mut store) = store_with(&[sent]);
        let line = export(&mut store, OutputFormat::Ndjson);
        let got: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        let mut want: serde_json::Value = serde_json::from_str(sent).unwrap();
        let want_map = want.as_object_mut().unwrap();
        want_map.insert("receivedAt".into(), 1000.into());
        for absent in [
            "environmentId",
            "environmentName",
            "machineName",
            "machineIp",
            "splitVersionNumber",
            "sdk",
            "sdkVersion",
            "properties",
        ] {
            want_map.insert(absent.into(), serde_json::Value::Null);
        }
        assert_eq!(got, want);
        assert!(
            line.trim_end().ends_with(r#""rule":{"id":7,"tags":["x"]},"note":"h\u00e9 \"q\""}"#),
            "raw values kept: {line}"
        );
    }

    #[test]
    fn csv_defuses_formulas_in_every_text_cell_but_not_in_numbers() {
        let rows = [
            impression("=1+2", "+s", "-env", "@t", "\tlabel", 1),
            impression("\rcr", "ok", "P", "on", "r", 2),
            impression("=HYPERLINK(\"http://x\",\"y\")", "s", "P", "on", "r", 3),
        ];
        let (_dir, mut store) = store_with(&rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            report(&mut store),
            "User Key, Split, Environment, Treatment, Rule, Time\r\n\
             '=1+2,'+s,'-env,'@t,'\tlabel,1\r\n\
             \"'\rcr\",ok,P,on,r,2\r\n\
             \"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",s,P,on,r,3\r\n"
        );
        // JSON formats carry values unchanged: they are not opened by spreadsheets.
        assert!(export(&mut store, OutputFormat::Ndjson).starts_with(r#"{"key":"=1+2","split":"+s""#));
    }

    #[test]
    fn csv_quotes_commas_quotes_and_line_breaks() {
        let rows = [
            impression("a,b", "say \"hi\"", "line\nbreak", "cr\rlf", "plain rule", 1),
            impression("x", "s", "P", "on", "", 2),
        ];
        let (_dir, mut store) = store_with(&rows.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(
            report(&mut store),
            "User Key, Split, Environment, Treatment, Rule, Time\r\n\
             \"a,b\",\"say \"\"hi\"\"\",\"line\nbreak\",\"cr\rlf\",plain rule,1\r\n\
             x,s,P,on,,2\r\n"
        );
    }

    #[test]
    fn progress_is_reported_every_ten_thousand_rows_and_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&StoreTarget::Sqlite(dir.path().join("sluice.db"))).unwrap();
        let entries: Vec<_> =
            (0..25_000u64).map(|i| entry(i, &impression(&format!("k{i}"), "s", "P", "on", "r", i as i64))).collect();
        store.load("store", &entries, DedupMode::Exact).unwrap();
        for format in [OutputFormat::Csv { all_columns: false }, OutputFormat::Ndjson, OutputFormat::Json] {
            let mut calls = Vec::new();
            let rows =
                write_impressions(&mut store, &ImpressionQuery::default(), &format, &mut std::io::sink(), &mut |n| {
                    calls.push(n)
                })
                .unwrap();
            assert_eq!(rows, 25_000);
            assert_eq!(calls, [10_000, 20_000, 25_000], "{format:?}");
        }
    }

    #[test]
    fn the_query_filters_the_export() {
        let (_dir, mut store) = store_with(&[ALPHONSO, BOB]);
        let q = ImpressionQuery { treatments: Some(vec!["on".into()]), ..Default::default() };
        let mut out = Vec::new();
        let rows = write_impressions(&mut store, &q, &OutputFormat::Csv { all_columns: false }, &mut out, &mut |_| {})
            .unwrap();
        assert_eq!(rows, 1);
        assert!(
            String::from_utf8(out)
                .unwrap()
                .ends_with("\r\nbob,sample_feature,Production,on,whitelisted,1572632224436\r\n")
        );
    }

    /// The member names of a JSON object, in order.
    fn keys_of(object: &str) -> Vec<String> {
        use serde::Deserializer as _;
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
                let mut keys = Vec::new();
                while let Some((key, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(key);
                }
                Ok(keys)
            }
        }
        serde_json::Deserializer::from_str(object).deserialize_map(Keys).unwrap()
    }

    #[test]
    fn the_csv_header_and_the_ndjson_keys_are_the_column_table() {
        let (_dir, mut store) = store_with(&[BOB]);
        let exported: Vec<&Column> = impression::COLUMNS.iter().filter(|c| c.field.is_some()).collect();
        let csv = export(&mut store, OutputFormat::Csv { all_columns: true });
        let header: Vec<&str> = csv.lines().next().unwrap().trim_end().split(',').collect();
        assert_eq!(header, exported.iter().map(|c| c.field.unwrap()).collect::<Vec<_>>());
        // NDJSON writes the unknown fields as members of their own, not as `extra`.
        let ndjson = export(&mut store, OutputFormat::Ndjson);
        let want: Vec<&str> = exported.iter().filter(|c| c.kind != Kind::Extra).map(|c| c.field.unwrap()).collect();
        assert_eq!(keys_of(ndjson.trim_end()), want);
    }

    #[test]
    fn formats_name_their_content_type() {
        let all = [OutputFormat::Csv { all_columns: true }, OutputFormat::Ndjson, OutputFormat::Json];
        assert_eq!(
            all.map(|f| f.content_type()),
            ["text/csv; charset=utf-8", "application/x-ndjson", "application/json"]
        );
    }
}
