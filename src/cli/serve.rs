/*!
`sluice serve`: start the journal, the consumers and the HTTP server; stop them in order.

Stopping is the reverse of starting: stop accepting, finish in-flight requests, let the
consumers catch up with the journal, close the journal.
*/

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::consumers::lake_writer::{LakeStatus, LakeWriter};
use crate::consumers::store_loader;
use crate::journal::Journal as _;
use crate::journal::file::FileJournal;
use crate::lake::Lake;
use crate::sources::dead_letter::DeadLetters;
use crate::store::{Readers, Store};
use crate::telemetry;

/// Runs the server until SIGINT or SIGTERM, then drains and returns.
pub fn run(config: Config) -> anyhow::Result<()> {
    telemetry::init_logging(&config.log);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?
        .block_on(async {
            let signals = crate::shutdown::Signals::install()?;
            let server = Server::start(config).await?;
            signals.received().await;
            server.stop().await
        })
}

/// A running sluice server.
pub struct Server {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    http_stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Opens the journal, the store and the dead-letter area, starts the consumers and listens.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        let data_dir = &config.data_dir;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}; pass --data-dir", data_dir.display()))?;
        let lock = lock_data_dir(data_dir)?;
        let journal = Arc::new(
            FileJournal::open(&config.journal_dir(), config.journal.clone())
                .with_context(|| format!("cannot open the journal in {}", config.journal_dir().display()))?,
        );
        let target = config.store_target()?;
        // Create or migrate the store now, so a broken store is reported at start-up, not at first
        // query. A database that is down is not a reason to refuse ingest: the loader waits for it.
        let opened = {
            let target = target.clone();
            tokio::task::spawn_blocking(move || Store::open(&target))
                .await
                .context("the store start-up task panicked")?
        };
        match opened {
            Ok(_) => {}
            Err(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "the store is unreachable; accepting ingest into the journal and loading once it is back");
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open the store at {target}")),
        }
        let dead_letters = Arc::new(
            DeadLetters::open(&config.dead_letter_dir(), config.dead_letter.max_bytes)
                .with_context(|| format!("cannot open the dead-letter area {}", config.dead_letter_dir().display()))?,
        );

        let consumers_stop = CancellationToken::new();
        // Registered with the journal before the loader runs and commits, so that retention
        // cannot delete what the lake has not archived yet.
        let lake = if config.lake.enabled {
            let lake = Lake::open(&config.lake, &config.lake_dir())
                .context("cannot open the lake (set lake.enabled = false to run without one)")?;
            let writer = LakeWriter::register(journal.clone(), lake, &config.lake, &config.lake_checkpoint_path())?;
            let status = Arc::new(LakeStatus::default());
            let (stop, running) = (consumers_stop.clone(), status.clone());
            let task = tokio::spawn(async move {
                // Logged when it happens, not at shutdown: ingest goes on without the lake, and
                // the operator should learn why it stopped (also shown by /readyz).
                if let Err(e) = writer.run(stop, running).await {
                    tracing::error!(error = format!("{e:#}"), "the lake writer stopped");
                }
            });
            Some((task, status))
        } else {
            None
        };
        let loader_status = Arc::new(store_loader::new_status());
        let loader = tokio::spawn(store_loader::run(
            journal.clone(),
            target.clone(),
            config.store.loader(),
            consumers_stop.clone(),
            loader_status.clone(),
        ));

        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
            format!("cannot listen on {}: is another sluice running? pick another address with --listen", config.listen)
        })?;
        let addr = listener.local_addr().context("the listening socket has no address")?;
        tracing::info!(%addr, data_dir = %data_dir.display(), store = %target, "sluice is listening");
        if config.segment.write_keys.is_empty() {
            tracing::warn!(
                "no segment.write_keys configured: the Segment Tracking API (/v1/track, /v1/batch …) accepts every request"
            );
        }

        let readers = Readers::new(target, config.store.pool_size, config.store.pool_wait());
        let mut state = AppState::new(
            Arc::new(config),
            journal.clone(),
            dead_letters,
            loader_status,
            readers,
            telemetry::metrics(),
        );
        let mut lake_writer = None;
        if let Some((task, status)) = lake {
            state = state.with_lake(status);
            lake_writer = Some(task);
        }
        let http_stop = CancellationToken::new();
        let stopped = http_stop.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, api::router(state))
                .with_graceful_shutdown(async move { stopped.cancelled().await })
                .await
                .context("the HTTP server failed")?;
            tracing::info!("HTTP server stopped; letting the consumers catch up with the journal");
            consumers_stop.cancel();
            match loader.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "the store loader stopped with an error"),
                Err(e) => tracing::error!(error = %e, "the store loader panicked"),
            }
            if let Some(task) = lake_writer
                && let Err(e) = task.await
            {
                tracing::error!(error = %e, "the lake writer panicked");
            }
            journal.close().await;
            drop(lock);
            tracing::info!(next_offset = journal.stats().next_offset, "sluice stopped cleanly");
            Ok(())
        });
        Ok(Server { addr, http_stop, task })
    }

    /// Stops gracefully: no new connections, in-flight requests finish, consumers drain.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.http_stop.cancel();
        self.task.await.context("the server task panicked")?
    }
}

/// Two servers appending to one journal would interleave and corrupt it: hold an exclusive
/// lock on `<data-dir>/sluice.lock` for as long as the server runs (the OS drops it if we die).
fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("sluice.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another sluice is already serving {}; stop it or pass another --data-dir",
            data_dir.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot lock {}", path.display())),
    }
}
