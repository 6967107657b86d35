//! systemd's notify protocol (`sd_notify`), spoken directly: `READY=1` once the edge serves, and
//! `WATCHDOG=1` pings while its runtime makes progress. With `WatchdogSec=` in the unit, an edge
//! that stops (SIGSTOP, a hang in the kernel, a deadlocked runtime) is killed by systemd, and its
//! liveness tun, hence its anycast routes, go with it: the one failure the edge's own checks
//! cannot see.
//!
//! Without `NOTIFY_SOCKET` in the environment (not under systemd, or `Type=` not `notify`)
//! every call is a no-op.

use std::io;
use std::time::Duration;

/// Longest notify message we send; the protocol's datagrams are small.
const NOTIFY_BYTES_MAX: usize = 256;

/// Sends `state` (e.g. `READY=1`) to the socket in `$NOTIFY_SOCKET`; `Ok(false)` when unset.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(path) => send(&path.to_string_lossy(), state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends one datagram to a notify socket: a path, or `@name` for an abstract socket.
pub fn send(socket: &str, state: &str) -> io::Result<()> {
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    if state.len() > NOTIFY_BYTES_MAX {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "notify message too long",
        ));
    }
    let addr = match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// The unit's watchdog period (`$WATCHDOG_USEC`), if it is meant for this process
/// (`$WATCHDOG_PID` unset or ours).
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID")
        && pid.to_string_lossy().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Pings the watchdog at half its period until `shutdown` changes.
pub async fn watchdog(period: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(period / 2);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = notify("WATCHDOG=1") {
            tracing::warn!(error = %e, "systemd watchdog ping failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_path_and_abstract_sockets() {
        use std::os::unix::net::UnixDatagram;
        let dir = std::env::temp_dir().join(format!("meridian-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("meridian-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_server = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "WATCHDOG=1").unwrap();
        let n = abstract_server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(send(&format!("@{name}"), &"x".repeat(NOTIFY_BYTES_MAX + 1)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
