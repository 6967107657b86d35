//! `meridian gameday run SCENARIO.yaml`: a failover rehearsal, measured. Probes the anycast
//! addresses from each client at a fixed rate (UDP, NSID says which edge answered), runs the
//! scenario's steps (faults through the API, lab-only faults as shell hooks, waits and
//! assertions), watches the API (health transitions, INSYNC of its own changes, each edge's
//! announce state), and writes a report: Markdown, JSON and an SVG timeline.
//!
//! The analysis (what was lost, wrong, which POP answered, when traffic shifted, SLO burn) is
//! pure functions over the probe records, so it is tested without sockets.
//!
//! Deliberately absent: TCP probes (anycast route changes affect UDP and TCP alike, and UDP
//! shows a lost query directly), and faults that need root on remote hosts (hooks run locally;
//! use ssh in a hook for real POPs).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::client::Client;
use meridian_proto::v1;

/// A scenario file is read whole; real ones are a few KiB.
const SCENARIO_BYTES_MAX: usize = 1 << 20;
const STEPS_MAX: usize = 256;
/// Probers (clients × targets): each is two threads and a socket.
const PROBERS_MAX: usize = 32;
/// Per prober; 1,000/s resolves a 1 ms shift and is still far below what an edge serves.
const PROBE_RATE_MAX: u32 = 1_000;
/// Records kept per prober (at 1,000/s, 30 minutes): bounds memory of a long game day.
const RECORDS_PER_PROBER_MAX: usize = 1_800_000;
/// A probe resolved this many times in a row the same way satisfies a wait: one answer could be
/// a straggler from before a route change.
const WAIT_RUN_MIN: usize = 3;
/// Bounds every wait and hook, so a scenario always ends.
const STEP_TIMEOUT_MAX_S: f64 = 600.0;
/// An API step (drain, set_health) that has not committed by then fails the game day.
const API_STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the API watcher polls health checks and edges.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How often a change's status is polled until INSYNC.
const INSYNC_POLL: Duration = Duration::from_millis(20);
/// Give up waiting for a change to be INSYNC after this.
const INSYNC_WAIT_MAX: Duration = Duration::from_secs(60);
const DNS_MESSAGE_BYTES_MAX: usize = 4096;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub probe: ProbeSpec,
    #[serde(default)]
    pub slo: Slo,
    /// Health checks whose transitions go on the timeline.
    #[serde(default)]
    pub watch_health: Vec<String>,
    pub steps: Vec<Step>,
    /// Steps run whatever happened (restore the lab).
    #[serde(default)]
    pub finally: Vec<Step>,
    /// Figures: time from one mark to another.
    #[serde(default)]
    pub measure: Vec<Measure>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSpec {
    /// `ADDR:PORT`, IPv6 as `[ADDR]:PORT`.
    pub targets: Vec<String>,
    pub qname: String,
    #[serde(default = "default_qtype")]
    pub qtype: String,
    pub rate_per_s: u32,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Addresses a right answer may hold (empty: any NOERROR answer with data is right).
    #[serde(default)]
    pub expect_answers: Vec<String>,
    /// Where probes come from; default one client in the runner's own network namespace.
    #[serde(default)]
    pub clients: Vec<ClientSpec>,
}

fn default_qtype() -> String {
    "A".into()
}
fn default_timeout_ms() -> u32 {
    1000
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    pub name: String,
    /// A named network namespace (`ip netns`) the client's probes are sent from.
    #[serde(default)]
    pub netns: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Fraction of queries answered right within the timeout.
    pub availability: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            availability: 0.999,
        }
    }
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Measure {
    pub name: String,
    pub from: String,
    pub to: String,
    /// The figure must be at most this (seconds), or the game day fails.
    #[serde(default)]
    pub max_s: Option<f64>,
}

#[derive(Debug)]
pub struct Step {
    pub name: Option<String>,
    /// Puts a named event on the timeline: when the action started, or for a wait, when the
    /// condition first held.
    pub mark: Option<String>,
    pub action: Action,
}

