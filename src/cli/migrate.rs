/*!
`sluice migrate`: bring the store's schema up to date without starting the server.

Useful before a rolling deploy, or to check a database is reachable. Safe to run while other
sluice processes start or serve: migrations take turns under a lock.
*/

use anyhow::Context as _;

use crate::store::{Store, StoreTarget};

/// Runs `sluice migrate`.
pub fn run(target: &StoreTarget) -> anyhow::Result<()> {
    Store::open(target).with_context(|| format!("cannot migrate the store at {target}"))?;
    println!("the store at {target} is up to date");
    Ok(())
}
