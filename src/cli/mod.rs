/*!
The command line: `sluice serve`, `sluice export impressions|events`, `sluice anonymous|user`, `sluice experiment[s]`, `sluice report attribution`,
`sluice lake ls`, `sluice journal repair`, `sluice forget user`, `sluice migrate`, `sluice store adopt-journal`
(the load generator is a program of its own, `src/bin/sluice-load.rs`).

Parsing (clap) is separate from doing: each subcommand has a module with one entry point.
*/

pub mod attribution;
pub mod experiment;
pub mod export;
pub mod forget;
pub mod journal;
pub mod lake;
pub mod migrate;
pub mod report;
pub mod serve;
pub mod store;
pub mod token;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::config::{AuthOverrides, JournalOverrides, Overrides, Settings, StoreOverrides};
use crate::nats::NatsUrls;
use crate::store::{Store, StoreTarget};

/// sluice: your own copy of your Split impressions and Segment events, durable and queryable.
///
/// Point Split's "Outgoing Webhook (Impressions)" at http://HOST:7878/v1/split/impressions and
/// Segment's webhook destination at /v1/segment/webhook (or Segment's libraries at http://HOST:7878),
/// then query with `sluice export`, `sluice user`, GET /api/impressions, /api/events or /api/user/ID.
/// Load benchmarks run with the separate `sluice-load` program (see BENCHMARKS.md).
#[derive(Debug, Parser)]
#[command(name = "sluice", version, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file (settings: see the README). Flags beat SLUICE_* variables, which beat the file.
    #[arg(long, global = true, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the journal, the store and dead letters [default: ./sluice-data]
    #[arg(long, global = true, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Store URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DB or sqlite://PATH [default: DIR/store.sqlite]
    #[arg(long, global = true, env = "SLUICE_STORE", value_name = "URL", hide_env_values = true)]
    pub store: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: receive webhooks, journal, load the store, answer queries.
    Serve {
        /// Address to listen on [default: 127.0.0.1:7878]
        #[arg(long, env = "SLUICE_LISTEN", value_name = "ADDR")]
        listen: Option<SocketAddr>,
        /// Serve reads to every client without a token while none has the `read` role (a warning is logged at every start)
        #[arg(long)]
        allow_open_reads: bool,
        /// Put the journal on NATS JetStream: nats://HOST:PORT, comma-separated for several servers
        /// (also [journal] url, SLUICE_JOURNAL__URL) [default: the embedded journal in DIR/journal]
        #[arg(long, value_name = "URL[,URL…]")]
        journal: Option<String>,
    },
    /// Make tokens for `[[auth.tokens]]` (no server needed).
    Token {
        /// What to do.
        #[command(subcommand)]
        what: token::TokenCommand,
    },
    /// Write records from the store to a file or stdout (no server needed; safe while it runs).
    Export {
        /// What to export (boxed: its filters make it many times the other commands' size).
        #[command(subcommand)]
        what: Box<export::ExportWhat>,
    },
    /// Look at the lake (no server needed; safe while it runs).
    Lake {
        /// What to do.
        #[command(subcommand)]
        what: lake::LakeCommand,
    },
    /// Look after the journal (the server must be stopped).
    Journal {
        /// What to do.
        #[command(subcommand)]
        what: journal::JournalCommand,
    },
    /// Create or upgrade the store's schema and exit (`serve` also does this on start).
    Migrate,
    /// Maintain the store's bookkeeping (no server may run on the data directory).
    Store {
        /// What to do.
        #[command(subcommand)]
        what: store::StoreCommand,
    },
    /// Print a visitor's sessions as `GET /api/anonymous/ID` does (from the store; safe while a server runs).
    Anonymous {
        /// The anonymousId.
        id: String,
    },
    /// Print a user's devices and sessions as `GET /api/user/ID` does (from the store).
    User {
        /// The userId, e.g. an e-mail address.
        id: String,
    },
    /// Print an experiment read-out as `GET /api/experiments/SPLIT` does (from the store; safe while a server runs).
    Experiment(Box<experiment::ExperimentArgs>),
    /// List the flags seen in an environment as `GET /api/experiments` does (from the store).
    Experiments {
        /// The environment (name or id).
        #[arg(long, value_name = "ENV")]
        environment: String,
    },
    /// Print a report as `GET /api/reports/...` does (from the store; safe while a server runs).
    Report {
        /// Which report.
        #[command(subcommand)]
        what: report::ReportWhat,
    },
    /// Erase a person (GDPR/CCPA) through the running server: `DELETE /api/user/ID`.
    Forget {
        /// What to erase.
        #[command(subcommand)]
        what: forget::ForgetWhat,
    },
}

/// The store, opened for reading: what every command that reads it without a server uses.
fn open_store(target: &StoreTarget) -> anyhow::Result<Store> {
    Store::open_read_only(target).with_context(|| format!("cannot read the store at {target}"))
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let (listen, auth, journal) = match &cli.command {
        Command::Serve { listen, allow_open_reads, journal } => (
            *listen,
            allow_open_reads.then_some(AuthOverrides { allow_open_reads: true }),
            journal.clone().map(|url| JournalOverrides { url: NatsUrls(url) }),
        ),
        Command::Token { .. }
        | Command::Export { .. }
        | Command::Lake { .. }
        | Command::Journal { .. }
        | Command::Migrate
        | Command::Store { .. }
        | Command::Anonymous { .. }
        | Command::User { .. }
        | Command::Experiment(_)
        | Command::Experiments { .. }
        | Command::Report { .. }
        | Command::Forget { .. } => (None, None, None),
    };
    let store = cli.store.clone().map(|url| StoreOverrides { url });
    let overrides = Overrides { listen, data_dir: cli.data_dir.clone(), store, auth, journal };
    let (settings, warnings) = Settings::load(cli.config.as_deref(), &overrides)?;
    // Before logging starts (its settings are part of the configuration), and for every command.
    for warning in warnings {
        eprintln!("sluice: warning: {warning}");
    }
    match cli.command {
        Command::Serve { .. } => serve::run(settings),
        Command::Token { what } => token::run(what),
        Command::Export { what } => export::run(&settings.store, *what),
        Command::Lake { what } => lake::run(&settings.lake, what),
        Command::Journal { what } => journal::run(&settings.config, what),
        Command::Migrate => migrate::run(&settings.store),
        Command::Store { what } => store::run(&settings, what),
        Command::Anonymous { id } => attribution::run(&settings, attribution::Lookup::Anonymous, &id),
        Command::User { id } => attribution::run(&settings, attribution::Lookup::User, &id),
        Command::Experiment(args) => experiment::run(&settings, *args),
        Command::Experiments { environment } => experiment::list(&settings, &environment),
        Command::Report { what } => report::run(&settings, what),
        Command::Forget { what } => forget::run(&settings, what),
    }
}
