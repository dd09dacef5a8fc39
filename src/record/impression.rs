/*!
The Split impression: the one parser of Split's "Outgoing Webhook (Impressions)" objects.

Ingest uses it to validate each array element (and learns which field is wrong); the store loader
uses it again on the journaled bytes. The journal keeps each element's original JSON verbatim, so
unknown fields survive untouched; [`Impression::extra`] exposes them to whoever needs them.
*/

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::schema::{Column, Kind, RowError, Value};

/// Per-field limits enforced on every impression at ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// Longest identifier-like string (key, split, treatment, label, environment, machine, sdk), in bytes.
    pub max_field_bytes: usize,
    /// Longest `properties` string, in bytes.
    pub max_properties_bytes: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        // Split itself caps keys at 250 characters and names at 100, so 1 KiB only rejects garbage.
        FieldLimits { max_field_bytes: 1024, max_properties_bytes: 32 * 1024 }
    }
}

impl FieldLimits {
    /// No limits: used when re-reading records that were already validated at ingest.
    pub const NONE: FieldLimits = FieldLimits { max_field_bytes: usize::MAX, max_properties_bytes: usize::MAX };
}

/// Length of [`Impression::identity`].
pub const IDENTITY_BYTES: usize = 24;

/// Which impressions count as "the same" for de-duplication in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DedupMode {
    /// Identical impressions (same key, split, environment, treatment, label, time, version,
    /// bucketing key) are stored once: absorbs Split's retries and re-posted batches.
    #[default]
    Exact,
    /// Only the first impression per (key, split, environment, treatment, label, splitVersionNumber)
    /// is kept, as the seed's optional `RecordNotExit` check did.
    PerVersion,
}

/// Why one impression was rejected, naming the field when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", field.as_ref().map(|f| format!("field `{f}`: ")).unwrap_or_default())]
pub struct RecordError {
    /// The offending field, if the problem is in one field.
    pub field: Option<String>,
    /// What is wrong, in words a user can act on.
    pub reason: String,
}

impl RecordError {
    pub(crate) fn field(field: &str, reason: impl Into<String>) -> Self {
        RecordError { field: Some(field.to_owned()), reason: reason.into() }
    }
}

