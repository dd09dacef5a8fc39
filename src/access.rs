/*!
Who may do what: tokens with roles, resolved once from `[auth]`, and the rules every route is
guarded by. A leaf below the configuration (which resolves into it), the HTTP layer
([`crate::http::auth`], which guards the query and operations routes) and the sources (which
guard ingest before reading a body).

sluice never keeps a token, only its SHA-256: what a client sends is hashed and compared with
every configured hash in constant time, so neither a leaked configuration file nor the time an
answer takes gives a token away.

The rules, safe by default:
- `read` (queries, exports) and `admin` (erasure, suppression): a bearer token with the role.
  While no token is configured at all, this machine (a loopback client) may read and
  administer without one, and with `allow_open_reads` every client may read.
- Operations (`/readyz`, `/metrics`): this machine, a token with `read` or `admin`, or everyone
  with `open_operations`.
- `ingest`: a source that any credential guards (its own secret, a write key, or an ingest token
  granted for it) needs one; the tokens' `sources` narrow where each may send.
*/

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send records to the sources.
    Ingest,
    /// Query: `/api/*` reads, exports, attribution, experiments, the console.
    Read,
    /// Erasure, suppression and operations.
    Admin,
}

impl Role {
    /// The role's name, as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request, as the access rules established it: the HTTP layer puts it in the
/// request's extensions for handlers that record who asked (the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name (never the token), or [`Caller::LOOPBACK`] /
    /// [`Caller::OPEN`] for a request let in without one.
    pub name: String,
}

impl Caller {
    /// The name of a client on this machine let in without a token (no token is configured).
    pub const LOOPBACK: &'static str = "loopback";
    /// The name of a client let in without a token by `allow_open_reads`.
    pub const OPEN: &'static str = "open-reads";
}

/// `[auth]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The tokens, `[[auth.tokens]]`.
    pub tokens: Vec<TokenConfig>,
    /// Serve reads to every client while no token has the `read` role (`--allow-open-reads`).
    pub allow_open_reads: bool,
    /// Serve `/readyz` and `/metrics` to every client, not only to this machine and to tokens
    /// with `read` or `admin`.
    pub open_operations: bool,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Shown in logs and metrics; never the token.
    pub name: String,
    /// What the token may do.
    pub roles: Vec<Role>,
    /// The hex SHA-256 of the token (what `sluice token new` prints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A file holding the token itself (a trailing newline is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// For an `ingest` token, where it may send: `split`, `split:ENVIRONMENT` (a Split
    /// environment's name or id), `segment`, `segment:SOURCE` (the events' source name).
    /// Empty: every source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

/// A source kind an ingest token may be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The Split impressions webhook.
    Split,
    /// Segment's webhook destination and Tracking API.
    Segment,
}

impl SourceKind {
    fn as_str(self) -> &'static str {
        match self {
            SourceKind::Split => "split",
            SourceKind::Segment => "segment",
        }
    }
}

/// Where an ingest token may send records of one source kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Anything.
    All,
    /// Only records of these names: Split environments (name or id), or a Segment source.
    Only {
        /// The token's name, for the refusal of a record outside.
        token: String,
        /// The names.
        names: Vec<String>,
    },
}

impl Scope {
    /// Whether a record named `name` (its environment or source) is within the scope.
    pub fn allows(&self, name: Option<&str>) -> bool {
        match self {
            Scope::All => true,
            Scope::Only { names, .. } => name.is_some_and(|n| names.iter().any(|allowed| allowed == n)),
        }
    }
}

/// A token, resolved.
#[derive(Debug, Clone)]
struct Token {
    name: String,
    roles: Vec<Role>,
    hash: [u8; 32],
    /// Empty: every source.
    sources: Vec<(SourceKind, Option<String>)>,
}

impl Token {
    fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Where this token may send records of `kind`, if anywhere.
    fn scope(&self, kind: SourceKind) -> Option<Scope> {
        if !self.has(Role::Ingest) {
            return None;
        }
        if self.sources.is_empty() {
            return Some(Scope::All);
        }
        let mut names = Vec::new();
        for (k, name) in &self.sources {
            match name {
                _ if *k != kind => {}
                None => return Some(Scope::All),
                Some(name) => names.push(name.clone()),
            }
        }
        (!names.is_empty()).then(|| Scope::Only { token: self.name.clone(), names })
    }
}

