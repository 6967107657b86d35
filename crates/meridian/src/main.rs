//! `meridian`: the one binary. Daemons (`edge`) and, as later issues land, the control node,
//! `dev` and the client commands.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve zone files from directories (every `<origin>.zone`), UDP and TCP.
    Edge(EdgeArgs),
    /// Check zone files and print what they hold, or the first error with its line.
    Check {
        /// Zone directories.
        #[arg(long = "zones", required = true)]
        zones: Vec<PathBuf>,
        /// Follow `$INCLUDE` directives.
        #[arg(long)]
        allow_include: bool,
    },
}

#[derive(clap::Args)]
struct EdgeArgs {
    /// Directory of `<origin>.zone` files; repeatable.
    #[arg(long = "zones", required = true)]
    zones: Vec<PathBuf>,
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
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Edge(args) => edge(args),
        Command::Check {
            zones,
            allow_include,
        } => check(&zones, allow_include),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn edge(args: EdgeArgs) -> Result<()> {
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let options = EdgeOptions {
        listen: args.listen,
        workers,
        config: ServerConfig {
            identity: args.identity.unwrap_or_else(hostname).into_bytes(),
            udp_payload_max: args.udp_payload_max,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.clamp(1, 4))
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let source = ZoneSource {
        dirs: args.zones,
        allow_include: args.allow_include,
    };
    runtime.block_on(meridian_edge::run_static(options, source))?;
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
