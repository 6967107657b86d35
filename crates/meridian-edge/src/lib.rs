//! The edge node's I/O around the pure core: UDP worker threads, the TCP server, loading and
//! reloading zone directories, following the control plane's catalog stream (`sync`), metrics,
//! and signals.
//!
//! Boundary: this crate owns sockets, threads, files and signals; it never decides an answer
//! (that is `meridian_core::respond`). The catalog it serves is swapped whole and atomically
//! (`ArcSwap`), so a query sees one catalog version from start to end.

pub mod announce;
pub mod geo;
pub mod metrics;
pub mod notify;
pub mod probe;
pub mod sync;
pub mod tcp;
pub mod udp;
pub mod zones;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use meridian_core::{Catalog, ServerConfig};
use tokio::sync::watch;

/// Wall-clock Unix milliseconds: what reports, probe results and staleness are stamped with.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// UDP worker threads per listen address. More than cores only adds contention.
pub const WORKERS_MAX: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Core(meridian_core::Error),
    #[error("invalid option: {0}")]
    Config(String),
    #[error(transparent)]
    Announce(#[from] announce::AnnounceError),
}

/// What an edge serves and where.
#[derive(Clone, Debug)]
pub struct EdgeOptions {
    pub listen: Vec<SocketAddr>,
    pub workers: usize,
    pub config: ServerConfig,
}

