//! Client commands: gRPC to the control plane, tables for people, JSON for scripts. Every call
//! tries the `--api` endpoints in turn; writes reaching a follower are forwarded by the server.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use meridian_core::change::parse_change_batch;
use meridian_core::rdata::{RType, rdata_to_text};
use meridian_core::{Name, zonefile};
use meridian_proto::v1;
use meridian_proto::v1::cluster_client::ClusterClient;
use meridian_proto::v1::edge_sync_client::EdgeSyncClient;
use meridian_proto::v1::zones_client::ZonesClient;
use serde_json::json;
use tonic::transport::Channel;

/// How long one endpoint may take to accept a connection before we try the next.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// When every endpoint is unavailable (an election, a restart), keep trying this long.
const UNAVAILABLE_RETRY_WINDOW: Duration = Duration::from_secs(5);
const UNAVAILABLE_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Polling period of `change wait`.
const WAIT_POLL: Duration = Duration::from_millis(20);
/// API message size (a 10,000-set batch or a large page).
const MESSAGE_BYTES_MAX: usize = 64 << 20;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Initialize a cluster: with no --node, a one-node cluster of the node addressed.
    Init {
        /// Members as ID=ADDR; repeatable.
        #[arg(long = "node")]
        nodes: Vec<String>,
    },
    /// Add a node (as learner, then voter).
    AddNode { id: u64, addr: String },
    /// Remove a node from the voters.
    RemoveNode { id: u64 },
    /// Members, leader, term, commit and applied index per node.
    Status,
}