/// By hand, because `#[serde(flatten)]` would accept typos and a second action silently: a
/// step is `name`, `mark` and exactly one action key, whose fields are checked strictly.
impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_yaml::Mapping::deserialize(d)?;
        let mut text = |key: &str| match map.remove(key) {
            None => Ok(None),
            Some(serde_yaml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(D::Error::custom(format!("step {key} must be a string"))),
        };
        let name = text("name")?;
        let mark = text("mark")?;
        if map.len() != 1 {
            let keys: Vec<String> = map
                .keys()
                .map(|k| {
                    serde_yaml::to_string(k)
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect();
            return Err(D::Error::custom(format!(
                "a step has name, mark and exactly one action; found {keys:?}"
            )));
        }
        // serde_yaml reads enums only as `!Tag`s; serde's own flatten path reads the one-key map.
        #[derive(Deserialize)]
        struct OneAction {
            #[serde(flatten)]
            action: Action,
        }
        let action = serde_yaml::from_value::<OneAction>(serde_yaml::Value::Mapping(map))
            .map(|one| one.action)
            .map_err(|e| {
                D::Error::custom(format!("step {:?}: {e}", name.as_deref().unwrap_or("")))
            })?;
        Ok(Step { name, mark, action })
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    Sleep(f64),
    /// A shell command (`sh -c`), e.g. a lab fault; must exit 0.
    Hook(String),
    /// A POP or edge (as `meridian edges drain`).
    Drain(String),
    Undrain(String),
    SetHealth {
        check: String,
        /// healthy | unhealthy | auto
        status: String,
    },
    /// Every prober's latest answers come from this POP (or edge id).
    WaitPop {
        pop: String,
        #[serde(default = "default_wait_s")]
        timeout_s: f64,
    },
    /// Every prober's latest answers hold exactly these addresses.
    WaitAnswer {
        answers: Vec<String>,
        #[serde(default = "default_wait_s")]
        timeout_s: f64,
    },
    WaitHealth {
        check: String,
        healthy: bool,
        #[serde(default = "default_wait_s")]
        timeout_s: f64,
    },
    /// Lost and wrong answers since a mark (default: the start).
    Assert {
        #[serde(default)]
        lost_max: Option<u64>,
        #[serde(default)]
        wrong_max: Option<u64>,
        #[serde(default)]
        since: Option<String>,
    },
    /// From now on, right answers hold these addresses.
    ExpectAnswers(Vec<String>),
}

fn default_wait_s() -> f64 {
    10.0
}

/// Replaces `${VAR}` with the environment's value; an unset variable is an error, not "".
pub fn substitute_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .with_context(|| format!("unclosed ${{ in {:?}", &rest[start..]))?;
        let var = &after[..end];
        let value = env(var).with_context(|| format!("${{{var}}} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn parse_scenario(text: &str) -> Result<Scenario> {
    anyhow::ensure!(
        text.len() <= SCENARIO_BYTES_MAX,
        "scenario over {SCENARIO_BYTES_MAX} bytes"
    );
    let text = substitute_env(text, |v| std::env::var(v).ok())?;
    let mut s: Scenario = serde_yaml::from_str(&text).context("scenario")?;
    anyhow::ensure!(
        !s.steps.is_empty() && s.steps.len() + s.finally.len() <= STEPS_MAX,
        "1 to {STEPS_MAX} steps"
    );
    anyhow::ensure!(
        (1..=PROBE_RATE_MAX).contains(&s.probe.rate_per_s),
        "probe.rate_per_s is 1 to {PROBE_RATE_MAX}"
    );
    anyhow::ensure!(
        (10..=10_000).contains(&s.probe.timeout_ms),
        "probe.timeout_ms is 10 to 10000"
    );
    anyhow::ensure!(
        s.slo.availability > 0.0 && s.slo.availability < 1.0,
        "slo.availability is between 0 and 1"
    );
    let clients = s.probe.clients.len().max(1);
    anyhow::ensure!(
        !s.probe.targets.is_empty() && s.probe.targets.len() * clients <= PROBERS_MAX,
        "1 to {PROBERS_MAX} probers (targets × clients)"
    );
    for t in &s.probe.targets {
        t.parse::<SocketAddr>()
            .with_context(|| format!("probe target {t:?} is not ADDR:PORT"))?;
    }
    qtype_code(&s.probe.qtype)?;
    encode_name(&s.probe.qname)?;
    for step in s.steps.iter().chain(&s.finally) {
        if let Action::Sleep(t)
        | Action::WaitPop { timeout_s: t, .. }
        | Action::WaitAnswer { timeout_s: t, .. }
        | Action::WaitHealth { timeout_s: t, .. } = &step.action
        {
            anyhow::ensure!(
                *t >= 0.0 && *t <= STEP_TIMEOUT_MAX_S,
                "step durations are 0 to {STEP_TIMEOUT_MAX_S} s"
            );
        }
        if let Action::Assert {
            lost_max: None,
            wrong_max: None,
            ..
        } = &step.action
        {
            bail!("an assert names lost_max, wrong_max or both (it would check nothing)");
        }
    }
    // Answers compare as text: spell every address the way the probes do.
    let canonical = |list: &mut Vec<String>| -> Result<()> {
        for x in list.iter_mut() {
            *x = x
                .parse::<IpAddr>()
                .with_context(|| format!("answer {x:?} is not an address"))?
                .to_string();
        }
        Ok(())
    };
    canonical(&mut s.probe.expect_answers)?;
    for step in s.steps.iter_mut().chain(s.finally.iter_mut()) {
        if let Action::ExpectAnswers(a) | Action::WaitAnswer { answers: a, .. } = &mut step.action {
            canonical(a)?;
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------- DNS on the wire (probes only)

fn qtype_code(t: &str) -> Result<u16> {
    Ok(match t.to_ascii_uppercase().as_str() {
        "A" => 1,
        "AAAA" => 28,
        // Right and wrong are judged by the addresses in the answer.
        other => bail!("probe.qtype {other:?}: A or AAAA"),
    })
}

fn encode_name(name: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        anyhow::ensure!(label.len() <= 63, "label {label:?} over 63 bytes");
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    anyhow::ensure!(out.len() <= 255, "name over 255 bytes");
    Ok(out)
}

/// A query with EDNS and an empty NSID option (RFC 5001): the answer names the edge.
fn build_query(id: u16, qname: &[u8], qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(12 + qname.len() + 4 + 15);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]); // RD; 1 question, 1 additional
    q.extend_from_slice(qname);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]); // IN
    // OPT: root name, type 41, payload 1232, rcode/flags 0, rdlen 4, NSID option (3, len 0).
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 4, 0, 3, 0, 0]);
    q
}

/// What a probe learns from an answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Parsed {
    pub id: u16,
    pub rcode: u8,
    pub answers: Vec<String>,
    pub nsid: String,
}

fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *msg.get(at)? as usize;
        if len == 0 {
            return Some(at + 1);
        }
        if len & 0xc0 == 0xc0 {
            return Some(at + 2);
        }
        at += 1 + len;
    }
    None
}

/// Parses the parts of a response a probe needs; `None` for anything malformed.
pub fn parse_response(msg: &[u8]) -> Option<Parsed> {
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?])) };
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return None;
    }
    let mut p = Parsed {
        id: u16_at(0)?,
        rcode: msg[3] & 0x0f,
        ..Parsed::default()
    };
    let (qd, an, ns, ar) = (u16_at(4)?, u16_at(6)?, u16_at(8)?, u16_at(10)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(msg, at)? + 4;
    }
    for i in 0..(an as usize + ns as usize + ar as usize) {
        at = skip_name(msg, at)?;
        let rtype = u16_at(at)?;
        let rdlen = u16_at(at + 8)? as usize;
        let rdata = msg.get(at + 10..at + 10 + rdlen)?;
        at += 10 + rdlen;
        if i < an as usize {
            match (rtype, rdata.len()) {
                (1, 4) => p
                    .answers
                    .push(IpAddr::from(<[u8; 4]>::try_from(rdata).ok()?).to_string()),
                (28, 16) => p
                    .answers
                    .push(IpAddr::from(<[u8; 16]>::try_from(rdata).ok()?).to_string()),
                _ => {}
            }
        } else if rtype == 41 {
            let mut o = 0;
            while o + 4 <= rdata.len() {
                let code = u16::from_be_bytes([rdata[o], rdata[o + 1]]);
                let len = u16::from_be_bytes([rdata[o + 2], rdata[o + 3]]) as usize;
                let value = rdata.get(o + 4..o + 4 + len)?;
                if code == 3 {
                    p.nsid = String::from_utf8_lossy(value).into_owned();
                }
                o += 4 + len;
            }
        }
    }
    p.answers.sort();
    Some(p)
}

// ---------------------------------------------------------------- probe records and analysis

/// One query: when it was sent (ms since the game day started) and what came back.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rec {
    pub sent_ms: u64,
    /// Round trip; `None`: no answer (yet).
    pub rtt_ms: Option<u32>,
    pub rcode: u8,
    pub answers: Vec<String>,
    pub nsid: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Lost,
    Right,
    Wrong,
}

/// Lost: no answer within the timeout. Wrong: an error rcode, no data, or an address not
/// expected. `expect` empty: any NOERROR answer with data is right.
pub fn outcome(r: &Rec, now_ms: u64, timeout_ms: u32, expect: &[String]) -> Outcome {
    match r.rtt_ms {
        Some(rtt) if rtt <= timeout_ms => {
            let right = r.rcode == 0
                && !r.answers.is_empty()
                && (expect.is_empty() || r.answers.iter().all(|a| expect.contains(a)));
            if right {
                Outcome::Right
            } else {
                Outcome::Wrong
            }
        }
        Some(_) => Outcome::Lost,
        None if now_ms.saturating_sub(r.sent_ms) > u64::from(timeout_ms) => Outcome::Lost,
        None => Outcome::Pending,
    }
}

