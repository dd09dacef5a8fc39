/*!
The WHERE clause for an [`ImpressionQuery`]: the one place a user's filters become SQL.

Values never enter the SQL text; each becomes a numbered placeholder (`$1`, `$2`, …) with its
value in [`WhereClause::params`]. `$N` is PostgreSQL's placeholder syntax and SQLite reads it as
a named parameter whose index is its order of first appearance, so the same text runs on both
backends as long as placeholders are numbered in the order they first occur, which
[`WhereClause::bind`] guarantees.
*/

use std::fmt::Write as _;

use crate::store::{AnyOf, EventQuery, ImpressionQuery};

/// The condition an empty "any of" set becomes: false on both backends.
pub const NOTHING: &str = "1 = 0";

/// A value bound to a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlValue<'q> {
    /// A text value.
    Text(&'q str),
    /// An integer value.
    Integer(i64),
}

/// SQL conditions plus the values of their placeholders, in placeholder order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhereClause<'q> {
    /// Empty when nothing is filtered, otherwise ` WHERE …` (with a leading space).
    pub sql: String,
    /// The value of `$1`, `$2`, … in order.
    pub params: Vec<SqlValue<'q>>,
}

impl<'q> WhereClause<'q> {
    /// Builds the conditions for `q` over the `impressions` table: lists are "any of" (an empty
    /// set matches nothing), lists and
    /// bounds combine with AND, an environment matches either its name or its id.
    pub fn for_impressions(q: &'q ImpressionQuery) -> Self {
        let mut clause = WhereClause::default();
        let mut conditions: Vec<String> = Vec::new();
        // Both columns share one set of placeholders: the values are bound once.
        clause.any_of(&mut conditions, &q.environments, |list| {
            format!("(environment IN ({list}) OR environment_id IN ({list}))")
        });
        for (column, values) in
            [("split", &q.splits), ("key", &q.keys), ("treatment", &q.treatments), ("label", &q.labels)]
        {
            clause.any_of(&mut conditions, values, |list| format!("{column} IN ({list})"));
        }
        if let Some(from) = q.from {
            conditions.push(format!("time >= {}", clause.bind(SqlValue::Integer(from))));
        }
        if let Some(to) = q.to {
            conditions.push(format!("time < {}", clause.bind(SqlValue::Integer(to))));
        }
        if !conditions.is_empty() {
            clause.sql = format!(" WHERE {}", conditions.join(" AND "));
        }
        clause
    }

    /// Builds the conditions for `q` over the `events` table: lists are "any of" and combine
    /// with AND (an empty set matches nothing).
    pub fn for_events(q: &'q EventQuery) -> Self {
        let mut clause = WhereClause::default();
        let mut conditions: Vec<String> = Vec::new();
        for (column, values) in [
            ("message_id", &q.message_ids),
            ("type", &q.types),
            ("event", &q.events),
            ("user_id", &q.user_ids),
            ("anonymous_id", &q.anonymous_ids),
        ] {
            clause.any_of(&mut conditions, values, |list| format!("{column} IN ({list})"));
        }
        if let Some(from) = q.from {
            conditions.push(format!("timestamp >= {}", clause.bind(SqlValue::Integer(from))));
        }
        if let Some(to) = q.to {
            conditions.push(format!("timestamp < {}", clause.bind(SqlValue::Integer(to))));
        }
        if !conditions.is_empty() {
            clause.sql = format!(" WHERE {}", conditions.join(" AND "));
        }
        clause
    }

    /// Adds the condition for one "any of" filter: nothing for no filter, [`NOTHING`] for the
    /// empty set (an empty `IN ()` is not SQL, and leaving the condition out would match
    /// everything), otherwise `condition(list of placeholders)`.
    fn any_of(&mut self, conditions: &mut Vec<String>, values: &'q AnyOf, condition: impl FnOnce(&str) -> String) {
        match values.as_deref() {
            None => {}
            Some([]) => conditions.push(NOTHING.to_owned()),
            Some(values) => {
                let list = self.bind_list(values);
                conditions.push(condition(&list));
            }
        }
    }

    /// ` LIMIT $n` for `limit`, or nothing.
    pub fn limit(&mut self, limit: Option<u64>) -> String {
        match limit {
            Some(n) => format!(" LIMIT {}", self.bind(SqlValue::Integer(i64::try_from(n).unwrap_or(i64::MAX)))),
            None => String::new(),
        }
    }

