/*!
JSON read without building a `serde_json::Value` tree: what every reader of Segment events goes
through, so that an event is parsed once wherever it is read.

- [`Members`]: an object's top level, each member kept as its raw text; a nested object is read
  only when someone asks for one of its keys, by scanning it ([`Json::get`]), and a string only
  when someone asks for it. Consumers read journaled events this way.
- [`Node`]: a tree borrowing its strings from the text, which writes itself back exactly as
  `Value` would (keys sorted, a repeated key's last value, numbers and escapes re-written): what
  ingest rewrites an event with, since the journal keeps that form.

[`Json`] reads either (and a `Value`, which tests and the batch defaults of a request are) the
same way, so the rules of the Segment Spec are written once over it.
*/

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON value's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl Kind {
    /// The type in words, for error messages ("a string", "an object", …).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

/// A JSON value to read fields from, however it is held; `'v` is how long what it yields lives.
pub trait Json<'v>: Copy {
    /// Its type.
    fn kind(self) -> Kind;
    /// The string, if it is one.
    fn as_str(self) -> Option<Cow<'v, str>>;
    /// The number, if it is an integer that fits an `i64`.
    fn as_i64(self) -> Option<i64>;
    /// The member `key` of an object (the last one, if repeated); `None` for other types.
    fn get(self, key: &str) -> Option<Self>;
    /// The value as a `Value`, for error messages.
    fn to_value(self) -> Value;

    /// True for `null`.
    fn is_null(self) -> bool {
        self.kind() == Kind::Null
    }

    /// The value at a path of object keys.
    fn at(self, path: &[&str]) -> Option<Self> {
        path.iter().try_fold(self, |value, key| value.get(key))
    }
}

impl<'v> Json<'v> for &'v Value {
    fn kind(self) -> Kind {
        match self {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Bool,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }

    fn as_str(self) -> Option<Cow<'v, str>> {
        Value::as_str(self).map(Cow::Borrowed)
    }

    fn as_i64(self) -> Option<i64> {
        Value::as_i64(self)
    }

    fn get(self, key: &str) -> Option<Self> {
        self.as_object()?.get(key)
    }

    fn to_value(self) -> Value {
        self.clone()
    }
}

/// One value as raw JSON text (as serde_json gives it: no whitespace around it).
#[derive(Debug, Clone, Copy)]
pub struct Raw<'v>(pub &'v RawValue);

impl<'v> Json<'v> for Raw<'v> {
    fn kind(self) -> Kind {
        match self.0.get().as_bytes().first() {
            Some(b'{') => Kind::Object,
            Some(b'[') => Kind::Array,
            Some(b'"') => Kind::String,
            Some(b't' | b'f') => Kind::Bool,
            Some(b'n') => Kind::Null,
            _ => Kind::Number,
        }
    }

    fn as_str(self) -> Option<Cow<'v, str>> {
        let text = self.0.get();
        if !text.starts_with('"') {
            return None;
        }
        match text[1..text.len() - 1].contains('\\') {
            // Valid JSON: without an escape, the text between the quotes is the string.
            false => Some(Cow::Borrowed(&text[1..text.len() - 1])),
            true => serde_json::from_str::<String>(text).ok().map(Cow::Owned),
        }
    }

    fn as_i64(self) -> Option<i64> {
        match self.kind() {
            Kind::Number => serde_json::from_str(self.0.get()).ok(),
            _ => None,
        }
    }

    fn get(self, key: &str) -> Option<Self> {
        match self.kind() {
            Kind::Object => member(self.0, key).map(Raw),
            _ => None,
        }
    }

    fn to_value(self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }
}

/// The last member `key` of the object `object`, found by scanning it: nothing is built but
/// the comparison of each key.
fn member<'v>(object: &'v RawValue, key: &str) -> Option<&'v RawValue> {
    struct Find<'k>(&'k str);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(is_key) = map.next_key_seed(KeyIs(self.0))? {
                if is_key {
                    found = Some(map.next_value()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    /// Whether a key equals the one looked for.
    struct KeyIs<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for KeyIs<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    let mut de = serde_json::Deserializer::from_str(object.get());
    de.deserialize_map(Find(key)).ok().flatten()
}

/// An object's top level: each member's raw text by key, a repeated key keeping its last value
/// as with `Value`. Keys are borrowed from the text unless they hold an escape.
#[derive(Debug, Default)]
pub struct Members<'a>(BTreeMap<Cow<'a, str>, &'a RawValue>);

impl<'a> Members<'a> {
    /// The members of the object `json`; `None` when it is not a JSON object.
    pub fn parse(json: &'a str) -> Option<Self> {
        if !json.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str(json).ok()
    }

    /// The member `key`.
    pub fn get(&self, key: &str) -> Option<Raw<'a>> {
        self.0.get(key).copied().map(Raw)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = BTreeMap::new();
                while let Some(Text(key)) = map.next_key()? {
                    members.insert(key, map.next_value()?);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Object)
    }
}

/// The string members `keys` of the object `json` (each its last value, as with `Value`), in
/// one scan that builds nothing but those strings: how a record's ids are read on the hot path.
/// A member that is not a string, and any member of text that is not an object, is `None`.
pub fn string_members<'a>(json: &'a str, keys: &[&str]) -> Vec<Option<Cow<'a, str>>> {
    struct Find<'k>(&'k [&'k str]);
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Vec<Option<Cow<'de, str>>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = vec![None; self.0.len()];
            while let Some(Text(key)) = map.next_key()? {
                match self.0.iter().position(|k| *k == key) {
                    Some(at) => {
                        let value: &'de RawValue = map.next_value()?;
                        found[at] = serde_json::from_str::<Text<'de>>(value.get()).ok().map(|Text(s)| s);
                    }
                    None => map.next_value::<IgnoredAny>().map(drop)?,
                }
            }
            Ok(found)
        }
    }
    let mut de = serde_json::Deserializer::from_str(json);
    de.deserialize_map(Find(keys)).unwrap_or_else(|_| vec![None; keys.len()])
}

