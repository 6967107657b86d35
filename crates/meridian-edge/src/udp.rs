//! UDP workers: one SO_REUSEPORT socket, one OS thread and one buffer set per worker; queries in
//! batches with recvmmsg, answers in batches with sendmmsg.
//!
//! Invariant: once a worker has started, answering allocates nothing. Buffers, iovecs, message
//! headers and control space are allocated at start; the catalog is borrowed per batch through
//! `ArcSwap` (no allocation, no lock). `tests/no_alloc.rs` checks this with a counting allocator.
//!
//! On a wildcard bind the reply must leave from the address the query came to (an anycast
//! address on a host with several): IP_PKTINFO / IPV6_RECVPKTINFO give us the destination, and we
//! hand it back as the source of the reply.

use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use meridian_core::{Catalog, Outcome, Scratch, ServerConfig, Transport, respond};
use socket2::{Domain, Protocol, Socket, Type};

use crate::Error;

/// Datagrams per recvmmsg/sendmmsg. NSD uses 100; 32 already amortises the syscall, and sizes
/// the per-worker buffers (× the two byte limits below ≈ 256 KiB per worker).
pub const BATCH_COUNT_MAX: usize = 32;
/// Largest query read. A query is a question plus OPT/TSIG; anything larger is dropped.
pub const QUERY_BYTES_MAX: usize = 4096;
/// Largest UDP answer we can build; `--udp-payload-max` may not exceed it.
pub const ANSWER_UDP_BYTES_MAX: usize = 4096;
/// Control-message room for one IPv4 or IPv6 packet-info record (with alignment).
const CONTROL_BYTES: usize = 64;
/// How often a blocked worker wakes to check for shutdown.
const STOP_POLL: Duration = Duration::from_millis(200);
/// Socket buffers: absorb bursts while a worker is busy (the kernel may cap them lower).
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

const _: () = assert!(BATCH_COUNT_MAX * (QUERY_BYTES_MAX + ANSWER_UDP_BYTES_MAX) <= 1 << 20);

/// Counters one worker updates; read by metrics and tests.
#[derive(Default, Debug)]
pub struct UdpStats {
    pub queries: AtomicU64,
    pub replies: AtomicU64,
    pub dropped: AtomicU64,
    /// Replies by rcode (0..=23; BADVERS and friends land at their extended value).
    pub rcodes: [AtomicU64; 24],
    /// Queries by time from the batch's arrival (recvmmsg return) to its reply being handed to
    /// the kernel (sendmmsg return), in the buckets of [`LATENCY_BUCKETS_US`].
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS_US.len()],
}

/// Upper bounds (µs) of the answer-latency buckets; the last is +Inf.
pub const LATENCY_BUCKETS_US: [u64; 8] = [10, 25, 50, 100, 250, 1000, 10_000, u64::MAX];

/// Binds one UDP socket for a worker: SO_REUSEPORT so every worker has its own socket and the
/// kernel spreads queries across them.
pub fn bind(addr: SocketAddr) -> Result<UdpSocket, Error> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let socket =
        Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(|e| Error::Bind(addr, e))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| Error::Bind(addr, e))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(|e| Error::Bind(addr, e))?;
    }
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    if addr.ip().is_unspecified() {
        let fd = socket.as_raw_fd();
        let on: libc::c_int = 1;
        let (level, opt) = if addr.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        };
        // SAFETY: valid fd, pointer to a c_int of the size given.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &on as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            )
        };
        if rc != 0 {
            return Err(Error::Bind(addr, std::io::Error::last_os_error()));
        }
    }
    socket
        .set_read_timeout(Some(STOP_POLL))
        .map_err(|e| Error::Bind(addr, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| Error::Bind(addr, e))?;
    Ok(socket.into())
}

/// Everything a worker owns. Allocated once; the query path only indexes into it.
struct Buffers {
    rx: Vec<u8>,
    tx: Vec<u8>,
    rx_addrs: Vec<libc::sockaddr_storage>,
    rx_control: Vec<[u64; CONTROL_BYTES / 8]>,
    tx_control: Vec<[u64; CONTROL_BYTES / 8]>,
    rx_iov: Vec<libc::iovec>,
    tx_iov: Vec<libc::iovec>,
    rx_msgs: Vec<libc::mmsghdr>,
    tx_msgs: Vec<libc::mmsghdr>,
    scratch: Scratch,
}

