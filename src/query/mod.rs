/*!
Queries: what users ask of the store and how the answers are written.

[`ImpressionQuery::from_pairs`] turns HTTP query strings and CLI flags (both as name/value pairs)
into a query and an [`OutputFormat`]; [`write_impressions`] streams the matching rows in that
format. The HTTP export endpoint and `sluice export` both call exactly these two.
*/

pub mod attribution;
mod events;
mod filter;
mod format;

pub use events::{EventFormat, EventQuery, write_events};
pub use filter::{AnyOf, ImpressionQuery, ParamError};
pub(crate) use format::write_object;
pub use format::{OutputFormat, write_impressions};

/// Why a query or an export stopped.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The store could not be read.
    #[error("reading from the store failed: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The output could not be written (disk full, client disconnected…).
    #[error("writing the export failed: {0}")]
    Write(#[from] std::io::Error),
    /// A statement ran longer than `store.query_timeout_ms` and was cancelled.
    #[error(
        "the query took longer than {} ms and was cancelled; raise store.query_timeout_ms if such answers are expected",
        .0.as_millis()
    )]
    TimedOut(std::time::Duration),
}

impl QueryError {
    /// True when the database cancelled the statement (a timeout or an interrupt).
    pub fn is_cancelled(&self) -> bool {
        match self {
            QueryError::Store(crate::store::StoreError::Sqlite(e)) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted)
            }
            QueryError::Store(crate::store::StoreError::Postgres(e)) => {
                e.code() == Some(&::postgres::error::SqlState::QUERY_CANCELED)
            }
            _ => false,
        }
    }
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> Self {
        QueryError::Store(e.into())
    }
}

impl From<csv::Error> for QueryError {
    fn from(e: csv::Error) -> Self {
        // The CSV writer only fails on I/O: every value it gets is already a string.
        QueryError::Write(e.into())
    }
}