/// Why a request was refused; [`Refusal::reason`] labels it in `sluice_http_refused_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token was sent where one is needed.
    NoToken {
        /// The role the request needs.
        role: Role,
    },
    /// The token sent is not one of the configured tokens.
    BadToken {
        /// The role the request needs.
        role: Role,
    },
    /// The token is valid but lacks the role.
    MissingRole {
        /// The token's name.
        token: String,
        /// The role the request needs.
        role: Role,
    },
    /// Without a token, only this machine is served.
    NotLoopback {
        /// The role the request needs.
        role: Role,
    },
    /// An ingest token's records name an environment or source outside its grant.
    OutOfScope {
        /// The token's name.
        token: String,
        /// What the records named, e.g. `split environment Staging`.
        what: String,
    },
    /// An ingest token was sent to a source it is not granted.
    SourceNotAllowed {
        /// The token's name.
        token: String,
        /// The source kind.
        source: SourceKind,
    },
}

impl Refusal {
    /// The label of this refusal in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoToken { .. } => "no_token",
            Refusal::BadToken { .. } => "bad_token",
            Refusal::MissingRole { .. } => "missing_role",
            Refusal::NotLoopback { .. } => "not_loopback",
            Refusal::SourceNotAllowed { .. } | Refusal::OutOfScope { .. } => "source_not_allowed",
        }
    }

    /// 401 (who are you?) or 403 (you may not), as HTTP says.
    pub fn is_forbidden(&self) -> bool {
        matches!(self, Refusal::MissingRole { .. } | Refusal::SourceNotAllowed { .. } | Refusal::OutOfScope { .. })
    }

    /// The role the request needed.
    pub fn role(&self) -> Role {
        match self {
            Refusal::NoToken { role }
            | Refusal::BadToken { role }
            | Refusal::MissingRole { role, .. }
            | Refusal::NotLoopback { role } => *role,
            Refusal::SourceNotAllowed { .. } | Refusal::OutOfScope { .. } => Role::Ingest,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoToken { role } => write!(
                f,
                "this needs a token with the `{role}` role: send `Authorization: Bearer <token>` (`sluice token new --name NAME --role {role}` makes one)",
                role = role.as_str()
            ),
            Refusal::BadToken { .. } => {
                write!(
                    f,
                    "the token is not one of sluice's tokens: check it against [[auth.tokens]] in the configuration"
                )
            }
            Refusal::MissingRole { token, role } => write!(
                f,
                "token `{token}` lacks the `{role}` role this needs: use a token with it, or add \"{role}\" to the token's roles",
                role = role.as_str()
            ),
            Refusal::NotLoopback { role } => write!(
                f,
                "with no token configured, sluice serves this only to clients on its own machine: configure a token with the `{role}` role (`sluice token new --name NAME --role {role}`) and send it as `Authorization: Bearer <token>`",
                role = role.as_str()
            ),
            Refusal::OutOfScope { token, what } => write!(
                f,
                "token `{token}` may not send records of {what}: add it to the token's sources, or use the token meant for it"
            ),
            Refusal::SourceNotAllowed { token, source } => write!(
                f,
                "token `{token}` may not send to {source}: add \"{source}\" to its sources, or use the token meant for it",
                source = source.as_str()
            ),
        }
    }
}

/// The access rules, resolved from [`AuthConfig`]. The default has no token: reads and
/// administration only from this machine.
#[derive(Debug, Clone, Default)]
pub struct Access {
    tokens: Vec<Token>,
    open_reads: bool,
    open_operations: bool,
}

