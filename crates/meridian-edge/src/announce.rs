//! Announcing this POP's anycast prefixes through BIRD: the edge enables its BIRD protocols
//! (static routes of the anycast prefixes, exported to BGP) while it can serve, and disables
//! them when it cannot or should not, over BIRD's control socket (`enable "anycast*"`).
//!
//! Why the edge and not a separate health checker: only the edge knows whether its sockets are
//! bound, its catalog loaded and its POP drained, and it answers the queries the route attracts.
//!
//! The rules (see ARCHITECTURE.md, "The health → BGP path"):
//! - announce only while serving: sockets bound (done before this starts), a catalog loaded,
//!   not drained (by POP or by edge id, replicated through Raft), not shutting down;
//! - losing the control plane never withdraws (static stability: an outage of the control plane
//!   must not take every POP off the Internet at once), unless the operator set
//!   `--max-staleness-s`, off by default;
//! - if the process dies, the route must go too: the liveness interface (a tun device this
//!   process holds; the kernel deletes it when the process exits, even on SIGKILL) carries the
//!   BIRD static routes (`via "mrd-live"`), and systemd's `ExecStopPost` disables the protocols.
//!
//! Deliberately absent: speaking BGP ourselves (BIRD brings BFD, graceful-restart handling and
//! proven interop) and editing BIRD's config (the edge only toggles protocols it is given).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use meridian_core::Catalog;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{Mutex, watch};

use crate::sync::SyncStats;

/// How often the announcer re-evaluates. A drain reaches the edge in the catalog stream; this
/// bounds what it adds before BIRD hears of it.
pub const ANNOUNCE_TICK: Duration = Duration::from_millis(50);
/// How often the desired state is re-sent even when unchanged: a BIRD restarted with its
/// `disabled yes` config comes back withdrawn, and this re-enables it within the interval.
pub const ANNOUNCE_REASSERT: Duration = Duration::from_secs(2);
/// A BIRD that does not answer within this is treated as failed (the command is retried).
pub const BIRD_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest reply we read from BIRD for one command; ours are a few lines.
pub const BIRD_REPLY_LINES_MAX: usize = 256;
/// Protocol patterns one edge toggles (one per family and prefix set is typical).
pub const BIRD_PROTOCOLS_MAX: usize = 16;
/// Longest network interface name Linux accepts (IFNAMSIZ includes the NUL).
pub const IFNAME_BYTES_MAX: usize = 15;
/// The edge queries its own DNS socket this often: a POP that cannot answer must stop
/// attracting traffic within a second (a firewall mistake, stuck or dead workers).
pub const SELF_CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// A self-query unanswered after this failed; loopback answers take microseconds.
pub const SELF_CHECK_TIMEOUT: Duration = Duration::from_millis(150);
/// Consecutive failures that withdraw, and successes that announce again (hysteresis, so one
/// lost datagram never flaps the route): 3 × 200 ms keeps detection under a second.
pub const SELF_CHECK_THRESHOLD: u32 = 3;

/// Why the edge announces or not; reported to the control plane and in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// Not decided yet (the announcer has not run).
    Starting = 0,
    Serving = 1,
    /// No catalog yet (no cache, control plane not reached).
    NoCatalog = 2,
    /// The POP or this edge is drained.
    Drained = 3,
    /// SIGTERM: withdrawn, still answering for the grace period.
    ShuttingDown = 4,
    /// `--max-staleness-s` exceeded without a control node acknowledging a report.
    ControlStale = 5,
    /// Our own DNS socket does not answer our queries.
    NotAnswering = 6,
}

impl Reason {
    pub fn from_u8(v: u8) -> Reason {
        match v {
            1 => Reason::Serving,
            2 => Reason::NoCatalog,
            3 => Reason::Drained,
            4 => Reason::ShuttingDown,
            5 => Reason::ControlStale,
            6 => Reason::NotAnswering,
            _ => Reason::Starting,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Starting => "starting",
            Reason::Serving => "serving",
            Reason::NoCatalog => "no-catalog",
            Reason::Drained => "drained",
            Reason::ShuttingDown => "shutting-down",
            Reason::ControlStale => "control-stale",
            Reason::NotAnswering => "not-answering",
        }
    }
}

