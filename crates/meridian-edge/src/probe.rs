//! Health probing from this edge: the checks the control plane assigns to it (its POP's share,
//! spread over the POP's edges), probed on their interval with jitter, bounded concurrency and
//! timeouts; every result, with its RTT, is reported to every control node.
//!
//! The decision is not made here: a POP's verdict and the check's status by quorum are the
//! control plane leader's (`meridian_core::health`), so every edge answers the same.
//! Probes: TCP (connect); HTTP, HTTPS and their `_STR_MATCH` forms (GET, status, first 5,120
//! body bytes). HTTPS sends SNI (`FullyQualifiedDomainName`) and, as Route 53, does not validate
//! the certificate unless the check asks (`VerifyCertificate`): a health check asks whether the
//! service answers, and self-signed or expired certificates are common on origin servers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_core::health::{self, CheckKind, HealthCheckSpec, SEARCH_BYTES_MAX};
use meridian_proto::v1;
use meridian_proto::v1::edge_sync_client::EdgeSyncClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, watch};

/// How often the assignment is refreshed (a new check starts being probed within this).
pub const ASSIGNMENT_REFRESH: Duration = Duration::from_secs(2);
/// Probes in flight at once per edge: bounds sockets and memory whatever the check count.
pub const PROBES_IN_FLIGHT_MAX: usize = 256;
/// Checks one edge probes at most.
pub const ASSIGNED_CHECKS_MAX: usize = 10_000;
/// Results waiting to be reported; beyond this the oldest are dropped (the next ones matter).
pub const RESULTS_QUEUE_MAX: usize = 20_000;
/// Results are sent at least this often: part of the failover time budget.
pub const REPORT_FLUSH: Duration = Duration::from_millis(50);
/// Scheduler tick: probe start times are this precise.
const TICK: Duration = Duration::from_millis(20);
/// HTTP response bytes read at most (headers and the searched start of the body).
const HTTP_READ_BYTES_MAX: usize = 16 * 1024 + SEARCH_BYTES_MAX;

#[derive(Clone, Debug)]
pub struct ProberOptions {
    pub control: Vec<String>,
    pub edge_id: String,
    pub pop: String,
}

struct Scheduled {
    spec: Arc<HealthCheckSpec>,
    config: String,
    next: Instant,
}

fn jitter(id: &str, interval_ms: u32) -> Duration {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    Duration::from_millis(h % u64::from(interval_ms.max(1)))
}

async fn client(addr: &str) -> Option<EdgeSyncClient<tonic::transport::Channel>> {
    let url = if addr.starts_with("http") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(url)
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2));
    Some(EdgeSyncClient::new(endpoint.connect_lazy()))
}

/// Runs until `stop` flips.
pub async fn run(
    options: ProberOptions,
    stats: Arc<crate::sync::SyncStats>,
    mut stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::channel::<v1::ProbeResult>(RESULTS_QUEUE_MAX);
    let reporter = tokio::spawn(report(options.clone(), rx, stop.clone()));
    // Assignments are fetched by their own task: a control node that does not answer delays
    // the next assignment, never a probe.
    let (assign_tx, mut assign_rx) = watch::channel::<Option<Vec<v1::ProbeAssignment>>>(None);
    tokio::spawn(fetch_loop(options.clone(), assign_tx, stop.clone()));
    let permits = Arc::new(Semaphore::new(PROBES_IN_FLIGHT_MAX));
    let mut schedule: HashMap<String, Scheduled> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        if assign_rx.has_changed().unwrap_or(false) {
            let latest = assign_rx.borrow_and_update().clone();
            if let Some(assigned) = latest {
                let mut next: HashMap<String, Scheduled> = HashMap::new();
                for a in assigned.into_iter().take(ASSIGNED_CHECKS_MAX) {
                    if let Some(old) = schedule
                        .remove(&a.check_id)
                        .filter(|s| s.config == a.config_json)
                    {
                        next.insert(a.check_id, old);
                        continue;
                    }
                    match health::parse_config(&a.config_json) {
                        Ok(spec) => {
                            let first =
                                Instant::now() + jitter(&a.check_id, spec.request_interval_ms);
                            next.insert(
                                a.check_id,
                                Scheduled {
                                    spec: Arc::new(spec),
                                    config: a.config_json,
                                    next: first,
                                },
                            );
                        }
                        Err(e) => {
                            tracing::warn!(check = %a.check_id, error = %e, "unusable health check")
                        }
                    }
                }
                schedule = next;
            }
        }
        let now = Instant::now();
        for (id, s) in schedule.iter_mut() {
            if s.next > now {
                continue;
            }
            let interval = Duration::from_millis(u64::from(s.spec.request_interval_ms));
            s.next += interval;
            if s.next < now {
                // Fell behind (a pause): skip the missed probes rather than bursting.
                s.next = now + interval;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                continue; // saturated: this round is skipped for this check
            };
            let (id, spec, tx, stats) = (id.clone(), s.spec.clone(), tx.clone(), stats.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let (ok, detail) = probe(&spec).await;
                let counter = if ok {
                    &stats.probes_ok
                } else {
                    &stats.probes_failed
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let result = v1::ProbeResult {
                    check_id: id,
                    ok,
                    rtt_ms: started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32,
                    detail,
                    at_unix_ms: crate::now_ms(),
                };
                let _ = tx.try_send(result);
                drop(permit);
            });
        }
    }
    drop(tx);
    let _ = reporter.await;
}

/// A control node's answer is awaited at most this long (a hung node costs this, once).
const CONTROL_CALL_TIMEOUT: Duration = Duration::from_millis(500);

