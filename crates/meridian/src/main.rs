//! `meridian`: the one binary. Daemons (`edge`, `control`, `dev`) and the client commands
//! (`cluster`, `zone`, `record`, `change`, `edges`) that talk gRPC to the control plane.

mod client;
mod gameday;

/// mimalloc: the control plane's apply path allocates millions of small objects per import, and
/// glibc malloc spent about 40% of a follower's CPU there (consolidating fragmented bins).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's option setter (in the linked C library; `mi_option_t` is a C enum).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}
/// `mi_option_purge_delay` in mimalloc's `mi_option_t` (v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Return freed memory to the OS at once: mimalloc purges lazily, on later allocator activity,
/// and an idle edge that has just loaded a 1M-name zone would keep the loader's ~200 MB of
/// temporaries resident until its next catalog change.
fn allocator_setup() {
    // SAFETY: sets a documented option to a documented value; called before any other thread.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use meridian_core::ServerConfig;
use meridian_core::answer::UDP_PAYLOAD_DEFAULT;
use meridian_edge::EdgeOptions;
use meridian_edge::zones::ZoneSource;

#[derive(Parser)]
#[command(
    name = "meridian",
    version,
    about = "Self-hosted authoritative DNS platform"
)]
struct Cli {
    /// Control-plane API endpoints, tried in turn.
    #[arg(
        long,
        global = true,
        env = "MERIDIAN_API",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    api: Vec<String>,
    /// Output for people (table) or scripts (json).
    #[arg(long, global = true, value_enum, default_value_t = client::Output::Table)]
    output: client::Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DNS: from zone files (`--zones`) or from the control plane (`--control`).
    Edge(Box<EdgeArgs>),
    /// Check zone files and print what they hold, or the first error with its line.
    Check {
        /// Zone directories.
        #[arg(long = "zones", required = true)]
        zones: Vec<PathBuf>,
        /// Follow `$INCLUDE` directives.
        #[arg(long)]
        allow_include: bool,
    },
    /// Run a control node (API and Raft on one address).
    Control(ControlArgs),
    /// One process: a one-node control plane and an edge. The quick way to try Meridian.
    Dev(DevArgs),
    /// Cluster membership and status.
    #[command(subcommand)]
    Cluster(client::ClusterCmd),
    /// Hosted zones.
    #[command(subcommand)]
    Zone(client::ZoneCmd),
    /// Record sets.
    #[command(subcommand)]
    Record(client::RecordCmd),
    /// Change status.
    #[command(subcommand)]
    Change(client::ChangeCmd),
    /// Edges known to the control plane.
    #[command(subcommand)]
    Edges(client::EdgesCmd),
    /// Health checks (Route 53 HealthCheckConfig) and operator verdicts.
    #[command(subcommand)]
    Health(client::HealthCmd),
    /// CIDR collections for IP-based routing.
    #[command(subcommand)]
    Cidr(client::CidrCmd),
    /// Evaluate a query on the current catalog and health: the answer and the path taken.
    Explain(client::ExplainArgs),
    /// Failover game days: run a scenario while probing the anycast addresses; write a report.
    #[command(subcommand)]
    Gameday(GamedayCmd),
}