/// What the edge knows when deciding.
#[derive(Clone, Copy, Debug)]
pub struct Inputs {
    pub catalog_loaded: bool,
    pub drained: bool,
    pub shutting_down: bool,
    /// `Some(ms)` since the last acknowledged report, when `--max-staleness-s` is set.
    pub control_silence_ms: Option<u64>,
    pub max_staleness_ms: Option<u64>,
    /// The self-check says our DNS socket does not answer.
    pub not_answering: bool,
}

/// The decision, pure: announce or not, and why. Shutting down and drains win over everything;
/// control-plane silence counts only when the operator asked for it.
pub fn decide(i: Inputs) -> (bool, Reason) {
    if i.shutting_down {
        return (false, Reason::ShuttingDown);
    }
    if i.drained {
        return (false, Reason::Drained);
    }
    if !i.catalog_loaded {
        return (false, Reason::NoCatalog);
    }
    if i.not_answering {
        return (false, Reason::NotAnswering);
    }
    if let (Some(silence), Some(max)) = (i.control_silence_ms, i.max_staleness_ms)
        && silence > max
    {
        return (false, Reason::ControlStale);
    }
    (true, Reason::Serving)
}

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("BIRD socket {0}: {1}")]
    Socket(PathBuf, io::Error),
    #[error("BIRD did not answer within {0:?}")]
    Timeout(Duration),
    #[error("BIRD refused {command:?}: {reply}")]
    Refused { command: String, reply: String },
    #[error("BIRD protocol error: {0}")]
    Protocol(String),
    #[error("liveness interface {0:?}: {1}")]
    Liveness(String, io::Error),
    #[error("invalid option: {0}")]
    Config(String),
}

#[derive(Clone, Debug)]
pub struct AnnounceOptions {
    pub bird_socket: PathBuf,
    /// BIRD protocol names or patterns (`anycast*`) to enable and disable.
    pub protocols: Vec<String>,
    pub max_staleness: Option<Duration>,
    /// Tun device whose life is this process's (see [`LivenessInterface`]).
    pub liveness_interface: Option<String>,
    /// Where the self-check sends its queries (one of our listen addresses); `None`: no check.
    pub self_check: Option<std::net::SocketAddr>,
}

impl AnnounceOptions {
    pub fn validate(&self) -> Result<(), AnnounceError> {
        if self.protocols.is_empty() || self.protocols.len() > BIRD_PROTOCOLS_MAX {
            return Err(AnnounceError::Config(format!(
                "give 1 to {BIRD_PROTOCOLS_MAX} BIRD protocols"
            )));
        }
        for p in &self.protocols {
            // The name goes inside a quoted BIRD CLI argument: no quotes, no line breaks.
            if p.is_empty()
                || p.len() > 64
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-*?.".contains(&b))
            {
                return Err(AnnounceError::Config(format!(
                    "BIRD protocol {p:?}: letters, digits, '_', '-', '.', '*', '?' only"
                )));
            }
        }
        Ok(())
    }
}

/// A connection to BIRD's control socket, one command at a time.
struct Bird {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    write: tokio::net::unix::OwnedWriteHalf,
}

impl Bird {
    async fn connect(path: &PathBuf) -> Result<Bird, AnnounceError> {
        let stream = tokio::time::timeout(BIRD_REPLY_TIMEOUT, UnixStream::connect(path))
            .await
            .map_err(|_| AnnounceError::Timeout(BIRD_REPLY_TIMEOUT))?
            .map_err(|e| AnnounceError::Socket(path.clone(), e))?;
        let (read, write) = stream.into_split();
        let mut bird = Bird {
            lines: BufReader::new(read).lines(),
            write,
        };
        // The greeting: "0001 BIRD 2.0.12 ready."
        let greeting = bird.reply().await?;
        if !greeting.starts_with("0001") {
            return Err(AnnounceError::Protocol(format!("greeting {greeting:?}")));
        }
        Ok(bird)
    }