/// A string, borrowed from the text when it holds no escape.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(Str)
    }
}

/// A JSON value as `Value` holds it, strings borrowed from the text where they hold no escape;
/// an object's members sorted by key, one per key (the last), so that it serializes to exactly
/// what `Value` serializes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A negative integer (or any `i64` given so).
    I64(i64),
    /// A non-negative integer.
    U64(u64),
    /// A number with a fraction or an exponent.
    F64(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// An array.
    Array(Vec<Node<'a>>),
    /// An object: members sorted by key, keys unique.
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Parses JSON text: accepts and refuses exactly what `Value` does, with the same errors.
    pub fn parse(json: &'a str) -> serde_json::Result<Self> {
        serde_json::from_str(json)
    }

    /// A copy of `value`.
    pub fn from_value(value: &Value) -> Node<'static> {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Node::U64(u),
                (None, Some(i), _) => Node::I64(i),
                (None, None, f) => Node::F64(f.unwrap_or_default()),
            },
            Value::String(s) => Node::Str(Cow::Owned(s.clone())),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_value).collect()),
            Value::Object(map) => Node::from_map(map),
        }
    }

    /// A copy of the object `map`.
    pub fn from_map(map: &Map<String, Value>) -> Node<'static> {
        // A `Map` is sorted and has unique keys already.
        Node::Object(map.iter().map(|(k, v)| (Cow::Owned(k.clone()), Node::from_value(v))).collect())
    }

    /// The members of an object.
    pub fn as_object(&self) -> Option<&[(Cow<'a, str>, Node<'a>)]> {
        match self {
            Node::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The member `key` of an object.
    pub fn member(&self, key: &str) -> Option<&Node<'a>> {
        let members = self.as_object()?;
        position(members, key).map(|i| &members[i].1)
    }

    /// Whether an object has the member `key`.
    pub fn contains_key(&self, key: &str) -> bool {
        self.member(key).is_some()
    }

    /// Sets the member `key` of an object (nothing for other types), replacing the one there.
    pub fn insert(&mut self, key: &str, value: Node<'a>) {
        if let Node::Object(members) = self {
            match members.binary_search_by(|(k, _)| (**k).cmp(key)) {
                Ok(i) => members[i].1 = value,
                Err(i) => members.insert(i, (Cow::Owned(key.to_owned()), value)),
            }
        }
    }

    /// Takes the member `key` out of an object.
    pub fn remove(&mut self, key: &str) -> Option<Node<'a>> {
        let Node::Object(members) = self else { return None };
        let i = position(members, key)?;
        Some(members.remove(i).1)
    }

    /// The member `key` of an object, to change.
    pub fn member_mut(&mut self, key: &str) -> Option<&mut Node<'a>> {
        let Node::Object(members) = self else { return None };
        let i = position(members, key)?;
        Some(&mut members[i].1)
    }
}

/// Where the member `key` is among an object's sorted members.
fn position(members: &[(Cow<'_, str>, Node<'_>)], key: &str) -> Option<usize> {
    if members.len() <= 16 {
        // An event's objects are small: comparing lengths first skips most string comparisons,
        // which a binary search makes in full (they were a fifth of ingest's time in a profile).
        return members.iter().position(|(k, _)| k.len() == key.len() && k == key);
    }
    members.binary_search_by(|(k, _)| (**k).cmp(key)).ok()
}

