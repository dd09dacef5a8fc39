/*!
Column tables: the one description of a record kind's fields that every writer and reader walks.

Each record kind has one table of [`Column`]s (`record::impression::COLUMNS`,
`record::segment_columns::COLUMNS`) naming a field everywhere it appears — the store's column,
the export's CSV header and NDJSON key, the lake's Parquet field — with its type, and one
function yielding a record's [`Value`]s in table order. The store's `INSERT`, `COPY` and
`SELECT` lists, the CSV and NDJSON writers and the Parquet schema and its column builders are all
generated from the table, so adding a column is one line in the table, its value in that
function, and a store migration (migrations are history, so they are written, not generated; a
test checks that the migrated tables hold exactly the table's columns).
*/

/// What a column holds, which decides its type in each format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// A 64-bit integer.
    Int,
    /// Epoch milliseconds: an integer in the store and the exports, a UTC timestamp in Parquet.
    Millis,
    /// True or false.
    Bool,
    /// Raw bytes.
    Bytes,
    /// A JSON document kept as its text (`json` in PostgreSQL, text elsewhere).
    Json,
    /// The fields sluice did not know, as one JSON object's text: a column in the store, CSV and
    /// Parquet; in NDJSON its members are written beside the known fields.
    Extra,
}

/// Where a column sits in the lake's Parquet schema, which follows Split's own export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parquet {
    /// The Parquet field name.
    pub name: &'static str,
    /// Its position among the Parquet fields.
    pub at: usize,
}

/// One field of a record kind, as every format names and types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// The store's column name (both backends).
    pub store: &'static str,
    /// The name in exports (CSV header, NDJSON key); `None` when exports do not write it as a column.
    pub field: Option<&'static str>,
    /// The Parquet field; `None` when the lake's Parquet objects leave it out.
    pub parquet: Option<Parquet>,
    /// What it holds.
    pub kind: Kind,
    /// Whether it may be absent (`NULL`).
    pub nullable: bool,
    /// Whether queries read it back into the kind's view (`ImpressionView`, `EventView`).
    pub view: bool,
}

impl Column {
    /// A nullable column of the store only; the builders below add the rest.
    pub const fn new(store: &'static str, kind: Kind) -> Column {
        Column { store, field: None, parquet: None, kind, nullable: true, view: false }
    }

    /// The same column, never absent.
    pub const fn required(self) -> Column {
        Column { nullable: false, ..self }
    }

    /// The same column, exported under `name` and read back by queries.
    pub const fn field(self, name: &'static str) -> Column {
        Column { field: Some(name), view: true, ..self }
    }

    /// The same column, read back by queries.
    pub const fn view(self) -> Column {
        Column { view: true, ..self }
    }

    /// The same column, in Parquet as `name` at position `at`.
    pub const fn parquet(self, name: &'static str, at: usize) -> Column {
        Column { parquet: Some(Parquet { name, at }), ..self }
    }
}

/// One field's value in one record, typed so that each format writes it its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Absent.
    Null,
    /// Text (also JSON text).
    Text(&'a str),
    /// An integer (also epoch milliseconds).
    Int(i64),
    /// A flag.
    Bool(bool),
    /// Bytes.
    Bytes(&'a [u8]),
}

impl<'a> Value<'a> {
    /// Text, or `Null` when absent.
    pub fn text(value: Option<&'a str>) -> Value<'a> {
        value.map_or(Value::Null, Value::Text)
    }

    /// An integer, or `Null` when absent.
    pub fn int(value: Option<i64>) -> Value<'a> {
        value.map_or(Value::Null, Value::Int)
    }

    /// The text, if this is text.
    pub fn as_text(self) -> Option<&'a str> {
        match self {
            Value::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(self) -> Option<i64> {
        match self {
            Value::Int(n) => Some(n),
            _ => None,
        }
    }

    /// The text of `column`, read back from the store, which requires it.
    pub fn required_text(self, column: &Column) -> Result<&'a str, RowError> {
        self.as_text().ok_or_else(|| mismatch(column, self))
    }

    /// The text of `column`, read back from the store, or `None` when absent.
    pub fn optional_text(self, column: &Column) -> Result<Option<&'a str>, RowError> {
        match self {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(mismatch(column, other)),
        }
    }

    /// The integer of `column`, read back from the store, which requires it.
    pub fn required_int(self, column: &Column) -> Result<i64, RowError> {
        self.as_int().ok_or_else(|| mismatch(column, self))
    }

    /// The integer of `column`, read back from the store, or `None` when absent.
    pub fn optional_int(self, column: &Column) -> Result<Option<i64>, RowError> {
        match self {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(n)),
            other => Err(mismatch(column, other)),
        }
    }
}

