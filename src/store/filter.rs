/*!
What the store can be asked for: the filters of impression and event reads. Plain data: the
query layer parses them from HTTP query strings and CLI flags ([`crate::query`]), and the store
turns them into SQL ([`super::where_clause`]).
*/

/// Which impressions to return.
///
/// Each list is an [`AnyOf`]: `None` filters nothing, `Some(values)` matches any of the values
/// and so `Some(vec![])` matches nothing. Lists and bounds combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpressionQuery {
    /// Environment names or ids (an impression matches on either).
    pub environments: AnyOf,
    /// Feature flag names.
    pub splits: AnyOf,
    /// User keys.
    pub keys: AnyOf,
    /// Treatments.
    pub treatments: AnyOf,
    /// Labels (the rule that decided).
    pub labels: AnyOf,
    /// Earliest impression time, inclusive, epoch milliseconds.
    pub from: Option<i64>,
    /// Latest impression time, exclusive, epoch milliseconds.
    pub to: Option<i64>,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// A list filter: `None` is "no filter", `Some(values)` is "any of `values`", so an empty set
/// matches nothing. Two distinct states, so that a caller with nothing to look for (a user with
/// no devices) can never ask for everything by accident.
pub type AnyOf = Option<Vec<String>>;

/// Which events to return. Each list is an [`AnyOf`]: `None` filters nothing, `Some(values)`
/// matches any of them (`Some(vec![])` matches nothing); lists and bounds combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQuery {
    /// `messageId`s.
    pub message_ids: AnyOf,
    /// Call types (`track`, `page`…).
    pub types: AnyOf,
    /// `track` event names.
    pub events: AnyOf,
    /// `userId`s.
    pub user_ids: AnyOf,
    /// `anonymousId`s.
    pub anonymous_ids: AnyOf,
    /// Earliest `timestamp`, inclusive, epoch milliseconds.
    pub from: Option<i64>,
    /// Latest `timestamp`, exclusive, epoch milliseconds.
    pub to: Option<i64>,
    /// At most this many events.
    pub limit: Option<u64>,
}
