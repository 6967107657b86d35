//! DNS over TCP (RFC 7766): pipelined queries answered in order, batched writes, an idle
//! timeout and a connection cap.
//!
//! Each read may hold many length-prefixed queries (clients pipeline); all complete ones are
//! answered and their replies go out in one write. A length prefix or message split across
//! segments simply waits for more bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use meridian_core::answer::MESSAGE_BYTES_MAX;
use meridian_core::{Catalog, Outcome, Scratch, ServerConfig, Transport, respond};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use crate::Error;

/// Concurrent TCP connections. Each costs ~200 KiB of buffers; 1,024 caps that at ~200 MiB.
pub const TCP_CONNECTIONS_MAX: usize = 1024;
/// Idle time before we close (RFC 7766 §6.2.3 suggests seconds, not minutes).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Replies buffered before a write is forced, bounding memory per connection.
pub const TCP_OUTPUT_BYTES_MAX: usize = 256 * 1024;
/// Bytes read per read call: many pipelined queries at once.
const TCP_READ_BYTES: usize = 64 * 1024;
const TCP_LISTEN_BACKLOG: i32 = 1024;

#[derive(Default, Debug)]
pub struct TcpStats {
    pub connections: AtomicU64,
    pub queries: AtomicU64,
    /// Replies by rcode, as for UDP.
    pub rcodes: [AtomicU64; 24],
}

pub fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(|e| Error::Bind(addr, e))?;
    socket
        .set_reuse_address(true)
        .map_err(|e| Error::Bind(addr, e))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(|e| Error::Bind(addr, e))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|e| Error::Bind(addr, e))?;
    socket
        .set_tcp_nodelay(true)
        .map_err(|e| Error::Bind(addr, e))?;
    socket
        .bind(&addr.into())
        .map_err(|e| Error::Bind(addr, e))?;
    socket
        .listen(TCP_LISTEN_BACKLOG)
        .map_err(|e| Error::Bind(addr, e))?;
    TcpListener::from_std(socket.into()).map_err(|e| Error::Bind(addr, e))
}

/// Accepts connections until `shutdown` changes.
pub async fn serve(
    listener: TcpListener,
    catalog: Arc<ArcSwap<Catalog>>,
    config: Arc<ServerConfig>,
    stats: Arc<TcpStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(TCP_CONNECTIONS_MAX));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = shutdown.changed() => return,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let catalog = catalog.clone();
        let config = config.clone();
        let stats = stats.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            connection(stream, &catalog, &config, &stats, shutdown).await;
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    catalog: &ArcSwap<Catalog>,
    config: &ServerConfig,
    stats: &TcpStats,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut input: Vec<u8> = Vec::with_capacity(TCP_READ_BYTES + MESSAGE_BYTES_MAX + 2);
    let mut output: Vec<u8> = Vec::with_capacity(TCP_OUTPUT_BYTES_MAX + MESSAGE_BYTES_MAX + 2);
    let mut answer = vec![0u8; MESSAGE_BYTES_MAX];
    let mut scratch = Scratch::default();
    let client = match stream.peer_addr() {
        Ok(a) => match a.ip() {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
            v4 => v4,
        },
        Err(_) => return,
    };
    let mut chunk = vec![0u8; TCP_READ_BYTES];
    loop {
        let read = tokio::select! {
            r = tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read(&mut chunk)) => r,
            _ = shutdown.changed() => return,
        };
        let n = match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return, // closed, error, or idle
            Ok(Ok(n)) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        let mut consumed = 0;
        let current = catalog.load();
        while input.len() - consumed >= 2 {
            let len = u16::from_be_bytes([input[consumed], input[consumed + 1]]) as usize;
            if len == 0 {
                return; // a zero-length message is malformed framing: close
            }
            if input.len() - consumed - 2 < len {
                break;
            }
            let packet = &input[consumed + 2..consumed + 2 + len];
            consumed += 2 + len;
            stats.queries.fetch_add(1, Ordering::Relaxed);
            match respond(
                &current,
                config,
                packet,
                Transport::Tcp,
                client,
                &mut scratch,
                &mut answer,
            ) {
                Outcome::Drop => return, // RFC 7766 §8: close on a message we cannot answer
                Outcome::Reply { len, rcode } => {
                    stats.rcodes[(rcode as usize).min(23)].fetch_add(1, Ordering::Relaxed);
                    output.extend_from_slice(&(len as u16).to_be_bytes());
                    output.extend_from_slice(&answer[..len]);
                }
            }
            if output.len() >= TCP_OUTPUT_BYTES_MAX {
                if stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
        }
        drop(current);
        input.drain(..consumed);
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
    }
}