/// One Split impression, borrowing from the JSON it was parsed from.
#[derive(Debug, Clone, Default)]
pub struct Impression<'a> {
    /// The user key the flag was evaluated for.
    pub key: Cow<'a, str>,
    /// The feature flag ("split") name.
    pub split: Cow<'a, str>,
    /// Split's environment id.
    pub environment_id: Option<Cow<'a, str>>,
    /// Split's environment name, e.g. `Production`.
    pub environment_name: Option<Cow<'a, str>>,
    /// The treatment served.
    pub treatment: Cow<'a, str>,
    /// Evaluation time, epoch milliseconds.
    pub time: i64,
    /// The bucketing key, when it differs from the key.
    pub bucketing_key: Option<Cow<'a, str>>,
    /// The targeting rule that decided ("Rule" in the seed's CSV).
    pub label: Option<Cow<'a, str>>,
    /// Host name of the SDK's machine.
    pub machine_name: Option<Cow<'a, str>>,
    /// IP address of the SDK's machine.
    pub machine_ip: Option<Cow<'a, str>>,
    /// The flag definition's version (change number), epoch milliseconds.
    pub split_version_number: Option<i64>,
    /// The SDK language.
    pub sdk: Option<Cow<'a, str>>,
    /// The SDK version.
    pub sdk_version: Option<Cow<'a, str>>,
    /// Impression properties: a JSON document in a string, often `"{}"`.
    pub properties: Option<Cow<'a, str>>,
    /// Fields Split may add that sluice does not know yet, kept verbatim.
    pub extra: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> Impression<'a> {
    /// Parses and validates one impression object from its JSON text.
    pub fn parse(json: &'a str, limits: &FieldLimits) -> Result<Self, RecordError> {
        let mut de = serde_json::Deserializer::from_str(json);
        let imp = de.deserialize_map(ImpressionVisitor).map_err(|e| {
            let msg = e.to_string();
            // Field errors come back as "field `x`: …" from the visitor; keep them structured.
            match msg.strip_prefix("field `").and_then(|m| m.split_once("`: ")) {
                Some((field, rest)) => RecordError::field(field, strip_position(rest)),
                None => RecordError { field: None, reason: strip_position(&msg) },
            }
        })?;
        de.end().map_err(|e| RecordError { field: None, reason: e.to_string() })?;
        imp.check(limits)?;
        Ok(imp)
    }

    fn check(&self, limits: &FieldLimits) -> Result<(), RecordError> {
        for (name, value) in
            [("key", Some(&self.key)), ("split", Some(&self.split)), ("treatment", Some(&self.treatment))]
        {
            if value.is_some_and(|v| v.is_empty()) {
                return Err(RecordError::field(name, "must not be empty"));
            }
        }
        let identifiers = [
            ("key", Some(&self.key)),
            ("split", Some(&self.split)),
            ("treatment", Some(&self.treatment)),
            ("environmentId", self.environment_id.as_ref()),
            ("environmentName", self.environment_name.as_ref()),
            ("bucketingKey", self.bucketing_key.as_ref()),
            ("label", self.label.as_ref()),
            ("machineName", self.machine_name.as_ref()),
            ("machineIp", self.machine_ip.as_ref()),
            ("sdk", self.sdk.as_ref()),
            ("sdkVersion", self.sdk_version.as_ref()),
        ];
        for (name, value) in identifiers.iter().copied().chain([("properties", self.properties.as_ref())]) {
            if let Some(v) = value {
                check_no_nul(name, v)?;
            }
        }
        for (name, value) in identifiers {
            if let Some(v) = value
                && v.len() > limits.max_field_bytes
            {
                return Err(RecordError::field(
                    name,
                    format!(
                        "is {} bytes long, the limit is {} (limits.max_field_bytes)",
                        v.len(),
                        limits.max_field_bytes
                    ),
                ));
            }
        }
        if let Some(p) = &self.properties
            && p.len() > limits.max_properties_bytes
        {
            return Err(RecordError::field(
                "properties",
                format!(
                    "is {} bytes long, the limit is {} (limits.max_properties_bytes)",
                    p.len(),
                    limits.max_properties_bytes
                ),
            ));
        }
        if self.time < 0 {
            return Err(RecordError::field("time", "must be epoch milliseconds, not negative"));
        }
        Ok(())
    }

    /// The environment a user filters on: the name, or the id when Split sent no name.
    pub fn environment(&self) -> Option<&str> {
        self.environment_name.as_deref().or(self.environment_id.as_deref())
    }

    /// The identity of this impression under `mode`; equal identities are stored once.
    ///
    /// Bytes 0..8 are the impression's time (its flag version in `per-version` mode) as a
    /// big-endian, order-preserving integer, bytes 8..24 an xxh3-128 hash of every identifying
    /// field. The prefix is itself one of the hashed fields, so it never makes two different
    /// impressions equal; it makes the store's unique index grow at its right edge, as
    /// impressions arrive roughly in time order, instead of touching a random page per insert.
    pub fn identity(&self, mode: DedupMode) -> [u8; IDENTITY_BYTES] {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        // Length-prefix every part so ("ab","c") and ("a","bc") never collide.
        let mut part = |bytes: &[u8]| {
            h.update(&(bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        part(&[mode as u8]);
        part(self.key.as_bytes());
        part(self.split.as_bytes());
        part(self.environment().map(str::as_bytes).unwrap_or(b"\xff"));
        part(self.treatment.as_bytes());
        part(opt_bytes(&self.label));
        part(&self.split_version_number.unwrap_or(i64::MIN).to_le_bytes());
        let prefix = match mode {
            DedupMode::Exact => {
                part(&self.time.to_le_bytes());
                part(opt_bytes(&self.bucketing_key));
                self.time
            }
            DedupMode::PerVersion => self.split_version_number.unwrap_or(i64::MIN),
        };
        let mut identity = [0; IDENTITY_BYTES];
        // Flipping the sign bit orders negative numbers before positive ones, byte by byte.
        identity[..8].copy_from_slice(&((prefix as u64) ^ (1 << 63)).to_be_bytes());
        identity[8..].copy_from_slice(&h.digest128().to_le_bytes());
        identity
    }

    /// The unknown fields as one JSON object, or `None` when there are none.
    pub fn extra_json(&self) -> Option<String> {
        if self.extra.is_empty() {
            return None;
        }
        let mut out = String::from("{");
        for (i, (k, v)) in self.extra.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&serde_json::to_string(k.as_ref()).expect("a string always serializes"));
            out.push(':');
            out.push_str(v.get());
        }
        out.push('}');
        Some(out)
    }
}

