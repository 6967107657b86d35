//! Answering allocates nothing once warm: a counting global allocator proves it for every kind
//! of answer (positive, negative, referral, wildcard, CNAME/DNAME chains, truncation, errors).

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use meridian_core::{Outcome, Scratch, ServerConfig, respond};

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

#[test]
fn answering_does_not_allocate() {
    let zone = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n@ MX 10 mail\nns1 A 192.0.2.1\nmail A 192.0.2.2\n\
                *.w A 192.0.2.3\nc CNAME mail\nd DNAME w.example.\nsub NS ns.sub\nns.sub A 192.0.2.4\n\
                big TXT \"0123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"1123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"2123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"3123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"4123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"5123456789012345678901234567890123456789012345678901234567890123456789\"\n\
                big TXT \"6123456789012345678901234567890123456789012345678901234567890123456789\"\n";
    let catalog = support::catalog(&[("example.", zone)]);
    let queries: Vec<Vec<u8>> = [
        ("mail.example.", "A", ""),
        ("example.", "MX", "nsid"),
        ("nx.example.", "A", "noedns"),
        ("x.w.example.", "A", "do"),
        ("c.example.", "A", ""),
        ("q.d.example.", "A", ""),
        ("a.sub.example.", "A", ""),
        ("big.example.", "TXT", "noedns"),
        ("mail.example.", "A", "v=1"),
        ("elsewhere.", "A", ""),
        ("id.server.", "TXT", "class=3"),
    ]
    .iter()
    .map(|(n, t, o)| support::query(n, t, o).0)
    .collect();
    let config = ServerConfig {
        identity: b"edge-1".to_vec(),
        ..ServerConfig::default()
    };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    let mut replies = 0;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..100 {
        for q in &queries {
            if let Outcome::Reply { .. } = respond(
                &catalog,
                &config,
                q,
                meridian_core::Transport::Udp,
                std::net::IpAddr::from([192, 0, 2, 1]),
                &mut scratch,
                &mut out,
            ) {
                replies += 1;
            }
        }
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    assert_eq!(replies, 100 * queries.len());
    assert_eq!(after - before, 0, "allocations while answering");
}