    /// Adds a value and returns its placeholder, for clauses the caller appends (such as LIMIT).
    pub fn bind(&mut self, value: SqlValue<'q>) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn bind_list(&mut self, values: &'q [String]) -> String {
        let mut list = String::new();
        for (i, v) in values.iter().enumerate() {
            let placeholder = self.bind(SqlValue::Text(v));
            if i > 0 {
                list.push_str(", ");
            }
            let _ = write!(list, "{placeholder}");
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> AnyOf {
        Some(v.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn an_empty_set_matches_nothing_in_every_impression_filter() {
        let fields: [fn(&mut ImpressionQuery) -> &mut AnyOf; 5] =
            [|q| &mut q.environments, |q| &mut q.splits, |q| &mut q.keys, |q| &mut q.treatments, |q| &mut q.labels];
        for field in fields {
            let mut q = ImpressionQuery::default();
            *field(&mut q) = Some(Vec::new());
            let c = WhereClause::for_impressions(&q);
            assert_eq!(c.sql, " WHERE 1 = 0", "{q:?}");
            assert!(c.params.is_empty());
        }
    }

    #[test]
    fn an_empty_set_matches_nothing_in_every_event_filter() {
        let fields: [fn(&mut EventQuery) -> &mut AnyOf; 5] = [
            |q| &mut q.message_ids,
            |q| &mut q.types,
            |q| &mut q.events,
            |q| &mut q.user_ids,
            |q| &mut q.anonymous_ids,
        ];
        for field in fields {
            let mut q = EventQuery { from: Some(1), ..EventQuery::default() };
            *field(&mut q) = Some(Vec::new());
            let c = WhereClause::for_events(&q);
            assert_eq!(c.sql, " WHERE 1 = 0 AND timestamp >= $1", "{q:?}");
        }
        assert_eq!(WhereClause::for_events(&EventQuery::default()), WhereClause::default(), "no filter: no WHERE");
    }

    #[test]
    fn no_filters_give_no_where() {
        let q = ImpressionQuery::default();
        assert_eq!(WhereClause::for_impressions(&q), WhereClause::default());
    }

    #[test]
    fn one_list_becomes_an_in_with_placeholders() {
        let q = ImpressionQuery { splits: strings(&["a", "b'; DROP TABLE impressions; --"]), ..Default::default() };
        let c = WhereClause::for_impressions(&q);
        assert_eq!(c.sql, " WHERE split IN ($1, $2)");
        assert_eq!(c.params, [SqlValue::Text("a"), SqlValue::Text("b'; DROP TABLE impressions; --")]);
    }

    #[test]
    fn environment_matches_name_or_id_with_shared_placeholders() {
        let q = ImpressionQuery { environments: strings(&["Production", "env1"]), ..Default::default() };
        let c = WhereClause::for_impressions(&q);
        assert_eq!(c.sql, " WHERE (environment IN ($1, $2) OR environment_id IN ($1, $2))");
        assert_eq!(c.params.len(), 2);
    }

    #[test]
    fn every_filter_combines_with_and_in_placeholder_order() {
        let q = ImpressionQuery {
            environments: strings(&["Production"]),
            splits: strings(&["s"]),
            keys: strings(&["k1", "k2"]),
            treatments: strings(&["on"]),
            labels: strings(&["default rule"]),
            from: Some(10),
            to: Some(20),
            limit: Some(5),
        };
        let mut c = WhereClause::for_impressions(&q);
        assert_eq!(
            c.sql,
            " WHERE (environment IN ($1) OR environment_id IN ($1)) AND split IN ($2) AND key IN ($3, $4) \
             AND treatment IN ($5) AND label IN ($6) AND time >= $7 AND time < $8"
        );
        assert_eq!(
            c.params,
            [
                SqlValue::Text("Production"),
                SqlValue::Text("s"),
                SqlValue::Text("k1"),
                SqlValue::Text("k2"),
                SqlValue::Text("on"),
                SqlValue::Text("default rule"),
                SqlValue::Integer(10),
                SqlValue::Integer(20),
            ]
        );
        assert_eq!(c.bind(SqlValue::Integer(5)), "$9");
    }

    #[test]
    fn time_bounds_alone() {
        let q = ImpressionQuery { from: Some(1), ..Default::default() };
        assert_eq!(WhereClause::for_impressions(&q).sql, " WHERE time >= $1");
        let q = ImpressionQuery { to: Some(2), ..Default::default() };
        assert_eq!(WhereClause::for_impressions(&q).sql, " WHERE time < $1");
    }
}
