//! The real UDP worker (recvmmsg/sendmmsg on a loopback socket) allocates nothing per query once
//! warm. A counting global allocator sees every thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use meridian_core::{Catalog, Name, ServerConfig, Zone, zonefile};
use meridian_edge::udp;

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's contract to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn query(id: u16, name: &[u8]) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 1]);
    p.extend_from_slice(name);
    p.extend_from_slice(&[0, 1, 0, 1, 0, 0, 41, 4, 208, 0, 0, 0, 0, 0, 0]);
    p
}

#[test]
fn udp_worker_answers_without_allocating() {
    let origin = Name::parse("example.", None).unwrap();
    let text = "$TTL 60\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nwww A 192.0.2.2\n";
    let zone = Zone::build(&origin, zonefile::parse(text, &origin, None).unwrap()).unwrap();
    let mut catalog = Catalog::new();
    catalog.insert(Arc::new(zone)).unwrap();
    let catalog = Arc::new(ArcSwap::from_pointee(catalog));
    let socket = udp::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = socket.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(udp::UdpStats::default());
    let worker = {
        let (catalog, stop, stats) = (catalog.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || {
            udp::run_worker(
                socket,
                catalog,
                Arc::new(ServerConfig::default()),
                stop,
                stats,
            )
        })
    };
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let positive = query(1, b"\x03www\x07example\x00");
    let negative = query(2, b"\x02nx\x07example\x00");
    let refused = query(3, b"\x03www\x05other\x00");
    let mut buf = [0u8; 4096];
    let mut exchange = |q: &[u8]| {
        client.send_to(q, server).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..2], &q[..2]);
        n
    };
    for _ in 0..50 {
        exchange(&positive);
        exchange(&negative);
        exchange(&refused);
    }
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..500 {
        exchange(&positive);
        exchange(&negative);
        exchange(&refused);
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert_eq!(stats.replies.load(Ordering::Relaxed), 1650);
    assert_eq!(after - before, 0, "allocations during 1,500 warm queries");
}
