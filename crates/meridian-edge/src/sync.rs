//! Controlled mode: the edge subscribes to the control plane's catalog stream, applies full
//! catalogs and deltas, swaps them in atomically, reports what it applied, and keeps the last
//! catalog in a local cache so it serves at once after a restart (static stability).
//!
//! Invariants: a version lower than the one held is never applied; a delta applies only to the
//! exact version it was made from; a checksum mismatch or a gap makes the edge ask for a full
//! catalog; a half-applied version is never served (apply builds a new catalog, then swaps).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use meridian_core::catalog::RoutingState;
use meridian_core::zone::{RRsetUpdate, Zone};
use meridian_core::{Catalog, Name, RType, Record};
use meridian_proto::v1;
use meridian_proto::v1::edge_sync_client::EdgeSyncClient;
use prost::Message;
use tokio::sync::watch;

/// Reports to the control plane at least this often, so it can tell live edges from dead ones.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Wait before trying the next control endpoint after a failure.
pub const RECONNECT_DELAY: Duration = Duration::from_millis(200);
/// The cache is rewritten at most this often (writing a large catalog is O(size)).
pub const CACHE_WRITE_INTERVAL: Duration = Duration::from_secs(1);
/// The pause after a cache write is at least this many times the write's duration: the cache
/// then costs at most 1/20 of a core, whatever the catalog's size.
pub const CACHE_WRITE_COST_RATIO: u32 = 20;
/// Largest catalog message accepted from the control plane.
pub const CATALOG_MESSAGE_BYTES_MAX: usize = 1 << 30;
/// Cache file format: magic and format version.
const CACHE_MAGIC: &[u8; 8] = b"MRDNCAT2";

/// Counters for the edge's metrics.
#[derive(Default, Debug)]
pub struct SyncStats {
    pub applied_version: AtomicU64,
    pub newest_version: AtomicU64,
    pub deltas_applied: AtomicU64,
    pub full_applied: AtomicU64,
    pub apply_micros_last: AtomicU64,
    pub apply_micros_total: AtomicU64,
    pub resyncs: AtomicU64,
    /// Health probes done by this edge, by result.
    pub probes_ok: AtomicU64,
    pub probes_failed: AtomicU64,
    /// The next subscription asks for a full catalog (after a gap or a checksum failure).
    pub need_full: std::sync::atomic::AtomicBool,
    /// Unix ms of the last report a control node acknowledged: how stale our view may be
    /// (`--max-staleness-s`). 0 until the first.
    pub last_contact_ms: AtomicU64,
    /// What the announcer did last (see [`crate::announce`]), for reports and metrics.
    pub announced: std::sync::atomic::AtomicBool,
    pub announce_reason: std::sync::atomic::AtomicU8,
    pub announce_changes: AtomicU64,
    /// Whether the catalog we serve says this edge (or its POP) is drained.
    pub drained: std::sync::atomic::AtomicBool,
}

/// What this edge tells every control node each second.
fn edge_report(options: &SyncOptions, stats: &SyncStats, version: u64) -> v1::EdgeReport {
    v1::EdgeReport {
        edge_id: options.edge_id.clone(),
        pop: options.pop.clone(),
        applied_version: version,
        addresses: options.addresses.clone(),
        identity: options.identity.clone(),
        region_rtt_ms: options.region_rtt_ms.iter().cloned().collect(),
        announced: stats.announced.load(Ordering::Relaxed),
        // Empty: this edge does not announce (no --bird-socket), or has not decided yet.
        announce_reason: match crate::announce::Reason::from_u8(
            stats.announce_reason.load(Ordering::Relaxed),
        ) {
            crate::announce::Reason::Starting => String::new(),
            r => r.as_str().to_string(),
        },
    }
}

#[derive(Clone, Debug)]
pub struct SyncOptions {
    pub control: Vec<String>,
    pub edge_id: String,
    pub pop: String,
    pub cache_dir: Option<PathBuf>,
    pub identity: String,
    pub addresses: Vec<String>,
    /// This POP's RTT to each region, reported so `explain --pop` uses the same table.
    pub region_rtt_ms: Vec<(String, u32)>,
}

