/*!
`sluice forget user ID [--suppress]`: erase a person, through the running server.

An erasure must coordinate with the server's consumers (they skip what the erasure ledger names
and the erasure waits for them to pass its horizon) and with ingest (suppressions apply at once),
and the store and the lake are written by that server; so the command does not erase on its own:
it sends `DELETE /api/user/{id}` to the server (`--url`, default the configured `listen`
address) with the bearer token in `SLUICE_TOKEN`, and prints its answer. The server's audit log
records the token's name as who asked.
*/

use std::time::Duration;

use anyhow::Context as _;
use clap::Subcommand;

use crate::config::Settings;

/// What `sluice forget` erases.
#[derive(Debug, Subcommand)]
pub enum ForgetWhat {
    /// Erase a person (their identity cluster) from the store, the lake and the journal's
    /// consumers, through the running server; prints what was erased where.
    User {
        /// The userId (or anonymousId, or impression key) of the person.
        #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new())]
        id: String,
        /// Also drop the person's later records at ingest.
        #[arg(long)]
        suppress: bool,
        /// The running server [default: http://LISTEN, the configured listen address]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// A token with the admin role, sent as `Authorization: Bearer` (needed once tokens are configured)
        #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
        token: Option<String>,
    },
}

/// Runs `sluice forget …`.
pub fn run(settings: &Settings, what: ForgetWhat) -> anyhow::Result<()> {
    let ForgetWhat::User { id, suppress, url, token } = what;
    let base = url.unwrap_or_else(|| format!("http://{}", settings.config.listen));
    let mut endpoint = url::Url::parse(&base).with_context(|| {
        format!("--url `{base}` is not a URL; pass the server's address, e.g. http://127.0.0.1:7878")
    })?;
    endpoint
        .path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--url `{base}` cannot have a path; pass e.g. http://127.0.0.1:7878"))?
        .pop_if_empty()
        .extend(["api", "user", &id]);
    endpoint.set_query(suppress.then_some("suppress=true"));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("could not start a runtime")?;
    let (status, body) = runtime.block_on(async {
        // An erasure waits for the consumers (up to a minute) and rewrites lake objects.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3600)).build()?;
        let mut request = client.delete(endpoint.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await?;
        Ok::<_, reqwest::Error>((answer.status(), answer.text().await?))
    })
    .with_context(|| {
        format!("cannot reach sluice at {base}: the erasure runs in the server, so start `sluice serve` (or pass --url with its address) and run this again")
    })?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(body);
        let hint = match status.as_u16() {
            401 | 403 => " (set SLUICE_TOKEN to a token with the admin role)",
            _ => "",
        };
        anyhow::bail!("the server answered {status}: {reason}{hint}");
    }
    println!("{body}");
    Ok(())
}
