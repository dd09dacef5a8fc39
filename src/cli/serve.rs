/*!
`sluice serve`: start the journal, the consumers and the HTTP server; stop them in order.

Stopping is the reverse of starting: stop accepting, finish in-flight requests, let the
consumers catch up with the journal, close the journal. It has a deadline
(`shutdown_deadline_secs`), and a second SIGINT or SIGTERM ends it at once: every acknowledged
record is already durable in the journal, so cutting the drain short loses nothing.
*/

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access::SourceKind;
use crate::api::{self, AppState};
use crate::config::{Config, Settings};
use crate::consumers::lake_writer::{self, LakeStatus, LakeWriter};
use crate::consumers::lease::Leases;
use crate::consumers::{ConsumerStatus, store_loader, supervise_leased};
use crate::dead_letter::DeadLetters;
use crate::files;
use crate::journal::Journal;
use crate::journal::file::FileJournal;
use crate::journal::jetstream::{JetStreamJournal, JetStreamSettings};
use crate::lake::Lake;
use crate::outputs::{Output, OutputSettings};
use crate::privacy::Privacy;
use crate::privacy::erase::{Eraser, LakeTarget};
use crate::retention;
use crate::store::{QueryPool, Store, StoreTarget};
use crate::telemetry;

/// Runs the server until SIGINT or SIGTERM, then drains and returns; gives up draining at the
/// deadline or on a second signal.
pub fn run(settings: Settings) -> anyhow::Result<()> {
    telemetry::init_logging(&settings.config.log);
    // sluice creates its own files 0600 and directories 0700 (`files`), but two libraries create
    // files under the data directory that cannot be given a mode: object_store's LocalFileSystem
    // (a local lake's objects and their directories) and SQLite (its -wal and -shm, which take the
    // database file's mode, so they are covered too, but only as long as that holds). A umask
    // that leaves nothing to the group and others makes whatever they create private as well.
    // Set here, before any thread starts, and only for `serve`: it is the process's, and a
    // program embedding `Server` keeps its own.
    // SAFETY: umask(2) only swaps the process's file mode creation mask; it cannot fail.
    unsafe { libc::umask(files::UMASK as libc::mode_t) };
    let deadline = Duration::from_secs(settings.config.shutdown_deadline_secs);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let result = runtime.block_on(async {
        let mut signals = crate::shutdown::Signals::install()?;
        let server = Server::start_resolved(settings).await?;
        signals.received().await;
        tokio::select! {
            result = server.stop() => result,
            () = tokio::time::sleep(deadline) => anyhow::bail!(
                "the graceful shutdown did not finish within {} s (shutdown_deadline_secs); exiting without waiting further. Every acknowledged record is in the journal and is loaded on the next start",
                deadline.as_secs()
            ),
            () = signals.received() => anyhow::bail!(
                "a second signal: exiting without finishing the graceful shutdown. Every acknowledged record is in the journal and is loaded on the next start"
            ),
        }
    });
    // Requests and blocking tasks still running are abandoned rather than waited for.
    runtime.shutdown_background();
    result
}

/// How long an erasure waits for the consumers to deliver what was journaled before it (the
/// lake writer flushes its buffers at once when an erasure is recorded).
const ERASURE_WAIT: Duration = Duration::from_secs(60);

/// The store loader's lease: one node of a cluster loads the shared store.
const STORE_LEASE: &str = "store";
/// The lake writer's lease: one node of a cluster writes the shared lake.
const LAKE_LEASE: &str = "lake";

/// A consumer's task: its result, whether it had stopped on an error (rather than finished at
/// shutdown), and the offset it had processed the journal up to.
type ConsumerTask = JoinHandle<(anyhow::Result<()>, bool, u64)>;