impl Access {
    /// Reads the token files and checks every entry; `listen` is where sluice will listen (a
    /// non-loopback address with no read token is refused unless `allow_open_reads`).
    pub fn resolve(config: &AuthConfig) -> anyhow::Result<Access> {
        let mut tokens: Vec<Token> = Vec::with_capacity(config.tokens.len());
        for (i, t) in config.tokens.iter().enumerate() {
            let at = format!("auth.tokens[{i}] (`{}`)", t.name);
            anyhow::ensure!(
                !t.name.is_empty()
                    && t.name.len() <= 64
                    && t.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "auth.tokens[{i}]: name {:?} must be 1 to 64 letters, digits, `-`, `_` or `.` (it is shown in logs and metrics)",
                t.name
            );
            anyhow::ensure!(
                !tokens.iter().any(|other| other.name == t.name),
                "{at}: another token has the same name; names tell tokens apart in logs and metrics"
            );
            anyhow::ensure!(
                !t.roles.is_empty(),
                "{at}: roles is empty; give it one or more of \"ingest\", \"read\", \"admin\""
            );
            let hash = match (&t.sha256, &t.token_file) {
                (Some(hex), None) => parse_sha256(hex).with_context(|| format!("{at}: sha256"))?,
                (None, Some(path)) => hash_token(&read_token_file(path).with_context(|| format!("{at}: token_file"))?),
                _ => anyhow::bail!(
                    "{at}: give exactly one of sha256 (the token's hex SHA-256, as `sluice token new` prints) or token_file"
                ),
            };
            anyhow::ensure!(
                !tokens.iter().any(|other| other.hash == hash),
                "{at}: the same token as `{}`; every token must be different",
                tokens.iter().find(|other| other.hash == hash).map_or("", |o| o.name.as_str())
            );
            anyhow::ensure!(
                t.sources.is_empty() || t.roles.contains(&Role::Ingest),
                "{at}: sources limits where an ingest token may send, but the token has no \"ingest\" role"
            );
            let sources: Vec<(SourceKind, Option<String>)> = t
                .sources
                .iter()
                .map(|s| parse_source(s).with_context(|| format!("{at}: sources")))
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(
                sources.iter().filter(|(kind, name)| *kind == SourceKind::Segment && name.is_some()).count() <= 1,
                "{at}: sources names more than one Segment source; its events are recorded under the one it names, so make a token per Segment source"
            );
            let mut roles = t.roles.clone();
            roles.sort();
            roles.dedup();
            tokens.push(Token { name: t.name.clone(), roles, hash, sources });
        }
        let access = Access { tokens, open_reads: config.allow_open_reads, open_operations: config.open_operations };
        anyhow::ensure!(
            !(access.open_reads && access.has_role(Role::Read)),
            "auth.allow_open_reads (--allow-open-reads) and a token with the `read` role exclude each other: reads either need a token or not; remove one"
        );
        Ok(access)
    }

    /// Refuses to serve reads to the world by accident: listening on a non-loopback address
    /// needs a read token or an explicit `allow_open_reads`.
    pub fn check_listen(&self, listen: IpAddr) -> anyhow::Result<()> {
        anyhow::ensure!(
            is_local(listen) || self.has_role(Role::Read) || self.open_reads,
            "sluice would listen on {listen}, which other machines can reach, but no token has the `read` role, so anyone who can reach the port could read every record. \
             Run `sluice token new --name analyst --role read` and add the lines it prints to the configuration file; \
             or listen on 127.0.0.1 (--listen 127.0.0.1:7878); or, if reads really should be open to all, pass --allow-open-reads"
        );
        Ok(())
    }

    /// Whether reads are open to every client (`allow_open_reads`).
    pub fn reads_are_open(&self) -> bool {
        self.open_reads
    }

