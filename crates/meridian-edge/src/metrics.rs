//! Prometheus text-format metrics over plain HTTP (`GET /metrics`): catalog version and lag,
//! deltas and full catalogs applied, apply time, queries by rcode and transport.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::sync::SyncStats;
use crate::tcp::TcpStats;
use crate::udp::UdpStats;

/// Bytes of an HTTP request we read before answering: a scrape is one short GET.
const REQUEST_BYTES_MAX: usize = 4096;

const RCODE_NAMES: [&str; 24] = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "DSOTYPENI",
    "RCODE12",
    "RCODE13",
    "RCODE14",
    "RCODE15",
    "BADVERS",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
];

pub fn render(udp: &[Arc<UdpStats>], tcp: &TcpStats, sync: &SyncStats) -> String {
    let mut out = String::new();
    let applied = sync.applied_version.load(Ordering::Relaxed);
    let newest = sync.newest_version.load(Ordering::Relaxed).max(applied);
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_catalog_version gauge\nmeridian_edge_catalog_version {applied}"
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_catalog_lag_versions gauge\nmeridian_edge_catalog_lag_versions {}",
        newest - applied
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_deltas_applied_total counter\nmeridian_edge_deltas_applied_total {}",
        sync.deltas_applied.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_full_catalogs_applied_total counter\nmeridian_edge_full_catalogs_applied_total {}",
        sync.full_applied.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_resyncs_total counter\nmeridian_edge_resyncs_total {}",
        sync.resyncs.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_health_probes_total counter\nmeridian_edge_health_probes_total{{result=\"ok\"}} {}\nmeridian_edge_health_probes_total{{result=\"fail\"}} {}",
        sync.probes_ok.load(Ordering::Relaxed),
        sync.probes_failed.load(Ordering::Relaxed)
    );
    let reason = crate::announce::Reason::from_u8(sync.announce_reason.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "# HELP meridian_edge_announced 1 while this edge has its anycast routes enabled in BIRD\n# TYPE meridian_edge_announced gauge\nmeridian_edge_announced{{reason=\"{}\"}} {}",
        reason.as_str(),
        u8::from(sync.announced.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_drained gauge\nmeridian_edge_drained {}",
        u8::from(sync.drained.load(Ordering::Relaxed))
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_announce_changes_total counter\nmeridian_edge_announce_changes_total {}",
        sync.announce_changes.load(Ordering::Relaxed)
    );
    let contact = sync.last_contact_ms.load(Ordering::Relaxed);
    if contact > 0 {
        let _ = writeln!(
            out,
            "# HELP meridian_edge_control_contact_age_seconds since a control node last acknowledged a report\n# TYPE meridian_edge_control_contact_age_seconds gauge\nmeridian_edge_control_contact_age_seconds {:.3}",
            crate::now_ms().saturating_sub(contact) as f64 / 1e3
        );
    }
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_apply_seconds_last gauge\nmeridian_edge_apply_seconds_last {:.6}",
        sync.apply_micros_last.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_apply_seconds_total counter\nmeridian_edge_apply_seconds_total {:.6}",
        sync.apply_micros_total.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "# TYPE meridian_edge_replies_total counter");
    for (code, name) in RCODE_NAMES.iter().enumerate() {
        let by_transport = [
            (
                "udp",
                udp.iter()
                    .map(|s| s.rcodes[code].load(Ordering::Relaxed))
                    .sum::<u64>(),
            ),
            ("tcp", tcp.rcodes[code].load(Ordering::Relaxed)),
        ];
        for (transport, n) in by_transport {
            if n > 0 {
                let _ = writeln!(
                    out,
                    "meridian_edge_replies_total{{transport=\"{transport}\",rcode=\"{name}\"}} {n}"
                );
            }
        }
    }
    let _ = writeln!(out, "# TYPE meridian_edge_udp_answer_seconds histogram");
    let mut cumulative = 0u64;
    for (i, bound) in crate::udp::LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += udp
            .iter()
            .map(|s| s.latency_buckets[i].load(Ordering::Relaxed))
            .sum::<u64>();
        let le = if *bound == u64::MAX {
            "+Inf".to_string()
        } else {
            format!("{}", *bound as f64 / 1e6)
        };
        let _ = writeln!(
            out,
            "meridian_edge_udp_answer_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "meridian_edge_udp_answer_seconds_count {cumulative}");
    let _ = writeln!(out, "# TYPE meridian_edge_queries_total counter");
    let udp_queries: u64 = udp.iter().map(|s| s.queries.load(Ordering::Relaxed)).sum();
    let _ = writeln!(
        out,
        "meridian_edge_queries_total{{transport=\"udp\"}} {udp_queries}"
    );
    let _ = writeln!(
        out,
        "meridian_edge_queries_total{{transport=\"tcp\"}} {}",
        tcp.queries.load(Ordering::Relaxed)
    );
    let dropped: u64 = udp.iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum();
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_dropped_total counter\nmeridian_edge_dropped_total{{transport=\"udp\"}} {dropped}"
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_edge_tcp_connections_total counter\nmeridian_edge_tcp_connections_total {}",
        tcp.connections.load(Ordering::Relaxed)
    );
    out
}

pub async fn serve(
    listener: TcpListener,
    udp: Vec<Arc<UdpStats>>,
    tcp: Arc<TcpStats>,
    sync: Arc<SyncStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (mut stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(c) => c, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let body = render(&udp, &tcp, &sync);
        tokio::spawn(async move {
            let mut buf = vec![0u8; REQUEST_BYTES_MAX];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut buf))
                .await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
