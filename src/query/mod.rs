/*!
Queries: what users ask of the store and how the answers are written.

[`ImpressionQuery::from_pairs`] turns HTTP query strings and CLI flags (both as name/value pairs)
into a query and an [`OutputFormat`]; [`write_impressions`] streams the matching rows in that
format. The HTTP export endpoint and `sluice export` both call exactly these two.
*/

pub mod attribution;
pub mod attribution_report;
mod cells;
mod events;
pub mod experiments;
mod filter;
mod format;

pub use crate::store::QueryError;
pub use events::{EventFormat, EventQuery, write_events};
pub(crate) use filter::no_nul;
pub use filter::{AnyOf, ImpressionQuery, ParamError};
pub(crate) use format::write_object;
pub use format::{OutputFormat, write_impressions};

impl From<csv::Error> for QueryError {
    fn from(e: csv::Error) -> Self {
        // The CSV writer only fails on I/O: every value it gets is already a string.
        QueryError::Write(e.into())
    }
}