    /// Whether some token has `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.tokens.iter().any(|t| t.has(role))
    }

    /// Whether some ingest token is granted `kind`, so that its sources need a credential.
    pub fn guards(&self, kind: SourceKind) -> bool {
        self.tokens.iter().any(|t| t.scope(kind).is_some())
    }

    /// Who may make a request needing `role` (`read` or `admin`), given the bearer token it
    /// carries and the client's address.
    pub fn check(&self, role: Role, given: Option<&str>, peer: Option<IpAddr>) -> Result<Caller, Refusal> {
        if let Some(given) = given {
            let token = self.find(given).ok_or(Refusal::BadToken { role })?;
            return if token.has(role) {
                Ok(Caller { name: token.name.clone() })
            } else {
                Err(Refusal::MissingRole { token: token.name.clone(), role })
            };
        }
        let loopback = peer.is_some_and(is_local);
        match role {
            Role::Read if self.open_reads => Ok(Caller { name: Caller::OPEN.into() }),
            _ if !self.tokens.is_empty() => Err(Refusal::NoToken { role }),
            _ if loopback => Ok(Caller { name: Caller::LOOPBACK.into() }),
            _ => Err(Refusal::NotLoopback { role }),
        }
    }

    /// Who may read `/readyz` and `/metrics`: this machine, a `read` or `admin` token, or
    /// everyone with `open_operations`.
    pub fn check_operations(&self, given: Option<&str>, peer: Option<IpAddr>) -> Result<Caller, Refusal> {
        if let Some(given) = given {
            let token = self.find(given).ok_or(Refusal::BadToken { role: Role::Read })?;
            return if token.has(Role::Read) || token.has(Role::Admin) {
                Ok(Caller { name: token.name.clone() })
            } else {
                Err(Refusal::MissingRole { token: token.name.clone(), role: Role::Read })
            };
        }
        if self.open_operations {
            return Ok(Caller { name: Caller::OPEN.into() });
        }
        if peer.is_some_and(is_local) {
            Ok(Caller { name: Caller::LOOPBACK.into() })
        } else {
            Err(Refusal::NotLoopback { role: Role::Read })
        }
    }

    /// Where the ingest token `given` may send records of `kind`, with its name.
    pub fn ingest(&self, given: &str, kind: SourceKind) -> Result<(String, Scope), Refusal> {
        let token = self.find(given).ok_or(Refusal::BadToken { role: Role::Ingest })?;
        if !token.has(Role::Ingest) {
            return Err(Refusal::MissingRole { token: token.name.clone(), role: Role::Ingest });
        }
        match token.scope(kind) {
            Some(scope) => Ok((token.name.clone(), scope)),
            None => Err(Refusal::SourceNotAllowed { token: token.name.clone(), source: kind }),
        }
    }

    /// The token whose hash is `given`'s: every configured hash is compared, in constant time.
    fn find(&self, given: &str) -> Option<&Token> {
        let hash = hash_token(given);
        let mut found = None;
        for token in &self.tokens {
            if same_hash(&token.hash, &hash) {
                found = Some(token);
            }
        }
        found
    }
}

/// Whether `ip` is this machine's loopback, an IPv4 client on a dual-stack socket
/// (`::ffff:127.0.0.1`) included.
pub fn is_local(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Compares two hashes in constant time: how long it takes says nothing about where they differ.
fn same_hash(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a.ct_eq(b))
}

/// A token's SHA-256.
fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hex SHA-256 of `token`, as `[[auth.tokens]] sha256` holds it.
pub fn token_sha256_hex(token: &str) -> String {
    hash_token(token).iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh random token: `sluice_` and 32 random bytes in URL-safe base64 (256 bits, from the
/// operating system's generator through `rand`'s CSPRNG).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("sluice_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The shortest token a `token_file` may hold: shorter ones can be guessed.
const MIN_TOKEN_CHARS: usize = 16;

fn read_token_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}; check the path and that sluice may read it", path.display()))?;
    let token = text.strip_suffix('\n').map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    anyhow::ensure!(
        token.len() >= MIN_TOKEN_CHARS && !token.contains(char::is_whitespace),
        "{} must hold one token of at least {MIN_TOKEN_CHARS} characters without spaces (`sluice token new` makes one)",
        path.display()
    );
    Ok(token.to_owned())
}

fn parse_sha256(hex: &str) -> anyhow::Result<[u8; 32]> {
    let bytes: Option<Vec<u8>> = (hex.len() == 64)
        .then(|| (0..64).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect())
        .flatten();
    bytes.and_then(|b| b.try_into().ok()).ok_or_else(|| {
        anyhow::anyhow!("{hex:?} is not a SHA-256 in hex (64 characters 0-9a-f); `sluice token new` prints one")
    })
}