/// The routing state of an update (health verdicts, CIDR collections, drains) in domain types.
fn routing_of(w: &v1::WireRoutingState) -> Result<RoutingState, ApplyError> {
    meridian_proto::routing_from_wire(w).map_err(ApplyError::Invalid)
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("update for version {got} does not follow version {have}")]
    Gap { have: u64, got: u64 },
    #[error("checksum mismatch at version {version}")]
    Checksum { version: u64 },
    #[error("invalid catalog data: {0}")]
    Invalid(String),
    #[error("unsupported catalog schema {0}")]
    Schema(u32),
}

fn records_of(origin: &Name, sets: &[v1::WireRecordSet]) -> Result<Vec<Record>, ApplyError> {
    let mut records = Vec::new();
    for s in sets {
        let owner = Name::from_wire(&s.name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if !owner.is_subdomain_of(origin) {
            return Err(ApplyError::Invalid(format!("{owner} outside {origin}")));
        }
        let rtype = RType(u16::try_from(s.r#type).map_err(|_| ApplyError::Invalid("type".into()))?);
        for rd in &s.rdata {
            records.push(Record {
                owner: owner.clone(),
                rtype,
                ttl: s.ttl,
                rdata: rd.clone(),
            });
        }
    }
    Ok(records)
}

/// Builds a catalog from a full update and checks its checksum.
pub fn catalog_from_full(update: &v1::CatalogUpdate) -> Result<Catalog, ApplyError> {
    let mut catalog = Catalog::new();
    if let Some(w) = &update.routing {
        catalog.set_routing(Arc::new(routing_of(w)?));
    }
    for z in &update.zones {
        let origin = Name::from_wire(&z.origin).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let zone = Zone::build(&origin, records_of(&origin, &z.record_sets)?)
            .map_err(|e| ApplyError::Invalid(format!("{origin}: {e}")))?;
        catalog
            .insert(Arc::new(zone))
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
    }
    if catalog.checksum() != update.checksum {
        return Err(ApplyError::Checksum {
            version: update.version,
        });
    }
    Ok(catalog)
}

/// Applies a delta to `current` (at version `have`), giving the next catalog. Cost is
/// proportional to the delta: untouched zones and shards are shared.
pub fn apply_delta(
    current: &Catalog,
    have: u64,
    update: &v1::CatalogUpdate,
) -> Result<Catalog, ApplyError> {
    if update.base_version != have {
        return Err(ApplyError::Gap {
            have,
            got: update.version,
        });
    }
    let mut next = current.clone();
    if let Some(w) = &update.routing {
        next.set_routing(Arc::new(routing_of(w)?));
    }
    for d in &update.deltas {
        let origin = Name::from_wire(&d.origin).map_err(|e| ApplyError::Invalid(e.to_string()))?;
        if d.delete_zone {
            next.remove(&origin);
            continue;
        }
        if d.create_zone {
            let zone = Zone::build(&origin, records_of(&origin, &d.put)?)
                .map_err(|e| ApplyError::Invalid(format!("{origin}: {e}")))?;
            next.insert(Arc::new(zone))
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
            continue;
        }
        let zone = next
            .get(&origin)
            .ok_or_else(|| ApplyError::Invalid(format!("delta for unknown zone {origin}")))?;
        let mut updates = Vec::with_capacity(d.put.len() + d.remove.len());
        for s in d.remove.iter().chain(d.put.iter()) {
            let name = Name::from_wire(&s.name).map_err(|e| ApplyError::Invalid(e.to_string()))?;
            let rtype =
                RType(u16::try_from(s.r#type).map_err(|_| ApplyError::Invalid("type".into()))?);
            updates.push(RRsetUpdate {
                name,
                rtype,
                data: (!s.rdata.is_empty()).then(|| (s.ttl, s.rdata.clone())),
            });
        }
        let zone = zone
            .apply(&updates)
            .map_err(|e| ApplyError::Invalid(format!("{origin}: {e}")))?;
        next.insert(Arc::new(zone))
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
    }
    if next.checksum() != update.checksum {
        return Err(ApplyError::Checksum {
            version: update.version,
        });
    }
    Ok(next)
}

/// Writes the catalog cache atomically (temporary file, fsync, rename).
pub fn write_cache(dir: &Path, version: u64, catalog: &Catalog) -> std::io::Result<()> {
    let mut body = Vec::new();
    body.extend_from_slice(CACHE_MAGIC);
    body.extend_from_slice(&meridian_proto::CATALOG_SCHEMA.to_be_bytes());
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&catalog.checksum().to_be_bytes());
    body.extend_from_slice(&(catalog.len() as u32).to_be_bytes());
    for zone in catalog.zones() {
        let records = zone.records();
        body.push(zone.origin().wire().len() as u8);
        body.extend_from_slice(zone.origin().wire());
        body.extend_from_slice(&(records.len() as u32).to_be_bytes());
        for r in records {
            body.push(r.owner.wire().len() as u8);
            body.extend_from_slice(r.owner.wire());
            body.extend_from_slice(&r.rtype.0.to_be_bytes());
            body.extend_from_slice(&r.ttl.to_be_bytes());
            body.extend_from_slice(&(r.rdata.len() as u16).to_be_bytes());
            body.extend_from_slice(&r.rdata);
        }
    }
    let routing = routing_bytes(catalog.routing());
    body.extend_from_slice(&(routing.len() as u32).to_be_bytes());
    body.extend_from_slice(&routing);
    let digest = file_digest(&body);
    body.extend_from_slice(&digest.to_be_bytes());
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("catalog.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(tmp, dir.join("catalog.bin"))
}

fn file_digest(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Reads the cache: `Err` with a reason when it is missing, corrupt or of another schema.
pub fn read_cache(dir: &Path) -> Result<(u64, Catalog), String> {
    let bytes = std::fs::read(dir.join("catalog.bin")).map_err(|e| e.to_string())?;
    if bytes.len() < 8 + 4 + 8 + 8 + 4 + 8 {
        return Err("truncated".into());
    }
    let (body, tail) = bytes.split_at(bytes.len() - 8);
    if file_digest(body) != u64::from_be_bytes(tail.try_into().expect("8 bytes")) {
        return Err("digest mismatch (corrupt file)".into());
    }
    let mut r = Reader { b: body, pos: 0 };
    if r.take(8)? != CACHE_MAGIC {
        return Err("not a catalog cache".into());
    }
    let schema = u32::from_be_bytes(r.take(4)?.try_into().expect("4"));
    if schema != meridian_proto::CATALOG_SCHEMA {
        return Err(format!("schema {schema}"));
    }
    let version = u64::from_be_bytes(r.take(8)?.try_into().expect("8"));
    let checksum = u64::from_be_bytes(r.take(8)?.try_into().expect("8"));
    let zones = u32::from_be_bytes(r.take(4)?.try_into().expect("4"));
    let mut catalog = Catalog::new();
    for _ in 0..zones {
        let len = r.take(1)?[0] as usize;
        let origin = Name::from_wire(r.take(len)?).map_err(|e| e.to_string())?;
        let count = u32::from_be_bytes(r.take(4)?.try_into().expect("4"));
        let mut records = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = r.take(1)?[0] as usize;
            let owner = Name::from_wire(r.take(len)?).map_err(|e| e.to_string())?;
            let rtype = RType(u16::from_be_bytes(r.take(2)?.try_into().expect("2")));
            let ttl = u32::from_be_bytes(r.take(4)?.try_into().expect("4"));
            let len = u16::from_be_bytes(r.take(2)?.try_into().expect("2")) as usize;
            records.push(Record {
                owner,
                rtype,
                ttl,
                rdata: r.take(len)?.to_vec(),
            });
        }
        let zone = Zone::build(&origin, records).map_err(|e| format!("{origin}: {e}"))?;
        catalog.insert(Arc::new(zone)).map_err(|e| e.to_string())?;
    }
    let len = u32::from_be_bytes(r.take(4)?.try_into().expect("4")) as usize;
    let wire = v1::WireRoutingState::decode(r.take(len)?).map_err(|e| e.to_string())?;
    catalog.set_routing(Arc::new(routing_of(&wire).map_err(|e| e.to_string())?));
    if catalog.checksum() != checksum {
        return Err("catalog checksum mismatch".into());
    }
    Ok((version, catalog))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let s = self.b.get(self.pos..self.pos + n).ok_or("truncated")?;
        self.pos += n;
        Ok(s)
    }
}

/// The catalog an edge serves plus the version it is at.
pub struct Served {
    pub catalog: Arc<ArcSwap<Catalog>>,
    pub stats: Arc<SyncStats>,
}

/// Follows the control plane until `shutdown` changes. Never returns an error: every failure
/// moves to the next endpoint (the edge keeps serving what it has).
pub async fn run(served: Served, options: SyncOptions, mut shutdown: watch::Receiver<bool>) {
    let (cache_tx, cache_rx) = watch::channel::<Option<(u64, Arc<Catalog>)>>(None);
    let writer = options
        .cache_dir
        .clone()
        .map(|dir| tokio::spawn(cache_writer(dir, cache_rx)));
    let reporter = tokio::spawn(report_everywhere(
        options.clone(),
        served.stats.clone(),
        shutdown.clone(),
    ));
    follow_endpoints(&served, &options, &cache_tx, &mut shutdown).await;
    reporter.abort();
    // Flush the newest catalog to the cache before exiting, so a restart serves it.
    drop(cache_tx);
    if let Some(writer) = writer {
        let _ = writer.await;
    }
}

/// Reports the applied version to every control node each [`REPORT_INTERVAL`]: each node then
/// knows every edge, so INSYNC still waits for an edge whose stream was on a node that died.
async fn report_everywhere(
    options: SyncOptions,
    stats: Arc<SyncStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let clients: Vec<EdgeSyncClient<tonic::transport::Channel>> = options
        .control
        .iter()
        .filter_map(|addr| {
            tonic::transport::Endpoint::from_shared(endpoint_url(addr))
                .ok()
                .map(|e| {
                    EdgeSyncClient::new(
                        e.connect_timeout(Duration::from_millis(500))
                            .timeout(REPORT_INTERVAL)
                            .connect_lazy(),
                    )
                })
        })
        .collect();
    let mut ticker = tokio::time::interval(REPORT_INTERVAL);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        let report = edge_report(
            &options,
            &stats,
            stats.applied_version.load(Ordering::Relaxed),
        );
        // One task per node: a dead node times out without delaying the others.
        for client in &clients {
            let mut client = client.clone();
            let report = report.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                if client.report(report).await.is_ok() {
                    stats
                        .last_contact_ms
                        .fetch_max(crate::now_ms(), Ordering::Relaxed);
                }
            });
        }
    }
}

async fn follow_endpoints(
    served: &Served,
    options: &SyncOptions,
    cache_tx: &watch::Sender<Option<(u64, Arc<Catalog>)>>,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut endpoint_idx = 0usize;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let addr = options.control[endpoint_idx % options.control.len()].clone();
        tokio::select! {
            r = follow(&addr, served, options, cache_tx) => {
                if let Err(e) = r {
                    tracing::warn!(control = %addr, error = %e, "catalog stream ended; trying the next control node");
                }
            }
            _ = shutdown.changed() => return,
        }
        endpoint_idx += 1;
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn cache_writer(dir: PathBuf, mut rx: watch::Receiver<Option<(u64, Arc<Catalog>)>>) {
    let mut written = 0u64;
    let mut closing = false;
    let mut have_new = false;
    loop {
        // Err: the sender is gone (shutdown): write what we have one last time, then stop.
        if !closing && !have_new {
            closing = rx.changed().await.is_err();
        }
        have_new = false;
        let latest = rx.borrow_and_update().clone();
        let mut took = Duration::ZERO;
        if let Some((version, catalog)) = latest
            && version != written
        {
            let dir = dir.clone();
            let started = Instant::now();
            let result =
                tokio::task::spawn_blocking(move || write_cache(&dir, version, &catalog)).await;
            took = started.elapsed();
            match result {
                Ok(Ok(())) => written = version,
                Ok(Err(e)) => tracing::warn!(error = %e, "writing the catalog cache failed"),
                Err(e) => tracing::warn!(error = %e, "cache task failed"),
            }
        }
        if closing {
            return;
        }
        // Writing is O(catalog): pause long enough that it costs at most 1/CACHE_WRITE_COST_RATIO
        // of a core (a 1M-record catalog takes ~1 s to write), but wake at once on shutdown.
        let deadline =
            tokio::time::Instant::now() + CACHE_WRITE_INTERVAL.max(took * CACHE_WRITE_COST_RATIO);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                r = rx.changed() => match r {
                    Ok(()) => have_new = true,
                    Err(_) => {
                        closing = true;
                        break;
                    }
                },
            }
        }
    }
}