/// A row read back from the store that does not fit its table: a required column is absent or
/// holds another type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column `{column}` holds {found:?}, which does not fit the schema")]
pub struct RowError {
    /// The column.
    pub column: &'static str,
    /// What it held.
    pub found: String,
}

fn mismatch(column: &Column, found: Value<'_>) -> RowError {
    RowError { column: column.store, found: format!("{found:?}") }
}

/// The columns of `table` that queries read back, in table order.
pub fn view_columns(table: &[Column]) -> Vec<&Column> {
    table.iter().filter(|c| c.view).collect()
}

/// The Parquet columns of `table` in Parquet order, each with its index in the table.
pub fn parquet_columns(table: &[Column]) -> Vec<(usize, &Column, Parquet)> {
    let mut columns: Vec<_> = table.iter().enumerate().filter_map(|(i, c)| c.parquet.map(|p| (i, c, p))).collect();
    columns.sort_by_key(|(_, _, p)| p.at);
    columns
}

/// `a, b, c`: the store names of `columns`, for SQL column lists.
pub fn store_list<'c>(columns: impl IntoIterator<Item = &'c Column>) -> String {
    columns.into_iter().map(|c| c.store).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{impression, segment_columns};

    fn tables() -> [(&'static str, &'static [Column]); 2] {
        [("impressions", &impression::COLUMNS), ("events", &segment_columns::COLUMNS)]
    }

    #[test]
    fn every_table_names_each_column_once_in_each_format() {
        for (name, table) in tables() {
            let mut store: Vec<_> = table.iter().map(|c| c.store).collect();
            store.sort_unstable();
            store.dedup();
            assert_eq!(store.len(), table.len(), "{name}: a store name repeats");
            let mut fields: Vec<_> = table.iter().filter_map(|c| c.field).collect();
            let exported = fields.len();
            fields.sort_unstable();
            fields.dedup();
            assert_eq!(fields.len(), exported, "{name}: an export name repeats");
            let positions: Vec<usize> = parquet_columns(table).iter().map(|(_, _, p)| p.at).collect();
            assert_eq!(positions, (0..positions.len()).collect::<Vec<_>>(), "{name}: Parquet positions have a gap");
            let mut parquet: Vec<_> = parquet_columns(table).iter().map(|(_, _, p)| p.name).collect();
            parquet.sort_unstable();
            parquet.dedup();
            assert_eq!(parquet.len(), positions.len(), "{name}: a Parquet name repeats");
        }
    }

    #[test]
    fn the_view_consts_count_the_view_columns() {
        // An impression's view is its record columns, the prefix before what the store adds.
        assert_eq!(view_columns(&impression::COLUMNS).len(), impression::VIEW_COLUMNS);
        assert!(impression::COLUMNS[..impression::VIEW_COLUMNS].iter().all(|c| c.view && c.field.is_some()));
        assert_eq!(view_columns(&segment_columns::COLUMNS).len(), segment_columns::VIEW_COLUMNS);
        assert_eq!(segment_columns::RECORD_COLUMNS + 1, segment_columns::COLUMNS.len());
    }

    #[test]
    fn a_view_reads_back_the_values_it_writes() {
        let imp = crate::record::Impression::parse(
            r#"{"key":"k","split":"s","environmentId":"e","treatment":"on","time":5,"splitVersionNumber":3,"x":1}"#,
            &crate::record::FieldLimits::NONE,
        )
        .unwrap();
        let extra = imp.extra_json();
        let view = impression::ImpressionView::of(&imp, extra.as_deref(), 9);
        assert_eq!(impression::ImpressionView::from_values(view.values()), Ok(view));
        let mut values = view.values();
        values[0] = Value::Null;
        let err = impression::ImpressionView::from_values(values).unwrap_err();
        assert_eq!(err.column, "key");
    }
}