fn parse_source(s: &str) -> anyhow::Result<(SourceKind, Option<String>)> {
    let (kind, name) = match s.split_once(':') {
        Some((kind, name)) => (kind, Some(name)),
        None => (s, None),
    };
    let kind = match kind {
        "split" => SourceKind::Split,
        "segment" => SourceKind::Segment,
        _ => anyhow::bail!("{s:?}: a source is `split`, `split:ENVIRONMENT`, `segment` or `segment:SOURCE`"),
    };
    anyhow::ensure!(name.is_none_or(|n| !n.is_empty()), "{s:?}: the name after `:` is empty");
    Ok((kind, name.map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, roles: &[Role], secret: &str, sources: &[&str]) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            roles: roles.to_vec(),
            sha256: Some(token_sha256_hex(secret)),
            token_file: None,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    const LOCAL: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    const REMOTE: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)));

    #[test]
    fn hashes_are_compared_whole_in_constant_time() {
        let a = hash_token("sluice_aaaaaaaaaaaaaaaa");
        let mut b = a;
        assert!(same_hash(&a, &b));
        for i in [0, 15, 31] {
            b = a;
            b[i] ^= 1;
            assert!(!same_hash(&a, &b), "a difference at byte {i} is seen");
        }
    }

    #[test]
    fn a_token_is_found_by_its_hash_and_judged_by_its_roles() {
        let access = Access::resolve(&AuthConfig {
            tokens: vec![token("analyst", &[Role::Read], "read-secret-0123456789", &[])],
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(access.check(Role::Read, Some("read-secret-0123456789"), REMOTE).unwrap().name, "analyst");
        assert_eq!(
            access.check(Role::Read, Some("read-secret-012345678"), LOCAL),
            Err(Refusal::BadToken { role: Role::Read })
        );
        assert_eq!(
            access.check(Role::Admin, Some("read-secret-0123456789"), LOCAL),
            Err(Refusal::MissingRole { token: "analyst".into(), role: Role::Admin })
        );
        // Once a token exists, loopback needs one too.
        assert_eq!(access.check(Role::Read, None, LOCAL), Err(Refusal::NoToken { role: Role::Read }));
        assert_eq!(access.check_operations(None, LOCAL).unwrap().name, Caller::LOOPBACK);
        assert_eq!(access.check_operations(None, REMOTE), Err(Refusal::NotLoopback { role: Role::Read }));
        assert_eq!(access.check_operations(Some("read-secret-0123456789"), REMOTE).unwrap().name, "analyst");
    }

    #[test]
    fn with_no_token_only_this_machine_reads_and_administers_unless_reads_are_opened() {
        let closed = Access::default();
        for role in [Role::Read, Role::Admin] {
            assert_eq!(closed.check(role, None, LOCAL).unwrap().name, Caller::LOOPBACK);
            assert_eq!(closed.check(role, None, REMOTE), Err(Refusal::NotLoopback { role }));
            assert_eq!(closed.check(role, None, None), Err(Refusal::NotLoopback { role }));
        }
        let open = Access::resolve(&AuthConfig { allow_open_reads: true, ..AuthConfig::default() }).unwrap();
        assert_eq!(open.check(Role::Read, None, REMOTE).unwrap().name, Caller::OPEN);
        assert_eq!(open.check(Role::Admin, None, REMOTE), Err(Refusal::NotLoopback { role: Role::Admin }));
    }

    #[test]
    fn listening_beyond_loopback_needs_a_read_token_or_open_reads() {
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        let err = Access::default().check_listen(any).unwrap_err().to_string();
        assert!(
            err.contains("sluice token new --name analyst --role read") && err.contains("--allow-open-reads"),
            "{err}"
        );
        Access::default().check_listen("127.0.0.1".parse().unwrap()).unwrap();
        Access::default().check_listen("::1".parse().unwrap()).unwrap();
        assert!(is_local("::ffff:127.0.0.1".parse().unwrap()), "an IPv4 client on a dual-stack socket");
        assert!(!is_local("::ffff:10.0.0.1".parse().unwrap()));
        let ingest_only = Access::resolve(&AuthConfig {
            tokens: vec![token("feeder", &[Role::Ingest], "ingest-secret-0123456789", &[])],
            ..AuthConfig::default()
        })
        .unwrap();
        assert!(ingest_only.check_listen(any).is_err(), "an ingest token does not protect reads");
        let read = Access::resolve(&AuthConfig {
            tokens: vec![token("analyst", &[Role::Read], "read-secret-0123456789", &[])],
            ..AuthConfig::default()
        })
        .unwrap();
        read.check_listen(any).unwrap();
        let open = Access::resolve(&AuthConfig { allow_open_reads: true, ..AuthConfig::default() }).unwrap();
        open.check_listen(any).unwrap();
    }

    #[test]
    fn ingest_tokens_are_scoped_to_their_sources() {
        let access = Access::resolve(&AuthConfig {
            tokens: vec![
                token("prod", &[Role::Ingest], "prod-secret-0123456789", &["split:Production"]),
                token("web", &[Role::Ingest], "web-secret-01234567890", &["segment:web", "split"]),
                token("all", &[Role::Ingest], "all-secret-01234567890", &[]),
                token("analyst", &[Role::Read], "read-secret-0123456789", &[]),
            ],
            ..AuthConfig::default()
        })
        .unwrap();
        let (name, scope) = access.ingest("prod-secret-0123456789", SourceKind::Split).unwrap();
        assert_eq!(
            (name.as_str(), &scope),
            ("prod", &Scope::Only { token: "prod".into(), names: vec!["Production".into()] })
        );
        assert!(scope.allows(Some("Production")) && !scope.allows(Some("Staging")) && !scope.allows(None));
        assert_eq!(
            access.ingest("prod-secret-0123456789", SourceKind::Segment),
            Err(Refusal::SourceNotAllowed { token: "prod".into(), source: SourceKind::Segment })
        );
        assert_eq!(access.ingest("web-secret-01234567890", SourceKind::Split).unwrap().1, Scope::All);
        assert_eq!(
            access.ingest("web-secret-01234567890", SourceKind::Segment).unwrap().1,
            Scope::Only { token: "web".into(), names: vec!["web".into()] }
        );
        assert_eq!(access.ingest("all-secret-01234567890", SourceKind::Segment).unwrap().1, Scope::All);
        assert!(matches!(access.ingest("read-secret-0123456789", SourceKind::Split), Err(Refusal::MissingRole { .. })));
        assert_eq!(
            access.ingest("nobody-0123456789", SourceKind::Split),
            Err(Refusal::BadToken { role: Role::Ingest })
        );
        assert!(access.guards(SourceKind::Split) && access.guards(SourceKind::Segment));
    }

    #[test]
    fn bad_token_entries_are_refused_saying_what_to_fix() {
        let cases: Vec<(TokenConfig, &str)> = vec![
            (token("has space", &[Role::Read], "s-0123456789abcdef", &[]), "name"),
            (token("x", &[], "s-0123456789abcdef", &[]), "roles is empty"),
            (TokenConfig { sha256: Some("abc".into()), ..token("x", &[Role::Read], "", &[]) }, "not a SHA-256"),
            (TokenConfig { sha256: None, ..token("x", &[Role::Read], "", &[]) }, "exactly one of"),
            (token("x", &[Role::Read], "s-0123456789abcdef", &["split"]), "no \"ingest\" role"),
            (token("x", &[Role::Ingest], "s-0123456789abcdef", &["kafka"]), "a source is"),
        ];
        for (entry, expected) in cases {
            let err = format!(
                "{:#}",
                Access::resolve(&AuthConfig { tokens: vec![entry], ..AuthConfig::default() }).unwrap_err()
            );
            assert!(err.contains(expected), "{err} should say {expected}");
        }
        let twice = AuthConfig {
            tokens: vec![
                token("a", &[Role::Read], "same-secret-0123456789", &[]),
                token("b", &[Role::Admin], "same-secret-0123456789", &[]),
            ],
            ..AuthConfig::default()
        };
        assert!(format!("{:#}", Access::resolve(&twice).unwrap_err()).contains("the same token as `a`"));
        let both = AuthConfig {
            tokens: vec![token("a", &[Role::Read], "read-secret-0123456789", &[])],
            allow_open_reads: true,
            ..AuthConfig::default()
        };
        assert!(format!("{:#}", Access::resolve(&both).unwrap_err()).contains("exclude each other"));
    }

    #[test]
    fn a_token_file_holds_the_token_with_its_trailing_newline_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("analyst");
        std::fs::write(&path, "file-secret-0123456789\n").unwrap();
        let access = Access::resolve(&AuthConfig {
            tokens: vec![TokenConfig {
                sha256: None,
                token_file: Some(path.clone()),
                ..token("analyst", &[Role::Read], "", &[])
            }],
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(access.check(Role::Read, Some("file-secret-0123456789"), None).unwrap().name, "analyst");
        std::fs::write(&path, "short\n").unwrap();
        let err = Access::resolve(&AuthConfig {
            tokens: vec![TokenConfig {
                sha256: None,
                token_file: Some(path),
                ..token("analyst", &[Role::Read], "", &[])
            }],
            ..AuthConfig::default()
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("at least 16 characters"), "{err:#}");
    }

    #[test]
    fn new_tokens_are_random_and_their_printed_hash_finds_them() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with("sluice_") && a.len() == "sluice_".len() + 43, "{a}");
        let access = Access::resolve(&AuthConfig {
            tokens: vec![TokenConfig { sha256: Some(token_sha256_hex(&a)), ..token("n", &[Role::Admin], "", &[]) }],
            ..AuthConfig::default()
        })
        .unwrap();
        assert_eq!(access.check(Role::Admin, Some(&a), None).unwrap().name, "n");
        // Known answer: SHA-256("abc").
        assert_eq!(token_sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