/// The impression's columns, in the order exports write them (the webhook's field order, then
/// sluice's `receivedAt` and `extra`), then the two the store adds: the journal offset and the
/// identity. Parquet follows Split's own impression export, in its order and names.
pub const COLUMNS: [Column; 18] = [
    Column::new("key", Kind::Text).required().field("key").parquet("key", 0),
    Column::new("split", Kind::Text).required().field("split").parquet("splitName", 4),
    Column::new("environment_id", Kind::Text).field("environmentId").parquet("environmentId", 7),
    Column::new("environment", Kind::Text).field("environmentName").parquet("environmentName", 8),
    Column::new("treatment", Kind::Text).required().field("treatment").parquet("treatment", 3),
    Column::new("time", Kind::Millis).required().field("time").parquet("timestamp", 13),
    Column::new("bucketing_key", Kind::Text).field("bucketingKey").parquet("bucketingKey", 1),
    Column::new("label", Kind::Text).field("label").parquet("label", 2),
    Column::new("machine_name", Kind::Text).field("machineName").parquet("machineName", 11),
    Column::new("machine_ip", Kind::Text).field("machineIp").parquet("machineIp", 12),
    Column::new("split_version_number", Kind::Int).field("splitVersionNumber").parquet("splitVersion", 5),
    Column::new("sdk", Kind::Text).field("sdk").parquet("sdk", 9),
    Column::new("sdk_version", Kind::Text).field("sdkVersion").parquet("sdkVersion", 10),
    Column::new("properties", Kind::Text).field("properties").parquet("properties", 6),
    Column::new("received_at", Kind::Millis).required().field("receivedAt").parquet("receptionTimestamp", 14),
    Column::new("extra", Kind::Extra).field("extra").parquet("extra", 15),
    Column::new("journal_offset", Kind::Int).required(),
    Column::new("identity", Kind::Bytes).required(),
];

/// How many of [`COLUMNS`] a record has values for (the rest the store adds), which are also the
/// columns an [`ImpressionView`] reads back.
pub const VIEW_COLUMNS: usize = 16;

/// One impression as exports see it: a stored row, borrowed from the database row being read,
/// or a parsed impression with its arrival time (the lake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImpressionView<'r> {
    /// The user key.
    pub key: &'r str,
    /// The feature flag name.
    pub split: &'r str,
    /// `environmentName` as Split sent it.
    pub environment: Option<&'r str>,
    /// `environmentId` as Split sent it.
    pub environment_id: Option<&'r str>,
    /// The treatment served.
    pub treatment: &'r str,
    /// The targeting rule ("Rule" in the seed's report).
    pub label: Option<&'r str>,
    /// Evaluation time, epoch milliseconds.
    pub time: i64,
    /// The bucketing key.
    pub bucketing_key: Option<&'r str>,
    /// Host name of the SDK's machine.
    pub machine_name: Option<&'r str>,
    /// IP address of the SDK's machine.
    pub machine_ip: Option<&'r str>,
    /// The flag definition's version, epoch milliseconds.
    pub split_version_number: Option<i64>,
    /// The SDK language.
    pub sdk: Option<&'r str>,
    /// The SDK version.
    pub sdk_version: Option<&'r str>,
    /// Impression properties, a JSON document in a string.
    pub properties: Option<&'r str>,
    /// Fields sluice did not know, as one JSON object.
    pub extra: Option<&'r str>,
    /// When sluice received the impression, epoch milliseconds.
    pub received_at: i64,
}

