/*!
`sluice token new`: make a token for `[[auth.tokens]]`.

The token is printed once and never stored: the configuration holds only its SHA-256, so a
leaked configuration file gives no token away.
*/

use clap::Subcommand;

use crate::access::{Role, new_token, token_sha256_hex};

/// What `sluice token` does.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the `[[auth.tokens]]` entry to add to the configuration.
    New {
        /// The token's name, shown in logs and metrics (letters, digits, `-`, `_`, `.`).
        #[arg(long)]
        name: String,
        /// What it may do: ingest, read or admin (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// For an ingest token, where it may send: split, split:ENVIRONMENT, segment or segment:SOURCE (repeatable).
        #[arg(long = "source")]
        sources: Vec<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    match s {
        "ingest" => Ok(Role::Ingest),
        "read" => Ok(Role::Read),
        "admin" => Ok(Role::Admin),
        _ => Err(format!("{s:?} is not a role: use ingest, read or admin")),
    }
}

/// Runs `sluice token`.
pub fn run(what: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New { name, roles, sources } = what;
    let token = new_token();
    print!("{}", entry(&name, &roles, &sources, &token)?);
    Ok(())
}

/// The text `sluice token new` prints: the token, then the entry for the configuration.
fn entry(name: &str, roles: &[Role], sources: &[String], token: &str) -> anyhow::Result<String> {
    let config = crate::access::TokenConfig {
        name: name.to_owned(),
        roles: roles.to_vec(),
        sha256: Some(token_sha256_hex(token)),
        token_file: None,
        sources: sources.to_vec(),
    };
    // The entry must be one the server accepts: check it as the server will.
    crate::access::Access::resolve(&crate::access::AuthConfig { tokens: vec![config.clone()], ..Default::default() })?;
    #[derive(serde::Serialize)]
    struct Tokens<'a> {
        tokens: [&'a crate::access::TokenConfig; 1],
    }
    #[derive(serde::Serialize)]
    struct Auth<'a> {
        auth: Tokens<'a>,
    }
    let toml = toml::to_string(&Auth { auth: Tokens { tokens: [&config] } })?;
    Ok(format!(
        "# the token, shown only now; keep it secret (clients send it as `Authorization: Bearer <token>`):\n{token}\n\n\
         # add to sluice's configuration file (it holds only the token's SHA-256):\n{toml}"
    ))
}