    /// Reads one reply: lines `DDDD-text` or ` text` continue it, `DDDD text` ends it. Returns
    /// the reply's lines joined; the first code is the reply's.
    async fn reply(&mut self) -> Result<String, AnnounceError> {
        let mut text = String::new();
        for _ in 0..BIRD_REPLY_LINES_MAX {
            let line = tokio::time::timeout(BIRD_REPLY_TIMEOUT, self.lines.next_line())
                .await
                .map_err(|_| AnnounceError::Timeout(BIRD_REPLY_TIMEOUT))?
                .map_err(|e| AnnounceError::Protocol(e.to_string()))?
                .ok_or_else(|| AnnounceError::Protocol("BIRD closed the socket".into()))?;
            if !text.is_empty() {
                text.push_str(" | ");
            }
            text.push_str(line.trim_end());
            let b = line.as_bytes();
            if b.len() >= 5 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b' ' {
                return Ok(text);
            }
        }
        Err(AnnounceError::Protocol("reply too long".into()))
    }

    /// Runs `enable "P"` or `disable "P"`. Codes 8xxx/9xxx are errors (e.g. 8003 "No protocols
    /// match": a misconfigured pattern must be loud, not a silent no-op).
    async fn toggle(&mut self, enable: bool, protocol: &str) -> Result<String, AnnounceError> {
        let command = format!(
            "{} \"{protocol}\"",
            if enable { "enable" } else { "disable" }
        );
        self.write
            .write_all(format!("{command}\n").as_bytes())
            .await
            .map_err(|e| AnnounceError::Protocol(e.to_string()))?;
        let reply = self.reply().await?;
        if reply.starts_with('8') || reply.starts_with('9') {
            return Err(AnnounceError::Refused { command, reply });
        }
        Ok(reply)
    }
}

/// Drives BIRD from the edge's state. Shared by the periodic loop and the shutdown path; the
/// connection lock serializes their commands, so a withdraw is never overtaken by an enable.
pub struct Announcer {
    options: AnnounceOptions,
    pop: String,
    edge_id: String,
    catalog: Arc<ArcSwap<Catalog>>,
    stats: Arc<SyncStats>,
    conn: Mutex<Option<Bird>>,
    /// Held for the process's lifetime; up exactly while we announce.
    liveness: Option<LivenessInterface>,
    started_ms: u64,
    /// Set once on SIGTERM; from then on nothing announces again.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The self-check's verdict, with hysteresis (see [`SELF_CHECK_THRESHOLD`]).
    not_answering: std::sync::atomic::AtomicBool,
}

