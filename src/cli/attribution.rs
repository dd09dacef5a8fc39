/*!
`sluice anonymous ID` and `sluice user ID`: the attribution API's JSON, straight from the store
(no server needed; safe while one runs).
*/

use std::io::Write as _;

use anyhow::Context as _;

use crate::config::Settings;
use crate::query::attribution;

/// Which answer to print.
#[derive(Debug, Clone, Copy)]
pub enum Lookup {
    /// `GET /api/anonymous/{id}`.
    Anonymous,
    /// `GET /api/user/{id}`.
    User,
}

/// Prints the answer for `id` as pretty JSON.
pub fn run(settings: &Settings, lookup: Lookup, id: &str) -> anyhow::Result<()> {
    let mut store = super::open_store(&settings.store)?;
    let settings = &settings.config.attribution;
    let json = match lookup {
        Lookup::Anonymous => serde_json::to_string_pretty(&attribution::anonymous(&mut store, id, settings)?),
        Lookup::User => serde_json::to_string_pretty(&attribution::user(&mut store, id, settings)?),
    }
    .context("could not encode the answer")?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{json}").context("could not write the answer")?;
    Ok(())
}
