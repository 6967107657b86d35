//! `meridian-bench`: load generators for the control plane and the catalog stream. Not a test:
//! `bench/control.sh` and `bench/propagation.sh` run it against real processes and write
//! `bench/results/`.
//!
//! - `commit`: many ChangeRecordSets calls in flight; commit latency p50/p99 and batches/s.
//! - `fill`: loads a zone with N record sets in batches (setup for the big-zone runs).
//! - `propagation`: a change, then query every edge over UDP until all answer the new data;
//!   the time from the call's return to the last edge answering, p50/p99.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::{Parser, Subcommand};
use meridian_proto::v1;
use meridian_proto::v1::zones_client::ZonesClient;
use tonic::transport::Channel;

#[derive(Parser)]
struct Cli {
    /// Control endpoint (host:port).
    #[arg(long, default_value = "127.0.0.1:50051")]
    api: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Commit {
        #[arg(long, default_value = "bench.test.")]
        zone: String,
        /// Batches to send.
        #[arg(long, default_value_t = 5000)]
        batches: usize,
        /// Record sets per batch.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Calls in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Target batches/s (0: as fast as possible).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
    },
    Fill {
        #[arg(long, default_value = "big.test.")]
        zone: String,
        #[arg(long)]
        sets: usize,
        #[arg(long, default_value_t = 10_000)]
        batch_size: usize,
    },
    Propagation {
        #[arg(long, default_value = "bench.test.")]
        zone: String,
        /// Edge DNS addresses (comma-separated).
        #[arg(long, value_delimiter = ',')]
        edges: Vec<SocketAddr>,
        #[arg(long, default_value_t = 200)]
        changes: usize,
    },
}

async fn connect(api: &str) -> Result<ZonesClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{api}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("connecting to {api}"))?;
    Ok(ZonesClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

async fn ensure_zone(client: &mut ZonesClient<Channel>, zone: &str) -> Result<()> {
    let r = client
        .create_zone(v1::CreateZoneRequest {
            name: zone.to_string(),
            caller_reference: format!("bench-{zone}"),
            ..Default::default()
        })
        .await;
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.message().contains("already exists") => Ok(()),
        Err(s) => Err(anyhow!("create zone: {}", s.message())),
    }
}

fn batch(zone: &str, start: usize, size: usize, tag: &str) -> v1::ChangeRecordSetsRequest {
    v1::ChangeRecordSetsRequest {
        zone: zone.to_string(),
        comment: String::new(),
        changes: (start..start + size)
            .map(|i| v1::Change {
                action: v1::Action::Upsert as i32,
                record_set: Some(v1::RecordSet {
                    name: format!("h{i}.{zone}"),
                    r#type: "TXT".into(),
                    ttl: 60,
                    values: vec![format!("\"{tag}{i}\"")],
                    ..Default::default()
                }),
            })
            .collect(),
        idempotency_token: String::new(),
        expected_zone_version: None,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Commit {
            zone,
            batches,
            batch_size,
            concurrency,
            rate,
        } => {
            let mut client = connect(&cli.api).await?;
            ensure_zone(&mut client, &zone).await?;
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let mut client = client.clone();
                let next = next.clone();
                let zone = zone.clone();
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= batches {
                            return Ok::<_, anyhow::Error>(lat);
                        }
                        if rate > 0.0 {
                            let due = started + Duration::from_secs_f64(i as f64 / rate);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let req = batch(
                            &zone,
                            (i * batch_size) % 1_000_000,
                            batch_size,
                            &format!("b{i}-"),
                        );
                        let t = Instant::now();
                        client
                            .change_record_sets(req)
                            .await
                            .map_err(|s| anyhow!("{}", s.message()))?;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await??);
            }
            let elapsed = started.elapsed().as_secs_f64();
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{{\"batches\": {}, \"batch_size\": {batch_size}, \"concurrency\": {concurrency}, \"rate_target\": {rate}, \"seconds\": {elapsed:.3}, \"batches_per_s\": {:.1}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
                lat.len(),
                lat.len() as f64 / elapsed,
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(f64::NAN)
            );
        }
        Cmd::Fill {
            zone,
            sets,
            batch_size,
        } => {
            let mut client = connect(&cli.api).await?;
            ensure_zone(&mut client, &zone).await?;
            let started = Instant::now();
            let mut done = 0;
            while done < sets {
                let n = batch_size.min(sets - done);
                client
                    .change_record_sets(batch(&zone, done, n, "f"))
                    .await
                    .map_err(|s| anyhow!("{}", s.message()))?;
                done += n;
            }
            println!(
                "{{\"sets\": {sets}, \"seconds\": {:.3}}}",
                started.elapsed().as_secs_f64()
            );
        }
        Cmd::Propagation {
            zone,
            edges,
            changes,
        } => {
            let mut client = connect(&cli.api).await?;
            ensure_zone(&mut client, &zone).await?;
            let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
            socket.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut lat = Vec::new();
            for c in 0..changes {
                let value = format!("p{c}-{}", std::process::id());
                let req = v1::ChangeRecordSetsRequest {
                    zone: zone.clone(),
                    comment: String::new(),
                    changes: vec![v1::Change {
                        action: v1::Action::Upsert as i32,
                        record_set: Some(v1::RecordSet {
                            name: format!("probe.{zone}"),
                            r#type: "TXT".into(),
                            ttl: 0,
                            values: vec![format!("\"{value}\"")],
                            ..Default::default()
                        }),
                    }],
                    idempotency_token: String::new(),
                    expected_zone_version: None,
                };
                client
                    .change_record_sets(req)
                    .await
                    .map_err(|s| anyhow!("{}", s.message()))?;
                let t0 = Instant::now();
                let mut pending: Vec<SocketAddr> = edges.clone();
                let mut id: u16 = 0;
                while !pending.is_empty() {
                    anyhow::ensure!(
                        t0.elapsed() < Duration::from_secs(30),
                        "edges {pending:?} never answered change {c}"
                    );
                    let mut still = Vec::new();
                    for edge in pending {
                        id = id.wrapping_add(1);
                        if !answers(&socket, edge, id, &zone, value.as_bytes())? {
                            still.push(edge);
                        }
                    }
                    pending = still;
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!(
                "{{\"edges\": {}, \"changes\": {}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
                edges.len(),
                lat.len(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99),
                lat.last().copied().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(())
}

/// One UDP query for `probe.<zone>` TXT; whether the answer holds `want`.
fn answers(
    socket: &std::net::UdpSocket,
    edge: SocketAddr,
    id: u16,
    zone: &str,
    want: &[u8],
) -> Result<bool> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in format!("probe.{zone}").trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 16, 0, 1]);
    socket.send_to(&q, edge)?;
    let mut buf = [0u8; 1500];
    loop {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) if n >= 2 && buf[..2] == id.to_be_bytes() => {
                return Ok(buf[..n].windows(want.len()).any(|w| w == want));
            }
            Ok(_) => continue,
            Err(_) => return Ok(false),
        }
    }
}