impl<'v, 'a> Json<'v> for &'v Node<'a> {
    fn kind(self) -> Kind {
        match self {
            Node::Null => Kind::Null,
            Node::Bool(_) => Kind::Bool,
            Node::I64(_) | Node::U64(_) | Node::F64(_) => Kind::Number,
            Node::Str(_) => Kind::String,
            Node::Array(_) => Kind::Array,
            Node::Object(_) => Kind::Object,
        }
    }

    fn as_str(self) -> Option<Cow<'v, str>> {
        match self {
            Node::Str(s) => Some(Cow::Borrowed(s)),
            _ => None,
        }
    }

    fn as_i64(self) -> Option<i64> {
        match *self {
            Node::I64(i) => Some(i),
            Node::U64(u) => i64::try_from(u).ok(),
            _ => None,
        }
    }

    fn get(self, key: &str) -> Option<Self> {
        self.member(key)
    }

    fn to_value(self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::I64(i) => Value::from(*i),
            Node::U64(u) => Value::from(*u),
            Node::F64(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.to_string()),
            Node::Array(items) => Value::Array(items.iter().map(Json::to_value).collect()),
            Node::Object(members) => {
                Value::Object(members.iter().map(|(k, v)| (k.to_string(), v.to_value())).collect::<Map<_, _>>())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

/// Builds a [`Node`] from what `Value`'s own visitor sees, the same way.
struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        // As `Value` does: a non-negative number is a `PosInt` however it was read.
        Ok(u64::try_from(v).map_or(Node::I64(v), Node::U64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Node::U64(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        // `Value` turns a non-finite float into null; the parser never yields one, but a
        // serializer must not be given one either.
        Ok(if v.is_finite() { Node::F64(v) } else { Node::Null })
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Node::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(Text(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        if members.is_sorted_by(|a, b| a.0 < b.0) {
            // Sorted and unique already (what the journal holds): nothing to do.
            return Ok(Node::Object(members));
        }
        // Stable, so that of repeated keys the last one stays last, and is kept (as `Value` keeps it).
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, earlier| {
            let same = later.0 == earlier.0;
            if same {
                std::mem::swap(later, earlier);
            }
            same
        });
        Ok(Node::Object(members))
    }
}

impl Serialize for Node<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::I64(i) => s.serialize_i64(*i),
            Node::U64(u) => s.serialize_u64(*u),
            Node::F64(f) => s.serialize_f64(*f),
            Node::Str(text) => s.serialize_str(text),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Node::Object(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(&**k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// JSON texts of every shape: repeated and escaped keys, numbers of every kind, whitespace.
    fn json_text() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            proptest::sample::select(&["-0", "0.0", "1e3", "1.50", "-12.99", "1E+2", "100000000000000000000"][..])
                .prop_map(str::to_owned),
            "\\PC{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9\/\n\u0000""#.to_owned()),
        ];
        leaf.prop_recursive(4, 40, 5, |inner| {
            let key = prop_oneof![
                proptest::sample::select(&["a", "b", "url", "page", "ü", ""][..]).prop_map(|k| format!("{k:?}")),
                Just(r#""\u0061""#.to_owned()),
            ];
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[ {} ]", items.join(" ,"))),
                proptest::collection::vec((key, inner), 0..5).prop_map(|members| {
                    let members: Vec<String> = members.into_iter().map(|(k, v)| format!("{k} : {v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_node_writes_what_value_writes_and_reads_alike(text in json_text()) {
            let value: Value = serde_json::from_str(&text).unwrap();
            let node = Node::parse(&text).unwrap();
            prop_assert_eq!(serde_json::to_string(&node).unwrap(), value.to_string());
            prop_assert_eq!((&node).to_value(), value.clone());
            prop_assert_eq!(Node::from_value(&value), node);
        }

        #[test]
        fn raw_text_reads_as_the_parsed_value_does(text in json_text(), key in proptest::sample::select(&["a", "b", "url", "page", ""][..])) {
            let value: Value = serde_json::from_str(&text).unwrap();
            let raw: &RawValue = serde_json::from_str(&text).unwrap();
            let raw = Raw(raw);
            prop_assert_eq!(raw.kind(), Json::kind(&value));
            prop_assert_eq!(raw.as_str(), Json::as_str(&value));
            prop_assert_eq!(raw.as_i64(), Json::as_i64(&value));
            prop_assert_eq!(raw.get(key).map(Json::to_value), Json::get(&value, key).cloned());
            prop_assert_eq!(raw.to_value(), value.clone());
            if let Some(members) = Members::parse(&text) {
                prop_assert_eq!(members.get(key).map(Json::to_value), value.get(key).cloned());
            } else {
                prop_assert!(!value.is_object());
            }
        }

        #[test]
        fn a_node_refuses_what_value_refuses_with_the_same_error(text in "\\PC{0,40}") {
            let node = Node::parse(&text).map(|_| ()).map_err(|e| e.to_string());
            let value = serde_json::from_str::<Value>(&text).map(|_| ()).map_err(|e| e.to_string());
            prop_assert_eq!(node, value);
        }
    }

    #[test]
    fn depth_and_range_limits_are_those_of_value() {
        for text in ["1e400", &format!("{}{}", "[".repeat(200), "]".repeat(200)), r#"{"a":-1e999}"#] {
            assert_eq!(
                Node::parse(text).map(|_| ()).map_err(|e| e.to_string()),
                serde_json::from_str::<Value>(text).map(|_| ()).map_err(|e| e.to_string()),
                "{text}"
            );
        }
    }
}
