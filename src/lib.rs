//! sluice: your own copy of your Split impressions and Segment events.
//!
//! Records flow through the modules in this order:
//! [`sources`] (HTTP: the Split webhook, Segment's webhook and Tracking API; decode, validate
//! with the parsers in [`record`]) → [`journal`] (durable; ack after fsync) → [`consumers`] (the
//! store loader, the lake writer) → [`store`] (SQLite or PostgreSQL) and [`lake`] (objects).
//! [`query`] reads the store, using [`attribution`] (pure: Segment events in, touchpoints,
//! sessions and identities out) for the attribution answers; [`api`] serves sources, queries and
//! operations over HTTP; [`cli`] wires it all together. Below them: [`http`] (the state, error
//! and body limits every handler shares), [`dead_letter`] (where sources and the store loader
//! put what they reject), [`config`] and [`telemetry`].

#![deny(clippy::unwrap_used)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod attribution;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod dead_letter;
pub mod http;
pub mod journal;
pub mod lake;
pub mod query;
pub mod record;
pub mod shutdown;
pub mod sources;
pub mod store;
pub mod telemetry;