/// A running edge: sockets bound, workers started. Dropping it does not stop it; call `stop`.
pub struct Edge {
    pub catalog: Arc<ArcSwap<Catalog>>,
    /// The addresses actually bound (port 0 resolved).
    pub bound: Vec<SocketAddr>,
    pub udp_stats: Vec<Arc<udp::UdpStats>>,
    pub tcp_stats: Arc<tcp::TcpStats>,
    stop_udp: Arc<AtomicBool>,
    stop_tcp: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    tcp_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Tasks that finish on their own once shutdown is signalled (the catalog stream, which
    /// flushes the cache); `stop` waits for them, bounded by [`BACKGROUND_STOP_GRACE`].
    background: Vec<tokio::task::JoinHandle<()>>,
    /// Drives BIRD (controlled edges with `--bird-socket`); withdraws first on shutdown.
    pub announcer: Option<Arc<announce::Announcer>>,
}

/// How long `stop` waits for background tasks (a cache flush of a large catalog).
pub const BACKGROUND_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

impl Edge {
    /// Binds every address (UDP: one SO_REUSEPORT socket per worker; TCP: one listener) and starts
    /// serving `catalog`. Must be called inside a tokio runtime (TCP runs on it).
    pub fn start(options: &EdgeOptions, catalog: Catalog) -> Result<Edge, Error> {
        if options.workers == 0 || options.workers > WORKERS_MAX {
            return Err(Error::Config(format!("workers must be 1..={WORKERS_MAX}")));
        }
        if options.config.udp_payload_max as usize > udp::ANSWER_UDP_BYTES_MAX
            || options.config.udp_payload_max < 512
        {
            return Err(Error::Config(format!(
                "udp payload max must be 512..={}",
                udp::ANSWER_UDP_BYTES_MAX
            )));
        }
        let catalog = Arc::new(ArcSwap::from_pointee(catalog));
        let config = Arc::new(options.config.clone());
        let stop_udp = Arc::new(AtomicBool::new(false));
        let (stop_tcp, stop_rx) = watch::channel(false);
        let tcp_stats = Arc::new(tcp::TcpStats::default());
        let mut bound = Vec::new();
        let mut sockets = Vec::new();
        let mut listeners = Vec::new();
        for &addr in &options.listen {
            // Port 0: the first socket picks the port, the others (and TCP) reuse it.
            let first = udp::bind(addr)?;
            let actual = first.local_addr().map_err(|e| Error::Bind(addr, e))?;
            sockets.push(first);
            for _ in 1..options.workers {
                sockets.push(udp::bind(actual)?);
            }
            listeners.push(tcp::bind(actual)?);
            bound.push(actual);
        }
        let mut threads = Vec::new();
        let mut udp_stats = Vec::new();
        for (idx, socket) in sockets.into_iter().enumerate() {
            let stats = Arc::new(udp::UdpStats::default());
            udp_stats.push(stats.clone());
            let (catalog, config, stop) = (catalog.clone(), config.clone(), stop_udp.clone());
            let handle = std::thread::Builder::new()
                .name(format!("udp-{idx}"))
                .spawn(move || udp::run_worker(socket, catalog, config, stop, stats))
                .map_err(|e| Error::Io(PathBuf::from("thread"), e))?;
            threads.push(handle);
        }
        let tcp_tasks = listeners
            .into_iter()
            .map(|l| {
                tokio::spawn(tcp::serve(
                    l,
                    catalog.clone(),
                    config.clone(),
                    tcp_stats.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Edge {
            catalog,
            bound,
            udp_stats,
            tcp_stats,
            stop_udp,
            stop_tcp,
            threads,
            tcp_tasks,
            background: Vec::new(),
            announcer: None,
        })
    }

    /// Replaces the catalog atomically: queries in flight finish on the old one.
    pub fn swap(&self, catalog: Catalog) {
        self.catalog.store(Arc::new(catalog));
    }

    /// Stops accepting, waits for the workers to leave their loops.
    pub async fn stop(self) {
        let background = self.background;
        let _ = tokio::time::timeout(BACKGROUND_STOP_GRACE, async move {
            for t in background {
                let _ = t.await;
            }
        })
        .await;
        self.stop_udp.store(true, Ordering::Relaxed);
        let _ = self.stop_tcp.send(true);
        for t in self.tcp_tasks {
            let _ = t.await;
        }
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Loads the zone directories, logging every zone that fails (file, line, reason).
pub fn load_and_log(
    source: &zones::ZoneSource,
    previous: Option<&Catalog>,
) -> Result<Catalog, Error> {
    let started = std::time::Instant::now();
    let (catalog, failures) = zones::load_catalog(source, previous)?;
    for f in &failures {
        tracing::error!(file = %f.path.display(), reason = %f.reason, kept_previous_version = f.kept_previous, "zone not loaded");
    }
    // Building a zone leaves freed parse buffers in malloc's arenas; hand them back to the OS so
    // the resident size reflects the catalog, not the load.
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let records: usize = catalog.zones().map(|z| z.record_count()).sum();
    tracing::info!(
        zones = catalog.len(),
        records,
        failed = failures.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "catalog loaded"
    );
    Ok(catalog)
}

/// Serves zone directories until SIGTERM or SIGINT; SIGHUP reloads them.
pub async fn run_static(options: EdgeOptions, source: zones::ZoneSource) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let catalog = load_and_log(&source, None)?;
    let mut hup = signal(SignalKind::hangup()).map_err(|e| Error::Io("SIGHUP".into(), e))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Io("SIGTERM".into(), e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Io("SIGINT".into(), e))?;
    let edge = Edge::start(&options, catalog)?;
    for addr in &edge.bound {
        tracing::info!(%addr, workers = options.workers, "serving DNS on UDP and TCP");
    }
    // The watchdog pings end with the process; a static edge has no shutdown channel of its own.
    let (_watchdog_stop, watchdog_rx) = watch::channel(false);
    ready_for_systemd(watchdog_rx);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                let previous = edge.catalog.load_full();
                let source = source.clone();
                let loaded = tokio::task::spawn_blocking(move || load_and_log(&source, Some(&previous))).await;
                match loaded {
                    Ok(Ok(catalog)) => edge.swap(catalog),
                    Ok(Err(e)) => tracing::error!(error = %e, "reload failed; still serving the previous catalog"),
                    Err(e) => tracing::error!(error = %e, "reload task failed"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("stopping");
    edge.stop().await;
    Ok(())
}

/// Serves what the control plane publishes: the cached catalog at once (static stability), then
/// every version from the catalog stream, until SIGTERM or SIGINT.
///
/// With an announcer, SIGTERM first withdraws the anycast routes, then keeps answering for
/// `shutdown_grace` (queries already routed here, and the router's reconvergence) before
/// stopping; a second signal cuts the grace short.
pub async fn run_controlled(
    options: EdgeOptions,
    sync_options: sync::SyncOptions,
    metrics_addr: Option<SocketAddr>,
    announce: Option<announce::AnnounceOptions>,
    shutdown_grace: std::time::Duration,
) -> Result<(), Error> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| Error::Io("SIGTERM".into(), e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::Io("SIGINT".into(), e))?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let edge =
        start_controlled(&options, sync_options, metrics_addr, announce, shutdown_rx).await?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    let _ = notify::notify("STOPPING=1");
    if let Some(announcer) = &edge.announcer {
        announcer.withdraw_for_shutdown().await;
        tracing::info!(
            grace_ms = shutdown_grace.as_millis() as u64,
            "withdrawn; answering through the grace period"
        );
        tokio::select! {
            _ = tokio::time::sleep(shutdown_grace) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    tracing::info!("stopping");
    let _ = shutdown_tx.send(true);
    edge.stop().await;
    Ok(())
}

/// Starts a controlled edge (sockets, cache, catalog stream, metrics) and returns it running.
pub async fn start_controlled(
    options: &EdgeOptions,
    sync_options: sync::SyncOptions,
    metrics_addr: Option<SocketAddr>,
    announce: Option<announce::AnnounceOptions>,
    shutdown: watch::Receiver<bool>,
) -> Result<Edge, Error> {
    let stats = Arc::new(sync::SyncStats::default());
    let mut initial = Catalog::new();
    if let Some(dir) = &sync_options.cache_dir {
        match sync::read_cache(dir) {
            Ok((version, catalog)) => {
                tracing::info!(version, zones = catalog.len(), "serving the cached catalog");
                stats.applied_version.store(version, Ordering::Relaxed);
                initial = catalog;
            }
            Err(reason) if dir.join("catalog.bin").exists() => {
                tracing::error!(dir = %dir.display(), %reason, "catalog cache ignored");
            }
            Err(_) => tracing::info!(dir = %dir.display(), "no catalog cache yet"),
        }
    }
    let mut edge = Edge::start(options, initial)?;
    for addr in &edge.bound {
        tracing::info!(%addr, workers = options.workers, edge = %sync_options.edge_id, pop = %sync_options.pop, "serving DNS on UDP and TCP");
    }
    // After the sockets are bound (Edge::start), so an announcement always has a server.
    if let Some(mut options) = announce {
        // The self-check queries what we bound (a wildcard bind is reached over loopback).
        options.self_check = edge.bound.first().map(|a| {
            let ip = match a.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            SocketAddr::new(ip, a.port())
        });
        let announcer = announce::Announcer::new(
            options,
            sync_options.pop.clone(),
            sync_options.edge_id.clone(),
            edge.catalog.clone(),
            stats.clone(),
        )?;
        edge.background
            .push(tokio::spawn(announcer.clone().run(shutdown.clone())));
        edge.announcer = Some(announcer);
    }
    let served = sync::Served {
        catalog: edge.catalog.clone(),
        stats: stats.clone(),
    };
    edge.background.push(tokio::spawn(probe::run(
        probe::ProberOptions {
            control: sync_options.control.clone(),
            edge_id: sync_options.edge_id.clone(),
            pop: sync_options.pop.clone(),
        },
        stats.clone(),
        shutdown.clone(),
    )));
    edge.background.push(tokio::spawn(sync::run(
        served,
        sync_options,
        shutdown.clone(),
    )));
    if let Some(addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Bind(addr, e))?;
        tokio::spawn(metrics::serve(
            listener,
            edge.udp_stats.clone(),
            edge.tcp_stats.clone(),
            stats,
            shutdown.clone(),
        ));
    }
    ready_for_systemd(shutdown);
    Ok(edge)
}

/// Tells systemd we serve (`Type=notify`) and, with `WatchdogSec=`, starts the pings.
fn ready_for_systemd(shutdown: watch::Receiver<bool>) {
    match notify::notify("READY=1") {
        Ok(true) => tracing::info!("told systemd we are ready"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, "systemd notify failed"),
    }
    if let Some(period) = notify::watchdog_period() {
        tracing::info!(period_ms = period.as_millis() as u64, "systemd watchdog on");
        tokio::spawn(notify::watchdog(period, shutdown));
    }
}