impl<'r> ImpressionView<'r> {
    /// A parsed impression with its unknown fields (as [`Impression::extra_json`] writes them)
    /// and arrival time.
    pub fn of(imp: &'r Impression<'r>, extra: Option<&'r str>, received_at: i64) -> Self {
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

    /// The values of the first [`VIEW_COLUMNS`] of [`COLUMNS`], in their order: what every
    /// writer of impressions (store, CSV, NDJSON, Parquet) writes.
    pub fn values(&self) -> [Value<'r>; VIEW_COLUMNS] {
        [
            Value::Text(self.key),
            Value::Text(self.split),
            Value::text(self.environment_id),
            Value::text(self.environment),
            Value::Text(self.treatment),
            Value::Int(self.time),
            Value::text(self.bucketing_key),
            Value::text(self.label),
            Value::text(self.machine_name),
            Value::text(self.machine_ip),
            Value::int(self.split_version_number),
            Value::text(self.sdk),
            Value::text(self.sdk_version),
            Value::text(self.properties),
            Value::Int(self.received_at),
            Value::text(self.extra),
        ]
    }

    /// The view of a stored row: `values` as [`values`](Self::values) returns them.
    pub fn from_values(values: [Value<'r>; VIEW_COLUMNS]) -> Result<Self, RowError> {
        let [
            key,
            split,
            environment_id,
            environment,
            treatment,
            time,
            bucketing_key,
            label,
            machine_name,
            machine_ip,
            split_version_number,
            sdk,
            sdk_version,
            properties,
            received_at,
            extra,
        ] = values;
        let c = &COLUMNS;
        Ok(ImpressionView {
            key: key.required_text(&c[0])?,
            split: split.required_text(&c[1])?,
            environment_id: environment_id.optional_text(&c[2])?,
            environment: environment.optional_text(&c[3])?,
            treatment: treatment.required_text(&c[4])?,
            time: time.required_int(&c[5])?,
            bucketing_key: bucketing_key.optional_text(&c[6])?,
            label: label.optional_text(&c[7])?,
            machine_name: machine_name.optional_text(&c[8])?,
            machine_ip: machine_ip.optional_text(&c[9])?,
            split_version_number: split_version_number.optional_int(&c[10])?,
            sdk: sdk.optional_text(&c[11])?,
            sdk_version: sdk_version.optional_text(&c[12])?,
            properties: properties.optional_text(&c[13])?,
            received_at: received_at.required_int(&c[14])?,
            extra: extra.optional_text(&c[15])?,
        })
    }
}

/// The names sluice writes beside Split's own fields when it renders an impression as JSON
/// (`receivedAt`, its arrival time). Split's own fields never reach [`Impression::extra`].
pub const SLUICE_FIELDS: &[&str] = &["receivedAt"];

/// `extra` (a JSON object of unknown fields, as [`Impression::extra_json`] writes it) with every
/// member named like one of [`SLUICE_FIELDS`] renamed with a leading `_` (one more while that name
/// is taken too), for renderings that write the unknown fields beside sluice's own: there a
/// client's `receivedAt` would follow sluice's, and most readers keep the last of two equal names.
/// `None` when no member collides (the common case, decided without parsing) or `extra` is not
/// an object.
pub fn extra_aside(extra: &str) -> Option<String> {
    if !SLUICE_FIELDS.iter().any(|name| extra.contains(name)) {
        return None;
    }
    let members: Vec<(String, &RawValue)> =
        serde_json::Deserializer::from_str(extra).deserialize_map(MembersVisitor).ok()?;
    if !members.iter().any(|(name, _)| SLUICE_FIELDS.contains(&name.as_str())) {
        return None;
    }
    let taken = |name: &str| SLUICE_FIELDS.contains(&name) || members.iter().any(|(n, _)| n == name);
    let mut out = String::from("{");
    for (i, (name, value)) in members.iter().enumerate() {
        let mut name = name.clone();
        if SLUICE_FIELDS.contains(&name.as_str()) {
            name.insert(0, '_');
            while taken(&name) {
                name.insert(0, '_');
            }
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(&name).expect("a string always serializes"));
        out.push(':');
        out.push_str(value.get());
    }
    out.push('}');
    Some(out)
}

/// An object's members in order, values kept as raw JSON.
struct MembersVisitor;
impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Vec<(String, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::new();
        while let Some(entry) = map.next_entry()? {
            members.push(entry);
        }
        Ok(members)
    }
}

/// Refuses a NUL character in a field stored in a text column: PostgreSQL's `text` cannot hold
/// one (its `COPY` would fail on every retry), and both backends must store the same records.
pub(crate) fn check_no_nul(field: &str, value: &str) -> Result<(), RecordError> {
    match value.find('\0') {
        Some(at) => Err(RecordError::field(
            field,
            format!("contains a NUL character (\\u0000) at byte {at}, which the store cannot hold; remove it"),
        )),
        None => Ok(()),
    }
}

/// The bytes of an optional field for hashing; 0xff never occurs in UTF-8, so it marks "absent".
fn opt_bytes<'s>(v: &'s Option<Cow<'_, str>>) -> &'s [u8] {
    v.as_deref().map(str::as_bytes).unwrap_or(b"\xff")
}

/// serde_json appends " at line L column C" to errors; inside one array element that position
/// is relative to the element and only confuses, so the caller reports the element index instead.
pub(super) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

struct ImpressionVisitor;

/// Field-by-field decoding, hand-written so that a type error names the field it is in
/// (serde's derive reports only "invalid type … at line 1 column 57") and so that unknown
/// fields are kept as raw JSON without building a `serde_json::Map`.
impl<'de> Visitor<'de> for ImpressionVisitor {
    type Value = Impression<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an impression object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut imp = Impression::default();
        let (mut key, mut split, mut treatment, mut time) = (false, false, false, false);
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            macro_rules! field {
                ($seed:expr) => {
                    map.next_value_seed($seed).map_err(|e| de::Error::custom(format_args!("field `{name}`: {e}")))?
                };
            }
            match name.as_ref() {
                "key" => {
                    imp.key = field!(Str);
                    key = true
                }
                "split" => {
                    imp.split = field!(Str);
                    split = true
                }
                "treatment" => {
                    imp.treatment = field!(Str);
                    treatment = true
                }
                "time" => {
                    imp.time = field!(Millis);
                    time = true
                }
                "environmentId" => imp.environment_id = field!(OptStr),
                "environmentName" => imp.environment_name = field!(OptStr),
                "bucketingKey" => imp.bucketing_key = field!(OptStr),
                "label" => imp.label = field!(OptStr),
                "machineName" => imp.machine_name = field!(OptStr),
                "machineIp" => imp.machine_ip = field!(OptStr),
                "splitVersionNumber" => imp.split_version_number = field!(OptMillis),
                "sdk" => imp.sdk = field!(OptStr),
                "sdkVersion" => imp.sdk_version = field!(OptStr),
                "properties" => imp.properties = field!(Properties),
                _ => {
                    let raw: &'de RawValue = map.next_value()?;
                    imp.extra.push((name, raw));
                }
            }
        }
        for (present, name) in [(key, "key"), (split, "split"), (treatment, "treatment"), (time, "time")] {
            if !present {
                return Err(de::Error::custom(format_args!("field `{name}`: is required but missing")));
            }
        }
        Ok(imp)
    }
}