#[derive(Subcommand)]
pub enum ZoneCmd {
    /// Create a hosted zone (SOA and NS defaults).
    Create {
        name: String,
        /// Idempotency: a retry with the same reference returns the same zone.
        #[arg(long, default_value = "")]
        caller_reference: String,
        /// Apex name servers (default ns1.<zone>); repeatable.
        #[arg(long = "ns")]
        name_servers: Vec<String>,
    },
    List {
        #[arg(long)]
        stale: bool,
    },
    Get {
        name: String,
        #[arg(long)]
        stale: bool,
    },
    /// Delete a zone (refused while it holds records beyond SOA/NS unless --force).
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// Replace the zone's content by a BIND zone file, all or nothing however large: staged in
    /// chunks beside the live zone, switched in by one commit. The file's SOA and apex NS
    /// replace the zone's; without them the zone keeps its own.
    Import {
        zone: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Refuse to commit if the zone changed since this version (compare-and-set).
        #[arg(long)]
        expected_version: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Print the zone as a BIND zone file.
    Export {
        zone: String,
        #[arg(long)]
        stale: bool,
    },
}

#[derive(Subcommand)]
pub enum RecordCmd {
    /// List record sets (paged through to the end).
    List {
        zone: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "type")]
        rtype: Option<String>,
        #[arg(long)]
        stale: bool,
    },
    /// Create a record set (fails if it exists).
    Create(RecordArgs),
    /// Create or replace a record set.
    Upsert(RecordArgs),
    /// Delete a record set (values and TTL must match; with no values, the current set).
    Delete(RecordArgs),
    /// Apply a Route 53 ChangeBatch file (JSON or YAML).
    Apply {
        zone: String,
        #[arg(long)]
        file: std::path::PathBuf,
        /// Refuse unless the zone is still at this version (compare-and-set).
        #[arg(long)]
        expect_version: Option<u64>,
        /// Idempotency token: a retried apply returns the first result.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(clap::Args)]
pub struct RecordArgs {
    zone: String,
    /// Absolute, or relative to the zone.
    name: String,
    #[arg(value_name = "TYPE")]
    rtype: String,
    values: Vec<String>,
    #[arg(long, default_value_t = 300)]
    ttl: u32,
}

#[derive(Subcommand)]
pub enum ChangeCmd {
    Get {
        id: String,
    },
    /// Block until every live edge serves the change (INSYNC).
    Wait {
        id: String,
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
}

#[derive(Subcommand)]
pub enum HealthCmd {
    /// Register a health check from a Route 53 HealthCheckConfig file (JSON or YAML).
    Create {
        #[arg(long)]
        config: std::path::PathBuf,
        /// Idempotency: a second create with the same reference is refused.
        #[arg(long, default_value = "")]
        caller_reference: String,
    },
    /// Replace a check's config (its verdict carries over).
    Update {
        id: String,
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// One check: its config and status (as `status`, without following it).
    Get { id: String },
    /// Delete a health check no record set uses.
    Delete { id: String },
    /// Every health check with its status.
    List,
    /// One check: the verdict edges use, the last transition's evidence, and each POP's last
    /// results as this control node sees them.
    Status {
        id: String,
        /// Print the status again every second until interrupted (transitions show as they
        /// happen).
        #[arg(long)]
        watch: bool,
    },
    /// Force a check's verdict (reaches every edge through the catalog), or return it to auto.
    SetStatus {
        id: String,
        #[arg(value_parser = ["healthy", "unhealthy", "auto"])]
        status: String,
    },
}

#[derive(Subcommand)]
pub enum CidrCmd {
    /// Create an empty CIDR collection.
    Create { name: String },
    /// Add CIDR blocks to a location of a collection (created if missing).
    Add {
        collection: String,
        location: String,
        #[arg(required = true)]
        cidrs: Vec<String>,
    },
    /// Remove CIDR blocks (or, with none given, the whole location) from a collection.
    Remove {
        collection: String,
        location: String,
        cidrs: Vec<String>,
    },
    /// Every collection, or one.
    List { name: Option<String> },
    /// Delete a collection no record set uses.
    Delete { name: String },
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    name: String,
    #[arg(value_name = "TYPE")]
    rtype: String,
    /// The resolver's address (geolocation, geoproximity, IP-based use it without ECS).
    #[arg(long)]
    client: Option<String>,
    /// EDNS Client Subnet, e.g. 198.51.100.0/24 (wins over --client).
    #[arg(long)]
    ecs: Option<String>,
    /// The POP whose RTT table latency records use.
    #[arg(long)]
    pop: Option<String>,
}

#[derive(Subcommand)]
pub enum EdgesCmd {
    /// Each edge with its version, lag, last report, and anycast state.
    List,
    /// Withdraw a POP's (or one edge's) anycast routes: its edges disable their BIRD protocols
    /// and keep answering what still reaches them. Replicated; INSYNC when every edge has it.
    Drain(DrainArgs),
    /// Undo a drain: the edges announce again (if they serve).
    Undrain(DrainArgs),
}

#[derive(clap::Args)]
pub struct DrainArgs {
    /// A POP name or an edge id (`pop/NAME` or `edge/ID` to be explicit).
    pub target: String,
    /// What the target is, when the name alone is ambiguous or not known yet.
    #[arg(long, value_enum)]
    pub kind: Option<DrainKind>,
    #[arg(long, default_value = "")]
    pub comment: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DrainKind {
    Pop,
    Edge,
}

/// Every endpoint was unreachable or had no leader: worth retrying.
#[derive(Debug)]
struct Unavailable(String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "control plane unavailable: {}", self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether a call may be sent again after its connection broke with the request in flight.
#[derive(Clone, Copy)]
enum Replay {
    Safe,
    Unsafe,
}

/// The call's connection broke (the server died or reset it mid-call), as opposed to an answer
/// from the server. tonic reports that as Unknown or Cancelled carrying a transport error.
fn connection_lost(s: &tonic::Status) -> bool {
    if !matches!(s.code(), tonic::Code::Unknown | tonic::Code::Cancelled) {
        return false;
    }
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<std::io::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// A fresh idempotency token or caller reference, so that a write the CLI retries after a lost
/// connection is applied once. 128 random bits: collisions are not a concern.
fn client_token() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // No /dev/urandom (a sandbox): time and pid are unique enough for one host's CLI.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("cli-{hex}")
}

pub struct Client {
    endpoints: Vec<String>,
    output: Output,
}

fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

fn status_error(s: &tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message())
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

impl Client {
    pub fn new(endpoints: Vec<String>, output: Output) -> Client {
        Client { endpoints, output }
    }

    /// Runs `call` against each endpoint in turn until one answers (any answer but
    /// "unavailable"). Errors from the server are final. Only for calls that are safe to send
    /// twice (reads, and writes made idempotent by a token or by their nature): a connection
    /// lost after the request went out is retried on the next endpoint, as is a leader that
    /// died mid-call.
    pub(crate) async fn call<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_with(Replay::Safe, call).await
    }

    /// Like `call`, for writes that must not be sent twice (deletes, creates without a caller
    /// reference): a connection lost after the request went out is reported, not retried,
    /// because the write may have been applied.
    pub(crate) async fn call_at_most_once<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_with(Replay::Unsafe, call).await
    }

    async fn call_with<T, F, Fut>(&self, replay: Replay, mut call: F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let give_up = Instant::now() + UNAVAILABLE_RETRY_WINDOW;
        loop {
            match self.call_pass(replay, &mut call).await {
                Err(e) if e.downcast_ref::<Unavailable>().is_some() && Instant::now() < give_up => {
                    tokio::time::sleep(UNAVAILABLE_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    /// One pass over the endpoints, for a replay-safe call.
    pub(crate) async fn call_once<T, F, Fut>(&self, call: &mut F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        self.call_pass(Replay::Safe, call).await
    }

    async fn call_pass<T, F, Fut>(&self, replay: Replay, call: &mut F) -> Result<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut last = String::from("no --api endpoint given");
        for ep in &self.endpoints {
            let channel = match tonic::transport::Endpoint::from_shared(url(ep))?
                .connect_timeout(CONNECT_TIMEOUT)
                .connect()
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{ep}: {e}");
                    continue;
                }
            };
            match call(channel).await {
                Ok(v) => return Ok(v),
                Err(s) if s.code() == tonic::Code::Unavailable => {
                    last = format!("{ep}: {}", s.message())
                }
                Err(s) if connection_lost(&s) => match replay {
                    Replay::Safe => last = format!("{ep}: connection lost: {}", s.message()),
                    Replay::Unsafe => bail!(
                        "{ep}: connection lost after the request was sent ({}); it may or may \
                         not have been applied: check before trying again",
                        s.message()
                    ),
                },
                Err(s) => return Err(status_error(&s)),
            }
        }
        Err(Unavailable(last).into())
    }

    pub(crate) fn routing(channel: Channel) -> v1::routing_client::RoutingClient<Channel> {
        v1::routing_client::RoutingClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    pub async fn health(&self, cmd: HealthCmd) -> Result<()> {
        match cmd {
            HealthCmd::Create {
                config,
                caller_reference,
            } => {
                let text = std::fs::read_to_string(&config)
                    .with_context(|| format!("reading {}", config.display()))?;
                let req = v1::CreateHealthCheckRequest {
                    caller_reference,
                    config_json: text,
                };
                let h = self
                    .call_at_most_once(|c| {
                        let req = req.clone();
                        async move {
                            Self::routing(c)
                                .create_health_check(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                match self.output {
                    Output::Json => self
                        .print_json(json!({"id": h.id, "status": h.status, "version": h.version})),
                    Output::Table => println!("health check {}  {}", h.id, h.status),
                }
            }
            HealthCmd::Update { id, config } => {
                let text = std::fs::read_to_string(&config)
                    .with_context(|| format!("reading {}", config.display()))?;
                let change = self
                    .call(|c| {
                        let req = v1::UpdateHealthCheckRequest {
                            id: id.clone(),
                            config_json: text.clone(),
                        };
                        async move {
                            Self::routing(c)
                                .update_health_check(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_change(&change);
            }
            HealthCmd::Get { id } => {
                return Box::pin(self.health(HealthCmd::Status { id, watch: false })).await;
            }
            HealthCmd::Delete { id } => {
                let change = self
                    .call_at_most_once(|c| {
                        let id = id.clone();
                        async move {
                            Self::routing(c)
                                .delete_health_check(v1::HealthCheckIdRequest { id })
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_change(&change);
            }
            HealthCmd::List => {
                let list = self
                    .call(|c| async move {
                        Self::routing(c)
                            .list_health_checks(v1::ListHealthChecksRequest { stale: false })
                            .await
                            .map(|r| r.into_inner())
                    })
                    .await?;
                match self.output {
                    Output::Json => self.print_json(json!(
                        list.health_checks
                            .iter()
                            .map(health_json)
                            .collect::<Vec<_>>()
                    )),
                    Output::Table => {
                        println!("{:<22} {:<22} CONFIG", "ID", "STATUS");
                        for h in list.health_checks {
                            println!("{:<22} {:<22} {}", h.id, h.status, h.config_json);
                        }
                    }
                }
            }
            HealthCmd::Status { id, watch } => {
                let mut last = String::new();
                loop {
                    let list = self
                        .call(|c| async move {
                            Self::routing(c)
                                .list_health_checks(v1::ListHealthChecksRequest { stale: true })
                                .await
                                .map(|r| r.into_inner())
                        })
                        .await?;
                    let h = list
                        .health_checks
                        .into_iter()
                        .find(|h| h.id == id)
                        .ok_or_else(|| anyhow!("no health check {id}"))?;
                    let text = match self.output {
                        Output::Json => serde_json::to_string_pretty(&health_json(&h))?,
                        Output::Table => {
                            let mut t = format!("{}  {}\n", h.id, h.status);
                            if !h.evidence.is_empty() {
                                t.push_str(&format!("last transition: {}\n", h.evidence));
                            }
                            t.push_str(&format!(
                                "{:<12} {:<10} {:<6} {:>7} {:>5} {:>5}  DETAIL\n",
                                "POP", "VERDICT", "LAST", "RTT ms", "FAILS", "OKS"
                            ));
                            for p in &h.pops {
                                t.push_str(&format!(
                                    "{:<12} {:<10} {:<6} {:>7} {:>5} {:>5}  {}\n",
                                    p.pop,
                                    p.verdict,
                                    if p.last_ok { "ok" } else { "FAIL" },
                                    p.last_rtt_ms,
                                    p.consecutive_failures,
                                    p.consecutive_successes,
                                    p.last_detail
                                ));
                            }
                            t
                        }
                    };
                    if !watch {
                        print!("{text}");
                        break;
                    }
                    // --watch: print when the verdict or a POP's verdict changes.
                    let key = format!(
                        "{} {}",
                        h.status,
                        h.pops
                            .iter()
                            .map(|p| format!("{}={}", p.pop, p.verdict))
                            .collect::<Vec<_>>()
                            .join(",")
                    );
                    if key != last {
                        println!("--- {}", chrono_now());
                        print!("{text}");
                        last = key;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
            HealthCmd::SetStatus { id, status } => {
                let change = self.set_health_status(&id, &status).await?;
                self.print_change(&change);
            }
        }
        Ok(())
    }

    /// An operator verdict (`healthy`, `unhealthy`, `auto`); the CLI and game days share it.
    pub(crate) async fn set_health_status(&self, id: &str, status: &str) -> Result<v1::ChangeInfo> {
        self.call(|c| {
            let req = v1::SetHealthStatusRequest {
                id: id.to_string(),
                status: status.to_string(),
            };
            async move {
                Self::routing(c)
                    .set_health_status(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Drains (or undrains) `target` (`pop/NAME` or `edge/ID`); the CLI and game days share it.
    pub(crate) async fn set_drain(
        &self,
        target: &str,
        drained: bool,
        comment: &str,
    ) -> Result<v1::ChangeInfo> {
        self.call(|c| {
            let req = v1::SetDrainRequest {
                target: target.to_string(),
                drained,
                comment: comment.to_string(),
            };
            async move {
                EdgeSyncClient::new(c)
                    .set_drain(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    async fn cidr_collections(&self) -> Result<Vec<v1::CidrCollection>> {
        Ok(self
            .call(|c| async move {
                Self::routing(c)
                    .list_cidr_collections(v1::ListCidrCollectionsRequest { stale: false })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
            .collections)
    }

    async fn put_cidr(&self, collection: v1::CidrCollection) -> Result<()> {
        let change = self
            .call(|c| {
                let req = collection.clone();
                async move {
                    Self::routing(c)
                        .put_cidr_collection(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        self.print_change(&change);
        Ok(())
    }

    pub async fn cidr(&self, cmd: CidrCmd) -> Result<()> {
        match cmd {
            CidrCmd::Create { name } => {
                if self
                    .cidr_collections()
                    .await?
                    .iter()
                    .any(|c| c.name == name)
                {
                    bail!("CIDR collection {name} exists");
                }
                let change = self
                    .call(|c| {
                        let req = v1::CidrCollection {
                            name: name.clone(),
                            blocks: Vec::new(),
                        };
                        async move {
                            Self::routing(c)
                                .put_cidr_collection(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                // The collection's id is its name (what CidrRoutingConfig.CollectionId names).
                match self.output {
                    Output::Json => self.print_json(
                        json!({"id": name, "name": name, "change": change.id, "version": change.version}),
                    ),
                    Output::Table => println!(
                        "CIDR collection {name} created (change {} version {})",
                        change.id, change.version
                    ),
                }
            }
            CidrCmd::Add {
                collection,
                location,
                cidrs,
            } => {
                let mut c = self
                    .cidr_collections()
                    .await?
                    .into_iter()
                    .find(|c| c.name == collection)
                    .unwrap_or(v1::CidrCollection {
                        name: collection.clone(),
                        blocks: Vec::new(),
                    });
                for cidr in cidrs {
                    if !c.blocks.iter().any(|b| b.cidr == cidr) {
                        c.blocks.push(v1::CidrBlock {
                            cidr,
                            location_name: location.clone(),
                        });
                    }
                }
                self.put_cidr(c).await?;
            }
            CidrCmd::Remove {
                collection,
                location,
                cidrs,
            } => {
                let mut c = self
                    .cidr_collections()
                    .await?
                    .into_iter()
                    .find(|c| c.name == collection)
                    .ok_or_else(|| anyhow!("no CIDR collection {collection}"))?;
                c.blocks.retain(|b| {
                    b.location_name != location || !(cidrs.is_empty() || cidrs.contains(&b.cidr))
                });
                self.put_cidr(c).await?;
            }
            CidrCmd::List { name } => {
                let list: Vec<v1::CidrCollection> = self
                    .cidr_collections()
                    .await?
                    .into_iter()
                    .filter(|c| name.as_ref().is_none_or(|n| *n == c.name))
                    .collect();
                match self.output {
                    Output::Json => self.print_json(json!(list.iter().map(|c| json!({
                        "id": c.name, "name": c.name,
                        "blocks": c.blocks.iter().map(|b| json!({"cidr": b.cidr, "location": b.location_name})).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>())),
                    Output::Table => {
                        println!("{:<24} {:<24} CIDR", "COLLECTION", "LOCATION");
                        for c in list {
                            if c.blocks.is_empty() {
                                println!("{:<24} {:<24} -", c.name, "-");
                            }
                            for b in c.blocks {
                                println!("{:<24} {:<24} {}", c.name, b.location_name, b.cidr);
                            }
                        }
                    }
                }
            }
            CidrCmd::Delete { name } => {
                let change = self
                    .call_at_most_once(|c| {
                        let name = name.clone();
                        async move {
                            Self::routing(c)
                                .delete_cidr_collection(v1::CidrCollectionIdRequest { name })
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_change(&change);
            }
        }
        Ok(())
    }

    pub async fn explain(&self, a: ExplainArgs) -> Result<()> {
        let req = v1::ExplainRequest {
            name: absolute(&a.name),
            r#type: a.rtype.to_uppercase(),
            client: a.client.unwrap_or_default(),
            ecs: a.ecs.unwrap_or_default(),
            pop: a.pop.unwrap_or_default(),
        };
        let e = self
            .call(|c| {
                let req = req.clone();
                async move { Self::routing(c).explain(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        match self.output {
            Output::Json => {
                self.print_json(json!({"answer": e.answer, "steps": e.steps, "rcode": e.rcode}))
            }
            Output::Table => {
                println!("path:");
                for s in &e.steps {
                    println!("  {s}");
                }
                println!("answer ({}):", e.rcode);
                if e.answer.is_empty() {
                    println!("  (no records: NODATA)");
                }
                for r in &e.answer {
                    println!("  {r}");
                }
            }
        }
        Ok(())
    }

    fn zones(channel: Channel) -> ZonesClient<Channel> {
        ZonesClient::new(channel)
            .max_decoding_message_size(MESSAGE_BYTES_MAX)
            .max_encoding_message_size(MESSAGE_BYTES_MAX)
    }

    fn print_json(&self, value: serde_json::Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    }

    pub async fn cluster(&self, cmd: ClusterCmd) -> Result<()> {
        let status = match cmd {
            ClusterCmd::Init { nodes } => {
                let mut members = Vec::new();
                for n in nodes {
                    let (id, addr) = n
                        .split_once('=')
                        .ok_or_else(|| anyhow!("--node takes ID=ADDR, got {n:?}"))?;
                    members.push(v1::Node {
                        id: id.parse().with_context(|| format!("node id {id:?}"))?,
                        addr: addr.to_string(),
                    });
                }
                self.call(|c| {
                    let members = members.clone();
                    async move {
                        ClusterClient::new(c)
                            .init(v1::InitRequest { nodes: members })
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?
            }
            ClusterCmd::AddNode { id, addr } => {
                self.call_at_most_once(|c| {
                    let addr = addr.clone();
                    async move {
                        ClusterClient::new(c)
                            .add_node(v1::AddNodeRequest {
                                node: Some(v1::Node { id, addr }),
                            })
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?
            }
            ClusterCmd::RemoveNode { id } => {
                self.call_at_most_once(|c| async move {
                    ClusterClient::new(c)
                        .remove_node(v1::RemoveNodeRequest { id })
                        .await
                        .map(|r| r.into_inner())
                })
                .await?
            }
            ClusterCmd::Status => {
                self.call(|c| async move {
                    ClusterClient::new(c)
                        .status(v1::StatusRequest {})
                        .await
                        .map(|r| r.into_inner())
                })
                .await?
            }
        };
        let members: Vec<(u64, String, bool)> = status
            .voters
            .iter()
            .map(|n| (n.id, n.addr.clone(), true))
            .chain(
                status
                    .learners
                    .iter()
                    .map(|n| (n.id, n.addr.clone(), false)),
            )
            .collect();
        // Each member's own view of its indexes.
        let mut nodes = Vec::new();
        for (id, addr, voter) in &members {
            let own = if *id == status.node_id {
                Some(status.clone())
            } else {
                let ch = tonic::transport::Endpoint::from_shared(url(addr))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .connect()
                    .await;
                match ch {
                    Ok(ch) => ClusterClient::new(ch)
                        .status(v1::StatusRequest {})
                        .await
                        .ok()
                        .map(|r| r.into_inner()),
                    Err(_) => None,
                }
            };
            nodes.push((*id, addr.clone(), *voter, own));
        }
        match self.output {
            Output::Json => self.print_json(json!({
                "leader": status.leader,
                "term": status.term,
                "catalog_version": status.catalog_version,
                "nodes": nodes.iter().map(|(id, addr, voter, own)| json!({
                    "id": id, "addr": addr, "voter": voter, "reachable": own.is_some(),
                    "role": own.as_ref().map(|s| s.role.clone()),
                    "term": own.as_ref().map(|s| s.term),
                    "commit_index": own.as_ref().map(|s| s.commit_index),
                    "applied_index": own.as_ref().map(|s| s.applied_index),
                })).collect::<Vec<_>>(),
            })),
            Output::Table => {
                println!(
                    "leader: {}   term: {}   catalog version: {}",
                    status
                        .leader
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "none".into()),
                    status.term,
                    status.catalog_version
                );
                println!(
                    "{:<6} {:<24} {:<8} {:<10} {:>8} {:>8}",
                    "ID", "ADDR", "VOTER", "ROLE", "COMMIT", "APPLIED"
                );
                for (id, addr, voter, own) in &nodes {
                    match own {
                        Some(s) => println!(
                            "{id:<6} {addr:<24} {voter:<8} {:<10} {:>8} {:>8}",
                            s.role, s.commit_index, s.applied_index
                        ),
                        None => println!(
                            "{id:<6} {addr:<24} {voter:<8} {:<10} {:>8} {:>8}",
                            "unreachable", "-", "-"
                        ),
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn zone(&self, cmd: ZoneCmd) -> Result<()> {
        match cmd {
            ZoneCmd::Create {
                name,
                caller_reference,
                name_servers,
            } => {
                let req = v1::CreateZoneRequest {
                    name: absolute(&name),
                    caller_reference: if caller_reference.is_empty() {
                        client_token()
                    } else {
                        caller_reference
                    },
                    name_servers,
                    soa_mname: String::new(),
                    soa_rname: String::new(),
                };
                let zone = self
                    .call(|c| {
                        let req = req.clone();
                        async move {
                            Self::zones(c)
                                .create_zone(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_zones(&[zone]);
            }
            ZoneCmd::List { stale } => {
                let zones = self
                    .call(|c| async move {
                        Self::zones(c)
                            .list_zones(v1::ListZonesRequest { stale })
                            .await
                            .map(|r| r.into_inner())
                    })
                    .await?;
                self.print_zones(&zones.zones);
            }
            ZoneCmd::Get { name, stale } => {
                let name = absolute(&name);
                let zone = self
                    .call(|c| {
                        let name = name.clone();
                        async move {
                            Self::zones(c)
                                .get_zone(v1::GetZoneRequest { name, stale })
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_zones(&[zone]);
            }
            ZoneCmd::Delete { name, force } => {
                let name = absolute(&name);
                let change = self
                    .call_at_most_once(|c| {
                        let name = name.clone();
                        async move {
                            Self::zones(c)
                                .delete_zone(v1::DeleteZoneRequest { name, force })
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_change(&change);
            }
            ZoneCmd::Import {
                zone,
                file,
                expected_version,
                comment,
            } => {
                let origin = Name::parse(&absolute(&zone), None)?;
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let records = zonefile::parse(&text, &origin, None)
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
                let mut sets: std::collections::BTreeMap<(Vec<u8>, u16), v1::RecordSet> =
                    std::collections::BTreeMap::new();
                for r in records {
                    let lower = r.owner.to_lowercase();
                    let set = sets
                        .entry((lower.wire().to_vec(), r.rtype.0))
                        .or_insert_with(|| v1::RecordSet {
                            name: lower.to_string(),
                            r#type: r.rtype.to_string(),
                            ttl: r.ttl,
                            ..Default::default()
                        });
                    let value = rdata_to_text(r.rtype, &r.rdata);
                    if !set.values.contains(&value) {
                        set.values.push(value);
                    }
                }
                let comment = if comment.is_empty() {
                    format!("import of {}", file.display())
                } else {
                    comment
                };
                let sets: Vec<v1::RecordSet> = sets.into_values().collect();
                let change = self
                    .import(origin.to_string(), comment, expected_version, sets)
                    .await?;
                self.print_change(&change);
            }
            ZoneCmd::Export { zone, stale } => {
                let sets = self.list_all(&absolute(&zone), None, None, stale).await?;
                let mut out = std::io::stdout().lock();
                use std::io::Write;
                writeln!(out, "$ORIGIN {}", absolute(&zone))?;
                let mut routed = 0usize;
                for s in sets {
                    // A zone file has no routing policies or aliases: say so rather than
                    // flattening every variant into one RRset.
                    if !s.set_identifier.is_empty() || s.alias_target.is_some() {
                        writeln!(
                            out,
                            "; not exported (routed): {} {} {}",
                            s.name,
                            s.r#type,
                            routing_text(&s)
                        )?;
                        routed += 1;
                        continue;
                    }
                    for v in &s.values {
                        writeln!(out, "{}\t{}\tIN\t{}\t{}", s.name, s.ttl, s.r#type, v)?;
                    }
                }
                if routed > 0 {
                    eprintln!(
                        "warning: {routed} routed record set(s) (policies, aliases) are not in the \
                         zone file; `meridian record list {zone}` shows them"
                    );
                }
            }
        }
        Ok(())
    }

    /// Runs a staged import; on Ctrl-C or any error it aborts it (the zone stays as it was).
    async fn import(
        &self,
        zone: String,
        comment: String,
        expected_zone_version: Option<u64>,
        sets: Vec<v1::RecordSet>,
    ) -> Result<v1::ChangeInfo> {
        let begin = v1::BeginImportRequest {
            zone: zone.clone(),
            comment,
            expected_zone_version,
        };
        let info = self
            .call_at_most_once(|c| {
                let req = begin.clone();
                async move {
                    Self::zones(c)
                        .begin_import(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        let import_id = info.import_id;
        let staged = self.import_chunks(&import_id, &sets);
        let outcome = tokio::select! {
            r = staged => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        };
        if outcome.is_err() && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            // End the progress line so the error starts its own.
            eprintln!();
        }
        let result = match outcome {
            Ok(chunks) => {
                let req = v1::CommitImportRequest {
                    import_id: import_id.clone(),
                    chunks,
                };
                self.call_at_most_once(|c| {
                    let req = req.clone();
                    async move {
                        Self::zones(c)
                            .commit_import(req)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            let req = v1::ImportIdRequest { import_id };
            let aborted = self
                .call(|c| {
                    let req = req.clone();
                    async move {
                        Self::zones(c)
                            .abort_import(req)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await;
            if aborted.is_ok() {
                bail!("import aborted, zone {zone} unchanged: {e:#}");
            }
        }
        result
    }

    /// Sends every chunk, a few in flight (the server parses one while Raft commits another);
    /// returns how many chunks there were.
    async fn import_chunks(&self, import_id: &str, sets: &[v1::RecordSet]) -> Result<u64> {
        use futures::StreamExt;
        use std::io::{IsTerminal, Write};
        /// Sets per chunk: a chunk is one Raft entry, and entries of about a megabyte keep
        /// replication and other zones' writes flowing between chunks.
        const IMPORT_CHUNK_SETS: usize = 5_000;
        /// Presentation-format bytes per chunk, for zones of long records.
        const IMPORT_CHUNK_BYTES: usize = 1 << 20;
        /// Chunks in flight: enough to overlap parsing with commits, few enough that other
        /// zones' writes still find the log free most of the time.
        const IMPORT_CHUNKS_IN_FLIGHT: usize = 3;
        let mut ranges = Vec::new();
        let mut start = 0;
        while start < sets.len() {
            let mut bytes = 0;
            let mut end = start;
            while end < sets.len() && end - start < IMPORT_CHUNK_SETS {
                bytes +=
                    sets[end].name.len() + sets[end].values.iter().map(String::len).sum::<usize>();
                if bytes > IMPORT_CHUNK_BYTES && end > start {
                    break;
                }
                end += 1;
            }
            ranges.push(start..end);
            start = end;
        }
        let progress = std::io::stderr().is_terminal();
        let started = Instant::now();
        let mut staged = 0;
        let mut results = futures::stream::iter(ranges.iter().cloned().enumerate())
            .map(|(seq, range)| {
                let req = v1::ImportRecordSetsRequest {
                    import_id: import_id.to_string(),
                    seq: seq as u64,
                    record_sets: sets[range.clone()].to_vec(),
                };
                async move {
                    self.call(|c| {
                        let req = req.clone();
                        async move {
                            Self::zones(c)
                                .import_record_sets(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await
                    .with_context(|| format!("record sets {}..{}", range.start, range.end))
                    .map(|_| range.len())
                }
            })
            .buffer_unordered(IMPORT_CHUNKS_IN_FLIGHT);
        while let Some(sent) = results.next().await {
            staged += sent?;
            if progress {
                eprint!(
                    "\rstaged {staged}/{} record sets ({}%), {:.1} s",
                    sets.len(),
                    staged * 100 / sets.len().max(1),
                    started.elapsed().as_secs_f64()
                );
                let _ = std::io::stderr().flush();
            }
        }
        if progress {
            eprintln!();
        }
        Ok(ranges.len() as u64)
    }

    async fn list_all(
        &self,
        zone: &str,
        name: Option<String>,
        rtype: Option<String>,
        stale: bool,
    ) -> Result<Vec<v1::RecordSet>> {
        let mut all = Vec::new();
        let mut cursor = String::new();
        loop {
            let req = v1::ListRecordSetsRequest {
                zone: zone.to_string(),
                name: name.clone().unwrap_or_default(),
                r#type: rtype.clone().unwrap_or_default(),
                start_after: cursor.clone(),
                max_items: 0,
                stale,
            };
            let page = self
                .call(|c| {
                    let req = req.clone();
                    async move {
                        Self::zones(c)
                            .list_record_sets(req)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?;
            all.extend(page.record_sets);
            if page.next_cursor.is_empty() {
                return Ok(all);
            }
            cursor = page.next_cursor;
        }
    }

    fn print_zones(&self, zones: &[v1::Zone]) {
        match self.output {
            Output::Json => self.print_json(json!(
                zones
                    .iter()
                    .map(|z| json!({
                        "name": z.name, "caller_reference": z.caller_reference,
                        "record_set_count": z.record_set_count, "version": z.version,
                    }))
                    .collect::<Vec<_>>()
            )),
            Output::Table => {
                println!("{:<40} {:>8} {:>10}", "ZONE", "SETS", "VERSION");
                for z in zones {
                    println!("{:<40} {:>8} {:>10}", z.name, z.record_set_count, z.version);
                }
            }
        }
    }

    fn print_change(&self, c: &v1::ChangeInfo) {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
        let status = if c.status == v1::ChangeStatus::Insync as i32 {
            "INSYNC"
        } else {
            "PENDING"
        };
        match self.output {
            Output::Json => self.print_json(
                json!({"id": c.id, "status": status, "version": c.version, "comment": c.comment}),
            ),
            Output::Table => println!("change {}  {}  version {}", c.id, status, c.version),
        }
    }

    pub async fn record(&self, cmd: RecordCmd) -> Result<()> {
        match cmd {
            RecordCmd::List {
                zone,
                name,
                rtype,
                stale,
            } => {
                let sets = self.list_all(&absolute(&zone), name, rtype, stale).await?;
                match self.output {
                    Output::Json => {
                        self.print_json(json!(sets.iter().map(|s| json!({
                        "name": s.name, "type": s.r#type, "ttl": s.ttl, "values": s.values,
                        "set_identifier": s.set_identifier, "routing": routing_text(s),
                        "health_check_id": s.health_check_id,
                        "alias_target": s.alias_target.as_ref().map(|a| a.dns_name.clone()),
                        "fail_closed": s.fail_closed,
                    })).collect::<Vec<_>>()))
                    }
                    Output::Table => {
                        println!("{:<40} {:<8} {:>8}  VALUES", "NAME", "TYPE", "TTL");
                        for s in sets {
                            let routing = routing_text(&s);
                            let values = match &s.alias_target {
                                Some(a) => format!("ALIAS {}", a.dns_name),
                                None => s.values.join(" | "),
                            };
                            println!(
                                "{:<40} {:<8} {:>8}  {}{}",
                                s.name,
                                s.r#type,
                                s.ttl,
                                values,
                                if routing.is_empty() {
                                    String::new()
                                } else {
                                    format!("   [{routing}]")
                                }
                            );
                        }
                    }
                }
            }
            RecordCmd::Create(a) => self.change_one(v1::Action::Create, a).await?,
            RecordCmd::Upsert(a) => self.change_one(v1::Action::Upsert, a).await?,
            RecordCmd::Delete(a) => self.change_one(v1::Action::Delete, a).await?,
            RecordCmd::Apply {
                zone,
                file,
                expect_version,
                token,
            } => {
                let origin = Name::parse(&absolute(&zone), None)?;
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let batch = parse_change_batch(&text, &origin)
                    .map_err(|e| anyhow!("{}: {e}", file.display()))?;
                let req = v1::ChangeRecordSetsRequest {
                    idempotency_token: token.unwrap_or_else(client_token),
                    expected_zone_version: expect_version,
                    ..meridian_control::convert::batch_to_proto(&origin, &batch)
                };
                let change = self
                    .call(|c| {
                        let req = req.clone();
                        async move {
                            Self::zones(c)
                                .change_record_sets(req)
                                .await
                                .map(|r| r.into_inner())
                        }
                    })
                    .await?;
                self.print_change(&change);
            }
        }
        Ok(())
    }

    async fn change_one(&self, action: v1::Action, a: RecordArgs) -> Result<()> {
        let zone = absolute(&a.zone);
        let origin = Name::parse(&zone, None)?;
        let name = if a.name == "@" {
            origin.clone()
        } else if a.name.ends_with('.') {
            Name::parse(&a.name, None)?
        } else {
            Name::parse(&a.name, Some(&origin))?
        };
        RType::from_text(&a.rtype).ok_or_else(|| anyhow!("unknown record type {:?}", a.rtype))?;
        let mut set = v1::RecordSet {
            name: name.to_string(),
            r#type: a.rtype.to_uppercase(),
            ttl: a.ttl,
            values: a.values.clone(),
            ..Default::default()
        };
        if action == v1::Action::Delete && a.values.is_empty() {
            // Delete the current set: DELETE must match it exactly, so read it first.
            let current = self
                .list_all(&zone, Some(name.to_string()), Some(a.rtype.clone()), false)
                .await?;
            set = current
                .into_iter()
                .next()
                .ok_or_else(|| anyhow!("no {} {} in {zone}", name, a.rtype))?;
        }
        if action != v1::Action::Delete && set.values.is_empty() {
            bail!("give at least one value");
        }
        let req = v1::ChangeRecordSetsRequest {
            zone,
            comment: String::new(),
            changes: vec![v1::Change {
                action: action as i32,
                record_set: Some(set),
            }],
            idempotency_token: client_token(),
            expected_zone_version: None,
        };
        let change = self
            .call(|c| {
                let req = req.clone();
                async move {
                    Self::zones(c)
                        .change_record_sets(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?;
        self.print_change(&change);
        Ok(())
    }

    pub(crate) async fn get_change(&self, id: &str) -> Result<v1::ChangeInfo> {
        self.call(|c| {
            let id = id.to_string();
            async move {
                Self::zones(c)
                    .get_change(v1::GetChangeRequest { id, stale: false })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    pub async fn change(&self, cmd: ChangeCmd) -> Result<()> {
        match cmd {
            ChangeCmd::Get { id } => {
                let c = self.get_change(&id).await?;
                self.print_change(&c);
            }
            ChangeCmd::Wait { id, timeout } => {
                let deadline = Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
                loop {
                    let c = match self.get_change(&id).await {
                        Ok(c) => c,
                        // An election or restart: keep waiting until the deadline.
                        Err(e)
                            if e.downcast_ref::<Unavailable>().is_some()
                                && Instant::now() < deadline =>
                        {
                            tokio::time::sleep(WAIT_POLL).await;
                            continue;
                        }
                        Err(e) => return Err(e),
                    };
                    if c.status == v1::ChangeStatus::Insync as i32 {
                        self.print_change(&c);
                        return Ok(());
                    }
                    if Instant::now() >= deadline {
                        bail!("change {id} still PENDING after {timeout} s");
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
            }
        }
        Ok(())
    }

    /// `pop/NAME` or `edge/ID` for a drain target given as a bare name: a known POP or edge id
    /// (the edges' reports say which exist); a name that is both, or neither, needs `--kind`.
    pub(crate) async fn drain_target(&self, args: &DrainArgs) -> Result<String> {
        if let Some(kind) = args.kind {
            let prefix = match kind {
                DrainKind::Pop => "pop",
                DrainKind::Edge => "edge",
            };
            return Ok(format!("{prefix}/{}", args.target));
        }
        if args.target.starts_with("pop/") || args.target.starts_with("edge/") {
            return Ok(args.target.clone());
        }
        let list = self.list_edges().await?;
        let is_pop = list.edges.iter().any(|e| e.pop == args.target);
        let is_edge = list.edges.iter().any(|e| e.edge_id == args.target);
        match (is_pop, is_edge) {
            (true, false) => Ok(format!("pop/{}", args.target)),
            (false, true) => Ok(format!("edge/{}", args.target)),
            (true, true) => bail!(
                "{:?} is both a POP and an edge id: add --kind pop or --kind edge",
                args.target
            ),
            (false, false) => bail!(
                "no edge has reported POP or id {:?}: add --kind pop or --kind edge to drain it anyway",
                args.target
            ),
        }
    }

    pub(crate) async fn list_edges(&self) -> Result<v1::ListEdgesResponse> {
        self.call(|c| async move {
            EdgeSyncClient::new(c)
                .list_edges(v1::ListEdgesRequest { local: false })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    pub async fn edges(&self, cmd: EdgesCmd) -> Result<()> {
        let (args, drained) = match cmd {
            EdgesCmd::List => return self.edges_list().await,
            EdgesCmd::Drain(args) => (args, true),
            EdgesCmd::Undrain(args) => (args, false),
        };
        let target = self.drain_target(&args).await?;
        let change = self.set_drain(&target, drained, &args.comment).await?;
        self.print_change(&change);
        Ok(())
    }

    async fn edges_list(&self) -> Result<()> {
        let list = self
            .call(|c| async move {
                EdgeSyncClient::new(c)
                    .list_edges(v1::ListEdgesRequest { local: false })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?;
        let now = meridian_control::node::now_ms();
        match self.output {
            Output::Json => self.print_json(json!({
                "catalog_version": list.catalog_version,
                "edges": list.edges.iter().map(|e| json!({
                    "id": e.edge_id, "pop": e.pop, "version": e.applied_version,
                    "lag": list.catalog_version.saturating_sub(e.applied_version),
                    "last_seen_ms_ago": now.saturating_sub(e.last_seen_unix_ms),
                    "stale": e.stale, "addresses": e.addresses,
                    "drained": e.drained, "announced": e.announced,
                    "announce_reason": e.announce_reason,
                })).collect::<Vec<_>>(),
            })),
            Output::Table => {
                println!("catalog version {}", list.catalog_version);
                println!(
                    "{:<20} {:<12} {:>10} {:>6} {:>12}  {:<6} {:<8} ANYCAST",
                    "EDGE", "POP", "VERSION", "LAG", "LAST SEEN", "STATE", "DRAINED"
                );
                for e in &list.edges {
                    let anycast = match (e.announced, e.announce_reason.as_str()) {
                        (_, "") => "-".to_string(),
                        (true, _) => "announced".to_string(),
                        (false, why) => format!("withdrawn ({why})"),
                    };
                    println!(
                        "{:<20} {:<12} {:>10} {:>6} {:>10.1}s  {:<6} {:<8} {}",
                        e.edge_id,
                        e.pop,
                        e.applied_version,
                        list.catalog_version.saturating_sub(e.applied_version),
                        now.saturating_sub(e.last_seen_unix_ms) as f64 / 1000.0,
                        if e.stale { "stale" } else { "live" },
                        if e.drained { "yes" } else { "no" },
                        anycast
                    );
                }
            }
        }
        Ok(())
    }
}

/// A record set's routing, as one short phrase (empty for a simple set).
fn routing_text(s: &v1::RecordSet) -> String {
    use v1::routing_policy::Kind;
    let mut parts = Vec::new();
    if !s.set_identifier.is_empty() {
        parts.push(format!("id {}", s.set_identifier));
    }
    if let Some(kind) = s.policy.as_ref().and_then(|p| p.kind.as_ref()) {
        parts.push(match kind {
            Kind::Weight(w) => format!("weight {w}"),
            Kind::Failover(f) => format!("failover {f}"),
            Kind::Multivalue(_) => "multivalue".into(),
            Kind::Region(r) => format!("latency {r}"),
            Kind::Geolocation(g) => {
                if !g.continent_code.is_empty() {
                    format!("geo continent {}", g.continent_code)
                } else if !g.subdivision_code.is_empty() {
                    format!("geo {}-{}", g.country_code, g.subdivision_code)
                } else {
                    format!("geo {}", g.country_code)
                }
            }
            Kind::Geoproximity(g) => format!(
                "geoproximity {:.2},{:.2} bias {}",
                g.latitude, g.longitude, g.bias
            ),
            Kind::Cidr(c) => format!("cidr {}/{}", c.collection_id, c.location_name),
        });
    }
    if !s.health_check_id.is_empty() {
        parts.push(format!("check {}", s.health_check_id));
    }
    if let Some(a) = &s.alias_target {
        parts.push(format!(
            "alias{}",
            if a.evaluate_target_health {
                " evaluate-target-health"
            } else {
                ""
            }
        ));
    }
    if s.fail_closed {
        parts.push("fail-closed".into());
    }
    parts.join(", ")
}

fn health_json(h: &v1::HealthCheck) -> serde_json::Value {
    json!({
        "id": h.id, "status": h.status, "caller_reference": h.caller_reference,
        "config": serde_json::from_str::<serde_json::Value>(&h.config_json).unwrap_or_default(),
        "evidence": h.evidence,
        "pops": h.pops.iter().map(|p| json!({
            "pop": p.pop, "verdict": p.verdict, "last_ok": p.last_ok, "last_rtt_ms": p.last_rtt_ms,
            "last_detail": p.last_detail, "last_unix_ms": p.last_unix_ms,
            "consecutive_failures": p.consecutive_failures,
            "consecutive_successes": p.consecutive_successes,
        })).collect::<Vec<_>>(),
    })
}

/// Seconds since the epoch with milliseconds, for `--watch` lines.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "server" that accepts connections, reads what the client sends, then drops them: the
    /// connection is lost with the request in flight, as when a leader is killed mid-call.
    async fn dropping_server() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // Wait for the request's HEADERS, not only the preface and SETTINGS.
                    let mut seen = 0;
                    while seen < 100 {
                        match tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen += n,
                        }
                    }
                });
            }
        });
        addr
    }

    async fn list_zones(c: Channel) -> Result<v1::ListZonesResponse, tonic::Status> {
        Client::zones(c)
            .list_zones(v1::ListZonesRequest::default())
            .await
            .map(|r| r.into_inner())
    }

    #[tokio::test]
    async fn lost_connection_is_retried_only_when_replay_is_safe() {
        let addr = dropping_server().await;
        let client = Client::new(vec![addr.clone()], Output::Table);

        let safe = client.call_pass(Replay::Safe, &mut list_zones).await;
        let err = safe.expect_err("the server answers nothing");
        assert!(
            err.downcast_ref::<Unavailable>().is_some(),
            "a replay-safe call moves on to the next endpoint: {err:#}"
        );
        assert!(format!("{err:#}").contains("connection lost"), "{err:#}");

        let unsafe_ = client.call_pass(Replay::Unsafe, &mut list_zones).await;
        let err = unsafe_.expect_err("the server answers nothing");
        assert!(err.downcast_ref::<Unavailable>().is_none(), "{err:#}");
        assert!(
            format!("{err:#}").contains("may or may not have been applied"),
            "{err:#}"
        );
    }

    #[test]
    fn client_tokens_are_distinct_and_within_the_api_limit() {
        let a = client_token();
        let b = client_token();
        assert_ne!(a, b);
        assert!(a.len() <= meridian_control::api::CLIENT_TOKEN_BYTES_MAX);
    }

    #[test]
    fn server_answers_are_not_lost_connections() {
        assert!(!connection_lost(&tonic::Status::unknown("transport error")));
        assert!(!connection_lost(&tonic::Status::invalid_argument("bad")));
    }
}