/// A running sluice server.
pub struct Server {
    /// The address it listens on (useful with port 0).
    pub addr: SocketAddr,
    http_stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Resolves `config` (see [`Config::resolve`]) and starts as [`Server::start_resolved`] does.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        Server::start_resolved(config.resolve()?).await
    }

    /// Opens the journal, the store and the dead-letter area, starts the consumers and listens.
    pub async fn start_resolved(settings: Settings) -> anyhow::Result<Server> {
        let config = settings.config.clone();
        // Before anything is opened: a server that would hand every record to whoever reaches
        // its port does not start at all.
        settings.access.check_listen(config.listen.ip())?;
        // Install the metrics recorder before any consumer runs: a figure recorded earlier (say,
        // records skipped at a lost journal range) would go to no recorder and never be seen.
        telemetry::metrics();
        let data_dir = &config.data_dir;
        files::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data directory {}; pass --data-dir", data_dir.display()))?;
        let lock = lock_data_dir(data_dir)?;
        tighten_data_dir(&settings);
        let journal = OpenJournal::open(&config).await?;
        let shared = journal.shared();
        let target = settings.store.clone();
        check_store(&target).await?;
        let dead_letters = Arc::new(
            DeadLetters::open(&config.dead_letter_dir(), config.dead_letter.max_bytes)
                .with_context(|| format!("cannot open the dead-letter area {}", config.dead_letter_dir().display()))?,
        );
        let privacy = Arc::new(
            Privacy::open(data_dir)
                .with_context(|| format!("cannot open the privacy files in {}", data_dir.display()))?,
        );
        let leases = journal.leases(&settings).await?;
        let consumers = Consumers::start(&settings, &shared, &dead_letters, &privacy, leases.clone())?;
        let eraser = Eraser::new(
            privacy.clone(),
            shared.clone(),
            target.clone(),
            consumers.lake.clone(),
            config.attribution.max_cluster_ids,
            ERASURE_WAIT,
        )
        .with_dead_letters(dead_letters.clone());

        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| {
            format!("cannot listen on {}: is another sluice running? pick another address with --listen", config.listen)
        })?;
        let addr = listener.local_addr().context("the listening socket has no address")?;
        tracing::info!(%addr, data_dir = %data_dir.display(), store = %target, "sluice is listening");
        if settings.access.reads_are_open() {
            tracing::warn!(
                "auth.allow_open_reads (--allow-open-reads): every client that reaches {addr} may read every record without a token"
            );
        }
        let (split_guarded, segment_guarded) =
            (settings.access.guards(SourceKind::Split), settings.access.guards(SourceKind::Segment));
        for (open, what) in [
            (
                config.split.token.is_none() && !split_guarded,
                "no split.token nor ingest token for split configured: the Split webhook (/v1/split/impressions)",
            ),
            (
                config.segment.webhook_secret.is_none() && !segment_guarded,
                "no segment.webhook_secret nor ingest token for segment configured: the Segment webhook (/v1/segment/webhook)",
            ),
            (
                config.segment.write_keys.is_empty() && !segment_guarded,
                "no segment.write_keys nor ingest token for segment configured: the Segment Tracking API (/v1/track, /v1/batch …)",
            ),
        ] {
            if open {
                tracing::warn!("{what} accepts every request");
            }
        }

        let query_pool = QueryPool::new(target, config.store.pool_size, config.store.pool_wait());
        let mut state = AppState::new(
            config,
            shared,
            dead_letters,
            consumers.loader_status.clone(),
            query_pool,
            telemetry::metrics(),
            privacy,
        );
        state = state.with_access(settings.access.clone());
        if let Some(leases) = leases {
            state = state.with_leases(leases);
        }
        let permits = u32::try_from(state.config.limits.max_concurrent_requests).unwrap_or(u32::MAX);
        let eraser = Arc::new(eraser.with_ingest(state.ingest_permits.clone(), permits));
        state = state.with_eraser(eraser.clone());
        // Erasures a crash interrupted are finished now, beside the traffic.
        tokio::spawn(async move {
            if let Err(e) = eraser.resume().await {
                tracing::error!(error = %e, "a pending erasure could not be finished; it is tried again with the next erasure or at the next start");
            }
        });
        if let Some(status) = &consumers.lake_status {
            state = state.with_lake(status.clone());
        }
        state = state.with_outputs(consumers.outputs.clone());
        // Started last, once nothing can fail any more, so that it never outlives a failed start.
        let retention_stop = CancellationToken::new();
        let retention =
            tokio::spawn(retention::run(settings.store.clone(), settings.retention, retention_stop.clone()));
        let http_stop = CancellationToken::new();
        let stopped = http_stop.clone();
        let http = state.config.http;
        let task = tokio::spawn(async move {
            api::server::serve(listener, api::router(state), http, stopped).await;
            // Retention first: it ends after the statement it is running, and then leaves the
            // store's write lock to the loader's drain.
            retention_stop.cancel();
            if let Err(e) = retention.await {
                tracing::error!(error = %e, "the retention job panicked");
            }
            tracing::info!("HTTP server stopped; letting the consumers catch up with the journal");
            let journal_shared = journal.shared();
            let result = consumers.drain(journal_shared.as_ref()).await;
            journal.close().await;
            drop(lock);
            let next_offset = journal_shared.stats().next_offset;
            result.map_err(|e| anyhow::anyhow!("{e} (next offset {next_offset})"))?;
            tracing::info!(next_offset, "sluice stopped cleanly");
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

/// The journal `sluice serve` runs on: the embedded one, or JetStream's with `[journal] url`.
enum OpenJournal {
    File(Arc<FileJournal>),
    JetStream(Arc<JetStreamJournal>),
}

impl OpenJournal {
    /// Opens the journal `config` names.
    async fn open(config: &Config) -> anyhow::Result<OpenJournal> {
        match JetStreamSettings::from_config(&config.journal)? {
            Some(settings) => {
                let journal = JetStreamJournal::open(&settings)
                    .await
                    .with_context(|| format!("cannot open the journal on NATS JetStream ({})", settings.urls))?;
                Ok(OpenJournal::JetStream(Arc::new(journal)))
            }
            None => {
                let journal = FileJournal::open(&config.journal_dir(), config.journal.file())
                    .with_context(|| format!("cannot open the journal in {}", config.journal_dir().display()))?;
                Ok(OpenJournal::File(Arc::new(journal)))
            }
        }
    }

    /// The journal as the rest of sluice uses it.
    fn shared(&self) -> Arc<dyn Journal> {
        match self {
            OpenJournal::File(journal) => journal.clone(),
            OpenJournal::JetStream(journal) => journal.clone(),
        }
    }

    /// On a JetStream journal, the cluster's consumer leases (other nodes may share the journal),
    /// once the store is known to be one they can share too.
    async fn leases(&self, settings: &Settings) -> anyhow::Result<Option<Leases>> {
        let OpenJournal::JetStream(journal) = self else { return Ok(None) };
        if let StoreTarget::Sqlite(path) = &settings.store {
            anyhow::bail!(
                "the journal is on NATS JetStream, where other sluice nodes may share it, but the store is the embedded SQLite file {}, which only this node can load: set store.url (SLUICE_STORE__URL) to a PostgreSQL database that every node uses",
                path.display()
            );
        }
        let cluster = &settings.config.cluster;
        let ttl = Duration::from_secs(cluster.lease_ttl_secs);
        let node = cluster.node_name();
        let leases = Leases::open(&journal.jetstream(), &cluster.lease_bucket, journal.replicas(), ttl, &node)
            .await
            .context("cannot start in cluster mode")?;
        leases.claim_stream(journal.stream(), &cluster.lease_bucket).await.context("cannot start in cluster mode")?;
        journal.claim_lease_bucket(&cluster.lease_bucket).await.context("cannot start in cluster mode")?;
        tracing::info!(
            node,
            bucket = cluster.lease_bucket,
            "cluster mode: each consumer runs on the node holding its lease"
        );
        Ok(Some(leases))
    }

    /// Completes what was accepted and stops taking appends.
    async fn close(&self) {
        match self {
            OpenJournal::File(journal) => journal.close().await,
            OpenJournal::JetStream(journal) => journal.close().await,
        }
    }
}

/// Creates or migrates the store now, so that a broken store is reported at start-up, not at the
/// first query. A database that is down is not a reason to refuse ingest: the loader waits for it.
async fn check_store(target: &StoreTarget) -> anyhow::Result<()> {
    let opened = {
        let target = target.clone();
        tokio::task::spawn_blocking(move || Store::open(&target)).await.context("the store start-up task panicked")?
    };
    match opened {
        Ok(_) => Ok(()),
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "the store is unreachable; accepting ingest into the journal and loading once it is back");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot open the store at {target}")),
    }
}

/// The running consumers, in the order they are drained, with their statuses for `/readyz`.
struct Consumers {
    tasks: Vec<(String, ConsumerTask)>,
    stop: CancellationToken,
    loader_status: Arc<store_loader::LoaderStatus>,
    lake_status: Option<Arc<LakeStatus>>,
    /// The lake, for erasures.
    lake: Option<LakeTarget>,
    /// Each stream output's name and status.
    outputs: Vec<(String, Arc<ConsumerStatus>)>,
}

impl Consumers {
    /// Starts the store loader, the lake writer when the lake is on, and each stream output, each
    /// supervised; with `leases` (nodes sharing a JetStream journal), each runs only while this
    /// node holds its lease.
    fn start(
        settings: &Settings,
        journal: &Arc<dyn Journal>,
        dead_letters: &Arc<DeadLetters>,
        privacy: &Arc<Privacy>,
        leases: Option<Leases>,
    ) -> anyhow::Result<Consumers> {
        let stop = CancellationToken::new();
        // Every consumer holds its place in the journal from here on, before any of them reads
        // or commits and before traffic is accepted, so that retention never deletes what one
        // has not processed: the store loader's offset is read once the store answers, which
        // may be much later (PostgreSQL down), so until then the loader holds everything retained.
        journal.hold(store_loader::CONSUMER);
        let lake = if settings.lake.config.enabled {
            let lake_settings = settings.lake.clone();
            let lake = Lake::open(&lake_settings.config, &lake_settings.default_dir)
                .context("cannot open the lake (set lake.enabled = false to run without one)")?;
            journal.hold(lake_writer::CONSUMER);
            let target = LakeTarget { lake: lake.clone(), part_bytes: lake_settings.config.part_bytes };
            let register = {
                let (journal, lake, lake_settings, privacy) =
                    (journal.clone(), lake.clone(), lake_settings.clone(), privacy.clone());
                move || {
                    LakeWriter::register(journal.clone(), lake.clone(), &lake_settings)
                        .map(|w| w.with_privacy(privacy.clone()))
                }
            };
            // Registered now, so that a lake it cannot write stops the start; in a cluster only
            // once the lease is held, since the lake's mark and the journal's end move meanwhile
            // (another node writes the lake until this one takes over).
            let mut registered = if leases.is_none() { Some(register()) } else { None };
            let status = Arc::new(LakeStatus::default());
            let (stop, running, leases, journal) = (stop.clone(), status.clone(), leases.clone(), journal.clone());
            let task = tokio::spawn(async move {
                let result = supervise_leased(leases.as_ref(), LAKE_LEASE, &*journal, &running, &stop, || {
                    let writer = registered.take().unwrap_or_else(&register);
                    let (stop, running) = (stop.clone(), running.clone());
                    async move { writer?.run(stop, running).await }
                })
                .await;
                (result, running.stopped_reason().is_some(), running.committed_offset())
            });
            Some((task, status, target))
        } else {
            None
        };
        let (output_tasks, outputs): (Vec<_>, Vec<_>) = settings
            .outputs
            .iter()
            .map(|output| {
                let (task, status) =
                    start_output(output, journal, &settings.config.data_dir, privacy, &stop, leases.clone());
                (task, (output.name.clone(), status))
            })
            .unzip();
        let loader_status = Arc::new(store_loader::new_status());
        let loader = {
            let (journal, target, loader_config) = (journal.clone(), settings.store.clone(), settings.loader);
            let (dead_letters, privacy) = (dead_letters.clone(), privacy.clone());
            // Taken before any request is accepted: see `store_loader::run`. Not in a cluster,
            // where the other nodes' loaders move the store's offset past any end this node saw
            // at its start; there the stream's identity (its creation time) tells journals apart.
            let start_end = if leases.is_some() { u64::MAX } else { journal.stats().next_offset };
            let (stop, status) = (stop.clone(), loader_status.clone());
            tokio::spawn(async move {
                let result = supervise_leased(leases.as_ref(), STORE_LEASE, &*journal, &status, &stop, || {
                    store_loader::run(
                        journal.clone(),
                        target.clone(),
                        loader_config,
                        stop.clone(),
                        status.clone(),
                        dead_letters.clone(),
                        start_end,
                        privacy.clone(),
                    )
                })
                .await;
                (result, status.stopped_reason().is_some(), status.committed_offset())
            })
        };
        let mut tasks = vec![("store loader".to_owned(), loader)];
        let (lake_status, lake) = match lake {
            Some((task, status, target)) => {
                tasks.push(("lake writer".to_owned(), task));
                (Some(status), Some(target))
            }
            None => (None, None),
        };
        for (output, task) in settings.outputs.iter().zip(output_tasks) {
            tasks.push((format!("output {}", output.name), task));
        }
        Ok(Consumers { tasks, stop, loader_status, lake_status, lake, outputs })
    }

    /// Tells the consumers to finish what the journal holds and waits for them; an error names
    /// those that had stopped before, or could not finish while records they may not have
    /// processed remain (they stay in the journal for the next start).
    async fn drain(self, journal: &dyn Journal) -> anyhow::Result<()> {
        self.stop.cancel();
        let (mut stopped, mut unfinished): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for (name, task) in self.tasks {
            match task.await {
                Ok((Ok(()), _, _)) => {}
                Ok((Err(e), true, _)) => {
                    tracing::error!(error = format!("{e:#}"), "the {name} had stopped before shutdown");
                    stopped.push(name);
                }
                Ok((Err(e), false, committed)) => {
                    tracing::error!(error = format!("{e:#}"), "the {name} could not finish");
                    // A consumer that never reached its destination knows no offset of its
                    // own; it holds everything retained.
                    let stats = journal.stats();
                    let from = committed.max(stats.first_offset);
                    if from < stats.next_offset {
                        unfinished.push(format!("{name} (offsets {from}..{})", stats.next_offset));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the {name} panicked");
                    stopped.push(name);
                }
            }
        }
        if !stopped.is_empty() {
            anyhow::bail!(
                "sluice stopped, but the {} had stopped before (see the log); what it did not process stays in the journal for the next start",
                stopped.join(" and the ")
            );
        }
        if !unfinished.is_empty() {
            anyhow::bail!(
                "sluice stopped, but the {} could not finish (see the log): its destination was failing or never reached, so records it may not have processed stay in the journal for the next start",
                unfinished.join(" and the ")
            );
        }
        Ok(())
    }
}

/// Holds the place of the output `output` in the journal and starts it, supervised (its
/// registration is tried again at each restart); with `leases`, only while this node holds the
/// output's lease (named like its consumer, `output:<name>`).
fn start_output(
    output: &OutputSettings,
    journal: &Arc<dyn Journal>,
    data_dir: &std::path::Path,
    privacy: &Arc<Privacy>,
    stop: &CancellationToken,
    leases: Option<Leases>,
) -> (ConsumerTask, Arc<ConsumerStatus>) {
    let consumer = output.consumer();
    journal.hold(&consumer);
    // A status names its consumer for the process's lifetime: one small string per configured
    // output, once per start.
    let status = Arc::new(ConsumerStatus::new(Box::leak(consumer.into_boxed_str())));
    let register = {
        let (journal, output, data_dir, privacy) =
            (journal.clone(), output.clone(), data_dir.to_owned(), privacy.clone());
        move || Output::register(journal.clone(), output.clone(), &data_dir).map(|o| o.with_privacy(privacy.clone()))
    };
    // Registered at its checkpoint before traffic is accepted; in a cluster only once the lease
    // is held, as the lake writer is (another node sends, and moves the offset, until then).
    let mut registered = if leases.is_none() { Some(register()) } else { None };
    let (stop, running, lease, supervised) = (stop.clone(), status.clone(), output.lease(), journal.clone());
    let shared = {
        let (journal, output, data_dir, privacy) =
            (journal.clone(), output.clone(), data_dir.to_owned(), privacy.clone());
        move |leases: Leases| {
            let (journal, output, data_dir, privacy) =
                (journal.clone(), output.clone(), data_dir.clone(), privacy.clone());
            async move { Output::register_shared(journal, output, &data_dir, leases).await.map(|o| o.with_privacy(privacy)) }
        }
    };
    let task = tokio::spawn(async move {
        let result = supervise_leased(leases.as_ref(), &lease, &*supervised, &running, &stop, || {
            let output = match &leases {
                Some(leases) => futures_util::future::Either::Left(shared(leases.clone())),
                None => {
                    futures_util::future::Either::Right(std::future::ready(registered.take().unwrap_or_else(&register)))
                }
            };
            let (stop, running) = (stop.clone(), running.clone());
            async move { output.await?.run(stop, running).await }
        })
        .await;
        (result, running.stopped_reason().is_some(), running.committed_offset())
    });
    (task, status)
}

/// Takes the group's and others' permissions away from the data directory and what sluice keeps
/// in it (a directory an older sluice created, or restored from a copy, may be looser), with one
/// warning when it had to. Not fatal: a directory sluice may not chmod still works.
fn tighten_data_dir(settings: &Settings) {
    let config = &settings.config;
    let mut owned = vec![
        config.journal_dir(),
        config.dead_letter_dir(),
        config.data_dir.join("sluice.lock"),
        settings.lake.default_dir.clone(),
        settings.lake.checkpoint.clone(),
    ];
    owned.extend(settings.outputs.iter().map(|o| crate::outputs::checkpoint_path(&config.data_dir, &o.name)));
    if let StoreTarget::Sqlite(path) = &settings.store {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = path.clone().into_os_string();
            name.push(suffix);
            owned.push(name.into());
        }
    }
    let data_dir = config.data_dir.display();
    match files::tighten(&config.data_dir, &owned) {
        Ok(files::Tightened { count, first: Some((path, mode)) }) => tracing::warn!(
            "the data directory {data_dir} had {count} file(s) or directories open to other users (the first: {} with mode {mode:o}); took the group's and others' permissions away, as sluice's files hold personal data",
            path.display()
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            error = %e,
            "could not take the group's and others' permissions away from the data directory {data_dir}; make it and its files private to sluice's user (chmod -R go= {data_dir})"
        ),
    }
}

/// Two servers appending to one journal would interleave and corrupt it, and `sluice journal
/// repair` must not rewrite segments under a server: hold an exclusive lock on
/// `<data-dir>/sluice.lock` for as long as either runs (the OS drops it if we die).
pub(crate) fn lock_data_dir(data_dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    let path = data_dir.join("sluice.lock");
    let file = files::options()
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
