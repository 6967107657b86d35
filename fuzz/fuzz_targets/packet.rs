//! The packet path: any bytes → `respond` → the reply (if any) parses back with an independent
//! parser (hickory-proto), echoes the ID, has QR=1 and respects the UDP size limit.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use meridian_core::{Catalog, Name, Outcome, Scratch, ServerConfig, Transport, Zone, respond, zonefile};

const ZONE: &str = "$TTL 300\n@ SOA ns1 h 1 2 3 4 5\n@ NS ns1\n@ MX 10 mail\nns1 A 192.0.2.1\nmail A 192.0.2.2\n\
                    *.w A 192.0.2.3\nc CNAME mail\nloop CNAME loop\nd DNAME w.example.\nsub NS ns.sub\nns.sub A 192.0.2.4\n\
                    b.ent TXT \"x\"\n";

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let origin = Name::parse("example.", None).unwrap();
        let zone = Zone::build(&origin, zonefile::parse(ZONE, &origin, None).unwrap()).unwrap();
        let mut c = Catalog::new();
        c.insert(Arc::new(zone)).unwrap();
        c
    })
}

fuzz_target!(|data: &[u8]| {
    let config = ServerConfig { identity: b"fuzz".to_vec(), ..ServerConfig::default() };
    let mut scratch = Scratch::default();
    let mut out = vec![0u8; 65535];
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Outcome::Reply { len, .. } = respond(catalog(), &config, data, transport, &mut scratch, &mut out) {
            let reply = &out[..len];
            assert!(len >= 12);
            assert_eq!(&reply[..2], &data[..2]);
            assert_eq!(reply[2] & 0x80, 0x80);
            if transport == Transport::Udp {
                assert!(len <= 1232);
            }
            hickory_proto::op::Message::from_vec(reply).expect("our reply parses");
        }
    }
});
