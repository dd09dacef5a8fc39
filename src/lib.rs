//! sluice: your own copy of your Split impressions and Segment events.
//!
//! Records flow through the modules in this order:
//! [`sources`] (HTTP: the Split webhook, Segment's webhook and Tracking API, each plugged into
//! the one ingest pipeline, `sources::pipeline`: authorize, read within limits, decode and parse
//! off the async workers, journal, dead-letter, answer) → [`journal`] (durable; ack after fsync)
//! → [`consumers`] (the store loader, the lake writer; each reads entries with
//! [`record::decode`]) → [`store`] (SQLite or PostgreSQL) and [`lake`] (objects).
//! [`record`] holds, per record kind, the one parser and the one column table
//! ([`record::impression::COLUMNS`], [`record::segment_columns::COLUMNS`]) that the store's
//! INSERT/COPY/SELECT lists, the CSV and NDJSON exports and the Parquet schemas are generated from.
//! [`query`] reads the store, using [`attribution`] (pure: Segment events in, touchpoints,
//! sessions and identities out) for the attribution answers and [`experiments`] (pure:
//! exposures, identity links and metric events in, read-outs and their statistics out) for
//! experiment read-outs; [`api`] serves sources, queries and
//! operations over HTTP; [`cli`] wires it all together from the [`config::Settings`] resolved
//! once at start-up. Below them: [`http`] (the state, error and body limits every handler
//! shares, and the access guards), [`access`] (tokens, roles and the rules they are checked
//! by), [`dead_letter`] (where sources and the store loader put what they reject),
//! [`privacy`] (erasure and suppression of a person: the ledger consumers skip records by, the
//! suppression list ingest drops them by, the audit log, the erasure jobs),
//! [`files`] (every file sluice writes is private to its user), [`nats`] (connections to NATS,
//! passwords never shown), [`config`] and [`telemetry`].
//! Beside the flow, [`retention`] deletes store rows past their horizon in the background, and
//! [`outputs`] forward every journaled record to Kafka or NATS.
//!
//! One impression, by module name: `sources::split` → `sources::pipeline` → `journal` →
//! `consumers::store_loader` (`record::decode`) → `store` → `query::format` (a CSV row), and
//! `journal` → `consumers::lake_writer` → `lake::encode` (a Parquet row) → `lake::objects`.

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod access;
pub mod api;
pub mod attribution;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod dead_letter;
pub mod duration;
pub mod experiments;
pub mod files;
pub mod http;
pub mod journal;
pub mod lake;
pub mod nats;
pub mod outputs;
pub mod privacy;
pub mod query;
pub mod record;
pub mod retention;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod telemetry;
