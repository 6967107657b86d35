//! Prometheus text-format metrics of a control node (`meridian control --metrics ADDR`): Raft
//! role, term, commit and applied index, catalog version, API calls by method and code, and the
//! commit latency of writes as a histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::node::ControlNode;

/// Upper bounds (seconds) of the commit-latency buckets: fsync-bound commits sit around a
/// millisecond; the top buckets catch elections and slow disks.
pub const COMMIT_BUCKETS_S: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0,
];
/// Bytes of an HTTP request read before answering: a scrape is one short GET.
const REQUEST_BYTES_MAX: usize = 4096;

#[derive(Default, Debug)]
pub struct ApiMetrics {
    /// (method, gRPC code) → calls.
    calls: Mutex<BTreeMap<(&'static str, String), u64>>,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS_S.len()],
    commit_count: AtomicU64,
    commit_micros: AtomicU64,
    /// Health transitions this node wrote (as leader), and the last one's detection time: from
    /// the first failed (or, for a recovery, successful) probe of the run that decided it to
    /// the transition being INSYNC (every live edge serves it).
    pub health_transitions: AtomicU64,
    pub health_detect_millis_last: AtomicU64,
}

impl ApiMetrics {
    pub fn call(&self, method: &'static str, code: tonic::Code) {
        let mut calls = self.calls.lock().expect("metrics lock");
        *calls.entry((method, format!("{code:?}"))).or_default() += 1;
    }

    pub fn commit(&self, elapsed: Duration) {
        let s = elapsed.as_secs_f64();
        for (i, bound) in COMMIT_BUCKETS_S.iter().enumerate() {
            if s <= *bound {
                self.commit_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.commit_count.fetch_add(1, Ordering::Relaxed);
        self.commit_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }
}

pub fn render(node: &ControlNode) -> String {
    let m = node.raft.metrics().borrow().clone();
    let mut out = String::new();
    let role = format!("{:?}", m.state);
    let _ = writeln!(out, "# TYPE meridian_raft_role gauge");
    for r in ["Leader", "Follower", "Candidate", "Learner", "Shutdown"] {
        let _ = writeln!(
            out,
            "meridian_raft_role{{role=\"{r}\"}} {}",
            (role == r) as u8
        );
    }
    let _ = writeln!(
        out,
        "# TYPE meridian_raft_term gauge\nmeridian_raft_term {}",
        m.current_term
    );
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let _ = writeln!(
        out,
        "# TYPE meridian_raft_applied_index gauge\nmeridian_raft_applied_index {applied}"
    );
    let committed = node.committed_index.load(Ordering::Relaxed).max(applied);
    let _ = writeln!(
        out,
        "# TYPE meridian_raft_commit_index gauge\nmeridian_raft_commit_index {committed}"
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_raft_has_leader gauge\nmeridian_raft_has_leader {}",
        m.current_leader.is_some() as u8
    );
    let version = node.sm.state.read().expect("state lock").catalog_version;
    let _ = writeln!(
        out,
        "# TYPE meridian_catalog_version gauge\nmeridian_catalog_version {version}"
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_health_transitions_total counter\nmeridian_health_transitions_total {}",
        node.metrics.health_transitions.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# TYPE meridian_health_detection_seconds_last gauge\nmeridian_health_detection_seconds_last {:.3}",
        node.metrics
            .health_detect_millis_last
            .load(Ordering::Relaxed) as f64
            / 1000.0
    );
    let _ = writeln!(out, "# TYPE meridian_api_requests_total counter");
    for ((method, code), n) in node.metrics.calls.lock().expect("metrics lock").iter() {
        let _ = writeln!(
            out,
            "meridian_api_requests_total{{method=\"{method}\",code=\"{code}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# TYPE meridian_batch_commit_seconds histogram");
    for (i, bound) in COMMIT_BUCKETS_S.iter().enumerate() {
        let _ = writeln!(
            out,
            "meridian_batch_commit_seconds_bucket{{le=\"{bound}\"}} {}",
            node.metrics.commit_buckets[i].load(Ordering::Relaxed)
        );
    }
    let count = node.metrics.commit_count.load(Ordering::Relaxed);
    let _ = writeln!(
        out,
        "meridian_batch_commit_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "meridian_batch_commit_seconds_sum {:.6}",
        node.metrics.commit_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(out, "meridian_batch_commit_seconds_count {count}");
    out
}

/// Serves `GET /metrics` (any path) until the task is dropped.
pub async fn serve(listener: TcpListener, node: Arc<ControlNode>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let body = render(&node);
        tokio::spawn(async move {
            let mut buf = vec![0u8; REQUEST_BYTES_MAX];
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
        });
    }
}
