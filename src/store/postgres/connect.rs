/*!
Opening a connection. Plain TCP only for now: `PgSettings::from_url` refuses `sslmode=require`,
and `prefer` falls back to an unencrypted connection.
*/

use ::postgres::{Client, Config, NoTls};

/// Connects with `config`.
pub(super) fn connect(config: &Config) -> Result<Client, ::postgres::Error> {
    config.connect(NoTls)
}