/// The start (send time) of the trailing run of answered probes that satisfy `pred`, if that
/// run is at least [`WAIT_RUN_MIN`] long; pending probes at the end are skipped, a lost or
/// non-matching one ends the run.
pub fn trailing_run_start(
    recs: &[Rec],
    now_ms: u64,
    timeout_ms: u32,
    pred: impl Fn(&Rec) -> bool,
) -> Option<u64> {
    let mut run = 0usize;
    let mut start = None;
    for r in recs.iter().rev() {
        let answered = r.rtt_ms.is_some_and(|t| t <= timeout_ms);
        if !answered {
            if now_ms.saturating_sub(r.sent_ms) <= u64::from(timeout_ms) && run == 0 {
                continue; // still in flight
            }
            break;
        }
        if !pred(r) {
            break;
        }
        run += 1;
        start = Some(r.sent_ms);
    }
    if run >= WAIT_RUN_MIN { start } else { None }
}

/// Where answers switched from one edge to another: `(send time, from, to)`.
pub fn shifts(recs: &[Rec]) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    let mut last: Option<&str> = None;
    for r in recs
        .iter()
        .filter(|r| r.rtt_ms.is_some() && !r.nsid.is_empty())
    {
        if let Some(prev) = last
            && prev != r.nsid
        {
            out.push((r.sent_ms, prev.to_string(), r.nsid.clone()));
        }
        last = Some(&r.nsid);
    }
    out
}

#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Counts {
    pub sent: u64,
    pub right: u64,
    pub wrong: u64,
    pub lost: u64,
    /// Answers per edge (NSID).
    pub by_edge: BTreeMap<String, u64>,
}

/// Counts over `[from_ms, to_ms)`; `expect_at` gives the expected answers at a send time.
pub fn count(
    recs: &[Rec],
    from_ms: u64,
    to_ms: u64,
    now_ms: u64,
    timeout_ms: u32,
    expect_at: &dyn Fn(u64) -> Vec<String>,
) -> Counts {
    let mut c = Counts::default();
    for r in recs
        .iter()
        .filter(|r| r.sent_ms >= from_ms && r.sent_ms < to_ms)
    {
        let o = outcome(r, now_ms, timeout_ms, &expect_at(r.sent_ms));
        if o == Outcome::Pending {
            continue;
        }
        c.sent += 1;
        match o {
            Outcome::Right => c.right += 1,
            Outcome::Wrong => c.wrong += 1,
            _ => c.lost += 1,
        }
        if r.rtt_ms.is_some() && !r.nsid.is_empty() {
            *c.by_edge.entry(r.nsid.clone()).or_default() += 1;
        }
    }
    c
}

/// SLO burn over the game day: bad queries ÷ the bad queries the SLO allows for that many.
/// 1.0 spends exactly the budget; above it, the game day alone blew the SLO.
pub fn slo_burn(c: &Counts, availability: f64) -> f64 {
    let budget = c.sent as f64 * (1.0 - availability);
    if budget <= 0.0 {
        return 0.0;
    }
    (c.lost + c.wrong) as f64 / budget
}

// ---------------------------------------------------------------- probers (threads, sockets)

struct Prober {
    name: String,
    records: Mutex<Vec<Rec>>,
}

fn enter_netns(name: &str) -> Result<()> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/var/run/netns").join(name);
    let f = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: setns on an open namespace fd; it changes only this thread's network namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// What every prober shares: the time origin of all records and the flags that end probing.
#[derive(Clone)]
struct ProbeClock {
    started: Instant,
    stop: Arc<AtomicBool>,
    truncated: Arc<AtomicBool>,
}

/// Starts a prober's sender and receiver threads; they stop when `stop` is set.
fn start_prober(
    prober: Arc<Prober>,
    client: ClientSpec,
    target: SocketAddr,
    query: (Vec<u8>, u16),
    rate_per_s: u32,
    clock: ProbeClock,
) -> Result<Vec<std::thread::JoinHandle<()>>> {
    let ProbeClock {
        started,
        stop,
        truncated,
    } = clock;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<UdpSocket, String>>();
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate_per_s));
    let sender_prober = prober.clone();
    let sender_stop = stop.clone();
    let sender = std::thread::Builder::new()
        .name(format!("probe-{}", prober.name))
        .spawn(move || {
            let socket = (|| -> Result<UdpSocket> {
                if let Some(ns) = &client.netns {
                    enter_netns(ns)?;
                }
                let local: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse()?
                } else {
                    "[::]:0".parse()?
                };
                let s = UdpSocket::bind(local)?;
                s.connect(target)?;
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(s)
            })();
            let socket = match socket {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                    return;
                }
            };
            let _ = ready_tx.send(socket.try_clone().map_err(|e| e.to_string()));
            let (qname, qtype) = query;
            let mut seq: u64 = 0;
            while !sender_stop.load(Ordering::Relaxed) {
                let due = started + interval.mul_f64(seq as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let packet = build_query(seq as u16, &qname, qtype);
                {
                    let mut recs = sender_prober.records.lock().expect("records");
                    if recs.len() >= RECORDS_PER_PROBER_MAX {
                        // Waits and asserts would judge stale data from here on: say so.
                        truncated.store(true, Ordering::Relaxed);
                        break;
                    }
                    recs.push(Rec {
                        sent_ms: started.elapsed().as_millis() as u64,
                        ..Rec::default()
                    });
                }
                // A send error (no route during a fault) is a lost query, as for a client.
                let _ = socket.send(&packet);
                seq += 1;
            }
        })?;
    let socket = ready_rx
        .recv()
        .context("prober thread")?
        .map_err(|e| anyhow::anyhow!("prober {}: {e}", prober.name))?;
    let receiver = std::thread::Builder::new()
        .name(format!("recv-{}", prober.name))
        .spawn(move || {
            let mut buf = vec![0u8; DNS_MESSAGE_BYTES_MAX];
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let Some(p) = parse_response(&buf[..n]) else {
                    continue;
                };
                let now = started.elapsed().as_millis() as u64;
                let mut recs = prober.records.lock().expect("records");
                // The id is the sequence number mod 2^16: the newest record with it, unanswered.
                let len = recs.len();
                let mut idx = (len as u64 / 65_536) * 65_536 + u64::from(p.id);
                if idx >= len as u64 {
                    if idx < 65_536 {
                        continue;
                    }
                    idx -= 65_536;
                }
                let r = &mut recs[idx as usize];
                if r.rtt_ms.is_some() {
                    continue;
                }
                r.rtt_ms = Some(now.saturating_sub(r.sent_ms) as u32);
                r.rcode = p.rcode;
                r.answers = p.answers;
                r.nsid = p.nsid;
            }
        })?;
    Ok(vec![sender, receiver])
}

// ---------------------------------------------------------------- the run

#[derive(Clone, Debug, Serialize)]
pub struct Event {
    pub t_ms: u64,
    /// fault | detection | insync | shift | recovery | mark | api | step
    pub kind: String,
    pub text: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub name: String,
    pub action: String,
    pub ok: bool,
    pub detail: String,
    pub start_ms: u64,
    pub end_ms: u64,
    pub counts: Counts,
}

struct Run {
    started: Instant,
    events: Mutex<Vec<Event>>,
    marks: Mutex<BTreeMap<String, u64>>,
    /// (from ms, expected answers): expectations change during the game day.
    expect: Mutex<Vec<(u64, Vec<String>)>>,
    probers: Vec<Arc<Prober>>,
    timeout_ms: u32,
    /// A prober hit [`RECORDS_PER_PROBER_MAX`] and stopped: the game day fails.
    truncated: Arc<AtomicBool>,
}