/// Fetches the assignment every [`ASSIGNMENT_REFRESH`] from the first control node that
/// answers, starting with the one that answered last.
async fn fetch_loop(
    options: ProberOptions,
    out: watch::Sender<Option<Vec<v1::ProbeAssignment>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut clients = Vec::new();
    for c in &options.control {
        if let Some(cl) = client(c).await {
            clients.push(cl);
        }
    }
    let mut first = 0usize;
    loop {
        for k in 0..clients.len() {
            let i = (first + k) % clients.len();
            let req = v1::ProbeAssignmentsRequest {
                edge_id: options.edge_id.clone(),
                pop: options.pop.clone(),
            };
            if let Ok(Ok(r)) =
                tokio::time::timeout(CONTROL_CALL_TIMEOUT, clients[i].probe_assignments(req)).await
            {
                first = i;
                let _ = out.send(Some(r.into_inner().checks));
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ASSIGNMENT_REFRESH) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Sends results to every control node (each keeps the views a future leader decides from).
async fn report(
    options: ProberOptions,
    mut rx: mpsc::Receiver<v1::ProbeResult>,
    mut stop: watch::Receiver<bool>,
) {
    let mut clients = Vec::new();
    for c in &options.control {
        if let Some(cl) = client(c).await {
            clients.push(cl);
        }
    }
    let mut batch = Vec::new();
    loop {
        let deadline = tokio::time::sleep(REPORT_FLUSH);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => {
                        batch.push(r);
                        // Report a result at once when nothing else is queued: detection
                        // time is part of the failover budget.
                        if rx.is_empty() {
                            break;
                        }
                    }
                    None => return,
                },
                _ = &mut deadline => break,
                _ = stop.changed() => return,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let report = v1::ProbeReport {
            edge_id: options.edge_id.clone(),
            pop: options.pop.clone(),
            results: std::mem::take(&mut batch),
        };
        // To every node at once, each with its own timeout: a hung node delays nobody.
        for c in &clients {
            let (mut c, report) = (c.clone(), report.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(CONTROL_CALL_TIMEOUT, c.report_probes(report)).await;
            });
        }
    }
}

/// One probe: `(passed, what happened)`.
pub async fn probe(spec: &HealthCheckSpec) -> (bool, String) {
    let timeout = Duration::from_millis(u64::from(spec.timeout_ms));
    let outcome = tokio::time::timeout(timeout, async {
        let addr = endpoint(spec).await?;
        let ip = addr.ip();
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        if spec.kind == CheckKind::Tcp {
            return Ok((true, "connected".to_string()));
        }
        let host = spec.fqdn.clone().unwrap_or_else(|| match ip {
            std::net::IpAddr::V6(_) => format!("[{ip}]"),
            std::net::IpAddr::V4(_) => ip.to_string(),
        });
        if !spec.kind.uses_tls() {
            return http_exchange(stream, spec, &host).await;
        }
        let name = match &spec.fqdn {
            Some(f) => rustls::pki_types::ServerName::try_from(f.clone())
                .map_err(|_| format!("{f:?} is not a TLS server name"))?,
            None => rustls::pki_types::ServerName::IpAddress(ip.into()),
        };
        let _ = stream.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(tls_config(spec.verify_certificate))
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        http_exchange(tls, spec, &host).await
    })
    .await;
    match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (false, e),
        Err(_) => (false, format!("timeout after {} ms", spec.timeout_ms)),
    }
}

/// The address to probe: `IPAddress`, else `FullyQualifiedDomainName` resolved now by the
/// host's resolver (inside the probe's timeout, so a slow resolver counts as a failed probe, as
/// in Route 53). Resolving before every probe follows the endpoint's DNS changes; the host's
/// resolver cache keeps that cheap. IPv4 is preferred, as Route 53 resolves A records.
async fn endpoint(spec: &HealthCheckSpec) -> Result<SocketAddr, String> {
    if let Some(ip) = spec.ip {
        return Ok(SocketAddr::new(ip, spec.port));
    }
    let Some(name) = spec.fqdn.as_deref() else {
        return Err("no IPAddress and no FullyQualifiedDomainName".into());
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, spec.port))
        .await
        .map_err(|e| format!("resolving {name}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("resolving {name}: no address"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    let mut parts = text.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// One HTTP/1.1 GET over `stream`: `(passed, "HTTP <status>")`.
async fn http_exchange<S>(
    mut stream: S,
    spec: &HealthCheckSpec,
    host: &str,
) -> Result<(bool, String), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Meridian-Health-Check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        spec.resource_path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; HTTP_READ_BYTES_MAX];
    let mut len = 0;
    loop {
        let n = match stream.read(&mut buf[len..]).await {
            Ok(n) => n,
            // A TLS peer that closes without close_notify still sent its answer.
            Err(e) if len > 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(e.to_string()),
        };
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            break;
        }
        // Enough when the headers and the searched part of the body are in.
        if let Some(end) = find(&buf[..len], b"\r\n\r\n")
            && (spec.search_string.is_none() || len >= end + 4 + SEARCH_BYTES_MAX)
        {
            break;
        }
    }
    let response = &buf[..len];
    let status = parse_status(response).ok_or("no HTTP status line")?;
    let body = find(response, b"\r\n\r\n").map_or(&[][..], |e| &response[e + 4..]);
    let ok = health::http_passes(spec, status, body);
    Ok((ok, format!("HTTP {status}")))
}

/// TLS for HTTPS probes: ring, TLS 1.2 and 1.3; by default no certificate validation (see the
/// module doc); with `VerifyCertificate`, the chain against the Mozilla roots and the name.
fn tls_config(verify: bool) -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    static VERIFYING: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if verify {
        return VERIFYING
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let roots = rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                };
                let config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                Arc::new(config)
            })
            .clone();
    }
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any certificate, still checking the handshake signatures (so the session is real).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