impl Buffers {
    fn new() -> Box<Buffers> {
        // SAFETY: these libc structs are plain data; all-zero is a valid value for each.
        let zeroed_addr: libc::sockaddr_storage = unsafe { zeroed() };
        let zeroed_msg: libc::mmsghdr = unsafe { zeroed() };
        let zeroed_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        let mut b = Box::new(Buffers {
            rx: vec![0; BATCH_COUNT_MAX * QUERY_BYTES_MAX],
            tx: vec![0; BATCH_COUNT_MAX * ANSWER_UDP_BYTES_MAX],
            rx_addrs: vec![zeroed_addr; BATCH_COUNT_MAX],
            rx_control: vec![[0; CONTROL_BYTES / 8]; BATCH_COUNT_MAX],
            tx_control: vec![[0; CONTROL_BYTES / 8]; BATCH_COUNT_MAX],
            rx_iov: vec![zeroed_iov; BATCH_COUNT_MAX],
            tx_iov: vec![zeroed_iov; BATCH_COUNT_MAX],
            rx_msgs: vec![zeroed_msg; BATCH_COUNT_MAX],
            tx_msgs: vec![zeroed_msg; BATCH_COUNT_MAX],
            scratch: Scratch::default(),
        });
        for i in 0..BATCH_COUNT_MAX {
            b.rx_iov[i].iov_base = b.rx[i * QUERY_BYTES_MAX..].as_mut_ptr() as *mut libc::c_void;
            b.rx_iov[i].iov_len = QUERY_BYTES_MAX;
            b.tx_iov[i].iov_base =
                b.tx[i * ANSWER_UDP_BYTES_MAX..].as_mut_ptr() as *mut libc::c_void;
        }
        b
    }

    /// Resets what the kernel overwrote on the previous recvmmsg.
    fn arm_receive(&mut self) {
        for i in 0..BATCH_COUNT_MAX {
            let h = &mut self.rx_msgs[i].msg_hdr;
            h.msg_name = &mut self.rx_addrs[i] as *mut _ as *mut libc::c_void;
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as u32;
            h.msg_iov = &mut self.rx_iov[i];
            h.msg_iovlen = 1;
            h.msg_control = self.rx_control[i].as_mut_ptr() as *mut libc::c_void;
            h.msg_controllen = CONTROL_BYTES as _;
            h.msg_flags = 0;
            self.rx_msgs[i].msg_len = 0;
        }
    }
}