impl Run {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
    fn event(&self, t_ms: u64, kind: &str, text: String) {
        eprintln!("  t+{:>7.3}s  {kind:<9} {text}", t_ms as f64 / 1000.0);
        self.events.lock().expect("events").push(Event {
            t_ms,
            kind: kind.to_string(),
            text,
        });
    }
    fn expect_fn(&self) -> impl Fn(u64) -> Vec<String> + use<> {
        let table = self.expect.lock().expect("expect").clone();
        move |t| {
            table
                .iter()
                .rev()
                .find(|(from, _)| *from <= t)
                .map(|(_, e)| e.clone())
                .unwrap_or_default()
        }
    }
    fn counts(&self, from_ms: u64, to_ms: u64) -> Counts {
        let now = self.now_ms();
        let expect = self.expect_fn();
        let mut total = Counts::default();
        for p in &self.probers {
            let recs = p.records.lock().expect("records");
            let c = count(&recs, from_ms, to_ms, now, self.timeout_ms, &expect);
            total.sent += c.sent;
            total.right += c.right;
            total.wrong += c.wrong;
            total.lost += c.lost;
            for (k, v) in c.by_edge {
                *total.by_edge.entry(k).or_default() += v;
            }
        }
        total
    }
    /// When every prober's trailing run satisfies `pred`: the latest run start (the moment the
    /// last client moved).
    fn all_since(&self, pred: &dyn Fn(&Rec) -> bool) -> Option<u64> {
        if self.truncated.load(Ordering::Relaxed) {
            return None;
        }
        let now = self.now_ms();
        let mut latest = 0;
        for p in &self.probers {
            let recs = p.records.lock().expect("records");
            latest = latest.max(trailing_run_start(&recs, now, self.timeout_ms, pred)?);
        }
        Some(latest)
    }
}

/// Edge id → POP, refreshed by the watcher, for `wait_pop` and the report.
type EdgePops = Arc<Mutex<BTreeMap<String, String>>>;

pub struct Options {
    pub scenario: PathBuf,
    pub report: Option<PathBuf>,
}