/// A required string.
struct Str;
impl<'de> DeserializeSeed<'de> for Str {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(CowStr)
    }
}

/// An optional string: absent and `null` both mean none.
struct OptStr;
impl<'de> DeserializeSeed<'de> for OptStr {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(OptionOf(CowStr))
    }
}

/// Required epoch milliseconds.
struct Millis;
impl<'de> DeserializeSeed<'de> for Millis {
    type Value = i64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_i64(MillisVisitor)
    }
}

/// Optional epoch milliseconds.
struct OptMillis;
impl<'de> DeserializeSeed<'de> for OptMillis {
    type Value = Option<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_option(OptionOf(MillisVisitor))
    }
}

/// `properties` is documented as a JSON document in a string; some senders post the object
/// itself, which is kept as its JSON text rather than rejected.
struct Properties;
impl<'de> DeserializeSeed<'de> for Properties {
    type Value = Option<Cow<'de, str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        let raw: &'de RawValue = serde::Deserialize::deserialize(d)?;
        let text = raw.get();
        match text.as_bytes().first() {
            Some(b'n') => Ok(None),
            Some(b'"') => {
                let s: Cow<'de, str> = serde_json::from_str::<CowWrap<'de>>(text).map_err(de::Error::custom)?.0;
                Ok(Some(s))
            }
            Some(b'{') => Ok(Some(Cow::Borrowed(text))),
            _ => Err(de::Error::custom("expected a string holding JSON, an object or null")),
        }
    }
}

