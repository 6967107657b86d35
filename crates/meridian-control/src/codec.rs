//! The binary encoding of Raft log entries and of every message between control nodes
//! (bincode, varint integers). JSON spelled each RDATA byte as up to four characters and its
//! parsing dominated a follower's CPU during imports; this encoding is a near copy of the bytes.
//! The public API is protobuf; this format never leaves the cluster.

use bincode::Options;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest encoded value accepted when decoding: a peer's message or a stored entry. Matches
/// the gRPC limit between control nodes, so nothing that could be sent is refused.
pub const ENCODED_BYTES_MAX: u64 = crate::network::RAFT_MESSAGE_BYTES_MAX as u64;

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(ENCODED_BYTES_MAX)
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    options().serialize(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Command, Forwarded};
    use meridian_core::Name;
    use meridian_core::change::{Action, Change, ChangeBatch, RecordSet};
    use meridian_core::rdata::RType;

    #[test]
    fn commands_and_entries_round_trip() {
        let command = Command::ChangeBatch {
            zone: Name::parse("example.com.", None).unwrap(),
            batch: ChangeBatch {
                comment: "c".into(),
                changes: vec![Change {
                    action: Action::Upsert,
                    record_set: RecordSet {
                        name: Name::parse("www.example.com.", None).unwrap(),
                        rtype: RType::A,
                        ttl: 300,
                        rdatas: vec![vec![192, 0, 2, 1]],
                        set_identifier: None,
                        policy: None,
                        health_check: None,
                        alias: None,
                        fail_closed: false,
                    },
                }],
            },
            idempotency_token: Some("t".into()),
            expected_zone_version: None,
            change_id: "C1".into(),
            submitted_ms: 7,
        };
        let entry = openraft::Entry::<crate::types::TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 9),
            payload: openraft::EntryPayload::Normal(command.clone()),
        };
        let back: openraft::Entry<crate::types::TypeConfig> =
            decode(&encode(&entry).unwrap()).unwrap();
        assert_eq!(back.log_id, entry.log_id);
        match back.payload {
            openraft::EntryPayload::Normal(c) => assert_eq!(c, command),
            _ => panic!("payload kind changed"),
        }
        let fwd: Forwarded = decode(&encode(&Forwarded::Write(command.clone())).unwrap()).unwrap();
        assert!(matches!(fwd, Forwarded::Write(c) if c == command));
    }

    #[test]
    fn truncated_or_oversized_input_is_an_error() {
        let entry = openraft::Entry::<crate::types::TypeConfig> {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(3, 1), 9),
            payload: openraft::EntryPayload::Normal(Command::ImportAbort {
                import_id: "I1".into(),
                submitted_ms: 1,
            }),
        };
        let bytes = encode(&entry).unwrap();
        for len in 0..bytes.len() {
            assert!(decode::<openraft::Entry<crate::types::TypeConfig>>(&bytes[..len]).is_err());
        }
        // A length prefix claiming more than the limit is refused before allocating.
        let huge = encode(&(ENCODED_BYTES_MAX + 1)).unwrap();
        assert!(decode::<Vec<u8>>(&huge).is_err());
    }
}