fn endpoint_url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn follow(
    addr: &str,
    served: &Served,
    options: &SyncOptions,
    cache_tx: &watch::Sender<Option<(u64, Arc<Catalog>)>>,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint_url(addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(2))
        .keep_alive_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let mut client =
        EdgeSyncClient::new(channel).max_decoding_message_size(CATALOG_MESSAGE_BYTES_MAX);
    let mut reporter = client.clone();
    let applied = served.stats.applied_version.load(Ordering::Relaxed);
    let have = if served.stats.need_full.load(Ordering::Relaxed) {
        0
    } else {
        applied
    };
    let mut stream = client
        .subscribe(v1::SubscribeRequest {
            edge_id: options.edge_id.clone(),
            pop: options.pop.clone(),
            have_version: have,
            schema: meridian_proto::CATALOG_SCHEMA,
        })
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    tracing::info!(control = %addr, have, "subscribed to the catalog stream");
    let report = |version: u64| edge_report(options, &served.stats, version);
    let _ = reporter.report(report(applied)).await;
    loop {
        let update = stream
            .message()
            .await
            .map_err(|s| s.message().to_string())?;
        let Some(update) = update else {
            return Err("stream closed".into());
        };
        if update.schema != meridian_proto::CATALOG_SCHEMA {
            return Err(ApplyError::Schema(update.schema).to_string());
        }
        served
            .stats
            .newest_version
            .fetch_max(update.newest_version.max(update.version), Ordering::Relaxed);
        let have = served.stats.applied_version.load(Ordering::Relaxed);
        // Never move backwards (a lagging control node may be behind us). A full catalog of the
        // version we hold is accepted: it repairs a catalog that failed its checksum.
        if update.version < have || (update.version == have && !update.full) {
            continue;
        }
        let started = Instant::now();
        let current = served.catalog.load_full();
        let next = if update.full {
            catalog_from_full(&update)
        } else {
            apply_delta(&current, have, &update)
        };
        let next = match next {
            Ok(c) => Arc::new(c),
            Err(e) => {
                served.stats.resyncs.fetch_add(1, Ordering::Relaxed);
                // Restart the stream asking for a full catalog; keep serving the current one.
                served.stats.need_full.store(true, Ordering::Relaxed);
                return Err(format!(
                    "cannot apply version {}: {e}; asking for a full catalog",
                    update.version
                ));
            }
        };
        served.catalog.store(next.clone());
        served.stats.need_full.store(false, Ordering::Relaxed);
        let micros = started.elapsed().as_micros() as u64;
        served
            .stats
            .applied_version
            .store(update.version, Ordering::Relaxed);
        served
            .stats
            .apply_micros_last
            .store(micros, Ordering::Relaxed);
        served
            .stats
            .apply_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        if update.full {
            served.stats.full_applied.fetch_add(1, Ordering::Relaxed);
        } else {
            served.stats.deltas_applied.fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!(
            version = update.version,
            full = update.full,
            micros,
            "catalog applied"
        );
        let _ = cache_tx.send(Some((update.version, next)));
        let _ = reporter.report(report(update.version)).await;
    }
}

/// The routing state encoded for the cache file (protobuf, as it arrives).
fn routing_bytes(r: &RoutingState) -> Vec<u8> {
    meridian_proto::routing_to_wire(r).encode_to_vec()
}