/// Runs one worker until `stop` is set. Call on a dedicated OS thread.
pub fn run_worker(
    socket: UdpSocket,
    catalog: Arc<ArcSwap<Catalog>>,
    config: Arc<ServerConfig>,
    stop: Arc<AtomicBool>,
    stats: Arc<UdpStats>,
) {
    let fd = socket.as_raw_fd();
    let mut b = Buffers::new();
    while !stop.load(Ordering::Relaxed) {
        b.arm_receive();
        // SAFETY: rx_msgs holds BATCH_COUNT_MAX headers whose pointers reference buffers owned by
        // `b`, which outlives the call.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                b.rx_msgs.as_mut_ptr(),
                BATCH_COUNT_MAX as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if received <= 0 {
            continue; // timeout (stop poll), EINTR, or a transient error
        }
        let received = received as usize;
        // vDSO clock reads: no syscall, no allocation.
        let batch_started = std::time::Instant::now();
        let current = catalog.load();
        let mut ready = 0usize;
        for i in 0..received {
            stats.queries.fetch_add(1, Ordering::Relaxed);
            let msg = &b.rx_msgs[i];
            if msg.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let len = msg.msg_len as usize;
            let namelen = msg.msg_hdr.msg_namelen;
            let controllen = msg.msg_hdr.msg_controllen;
            let packet = &b.rx[i * QUERY_BYTES_MAX..i * QUERY_BYTES_MAX + len];
            let out = &mut b.tx[ready * ANSWER_UDP_BYTES_MAX..(ready + 1) * ANSWER_UDP_BYTES_MAX];
            let client = peer_ip(&b.rx_addrs[i]);
            match respond(
                &current,
                &config,
                packet,
                Transport::Udp,
                client,
                &mut b.scratch,
                out,
            ) {
                Outcome::Drop => {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Reply { len, rcode } => {
                    stats.replies.fetch_add(1, Ordering::Relaxed);
                    stats.rcodes[(rcode as usize).min(23)].fetch_add(1, Ordering::Relaxed);
                    b.tx_iov[ready].iov_len = len;
                    let control_len =
                        reply_control(&b.rx_control[i], controllen, &mut b.tx_control[ready]);
                    let h = &mut b.tx_msgs[ready].msg_hdr;
                    h.msg_name = &mut b.rx_addrs[i] as *mut _ as *mut libc::c_void;
                    h.msg_namelen = namelen;
                    h.msg_iov = &mut b.tx_iov[ready];
                    h.msg_iovlen = 1;
                    if control_len > 0 {
                        h.msg_control = b.tx_control[ready].as_mut_ptr() as *mut libc::c_void;
                        h.msg_controllen = control_len as _;
                    } else {
                        h.msg_control = std::ptr::null_mut();
                        h.msg_controllen = 0;
                    }
                    h.msg_flags = 0;
                    ready += 1;
                }
            }
        }
        drop(current);
        send_all(fd, &mut b.tx_msgs[..ready]);
        let micros = batch_started.elapsed().as_micros() as u64;
        let bucket = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        stats.latency_buckets[bucket].fetch_add(received as u64, Ordering::Relaxed);
    }
}

/// Sends every prepared reply; a reply the kernel refuses (e.g. unreachable) is skipped.
fn send_all(fd: i32, msgs: &mut [libc::mmsghdr]) {
    let mut sent = 0usize;
    while sent < msgs.len() {
        // SAFETY: the headers reference buffers owned by the worker for the duration of the call.
        let n =
            unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (msgs.len() - sent) as u32, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            sent += 1; // skip the datagram that failed
        } else {
            sent += n as usize;
        }
    }
}

/// Turns the packet-info record of a received datagram into the one that makes the reply leave
/// from the same local address. Returns the control length to send (0: none).
fn reply_control(
    rx: &[u64; CONTROL_BYTES / 8],
    rx_len: usize,
    tx: &mut [u64; CONTROL_BYTES / 8],
) -> usize {
    if rx_len == 0 {
        return 0;
    }
    // SAFETY: we build a msghdr view over our own control buffers and walk it with the libc
    // CMSG macros, which stay within msg_controllen.
    unsafe {
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_control = rx.as_ptr() as *mut libc::c_void;
        hdr.msg_controllen = rx_len as _;
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::IPPROTO_IP && c.cmsg_type == libc::IP_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in_pktinfo);
                let out = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: info.ipi_addr,
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                return write_control(tx, libc::IPPROTO_IP, libc::IP_PKTINFO, &out);
            }
            if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO {
                let info =
                    std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::in6_pktinfo);
                return write_control(tx, libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &info);
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
    }
    0
}

fn write_control<T>(tx: &mut [u64; CONTROL_BYTES / 8], level: i32, kind: i32, value: &T) -> usize {
    // SAFETY: CMSG_SPACE(size_of::<T>()) ≤ CONTROL_BYTES for both packet-info structs; the
    // buffer is 8-byte aligned as cmsghdr requires.
    unsafe {
        let space = libc::CMSG_SPACE(size_of::<T>() as u32) as usize;
        debug_assert!(space <= CONTROL_BYTES);
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_control = tx.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&hdr);
        (*cmsg).cmsg_level = level;
        (*cmsg).cmsg_type = kind;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<T>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut T, std::ptr::read(value));
        space
    }
}

/// The source address of a received datagram (IPv4-mapped IPv6 sources as IPv4, so geo and
/// CIDR lookups see the client's real family).
fn peer_ip(addr: &libc::sockaddr_storage) -> std::net::IpAddr {
    match addr.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in when the family is AF_INET.
            let sin = unsafe { &*(addr as *const _ as *const libc::sockaddr_in) };
            std::net::IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 when the family is AF_INET6.
            let sin6 = unsafe { &*(addr as *const _ as *const libc::sockaddr_in6) };
            let v6 = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => std::net::IpAddr::V6(v6),
            }
        }
        _ => std::net::IpAddr::from([0u8, 0, 0, 0]),
    }
}