impl Announcer {
    pub fn new(
        options: AnnounceOptions,
        pop: String,
        edge_id: String,
        catalog: Arc<ArcSwap<Catalog>>,
        stats: Arc<SyncStats>,
    ) -> Result<Arc<Announcer>, AnnounceError> {
        options.validate()?;
        // Created now, so a missing capability fails the start instead of the first announce.
        let liveness = options
            .liveness_interface
            .as_deref()
            .map(LivenessInterface::create)
            .transpose()?;
        Ok(Arc::new(Announcer {
            options,
            pop,
            edge_id,
            catalog,
            stats,
            conn: Mutex::new(None),
            liveness,
            started_ms: crate::now_ms(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
            not_answering: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn inputs(&self) -> Inputs {
        let shutting_down = self.shutting_down.load(Ordering::Relaxed);
        let catalog = self.catalog.load();
        let drained = catalog.routing().is_drained(&self.pop, &self.edge_id);
        self.stats.drained.store(drained, Ordering::Relaxed);
        // Silence counts from start: an edge that never reached a control node is as stale.
        let contact = self
            .stats
            .last_contact_ms
            .load(Ordering::Relaxed)
            .max(self.started_ms);
        Inputs {
            catalog_loaded: self.stats.applied_version.load(Ordering::Relaxed) > 0,
            drained,
            shutting_down,
            control_silence_ms: Some(crate::now_ms().saturating_sub(contact)),
            max_staleness_ms: self.options.max_staleness.map(|d| d.as_millis() as u64),
            not_answering: self.not_answering.load(Ordering::Relaxed),
        }
    }

    /// Sends the desired state to BIRD (reconnecting if needed); on failure the connection is
    /// dropped so the next attempt starts clean.
    async fn apply(&self, announce: bool) -> Result<(), AnnounceError> {
        let mut conn = self.conn.lock().await;
        // The loop may have decided before a SIGTERM took the lock first: never undo it.
        if announce && self.shutting_down.load(Ordering::Relaxed) {
            return Ok(());
        }
        // Withdraw: link first, so it happens even if BIRD hangs, and BIRD regardless of the
        // link's result (the first error is returned). Announce: link last, once BIRD has
        // accepted the protocols.
        let mut link_error = None;
        if !announce && let Some(l) = &self.liveness {
            link_error = l.set_up(false).err();
        }
        if conn.is_none() {
            *conn = Some(Bird::connect(&self.options.bird_socket).await?);
        }
        let bird = conn.as_mut().expect("connected above");
        for p in &self.options.protocols {
            match bird.toggle(announce, p).await {
                Ok(reply) => tracing::debug!(protocol = %p, announce, %reply, "BIRD"),
                Err(e) => {
                    *conn = None;
                    return Err(e);
                }
            }
        }
        if announce && let Some(l) = &self.liveness {
            // A SIGTERM may have withdrawn while we talked to BIRD: never bring the link back.
            if self.shutting_down.load(Ordering::Relaxed) {
                return Ok(());
            }
            l.set_up(true)?;
        }
        link_error.map_or(Ok(()), Err)
    }

    fn record(&self, announced: bool, reason: Reason) {
        let was = self.stats.announced.swap(announced, Ordering::Relaxed);
        let old_reason = self
            .stats
            .announce_reason
            .swap(reason as u8, Ordering::Relaxed);
        if was != announced || old_reason != reason as u8 {
            self.stats.announce_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                announced,
                reason = reason.as_str(),
                "anycast {}",
                if announced { "announced" } else { "withdrawn" }
            );
        }
    }

    /// Withdraws for shutdown; called on SIGTERM before the grace period. The loop, seeing
    /// `shutting_down`, never re-enables.
    pub async fn withdraw_for_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
        // At once, before waiting for the BIRD connection (the loop may hold it while BIRD
        // hangs): the routes via the link go now.
        if let Some(l) = &self.liveness
            && let Err(e) = l.set_up(false)
        {
            tracing::error!(error = %e, "liveness link down on shutdown failed");
        }
        match self.apply(false).await {
            Ok(()) => self.record(false, Reason::ShuttingDown),
            Err(e) => tracing::error!(error = %e, "withdraw on shutdown failed"),
        }
    }

    /// Re-evaluates every [`ANNOUNCE_TICK`] until `shutdown` changes; sends BIRD the desired
    /// state when it changes, and every [`ANNOUNCE_REASSERT`] regardless.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Some(target) = self.options.self_check {
            tokio::spawn(self.clone().self_check(target, shutdown.clone()));
        }
        let mut sent: Option<bool> = None;
        let mut last_sent = tokio::time::Instant::now();
        let mut ticker = tokio::time::interval(ANNOUNCE_TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let (announce, reason) = decide(self.inputs());
            if self.shutting_down.load(Ordering::Relaxed) {
                return;
            }
            if sent == Some(announce) && last_sent.elapsed() < ANNOUNCE_REASSERT {
                self.record(announce, reason);
                continue;
            }
            match self.apply(announce).await {
                Ok(()) => {
                    sent = Some(announce);
                    last_sent = tokio::time::Instant::now();
                    // A SIGTERM that withdrew meanwhile owns the recorded state from now on.
                    if self.shutting_down.load(Ordering::Relaxed) {
                        return;
                    }
                    self.record(announce, reason);
                }
                Err(e) => {
                    // Unknown state: retry at the next tick, and say so once per change.
                    if sent.is_some() {
                        tracing::error!(error = %e, "cannot reach BIRD; retrying");
                    }
                    sent = None;
                    // What BIRD does now is unknown; report the pessimistic view.
                    self.stats.announced.store(false, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(ANNOUNCE_REASSERT / 4) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    }
}

impl Announcer {
    /// Queries our own DNS socket every [`SELF_CHECK_INTERVAL`] (CHAOS TXT `id.server`, which
    /// every edge answers, from a fresh socket so the SO_REUSEPORT hash visits the workers in
    /// turn); [`SELF_CHECK_THRESHOLD`] failures in a row set `not_answering`, as many
    /// successes clear it.
    async fn self_check(
        self: Arc<Self>,
        target: std::net::SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (mut failures, mut successes) = (0u32, 0u32);
        let mut id: u16 = 0;
        // A fixed cadence (the timeout is shorter than the interval): failures are detected in
        // THRESHOLD intervals, not THRESHOLD × (interval + timeout).
        let mut ticker = tokio::time::interval(SELF_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            id = id.wrapping_add(1);
            let ok = self_query(target, id).await;
            if ok {
                (failures, successes) = (0, successes.saturating_add(1));
            } else {
                (failures, successes) = (failures.saturating_add(1), 0);
            }
            let was = self.not_answering.load(Ordering::Relaxed);
            if !was && failures >= SELF_CHECK_THRESHOLD {
                tracing::error!(%target, failures, "our own DNS socket does not answer: withdrawing");
                self.not_answering.store(true, Ordering::Relaxed);
            } else if was && successes >= SELF_CHECK_THRESHOLD {
                tracing::info!(%target, "our own DNS socket answers again");
                self.not_answering.store(false, Ordering::Relaxed);
            }
        }
    }
}

/// One self-query: any well-formed response with our id counts (REFUSED too: the server runs).
async fn self_query(target: std::net::SocketAddr, id: u16) -> bool {
    let local: std::net::SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = tokio::net::UdpSocket::bind(local).await else {
        return false;
    };
    // CH TXT id.server, RD off, no EDNS.
    let mut q = Vec::with_capacity(32);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x02id\x06server\x00");
    q.extend_from_slice(&[0, 16, 0, 3]);
    if socket.send_to(&q, target).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let answer = tokio::time::timeout(SELF_CHECK_TIMEOUT, async {
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) if from == target && n >= 12 => {
                    if buf[..2] == id.to_be_bytes() && buf[2] & 0x80 != 0 {
                        return true;
                    }
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    answer.unwrap_or(false)
}

/// A tun interface held open by this process: BIRD static routes `via "NAME"` exist only while
/// it does. The kernel deletes a non-persistent tun device when its last file descriptor
/// closes, which happens however the process ends (exit, crash, SIGKILL, OOM kill), so the
/// routes are withdrawn even when nothing runs after us.
pub struct LivenessInterface {
    _device: std::fs::File,
    pub name: String,
}

/// `struct ifreq` for TUNSETIFF and SIOC[GS]IFFLAGS: name, then a union whose first member we use
/// as the flags (`short`); 40 bytes on 64-bit Linux.
#[repr(C)]
struct IfReqFlags {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// `_IOW('T', 202, int)`: attach this fd to a (new) tun/tap device.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
/// No packet-information header: we never read packets anyway.
const IFF_NO_PI: libc::c_short = 0x1000;
/// Fail if the device exists: attaching to a persistent device (`ip tuntap add`) would leave it
/// behind when we die, and the routes with it.
const IFF_TUN_EXCL: libc::c_short = 0x8000u16 as libc::c_short;

impl LivenessInterface {
    /// Creates the device and sets it up. Needs CAP_NET_ADMIN. Fails if another live process
    /// holds a device of that name (two edges on one host need two names).
    pub fn create(name: &str) -> Result<LivenessInterface, AnnounceError> {
        use std::os::fd::AsRawFd;
        let err = |e: io::Error| AnnounceError::Liveness(name.to_string(), e);
        if name.is_empty()
            || name.len() > IFNAME_BYTES_MAX
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(AnnounceError::Config(format!(
                "liveness interface {name:?}: 1 to {IFNAME_BYTES_MAX} of [A-Za-z0-9._-]"
            )));
        }
        let device = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(err)?;
        let mut req = IfReqFlags {
            name: [0; 16],
            flags: IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`, which `req` is laid out as; the
        // fd is open for the call's duration.
        if unsafe { libc::ioctl(device.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        tracing::info!(
            interface = name,
            "liveness interface created, down until we announce (it goes away with this process)"
        );
        let interface = LivenessInterface {
            _device: device,
            name: name.to_string(),
        };
        // A device left up by nobody cannot exist (it dies with its holder), but be explicit.
        interface.set_up(false)?;
        Ok(interface)
    }

    /// Sets the link up (the routes via it come back) or down (they go): a second path to
    /// withdraw that works even when BIRD's socket does not answer.
    pub fn set_up(&self, up: bool) -> Result<(), AnnounceError> {
        use std::os::fd::AsRawFd;
        let err = |e: io::Error| AnnounceError::Liveness(self.name.clone(), e);
        let mut req = IfReqFlags {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..self.name.len()].copy_from_slice(self.name.as_bytes());
        // Interface flags are set through any socket of the namespace; an unspecified bind needs
        // no address, so it works before `lo` is up.
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")
            .or_else(|_| std::net::UdpSocket::bind("[::]:0"))
            .map_err(err)?;
        // SAFETY: SIOCGIFFLAGS fills `flags` of a `struct ifreq`, SIOCSIFFLAGS reads it; `req`
        // has that layout and outlives the calls.
        unsafe {
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(err(io::Error::last_os_error()));
            }
            if up {
                req.flags |= libc::IFF_UP as libc::c_short;
            } else {
                req.flags &= !(libc::IFF_UP as libc::c_short);
            }
            if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
                return Err(err(io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            catalog_loaded: true,
            drained: false,
            shutting_down: false,
            control_silence_ms: Some(0),
            max_staleness_ms: None,
            not_answering: false,
        }
    }

    #[test]
    fn announces_only_while_serving() {
        assert_eq!(decide(inputs()), (true, Reason::Serving));
        let no_catalog = Inputs {
            catalog_loaded: false,
            ..inputs()
        };
        assert_eq!(decide(no_catalog), (false, Reason::NoCatalog));
        let drained = Inputs {
            drained: true,
            ..inputs()
        };
        assert_eq!(decide(drained), (false, Reason::Drained));
        let stopping = Inputs {
            shutting_down: true,
            drained: true,
            ..inputs()
        };
        assert_eq!(decide(stopping), (false, Reason::ShuttingDown));
        let mute = Inputs {
            not_answering: true,
            ..inputs()
        };
        assert_eq!(decide(mute), (false, Reason::NotAnswering));
    }

    #[tokio::test]
    async fn the_self_query_needs_an_answer() {
        // A socket that answers (echoes with QR set) and one that never does.
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = server.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = server.recv_from(&mut buf).await.unwrap();
                buf[2] |= 0x80;
                server.send_to(&buf[..n], from).await.unwrap();
            }
        });
        assert!(self_query(target, 7).await);
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!self_query(silent.local_addr().unwrap(), 8).await);
    }

    #[test]
    fn control_plane_silence_withdraws_only_when_asked() {
        // Static stability: an hour without the control plane still announces by default.
        let silent = Inputs {
            control_silence_ms: Some(3_600_000),
            ..inputs()
        };
        assert_eq!(decide(silent), (true, Reason::Serving));
        let bounded = Inputs {
            max_staleness_ms: Some(60_000),
            ..silent
        };
        assert_eq!(decide(bounded), (false, Reason::ControlStale));
        let fresh = Inputs {
            control_silence_ms: Some(59_000),
            ..bounded
        };
        assert_eq!(decide(fresh), (true, Reason::Serving));
    }

    #[test]
    fn protocol_patterns_cannot_inject_commands() {
        let opts = |p: &str| AnnounceOptions {
            bird_socket: "/x".into(),
            protocols: vec![p.to_string()],
            max_staleness: None,
            liveness_interface: None,
            self_check: None,
        };
        assert!(opts("anycast*").validate().is_ok());
        assert!(opts("anycast4").validate().is_ok());
        for bad in ["", "a\"; down", "a\nshutdown", "a b"] {
            assert!(opts(bad).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_round_trip() {
        for r in [
            Reason::Starting,
            Reason::Serving,
            Reason::NoCatalog,
            Reason::Drained,
            Reason::ShuttingDown,
            Reason::ControlStale,
            Reason::NotAnswering,
        ] {
            assert_eq!(Reason::from_u8(r as u8), r);
        }
    }
}