/// Deserializes a string borrowing when it has no escapes.
struct CowWrap<'a>(Cow<'a, str>);
impl<'de> serde::Deserialize<'de> for CowWrap<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(CowStr).map(CowWrap)
    }
}

struct CowStr;
impl<'de> Visitor<'de> for CowStr {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

struct MillisVisitor;
impl<'de> Visitor<'de> for MillisVisitor {
    type Value = i64;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer (epoch milliseconds)")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v).map_err(|_| E::custom("epoch milliseconds out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // JavaScript senders sometimes emit 1572632114350.0; accept whole numbers only.
        if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Ok(v as i64)
        } else {
            Err(E::custom(format_args!("expected whole epoch milliseconds, got {v}")))
        }
    }
}

struct OptionOf<V>(V);
impl<'de, V: Visitor<'de>> Visitor<'de> for OptionOf<V> {
    type Value = Option<V::Value>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)?;
        f.write_str(" or null")
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self.0).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"{"key":"alphonso","split":"sample_feature","environmentId":"env1","environmentName":"Production","treatment":"off","time":1572632114350,"bucketingKey":null,"label":"default rule","machineName":"ip-10-0-0-1","machineIp":"10.0.0.1","splitVersionNumber":1572632100000,"sdk":"java","sdkVersion":"4.1.0","properties":"{}"}"#;

    #[test]
    fn parses_every_documented_field() {
        let imp = Impression::parse(SEED, &FieldLimits::default()).unwrap();
        assert_eq!(imp.key, "alphonso");
        assert_eq!(imp.split, "sample_feature");
        assert_eq!(imp.environment_id.as_deref(), Some("env1"));
        assert_eq!(imp.environment(), Some("Production"));
        assert_eq!(imp.treatment, "off");
        assert_eq!(imp.time, 1572632114350);
        assert!(imp.bucketing_key.is_none());
        assert_eq!(imp.label.as_deref(), Some("default rule"));
        assert_eq!(imp.machine_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(imp.split_version_number, Some(1572632100000));
        assert_eq!(imp.sdk_version.as_deref(), Some("4.1.0"));
        assert_eq!(imp.properties.as_deref(), Some("{}"));
        assert!(imp.extra.is_empty());
    }

    #[test]
    fn keeps_unknown_fields_verbatim() {
        let json = r#"{"key":"k","split":"s","treatment":"on","time":1,"newField":{"a":[1,2]},"x":"y"}"#;
        let imp = Impression::parse(json, &FieldLimits::default()).unwrap();
        assert_eq!(imp.extra_json().as_deref(), Some(r#"{"newField":{"a":[1,2]},"x":"y"}"#));
    }

    #[test]
    fn names_the_missing_field() {
        let err = Impression::parse(r#"{"key":"k","split":"s","time":1}"#, &FieldLimits::default()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("treatment"));
        assert!(err.reason.contains("missing"), "{err}");
    }

    #[test]
    fn names_the_field_with_a_wrong_type() {
        let err = Impression::parse(r#"{"key":5,"split":"s","treatment":"on","time":1}"#, &FieldLimits::default())
            .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("key"));
        assert!(err.reason.contains("expected a string"), "{err}");
        let err = Impression::parse(
            r#"{"key":"k","split":"s","treatment":"on","time":"yesterday"}"#,
            &FieldLimits::default(),
        )
        .unwrap_err();
        assert_eq!(err.field.as_deref(), Some("time"));
        assert_eq!(
            err.to_string(),
            "field `time`: invalid type: string \"yesterday\", expected an integer (epoch milliseconds)"
        );
    }

    #[test]
    fn rejects_fields_over_the_length_limit() {
        let long = "x".repeat(10_000);
        let json = format!(r#"{{"key":"{long}","split":"s","treatment":"on","time":1}}"#);
        let err = Impression::parse(&json, &FieldLimits::default()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("key"));
        assert!(err.reason.contains("10000 bytes"), "{err}");
    }

    #[test]
    fn accepts_properties_as_object_or_null_and_unescapes_strings() {
        let a = Impression::parse(
            r#"{"key":"k","split":"s","treatment":"on","time":1,"properties":{"a":1}}"#,
            &FieldLimits::default(),
        )
        .unwrap();
        assert_eq!(a.properties.as_deref(), Some(r#"{"a":1}"#));
        let b = Impression::parse(
            r#"{"key":"k","split":"s","treatment":"on","time":1,"properties":null}"#,
            &FieldLimits::default(),
        )
        .unwrap();
        assert!(b.properties.is_none());
        let c = Impression::parse(
            r#"{"key":"k","split":"s","treatment":"on","time":1,"properties":"{\"plan\":\"pro\"}"}"#,
            &FieldLimits::default(),
        )
        .unwrap();
        assert_eq!(c.properties.as_deref(), Some(r#"{"plan":"pro"}"#));
    }

    #[test]
    fn identity_ignores_time_only_in_per_version_mode() {
        let a = Impression::parse(SEED, &FieldLimits::default()).unwrap();
        let mut b = a.clone();
        b.time += 1;
        assert_ne!(a.identity(DedupMode::Exact), b.identity(DedupMode::Exact));
        assert_eq!(a.identity(DedupMode::PerVersion), b.identity(DedupMode::PerVersion));
        let mut c = a.clone();
        c.treatment = Cow::Borrowed("on");
        assert_ne!(a.identity(DedupMode::PerVersion), c.identity(DedupMode::PerVersion));
    }

    #[test]
    fn identities_sort_by_time_so_the_unique_index_grows_at_its_end() {
        let a = Impression::parse(SEED, &FieldLimits::default()).unwrap();
        let mut later = a.clone();
        later.time += 1;
        later.key = Cow::Borrowed("a-key-that-would-hash-anywhere");
        assert!(a.identity(DedupMode::Exact) < later.identity(DedupMode::Exact));
        let (mut old, mut new) = (a.clone(), a.clone());
        old.split_version_number = Some(-5);
        new.split_version_number = Some(3);
        assert!(old.identity(DedupMode::PerVersion) < new.identity(DedupMode::PerVersion));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_on_arbitrary_text(s in ".{0,200}") {
                let _ = Impression::parse(&s, &FieldLimits::default());
            }

            #[test]
            fn round_trips_generated_impressions(
                key in "[^\u{0}]{1,40}", split in "[a-z_]{1,20}", treatment in "[a-z]{1,10}",
                time in 0i64..4_000_000_000_000, label in proptest::option::of("[ -~]{0,30}"),
            ) {
                let v = serde_json::json!({"key": key, "split": split, "treatment": treatment, "time": time, "label": label});
                let text = v.to_string();
                let imp = Impression::parse(&text, &FieldLimits::NONE).unwrap();
                prop_assert_eq!(imp.key.as_ref(), key.as_str());
                prop_assert_eq!(imp.split.as_ref(), split.as_str());
                prop_assert_eq!(imp.time, time);
                prop_assert_eq!(imp.label.as_deref(), label.as_deref());
            }
        }
    }
}
