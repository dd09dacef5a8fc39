//! A throwaway schema per test on the shared PostgreSQL test server.
//!
//! The server is `postgres://postgres@127.0.0.1:5432/test` unless `TEST_POSTGRES_URL` names another.
//! When it cannot be reached, tests fail under CI (`CI=true`) and are skipped with a loud message
//! elsewhere. This file is compiled into the unit tests and, by path, into the integration tests,
//! so it uses only std and the `postgres` crate.

use std::sync::atomic::{AtomicU32, Ordering};

/// The shared test server's URL.
fn admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A schema that exists until dropped; `url` points sluice at it.
pub struct TestSchema {
    /// A store URL whose `search_path` is this schema.
    pub url: String,
    name: String,
}

impl TestSchema {
    /// Creates a fresh schema, or returns `None` after saying loudly why the test is skipped.
    pub fn create() -> Option<TestSchema> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "sluice_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
        );
        let admin = admin_url();
        // The sync driver must not run on an async test's runtime thread.
        let created = std::thread::scope(|s| {
            s.spawn(|| -> Result<(), postgres::Error> {
                let mut client = postgres::Client::connect(&admin, postgres::NoTls)?;
                client.batch_execute(&format!("CREATE SCHEMA {name}"))
            })
            .join()
            .expect("the schema-creating thread panicked")
        });
        if let Err(e) = created {
            let msg = format!("PostgreSQL test server {admin} is unreachable ({e}); start it or set TEST_POSTGRES_URL");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("\n*** SKIPPED a PostgreSQL test: {msg} ***\n");
            return None;
        }
        let sep = if admin.contains('?') { '&' } else { '?' };
        Some(TestSchema { url: format!("{admin}{sep}options=-csearch_path%3D{name}"), name })
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let admin = admin_url();
        let name = &self.name;
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Ok(mut client) = postgres::Client::connect(&admin, postgres::NoTls) {
                    let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
                }
            });
        });
    }
}
