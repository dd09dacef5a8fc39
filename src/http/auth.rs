/*!
Who may do what: callers identified by a token, and the roles a route needs.

Filled in by issue 12 part 1 (tokens, roles, the access layer). Handlers that need to know who
asked (the audit log of erasures, say) read [`Caller`] from the request's extensions.
*/

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send records to the sources.
    Ingest,
    /// Query: `/api/*` reads, exports, attribution, experiments, the console.
    Read,
    /// Erasure, suppression and operations.
    Admin,
}

/// Who made a request, as the access layer established it: put in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name (never the token), or `loopback` for an unauthenticated
    /// request from this machine while no token is configured.
    pub name: String,
}