#[derive(Subcommand)]
enum GamedayCmd {
    /// Run SCENARIO.yaml (`${VAR}` taken from the environment); exit 1 if a step or figure fails.
    Run {
        scenario: PathBuf,
        /// Directory for report.md, report.json and timeline.svg (default gameday-NAME-TIME).
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct EdgeArgs {
    /// Directory of `<origin>.zone` files; repeatable. Static mode.
    #[arg(long = "zones", conflicts_with = "control")]
    zones: Vec<PathBuf>,
    /// Control endpoints (`host:port`, comma-separated). Controlled mode.
    #[arg(long, value_delimiter = ',')]
    control: Vec<String>,
    /// This edge's id (controlled mode; default: the identity).
    #[arg(long)]
    id: Option<String>,
    /// This edge's point of presence.
    #[arg(long, default_value = "default")]
    pop: String,
    /// Directory for the last applied catalog, served at start before the control plane answers.
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Address to serve on (UDP and TCP); repeatable. IPv6 as `[::1]:53`.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
    /// UDP worker threads per address (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Identity for NSID and CHAOS id.server (default: the host name).
    #[arg(long)]
    identity: Option<String>,
    /// Follow `$INCLUDE` in zone files (relative to the including file). Off: refused.
    #[arg(long)]
    allow_include: bool,
    /// Largest UDP answer, whatever the client offers.
    #[arg(long, default_value_t = UDP_PAYLOAD_DEFAULT)]
    udp_payload_max: u16,
    /// Serve Prometheus metrics on this address (controlled mode).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    #[command(flatten)]
    routing: RoutingArgs,
    #[command(flatten)]
    announce: AnnounceArgs,
}

/// Anycast: announcing this POP's prefixes through BIRD (controlled mode).
#[derive(clap::Args)]
struct AnnounceArgs {
    /// BIRD's control socket. With it, the edge enables its BIRD protocols while it serves
    /// (sockets bound, a catalog loaded, not drained) and disables them otherwise.
    #[arg(long)]
    bird_socket: Option<PathBuf>,
    /// BIRD protocol (name or pattern) holding the anycast routes; repeatable.
    #[arg(long = "bird-protocol", default_value = "anycast*")]
    bird_protocols: Vec<String>,
    /// A tun device this process creates and holds, up while announcing: BIRD static routes
    /// `via "NAME"` vanish when the process dies, even on SIGKILL. Needs CAP_NET_ADMIN.
    #[arg(long)]
    liveness_interface: Option<String>,
    /// After SIGTERM: withdraw, keep answering this long, then exit (default 2000 with
    /// --bird-socket: the router's reconvergence plus answers in flight).
    #[arg(long)]
    shutdown_grace_ms: Option<u64>,
    /// Withdraw when no control node has acknowledged a report for this long. Off by default:
    /// losing the control plane alone never withdraws (static stability).
    #[arg(long)]
    max_staleness_s: Option<u64>,
}

impl AnnounceArgs {
    fn options(&self) -> Result<Option<meridian_edge::announce::AnnounceOptions>> {
        let Some(socket) = &self.bird_socket else {
            anyhow::ensure!(
                self.liveness_interface.is_none() && self.max_staleness_s.is_none(),
                "--liveness-interface and --max-staleness-s need --bird-socket"
            );
            return Ok(None);
        };
        let options = meridian_edge::announce::AnnounceOptions {
            bird_socket: socket.clone(),
            protocols: self.bird_protocols.clone(),
            max_staleness: self.max_staleness_s.map(std::time::Duration::from_secs),
            liveness_interface: self.liveness_interface.clone(),
            // Set by the edge once its sockets are bound.
            self_check: None,
        };
        options.validate()?;
        Ok(Some(options))
    }

    fn grace(&self) -> std::time::Duration {
        let default = if self.bird_socket.is_some() { 2000 } else { 0 };
        std::time::Duration::from_millis(self.shutdown_grace_ms.unwrap_or(default))
    }
}

/// What routing policies read on this host.
#[derive(clap::Args, Clone, Default)]
struct RoutingArgs {
    /// MaxMind-format geo database (GeoLite2/GeoIP2 Country or City, DB-IP, IPinfo, or the
    /// CC0 geo-whois-asn-country database) for geolocation and geoproximity records.
    #[arg(long)]
    geoip_db: Option<PathBuf>,
    /// This POP's RTT to each region for latency records, `REGION=MS,...` (until health
    /// probes measure them).
    #[arg(long, value_delimiter = ',', value_parser = parse_region_rtt)]
    region_rtt: Vec<(String, u32)>,
}

fn parse_region_rtt(text: &str) -> Result<(String, u32), String> {
    let (region, ms) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not REGION=MS"))?;
    let ms: u32 = ms
        .parse()
        .map_err(|_| format!("{ms:?} is not a number of milliseconds"))?;
    if region.is_empty() || region.len() > meridian_core::policy::POLICY_LABEL_BYTES_MAX {
        return Err(format!("region {region:?} is not 1 to 128 bytes"));
    }
    Ok((region.to_string(), ms))
}

impl RoutingArgs {
    fn geo(&self) -> Result<Option<Arc<dyn meridian_core::policy::GeoLookup>>> {
        let Some(path) = &self.geoip_db else {
            return Ok(None);
        };
        let db = meridian_edge::geo::GeoDb::open(path)?;
        tracing::info!(path = %path.display(), kind = db.database_type(), "geo database loaded");
        Ok(Some(Arc::new(db)))
    }
}

#[derive(clap::Args)]
struct ControlArgs {
    /// Raft node id (unique in the cluster, > 0).
    #[arg(long)]
    id: u64,
    /// Data directory (RocksDB).
    #[arg(long)]
    data: PathBuf,
    /// Address for the API and Raft traffic.
    #[arg(long)]
    listen: SocketAddr,
    /// Address peers and clients use to reach this node (default: --listen).
    #[arg(long)]
    advertise: Option<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Geo database for `meridian explain --client/--ecs` (the one the edges use).
    #[arg(long)]
    geoip_db: Option<PathBuf>,
}

#[derive(clap::Args)]
struct DevArgs {
    /// Data directory.
    #[arg(long, default_value = "meridian-data")]
    data: PathBuf,
    /// DNS address (5353 belongs to mDNS).
    #[arg(long, default_value = "127.0.0.1:1053")]
    dns: SocketAddr,
    /// The embedded edge's point of presence.
    #[arg(long, default_value = "local")]
    pop: String,
    #[command(flatten)]
    routing: RoutingArgs,
}

fn main() {
    allocator_setup();
    // One line, no backtrace: scripts and people read the reason, not our stack.
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let client = client::Client::new(cli.api.clone(), cli.output);
    match cli.command {
        Command::Edge(args) => edge(*args),
        Command::Check {
            zones,
            allow_include,
        } => check(&zones, allow_include),
        Command::Control(args) => runtime(4)?.block_on(control(args)),
        Command::Dev(args) => {
            // `--api` names where the embedded control node listens.
            let api = cli
                .api
                .first()
                .map(|a| a.trim_start_matches("http://").to_string())
                .unwrap_or_default();
            let api: SocketAddr = api
                .parse()
                .with_context(|| format!("--api {api:?} is not ADDR:PORT"))?;
            runtime(4)?.block_on(dev(args, api))
        }
        Command::Cluster(cmd) => runtime(2)?.block_on(client.cluster(cmd)),
        Command::Zone(cmd) => runtime(2)?.block_on(client.zone(cmd)),
        Command::Record(cmd) => runtime(2)?.block_on(client.record(cmd)),
        Command::Health(cmd) => runtime(2)?.block_on(client.health(cmd)),
        Command::Cidr(cmd) => runtime(2)?.block_on(client.cidr(cmd)),
        Command::Explain(args) => runtime(2)?.block_on(client.explain(args)),
        Command::Change(cmd) => runtime(2)?.block_on(client.change(cmd)),
        Command::Edges(cmd) => runtime(2)?.block_on(client.edges(cmd)),
        Command::Gameday(GamedayCmd::Run { scenario, report }) => {
            runtime(2)?.block_on(gameday::run(client, gameday::Options { scenario, report }))
        }
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn edge(args: EdgeArgs) -> Result<()> {
    let workers = args.workers.unwrap_or_else(default_workers);
    let identity = args.identity.unwrap_or_else(hostname);
    let options = EdgeOptions {
        listen: args.listen.clone(),
        workers,
        config: ServerConfig {
            identity: identity.clone().into_bytes(),
            udp_payload_max: args.udp_payload_max,
            geo: args.routing.geo()?,
            region_rtt_ms: args.routing.region_rtt.clone(),
            pop: args.pop.clone(),
        },
    };
    let runtime = runtime(workers.clamp(1, 4))?;
    if !args.control.is_empty() {
        let sync = meridian_edge::sync::SyncOptions {
            control: args.control,
            edge_id: args.id.unwrap_or_else(|| identity.clone()),
            pop: args.pop,
            cache_dir: args.cache,
            identity,
            addresses: args.listen.iter().map(|a| a.to_string()).collect(),
            region_rtt_ms: args.routing.region_rtt.clone(),
        };
        let announce = args.announce.options()?;
        let grace = args.announce.grace();
        runtime.block_on(meridian_edge::run_controlled(
            options,
            sync,
            args.metrics,
            announce,
            grace,
        ))?;
        return Ok(());
    }
    anyhow::ensure!(
        args.announce.bird_socket.is_none(),
        "--bird-socket needs a controlled edge (--control): drains come from the control plane"
    );
    anyhow::ensure!(
        !args.zones.is_empty(),
        "give --zones DIR (static) or --control ADDR (controlled)"
    );
    let source = ZoneSource {
        dirs: args.zones,
        allow_include: args.allow_include,
    };
    runtime.block_on(meridian_edge::run_static(options, source))?;
    Ok(())
}

async fn control(args: ControlArgs) -> Result<()> {
    let advertise = args.advertise.unwrap_or_else(|| args.listen.to_string());
    let node = meridian_control::ControlNode::open(args.id, &args.data, advertise.clone()).await?;
    if let Some(geo) = (RoutingArgs {
        geoip_db: args.geoip_db.clone(),
        region_rtt: Vec::new(),
    })
    .geo()?
    {
        let _ = node.geo.set(geo);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    if let Some(addr) = args.metrics {
        let metrics_listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding metrics on {addr}"))?;
        tokio::spawn(meridian_control::metrics::serve(
            metrics_listener,
            node.clone(),
        ));
    }
    tracing::info!(id = args.id, listen = %args.listen, %advertise, "control node serving");
    meridian_control::api::serve(node.clone(), listener, shutdown_signal()).await?;
    let _ = node.raft.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn dev(args: DevArgs, api_listen: SocketAddr) -> Result<()> {
    let api_addr = api_listen.to_string();
    let node = meridian_control::ControlNode::open(1, &args.data.join("control"), api_addr.clone())
        .await?;
    let geo = args.routing.geo()?;
    if let Some(geo) = &geo {
        let _ = node.geo.set(geo.clone());
    }
    let listener = tokio::net::TcpListener::bind(api_listen)
        .await
        .with_context(|| format!("binding the API on {api_listen}"))?;
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let node = node.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            meridian_control::api::serve(node, listener, async move {
                let _ = stop.changed().await;
            })
            .await
        })
    };
    if !node
        .raft
        .is_initialized()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        let mut nodes = std::collections::BTreeMap::new();
        nodes.insert(
            1,
            openraft::BasicNode {
                addr: api_addr.clone(),
            },
        );
        node.initialize(nodes).await?;
    }
    let options = EdgeOptions {
        listen: vec![args.dns],
        workers: default_workers().min(2),
        config: ServerConfig {
            identity: b"dev".to_vec(),
            udp_payload_max: UDP_PAYLOAD_DEFAULT,
            geo,
            region_rtt_ms: args.routing.region_rtt.clone(),
            pop: args.pop.clone(),
        },
    };
    let sync = meridian_edge::sync::SyncOptions {
        control: vec![api_addr.clone()],
        edge_id: "dev".to_string(),
        pop: args.pop.clone(),
        cache_dir: Some(args.data.join("edge-cache")),
        identity: "dev".to_string(),
        addresses: vec![args.dns.to_string()],
        region_rtt_ms: args.routing.region_rtt.clone(),
    };
    let edge = meridian_edge::start_controlled(&options, sync, None, None, stop_rx.clone()).await?;
    eprintln!(
        "meridian dev: API on http://{api_addr}, DNS on {} (UDP and TCP), data in {}\n  try: meridian zone create example.com && dig @{} -p {} example.com SOA",
        args.dns,
        args.data.display(),
        args.dns.ip(),
        args.dns.port()
    );
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = stop_rx.changed() => {}
    }
    let _ = stop_tx.send(true);
    edge.stop().await;
    let _ = server.await;
    let _ = node.raft.shutdown().await;
    Ok(())
}

fn check(dirs: &[PathBuf], allow_include: bool) -> Result<()> {
    let mut failed = 0;
    // A closed pipe (`| head`) ends the listing quietly instead of panicking in println!.
    let mut out = std::io::stdout().lock();
    for (origin, path) in meridian_edge::zones::zone_files(dirs)? {
        let line = match meridian_edge::zones::load_zone(&origin, &path, allow_include) {
            Ok(zone) => format!(
                "{}: {} records, {} names, serial {}",
                origin,
                zone.record_count(),
                zone.node_count(),
                zone.serial()
            ),
            Err(reason) => {
                failed += 1;
                format!("{}: {reason}", path.display())
            }
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    anyhow::ensure!(failed == 0, "{failed} zone(s) failed");
    Ok(())
}