pub async fn run(client: Client, options: Options) -> Result<()> {
    let text = std::fs::read_to_string(&options.scenario)
        .with_context(|| format!("reading {}", options.scenario.display()))?;
    let scenario = parse_scenario(&text)
        .with_context(|| format!("scenario {}", options.scenario.display()))?;
    let report_dir = options.report.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "gameday-{}-{}",
            scenario.name,
            meridian_control::node::now_ms() / 1000
        ))
    });
    std::fs::create_dir_all(&report_dir)
        .with_context(|| format!("creating {}", report_dir.display()))?;
    let client = Arc::new(client);
    let clients = if scenario.probe.clients.is_empty() {
        vec![ClientSpec {
            name: "local".into(),
            netns: None,
        }]
    } else {
        scenario.probe.clients.clone()
    };
    let qname = encode_name(&scenario.probe.qname)?;
    let qtype = qtype_code(&scenario.probe.qtype)?;
    let started = Instant::now();
    let started_unix_ms = meridian_control::node::now_ms();
    let stop = Arc::new(AtomicBool::new(false));
    let truncated = Arc::new(AtomicBool::new(false));
    let mut probers = Vec::new();
    let mut threads = Vec::new();
    for c in &clients {
        for t in &scenario.probe.targets {
            let target: SocketAddr = t.parse()?;
            let prober = Arc::new(Prober {
                name: format!("{} → {}", c.name, t),
                records: Mutex::new(Vec::new()),
            });
            match start_prober(
                prober.clone(),
                c.clone(),
                target,
                (qname.clone(), qtype),
                scenario.probe.rate_per_s,
                ProbeClock {
                    started,
                    stop: stop.clone(),
                    truncated: truncated.clone(),
                },
            ) {
                Ok(t) => threads.extend(t),
                Err(e) => {
                    // The probers already running must not outlive the failed start.
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            probers.push(prober);
        }
    }
    let run = Arc::new(Run {
        started,
        events: Mutex::default(),
        marks: Mutex::default(),
        expect: Mutex::new(vec![(0, scenario.probe.expect_answers.clone())]),
        probers,
        timeout_ms: scenario.probe.timeout_ms,
        truncated: truncated.clone(),
    });
    eprintln!(
        "game day {:?}: {} probers at {}/s each; report in {}",
        scenario.name,
        run.probers.len(),
        scenario.probe.rate_per_s,
        report_dir.display()
    );
    let edge_pops: EdgePops = Arc::default();
    let watcher = tokio::spawn(watch_api(
        client.clone(),
        run.clone(),
        edge_pops.clone(),
        scenario.watch_health.clone(),
    ));
    let mut results = Vec::new();
    let mut failed = false;
    for step in &scenario.steps {
        let r = run_step(&client, &run, &edge_pops, step).await;
        failed |= !r.ok;
        results.push(r);
        if failed {
            break;
        }
    }
    for step in &scenario.finally {
        let r = run_step(&client, &run, &edge_pops, step).await;
        failed |= !r.ok;
        results.push(r);
    }
    // Let the last probes resolve before counting them.
    tokio::time::sleep(Duration::from_millis(u64::from(scenario.probe.timeout_ms))).await;
    stop.store(true, Ordering::Relaxed);
    watcher.abort();
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let report = build_report(&scenario, &run, &edge_pops, results, started_unix_ms);
    if truncated.load(Ordering::Relaxed) {
        eprintln!(
            "a prober reached {RECORDS_PER_PROBER_MAX} queries and stopped: lower rate_per_s or shorten the game day"
        );
    }
    let failed = failed || !report.measures_ok || truncated.load(Ordering::Relaxed);
    std::fs::write(
        report_dir.join("report.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(report_dir.join("report.md"), render_markdown(&report))?;
    std::fs::write(report_dir.join("timeline.svg"), render_svg(&report, &run))?;
    eprintln!(
        "game day {:?}: {}; report {}",
        scenario.name,
        if failed { "FAILED" } else { "passed" },
        report_dir.join("report.md").display()
    );
    if failed {
        bail!("game day {} failed", scenario.name);
    }
    Ok(())
}

fn action_text(a: &Action) -> String {
    match a {
        Action::Sleep(s) => format!("sleep {s} s"),
        Action::Hook(h) => format!("hook `{h}`"),
        Action::Drain(t) => format!("drain {t}"),
        Action::Undrain(t) => format!("undrain {t}"),
        Action::SetHealth { check, status } => format!("set health {check} {status}"),
        Action::WaitPop { pop, timeout_s } => {
            format!("wait for answers from {pop} (≤ {timeout_s} s)")
        }
        Action::WaitAnswer { answers, timeout_s } => {
            format!("wait for answer {} (≤ {timeout_s} s)", answers.join(","))
        }
        Action::WaitHealth {
            check,
            healthy,
            timeout_s,
        } => format!(
            "wait for {check} {} (≤ {timeout_s} s)",
            if *healthy { "healthy" } else { "unhealthy" }
        ),
        Action::Assert {
            lost_max,
            wrong_max,
            since,
        } => format!(
            "assert lost ≤ {} wrong ≤ {} since {}",
            lost_max.map_or("∞".into(), |v| v.to_string()),
            wrong_max.map_or("∞".into(), |v| v.to_string()),
            since.as_deref().unwrap_or("start")
        ),
        Action::ExpectAnswers(a) => format!("expect answers {}", a.join(",")),
    }
}

async fn run_step(
    client: &Arc<Client>,
    run: &Arc<Run>,
    edge_pops: &EdgePops,
    step: &Step,
) -> StepResult {
    let start_ms = run.now_ms();
    let action = action_text(&step.action);
    let name = step.name.clone().unwrap_or_else(|| action.clone());
    eprintln!("step: {name}");
    let mut mark_at = Some(start_ms);
    // Every step ends: API calls retry through elections but not forever (a leader without a
    // quorum, a stopped control node), and waits and hooks have their own bounds below this.
    let limit = match step.action {
        Action::Drain(_) | Action::Undrain(_) | Action::SetHealth { .. } => API_STEP_TIMEOUT,
        _ => Duration::from_secs_f64(STEP_TIMEOUT_MAX_S) + API_STEP_TIMEOUT,
    };
    let outcome: Result<String> = tokio::time::timeout(limit, async {
        match &step.action {
            Action::Sleep(s) => {
                tokio::time::sleep(Duration::from_secs_f64(*s)).await;
                Ok(String::new())
            }
            Action::Hook(cmd) => {
                let out = tokio::time::timeout(
                    Duration::from_secs_f64(STEP_TIMEOUT_MAX_S),
                    tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(cmd)
                        .stdin(std::process::Stdio::null())
                        // A hook that times out must not go on faulting the lab.
                        .kill_on_drop(true)
                        .output(),
                )
                .await
                .context("hook timed out")??;
                let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() {
                    bail!(
                        "exit {}: {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(text.lines().last().unwrap_or("").to_string())
            }
            Action::Drain(t) | Action::Undrain(t) => {
                let drained = matches!(step.action, Action::Drain(_));
                let target = client
                    .drain_target(&crate::client::DrainArgs {
                        target: t.clone(),
                        kind: None,
                        comment: String::new(),
                    })
                    .await?;
                let change = client
                    .set_drain(&target, drained, &format!("game day step: {name}"))
                    .await?;
                run.event(
                    run.now_ms(),
                    "api",
                    format!(
                        "{} {target} committed: change {}",
                        if drained { "drain" } else { "undrain" },
                        change.id
                    ),
                );
                Ok(follow_change(client, run, &change, start_ms))
            }
            Action::SetHealth { check, status } => {
                let change = client.set_health_status(check, status).await?;
                Ok(follow_change(client, run, &change, start_ms))
            }
            Action::WaitPop { pop, timeout_s } => {
                let pops = edge_pops.clone();
                let pop = pop.clone();
                let at = wait_until(run, *timeout_s, move |r: &Rec| {
                    r.nsid == pop
                        || pops
                            .lock()
                            .expect("pops")
                            .get(&r.nsid)
                            .is_some_and(|p| *p == pop)
                })
                .await?;
                mark_at = Some(at);
                Ok(format!(
                    "all probers answered by it since t+{:.3}s",
                    at as f64 / 1000.0
                ))
            }
            Action::WaitAnswer { answers, timeout_s } => {
                let mut want = answers.clone();
                want.sort();
                let at = wait_until(run, *timeout_s, move |r: &Rec| {
                    r.rcode == 0 && r.answers == want
                })
                .await?;
                mark_at = Some(at);
                Ok(format!(
                    "all probers got it since t+{:.3}s",
                    at as f64 / 1000.0
                ))
            }
            Action::WaitHealth {
                check,
                healthy,
                timeout_s,
            } => {
                let deadline = Instant::now() + Duration::from_secs_f64(*timeout_s);
                loop {
                    // "healthy (probes)", "no data: healthy", "unhealthy (operator)", ...
                    if let Ok(status) = health_status(client, check).await
                        && status.starts_with("unhealthy") != *healthy
                    {
                        mark_at = Some(run.now_ms());
                        break Ok(status);
                    }
                    if Instant::now() >= deadline {
                        bail!(
                            "not {} after {timeout_s} s",
                            if *healthy { "healthy" } else { "unhealthy" }
                        );
                    }
                    tokio::time::sleep(WATCH_INTERVAL / 2).await;
                }
            }
            Action::Assert {
                lost_max,
                wrong_max,
                since,
            } => {
                let from = match since {
                    Some(m) => *run
                        .marks
                        .lock()
                        .expect("marks")
                        .get(m)
                        .with_context(|| format!("no mark {m:?} yet"))?,
                    None => 0,
                };
                // Only resolved probes count: wait out the timeout of those in flight.
                tokio::time::sleep(Duration::from_millis(u64::from(run.timeout_ms))).await;
                let c = run.counts(from, start_ms);
                let text = format!("{} sent, {} lost, {} wrong", c.sent, c.lost, c.wrong);
                if lost_max.is_some_and(|m| c.lost > m) || wrong_max.is_some_and(|m| c.wrong > m) {
                    bail!("{text}");
                }
                Ok(text)
            }
            Action::ExpectAnswers(a) => {
                let mut a = a.clone();
                a.sort();
                run.expect.lock().expect("expect").push((start_ms, a));
                Ok(String::new())
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(anyhow::anyhow!("step did not finish within {limit:?}")));
    let end_ms = run.now_ms();
    let (ok, detail) = match outcome {
        Ok(d) => (true, d),
        Err(e) => (false, format!("{e:#}")),
    };
    if let (Some(mark), Some(at), true) = (&step.mark, mark_at, ok) {
        run.marks.lock().expect("marks").insert(mark.clone(), at);
        run.event(at, kind_of_mark(mark), format!("{mark}: {name}"));
    }
    eprintln!(
        "  {} {name}{}{detail}",
        if ok { "ok  " } else { "FAIL" },
        if detail.is_empty() { "" } else { ": " }
    );
    StepResult {
        name,
        action,
        ok,
        detail,
        start_ms,
        end_ms,
        counts: run.counts(start_ms, end_ms),
    }
}

/// Timeline kinds from mark names, so charts colour faults and recoveries alike everywhere.
fn kind_of_mark(mark: &str) -> &'static str {
    let m = mark.to_ascii_lowercase();
    if m.contains("fault")
        || m.contains("fail")
        || m.contains("kill")
        || m.contains("drain") && !m.contains("undrain")
    {
        "fault"
    } else if m.contains("recover") || m.contains("restore") || m.contains("back") {
        "recovery"
    } else if m.contains("shift") || m.contains("moved") {
        "shift"
    } else if m.contains("detect") {
        "detection"
    } else {
        "mark"
    }
}

async fn wait_until(run: &Arc<Run>, timeout_s: f64, pred: impl Fn(&Rec) -> bool) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
    loop {
        if let Some(at) = run.all_since(&pred) {
            return Ok(at);
        }
        if Instant::now() >= deadline {
            bail!("condition not met within {timeout_s} s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Puts the change's INSYNC on the timeline when it happens (in the background: the scenario
/// goes on meanwhile); returns the step's detail.
fn follow_change(
    client: &Arc<Client>,
    run: &Arc<Run>,
    change: &v1::ChangeInfo,
    since_ms: u64,
) -> String {
    tokio::spawn(wait_insync(
        client.clone(),
        run.clone(),
        change.id.clone(),
        since_ms,
    ));
    format!("change {}", change.id)
}

async fn wait_insync(client: Arc<Client>, run: Arc<Run>, change_id: String, since_ms: u64) {
    let deadline = Instant::now() + INSYNC_WAIT_MAX;
    while Instant::now() < deadline {
        if let Ok(c) = client.get_change(&change_id).await
            && c.status == v1::ChangeStatus::Insync as i32
        {
            let now = run.now_ms();
            run.event(
                now,
                "insync",
                format!(
                    "change {change_id} INSYNC ({} ms after the step)",
                    now - since_ms
                ),
            );
            return;
        }
        tokio::time::sleep(INSYNC_POLL).await;
    }
    run.event(
        run.now_ms(),
        "api",
        format!("change {change_id} not INSYNC after {INSYNC_WAIT_MAX:?}"),
    );
}

/// Every health check's status in one call (the watcher polls several checks at once).
async fn health_statuses(client: &Client) -> Result<BTreeMap<String, String>> {
    let mut call = |c| async move {
        Client::routing(c)
            .list_health_checks(v1::ListHealthChecksRequest { stale: false })
            .await
            .map(|r| r.into_inner())
    };
    let list = tokio::time::timeout(WATCH_INTERVAL * 5, client.call_once(&mut call))
        .await
        .context("API timeout")??;
    Ok(list
        .health_checks
        .into_iter()
        .map(|h| (h.id, h.status))
        .collect())
}

async fn health_status(client: &Client, id: &str) -> Result<String> {
    health_statuses(client)
        .await?
        .remove(id)
        .with_context(|| format!("no health check {id}"))
}

/// Polls the API: health transitions, edges' announce state, and whether the API answers at all
/// (a control-plane outage is an event, and must not stop the game day).
async fn watch_api(client: Arc<Client>, run: Arc<Run>, edge_pops: EdgePops, checks: Vec<String>) {
    let mut health: BTreeMap<String, String> = BTreeMap::new();
    let mut anycast: BTreeMap<String, String> = BTreeMap::new();
    let mut api_up: Option<bool> = None;
    loop {
        let mut call = |c| async move {
            v1::edge_sync_client::EdgeSyncClient::new(c)
                .list_edges(v1::ListEdgesRequest { local: false })
                .await
                .map(|r| r.into_inner())
        };
        let listed = tokio::time::timeout(WATCH_INTERVAL * 5, client.call_once(&mut call)).await;
        let now = run.now_ms();
        match listed {
            Ok(Ok(list)) => {
                if api_up == Some(false) {
                    run.event(now, "api", "control plane answers again".into());
                }
                api_up = Some(true);
                let mut pops = edge_pops.lock().expect("pops");
                for e in &list.edges {
                    pops.insert(e.edge_id.clone(), e.pop.clone());
                    let state = match (e.stale, e.announced, e.announce_reason.as_str()) {
                        (true, _, _) => "stale (no reports)".to_string(),
                        (false, true, _) => "announced".to_string(),
                        (false, false, "") => continue,
                        (false, false, why) => format!("withdrawn ({why})"),
                    };
                    if anycast.get(&e.edge_id) != Some(&state) {
                        if anycast.contains_key(&e.edge_id) {
                            run.event(
                                now,
                                "api",
                                format!("edge {} ({}): {state}", e.edge_id, e.pop),
                            );
                        }
                        anycast.insert(e.edge_id.clone(), state);
                    }
                }
            }
            _ => {
                if api_up != Some(false) {
                    run.event(now, "api", "control plane does not answer".into());
                }
                api_up = Some(false);
            }
        }
        if api_up == Some(true)
            && !checks.is_empty()
            && let Ok(mut statuses) = health_statuses(&client).await
        {
            for id in &checks {
                let Some(status) = statuses.remove(id) else {
                    continue;
                };
                if health.get(id) != Some(&status) {
                    if health.contains_key(id) {
                        run.event(
                            run.now_ms(),
                            "detection",
                            format!("health check {id}: {status}"),
                        );
                    }
                    health.insert(id.clone(), status);
                }
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}

// ---------------------------------------------------------------- the report

#[derive(Debug, Serialize)]
pub struct ProberReport {
    pub name: String,
    pub counts: Counts,
    pub shifts: Vec<(u64, String, String)>,
}

#[derive(Debug, Serialize)]
pub struct MeasureResult {
    pub measure: Measure,
    pub seconds: Option<f64>,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub description: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
    pub passed: bool,
    pub measures_ok: bool,
    pub rate_per_s: u32,
    pub timeout_ms: u32,
    pub slo_availability: f64,
    pub availability: f64,
    pub slo_burn: f64,
    pub total: Counts,
    pub edge_pops: BTreeMap<String, String>,
    pub steps: Vec<StepResult>,
    pub events: Vec<Event>,
    pub marks: BTreeMap<String, u64>,
    pub measures: Vec<MeasureResult>,
    pub probers: Vec<ProberReport>,
}

fn build_report(
    scenario: &Scenario,
    run: &Run,
    edge_pops: &EdgePops,
    mut steps: Vec<StepResult>,
    started_unix_ms: u64,
) -> Report {
    let now = run.now_ms();
    // Counted again now that every probe has resolved: at a step's end its last probes were
    // still in flight, and a short fault step would show none of its losses.
    for s in &mut steps {
        s.counts = run.counts(s.start_ms, s.end_ms);
    }
    let total = run.counts(0, u64::MAX);
    let expect = run.expect_fn();
    let mut probers = Vec::new();
    for p in &run.probers {
        let recs = p.records.lock().expect("records");
        let shifts = shifts(&recs);
        for (t, from, to) in &shifts {
            run.event(*t, "shift", format!("{}: {from} → {to}", p.name));
        }
        probers.push(ProberReport {
            name: p.name.clone(),
            counts: count(&recs, 0, u64::MAX, now, run.timeout_ms, &expect),
            shifts,
        });
    }
    let marks = run.marks.lock().expect("marks").clone();
    let measures: Vec<MeasureResult> = scenario
        .measure
        .iter()
        .map(|m| {
            let seconds = match (marks.get(&m.from), marks.get(&m.to)) {
                (Some(a), Some(b)) => Some((*b as f64 - *a as f64) / 1000.0),
                _ => None,
            };
            // Negative: the `to` condition held before `from` (nothing moved because of it).
            let ok = match (seconds, m.max_s) {
                (Some(s), _) if s < 0.0 => false,
                (Some(s), Some(max)) => s <= max,
                (None, _) => false,
                (Some(_), None) => true,
            };
            MeasureResult {
                measure: m.clone(),
                seconds,
                ok,
            }
        })
        .collect();
    let mut events = run.events.lock().expect("events").clone();
    events.sort_by_key(|e| e.t_ms);
    let availability = if total.sent == 0 {
        0.0
    } else {
        total.right as f64 / total.sent as f64
    };
    Report {
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        started_unix_ms,
        duration_ms: now,
        passed: steps.iter().all(|s| s.ok) && measures.iter().all(|m| m.ok),
        measures_ok: measures.iter().all(|m| m.ok),
        rate_per_s: scenario.probe.rate_per_s,
        timeout_ms: scenario.probe.timeout_ms,
        slo_availability: scenario.slo.availability,
        availability,
        slo_burn: slo_burn(&total, scenario.slo.availability),
        total,
        edge_pops: edge_pops.lock().expect("pops").clone(),
        steps,
        events,
        marks,
        measures,
        probers,
    }
}

fn render_markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Game day: {}\n", r.scenario);
    if !r.description.is_empty() {
        let _ = writeln!(md, "{}\n", r.description.trim());
    }
    let _ = writeln!(
        md,
        "**{}** · {:.1} s · {} probers at {}/s (timeout {} ms) · {} queries: {} right, {} lost, {} wrong · availability {:.4}% (SLO {:.2}%) · SLO burn {:.2}×\n",
        if r.passed { "PASSED" } else { "FAILED" },
        r.duration_ms as f64 / 1000.0,
        r.probers.len(),
        r.rate_per_s,
        r.timeout_ms,
        r.total.sent,
        r.total.right,
        r.total.lost,
        r.total.wrong,
        r.availability * 100.0,
        r.slo_availability * 100.0,
        r.slo_burn
    );
    let _ = writeln!(md, "![timeline](timeline.svg)\n");
    if !r.measures.is_empty() {
        let _ = writeln!(
            md,
            "## Figures\n\n| figure | measured | limit |\n|---|---|---|"
        );
        for m in &r.measures {
            let _ = writeln!(
                md,
                "| {} ({} → {}) | {} | {} |",
                m.measure.name,
                m.measure.from,
                m.measure.to,
                m.seconds
                    .map_or("not reached".into(), |s| format!("{s:.3} s")),
                m.measure.max_s.map_or("–".into(), |s| format!(
                    "≤ {s} s {}",
                    if m.ok { "✓" } else { "✗" }
                ))
            );
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "## Steps\n\n| # | step | result | at | took | queries | lost | wrong | answered by |\n|---|---|---|---|---|---|---|---|---|"
    );
    for (i, s) in r.steps.iter().enumerate() {
        let by = s
            .counts
            .by_edge
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {} | {}{} | t+{:.3}s | {:.3}s | {} | {} | {} | {} |",
            i + 1,
            s.name.replace('|', "\\|"),
            if s.ok { "ok" } else { "**FAIL**" },
            if s.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", s.detail.replace('|', "\\|"))
            },
            s.start_ms as f64 / 1000.0,
            (s.end_ms - s.start_ms) as f64 / 1000.0,
            s.counts.sent,
            s.counts.lost,
            s.counts.wrong,
            by
        );
    }
    let _ = writeln!(md, "\n## Timeline\n\n| t | kind | event |\n|---|---|---|");
    for e in &r.events {
        let _ = writeln!(
            md,
            "| +{:.3}s | {} | {} |",
            e.t_ms as f64 / 1000.0,
            e.kind,
            e.text.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        md,
        "\n## Probers\n\n| prober | queries | right | lost | wrong | answered by |\n|---|---|---|---|---|---|"
    );
    for p in &r.probers {
        let by = p
            .counts
            .by_edge
            .iter()
            .map(|(k, v)| {
                format!(
                    "{k} ({}) {v}",
                    r.edge_pops.get(k).map_or("?", String::as_str)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            p.name, p.counts.sent, p.counts.right, p.counts.lost, p.counts.wrong, by
        );
    }
    md
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One lane per prober, one tick per query coloured by the edge that answered (red: lost,
/// orange: wrong); the timeline's events as vertical lines.
fn render_svg(r: &Report, run: &Run) -> String {
    const PALETTE: [&str; 6] = [
        "#1f77b4", "#2ca02c", "#9467bd", "#17becf", "#8c564b", "#e377c2",
    ];
    let lane_h = 18.0;
    let left = 190.0;
    let width = 1100.0;
    let plot_w = width - left - 20.0;
    let top = 40.0;
    let lanes = r.probers.len() as f64;
    let events_h = 14.0 * r.events.len().min(40) as f64;
    let height = top + lanes * lane_h + 40.0 + events_h + 30.0;
    let span = r.duration_ms.max(1) as f64;
    let x = |t: u64| left + plot_w * (t as f64 / span);
    let mut colours: BTreeMap<String, &str> = BTreeMap::new();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="20" font-size="14">Game day {} — {}</text>"#,
        xml_escape(&r.scenario),
        if r.passed { "passed" } else { "FAILED" }
    );
    let expect = run.expect_fn();
    for (lane, p) in run.probers.iter().enumerate() {
        let y = top + lane as f64 * lane_h;
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}">{}</text>"#,
            y + 12.0,
            xml_escape(&p.name)
        );
        let recs = p.records.lock().expect("records");
        for rec in recs.iter() {
            let colour = match outcome(rec, r.duration_ms, r.timeout_ms, &expect(rec.sent_ms)) {
                Outcome::Lost => "#d62728",
                Outcome::Wrong => "#ff7f0e",
                Outcome::Pending => continue,
                Outcome::Right => {
                    let n = colours.len();
                    colours
                        .entry(rec.nsid.clone())
                        .or_insert(PALETTE[n % PALETTE.len()])
                }
            };
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{y}" width="1.2" height="{}" fill="{colour}"/>"#,
                x(rec.sent_ms),
                lane_h - 4.0
            );
        }
    }
    let axis_y = top + lanes * lane_h + 4.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="black"/>"#,
        left + plot_w
    );
    let step_s = ((span / 1000.0) / 10.0).ceil().max(1.0);
    let mut t = 0.0;
    while t * 1000.0 <= span {
        let tx = x((t * 1000.0) as u64);
        let _ = writeln!(
            svg,
            r#"<line x1="{tx:.1}" y1="{axis_y}" x2="{tx:.1}" y2="{}" stroke="black"/><text x="{tx:.1}" y="{}" text-anchor="middle">{t}s</text>"#,
            axis_y + 4.0,
            axis_y + 16.0
        );
        t += step_s;
    }
    for (i, e) in r.events.iter().take(40).enumerate() {
        let colour = match e.kind.as_str() {
            "fault" => "#d62728",
            "recovery" => "#2ca02c",
            "shift" => "#1f77b4",
            "insync" => "#9467bd",
            "detection" => "#ff7f0e",
            _ => "#7f7f7f",
        };
        let ex = x(e.t_ms);
        let ey = axis_y + 30.0 + i as f64 * 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{ex:.1}" y1="{top}" x2="{ex:.1}" y2="{ey}" stroke="{colour}" stroke-dasharray="3,2"/><text x="{:.1}" y="{}" fill="{colour}">+{:.3}s {} {}</text>"#,
            ex + 3.0,
            ey + 4.0,
            e.t_ms as f64 / 1000.0,
            xml_escape(&e.kind),
            xml_escape(&e.text)
        );
    }
    let mut lx = left;
    for (nsid, colour) in colours.iter().map(|(k, v)| (k.clone(), *v)).chain([
        ("lost".to_string(), "#d62728"),
        ("wrong".to_string(), "#ff7f0e"),
    ]) {
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="26" width="10" height="10" fill="{colour}"/><text x="{}" y="35">{}</text>"#,
            lx + 13.0,
            xml_escape(&nsid)
        );
        lx += 20.0 + 7.0 * nsid.len() as f64;
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(sent_ms: u64, rtt: Option<u32>, nsid: &str, answer: &str) -> Rec {
        Rec {
            sent_ms,
            rtt_ms: rtt,
            rcode: 0,
            answers: if answer.is_empty() {
                vec![]
            } else {
                vec![answer.to_string()]
            },
            nsid: nsid.to_string(),
        }
    }

    #[test]
    fn env_substitution_refuses_unset_variables() {
        let env = |v: &str| (v == "A").then(|| "x".to_string());
        assert_eq!(substitute_env("a ${A} b", env).unwrap(), "a x b");
        assert!(substitute_env("${B}", env).is_err());
        assert!(substitute_env("${A", env).is_err());
    }

    #[test]
    fn query_and_response_round_trip() {
        let q = build_query(7, &encode_name("www.gameday.test.").unwrap(), 1);
        // Make it a response: QR, one A answer (compressed name), NSID "pop1-e1".
        let mut r = q.clone();
        r[2] |= 0x80;
        r[7] = 1; // ANCOUNT
        let opt_at = 12 + 18 + 4;
        let mut answer = vec![0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 198, 51, 100, 1];
        let mut tail = r.split_off(opt_at);
        r.append(&mut answer);
        // OPT with NSID: rdlen 11 = 4 + 7.
        tail.truncate(11);
        tail[9] = 0;
        tail[10] = 11;
        tail.extend_from_slice(&[0, 3, 0, 7]);
        tail.extend_from_slice(b"pop1-e1");
        r.append(&mut tail);
        let p = parse_response(&r).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.answers, vec!["198.51.100.1"]);
        assert_eq!(p.nsid, "pop1-e1");
        // Truncated or query-only messages are not answers.
        assert!(parse_response(&q).is_none());
        for n in 0..r.len() {
            let _ = parse_response(&r[..n]);
        }
    }

    #[test]
    fn outcomes_lost_wrong_right() {
        let expect = vec!["198.51.100.1".to_string()];
        assert_eq!(
            outcome(&rec(0, Some(5), "a", "198.51.100.1"), 100, 50, &expect),
            Outcome::Right
        );
        assert_eq!(
            outcome(&rec(0, Some(5), "a", "198.51.100.2"), 100, 50, &expect),
            Outcome::Wrong
        );
        assert_eq!(
            outcome(&rec(0, Some(60), "a", "198.51.100.1"), 100, 50, &expect),
            Outcome::Lost
        );
        assert_eq!(
            outcome(&rec(0, None, "", ""), 100, 50, &expect),
            Outcome::Lost
        );
        assert_eq!(
            outcome(&rec(80, None, "", ""), 100, 50, &expect),
            Outcome::Pending
        );
        assert_eq!(
            outcome(&rec(0, Some(5), "a", ""), 100, 50, &[]),
            Outcome::Wrong
        );
    }

    #[test]
    fn waits_need_a_run_and_report_when_it_started() {
        let recs: Vec<Rec> = (0..10)
            .map(|i| {
                rec(
                    i * 10,
                    Some(1),
                    if i < 6 { "pop1-e1" } else { "pop2-e1" },
                    "x",
                )
            })
            .collect();
        let is2 = |r: &Rec| r.nsid == "pop2-e1";
        assert_eq!(trailing_run_start(&recs, 100, 50, is2), Some(60));
        assert_eq!(
            trailing_run_start(&recs[..8], 100, 50, is2),
            None,
            "2 in a row is not enough"
        );
        // A probe in flight at the end is skipped; a lost one breaks the run.
        let mut with_pending = recs.clone();
        with_pending.push(rec(99, None, "", ""));
        assert_eq!(trailing_run_start(&with_pending, 100, 50, is2), Some(60));
        let mut with_lost = recs.clone();
        with_lost.push(rec(10, None, "", ""));
        assert_eq!(trailing_run_start(&with_lost, 100, 50, is2), None);
        assert_eq!(
            shifts(&recs),
            vec![(60, "pop1-e1".to_string(), "pop2-e1".to_string())]
        );
    }

    #[test]
    fn counts_and_burn() {
        let recs = vec![
            rec(0, Some(1), "a", "1.1.1.1"),
            rec(10, None, "", ""),
            rec(20, Some(1), "b", "2.2.2.2"),
            rec(95, None, "", ""),
        ];
        let expect = |_t: u64| vec!["1.1.1.1".to_string()];
        let c = count(&recs, 0, u64::MAX, 100, 50, &expect);
        assert_eq!((c.sent, c.right, c.lost, c.wrong), (3, 1, 1, 1));
        assert_eq!(c.by_edge.get("a"), Some(&1));
        // 2 bad of 3 against a 99.9% SLO: 2 / 0.003.
        assert!((slo_burn(&c, 0.999) - 2.0 / 0.003).abs() < 1e-6);
    }

    #[test]
    fn scenarios_are_checked() {
        let ok = "name: t\nprobe: {targets: ['127.0.0.1:53'], qname: a.test., rate_per_s: 10}\nsteps:\n  - sleep: 1\n  - drain: pop1\n    mark: fault\n  - wait_pop: {pop: pop2, timeout_s: 5}\n";
        let s = parse_scenario(ok).unwrap();
        assert_eq!(s.steps.len(), 3);
        assert_eq!(s.steps[1].mark.as_deref(), Some("fault"));
        // Addresses are compared as the probes spell them.
        let v6 = ok.replace(
            "steps:\n",
            "steps:\n  - expect_answers: ['2001:DB8:0::1']\n",
        );
        let s6 = parse_scenario(&v6).unwrap();
        assert!(
            matches!(&s6.steps[0].action, Action::ExpectAnswers(a) if a == &vec!["2001:db8::1".to_string()])
        );
        assert!(matches!(s.steps[1].action, Action::Drain(_)));
        for bad in [
            ok.replace("rate_per_s: 10", "rate_per_s: 0"),
            ok.replace("127.0.0.1:53", "nowhere"),
            ok.replace("sleep: 1", "sleep: 100000"),
            ok.replace("sleep: 1", "nap: 1"),
            ok.replace("name: t", "name: t\nbogus: 1"),
            // A typo in an action's field, two actions in one step, an assert of nothing.
            ok.replace("timeout_s: 5", "timeout: 5"),
            ok.replace("  - sleep: 1\n", "  - sleep: 1\n    drain: pop9\n"),
            ok.replace("  - sleep: 1\n", "  - assert: {since: fault}\n"),
            ok.replace("rate_per_s: 10}", "rate_per_s: 10, qtype: TXT}"),
        ] {
            assert!(parse_scenario(&bad).is_err(), "{bad}");
        }
    }
}
