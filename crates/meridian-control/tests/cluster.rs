//! In-process clusters of real control nodes: real gRPC on loopback, real RocksDB in temporary
//! directories. Tests wait on conditions (leader known, applied index), never on fixed sleeps.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_control::ControlNode;
use meridian_control::types::{Command, CommandResult};
use meridian_core::Name;
use meridian_core::change::{Action, Change, ChangeBatch, RecordSet};
use meridian_core::rdata::RType;
use openraft::BasicNode;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(20);

struct Member {
    node: Arc<ControlNode>,
    stop: Option<oneshot::Sender<()>>,
    dir: std::path::PathBuf,
    addr: String,
}

async fn start(
    id: u64,
    dir: &std::path::Path,
    listener: Option<tokio::net::TcpListener>,
) -> Member {
    let listener = match listener {
        Some(l) => l,
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let addr = listener.local_addr().unwrap().to_string();
    // A restarted node waits for the old instance's tasks to release RocksDB's lock.
    let deadline = tokio::time::Instant::now() + WAIT;
    let node = loop {
        match ControlNode::open(id, dir, addr.clone()).await {
            Ok(node) => break node,
            Err(e) if e.to_string().contains("lock") && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("opening node {id}: {e}"),
        }
    };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(meridian_control::api::serve(
        node.clone(),
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Member {
        node,
        stop: Some(tx),
        dir: dir.to_path_buf(),
        addr,
    }
}

async fn stop(m: &mut Member) {
    if let Some(tx) = m.stop.take() {
        let _ = tx.send(());
    }
    m.node.raft.shutdown().await.unwrap();
}

/// Starts nodes 1, 2 and 3 in subdirectories of `dir` and forms a cluster of them.
async fn start_three(dir: &std::path::Path) -> Vec<Member> {
    let mut members = Vec::new();
    for id in 1..=3u64 {
        members.push(start(id, &dir.join(format!("n{id}")), None).await);
    }
    let nodes: BTreeMap<u64, BasicNode> = members
        .iter()
        .map(|m| {
            (
                m.node.id,
                BasicNode {
                    addr: m.addr.clone(),
                },
            )
        })
        .collect();
    members[0].node.initialize(nodes).await.unwrap();
    members
}

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn leader(members: &[&Member]) -> u64 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for m in members {
            let metrics = m.node.raft.metrics().borrow().clone();
            if metrics.current_leader == Some(m.node.id) {
                return m.node.id;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn origin() -> Name {
    Name::parse("example.com.", None).unwrap()
}

fn create_zone(m: &Member) -> Command {
    let mut soa = Name::parse("ns1.example.com.", None)
        .unwrap()
        .wire()
        .to_vec();
    soa.extend_from_slice(Name::parse("h.example.com.", None).unwrap().wire());
    soa.extend_from_slice(&[0; 20]);
    Command::CreateZone {
        name: origin(),
        caller_reference: "t".into(),
        soa,
        ns: vec![
            Name::parse("ns1.example.com.", None)
                .unwrap()
                .wire()
                .to_vec(),
        ],
        change_id: m.node.next_change_id(),
        submitted_ms: 0,
    }
}

fn upsert(m: &Member, label: &str, last_octet: u8) -> Command {
    Command::ChangeBatch {
        zone: origin(),
        batch: ChangeBatch {
            comment: String::new(),
            changes: vec![Change {
                action: Action::Upsert,
                record_set: RecordSet {
                    name: Name::parse(&format!("{label}.example.com."), None).unwrap(),
                    rtype: RType::A,
                    ttl: 60,
                    rdatas: vec![vec![192, 0, 2, last_octet]],
                    set_identifier: None,
                    policy: None,
                    health_check: None,
                    alias: None,
                    fail_closed: false,
                },
            }],
        },
        idempotency_token: None,
        expected_zone_version: None,
        change_id: m.node.next_change_id(),
        submitted_ms: 0,
    }
}

fn sets_of(m: &Member) -> BTreeMap<(Vec<u8>, u16), Vec<Vec<u8>>> {
    let state = m.node.sm.state.read().unwrap();
    state
        .zones
        .get(&origin())
        .map(|z| {
            z.sets
                .iter()
                .map(|(k, v)| (k.clone(), v.rdatas.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// Applied index as the state machine has it (metrics are published a little later).
fn applied(m: &Member) -> u64 {
    m.node
        .sm
        .state
        .read()
        .unwrap()
        .last_applied
        .map(|l| l.index)
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_survive_leader_loss_and_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = start_three(tmp.path()).await;
    let lead = leader(&members.iter().collect::<Vec<_>>()).await;
    let writer = &members[(lead - 1) as usize];
    assert!(matches!(
        writer.node.write(create_zone(writer)).await.unwrap(),
        CommandResult::Applied { .. }
    ));

    // Writes through a follower are forwarded to the leader.
    let follower = members.iter().find(|m| m.node.id != lead).unwrap();
    let mut acked = Vec::new();
    for i in 0..20u8 {
        let r = follower
            .node
            .write(upsert(follower, &format!("h{i}"), i))
            .await
            .unwrap();
        assert!(matches!(r, CommandResult::Applied { .. }), "{r:?}");
        acked.push(i);
    }
    // A rejected batch is committed as a no-op with its reason.
    let bad = Command::ChangeBatch {
        zone: origin(),
        batch: ChangeBatch {
            comment: String::new(),
            changes: vec![Change {
                action: Action::Create,
                record_set: RecordSet {
                    name: Name::parse("h0.example.com.", None).unwrap(),
                    rtype: RType::A,
                    ttl: 60,
                    rdatas: vec![vec![192, 0, 2, 99]],
                    set_identifier: None,
                    policy: None,
                    health_check: None,
                    alias: None,
                    fail_closed: false,
                },
            }],
        },
        idempotency_token: None,
        expected_zone_version: None,
        change_id: follower.node.next_change_id(),
        submitted_ms: 0,
    };
    assert!(matches!(
        follower.node.write(bad).await.unwrap(),
        CommandResult::Rejected { .. }
    ));

    // Kill the leader; the others elect a new one and keep every acknowledged write.
    let lead_idx = (lead - 1) as usize;
    stop(&mut members[lead_idx]).await;
    let survivors: Vec<&Member> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead_idx)
        .map(|(_, m)| m)
        .collect();
    let new_lead = leader(&survivors).await;
    assert_ne!(new_lead, lead);
    let w = survivors.iter().find(|m| m.node.id == new_lead).unwrap();
    let CommandResult::Applied {
        version: after_version,
        ..
    } = w.node.write(upsert(w, "after", 200)).await.unwrap()
    else {
        panic!("write after failover rejected")
    };
    for m in &survivors {
        wait_for("followers to apply", || applied(m) >= after_version).await;
        let sets = sets_of(m);
        for i in &acked {
            let key = (
                Name::parse(&format!("h{i}.example.com."), None)
                    .unwrap()
                    .wire()
                    .to_vec(),
                1u16,
            );
            assert_eq!(
                sets.get(&key),
                Some(&vec![vec![192, 0, 2, *i]]),
                "acknowledged write h{i} on node {}",
                m.node.id
            );
        }
    }

    // The old leader restarts from its RocksDB and catches up.
    let dir = members[lead_idx].dir.clone();
    let listener = tokio::net::TcpListener::bind(&members[lead_idx].addr)
        .await
        .unwrap();
    let target = after_version;
    let expected = sets_of(survivors[0]);
    drop(survivors);
    let placeholder = members[(lead_idx + 1) % 3].node.clone();
    let old = std::mem::replace(&mut members[lead_idx].node, placeholder);
    drop(old);
    members[lead_idx] = start(lead, &dir, Some(listener)).await;
    wait_for("restarted node to catch up", || {
        applied(&members[lead_idx]) >= target
    })
    .await;
    assert_eq!(sets_of(&members[lead_idx]), expected);
    for m in &mut members {
        stop(m).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_cannot_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut members = start_three(tmp.path()).await;
    let lead = leader(&members.iter().collect::<Vec<_>>()).await;
    let w = &members[(lead - 1) as usize];
    w.node.write(create_zone(w)).await.unwrap();
    // Stop both followers: the leader alone must not commit.
    for m in members.iter_mut() {
        if m.node.id != lead {
            stop(m).await;
        }
    }
    let w = &members[(lead - 1) as usize];
    let attempt = tokio::time::timeout(
        Duration::from_secs(2),
        w.node.raft.client_write(upsert(w, "lonely", 1)),
    )
    .await;
    assert!(
        attempt.is_err() || attempt.unwrap().is_err(),
        "a minority committed a write"
    );
    assert!(
        !sets_of(w).contains_key(&(
            Name::parse("lonely.example.com.", None)
                .unwrap()
                .wire()
                .to_vec(),
            1
        ))
    );
    stop(&mut members[(lead - 1) as usize]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_added_after_compaction_catches_up_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let first = start(1, &tmp.path().join("n1"), None).await;
    let mut nodes = BTreeMap::new();
    nodes.insert(
        1,
        BasicNode {
            addr: first.addr.clone(),
        },
    );
    first.node.initialize(nodes).await.unwrap();
    leader(&[&first]).await;
    first.node.write(create_zone(&first)).await.unwrap();
    let mut last = 0;
    for i in 0..50u8 {
        if let CommandResult::Applied { version, .. } = first
            .node
            .write(upsert(&first, &format!("s{i}"), i))
            .await
            .unwrap()
        {
            last = version;
        }
    }
    // Snapshot, then compact the log past everything: a new node can only catch up by snapshot.
    first.node.raft.trigger().snapshot().await.unwrap();
    wait_for("snapshot", || {
        first
            .node
            .raft
            .metrics()
            .borrow()
            .snapshot
            .map(|s| s.index)
            .unwrap_or(0)
            >= last
    })
    .await;
    first.node.raft.trigger().purge_log(last).await.unwrap();
    wait_for("purge", || {
        first
            .node
            .raft
            .metrics()
            .borrow()
            .purged
            .map(|p| p.index)
            .unwrap_or(0)
            >= last
    })
    .await;

    let second = start(2, &tmp.path().join("n2"), None).await;
    first
        .node
        .raft
        .add_learner(
            2,
            BasicNode {
                addr: second.addr.clone(),
            },
            true,
        )
        .await
        .unwrap();
    first
        .node
        .raft
        .change_membership([1u64, 2], false)
        .await
        .unwrap();
    wait_for("new node to install the snapshot", || {
        applied(&second) >= last
    })
    .await;
    assert_eq!(sets_of(&second), sets_of(&first));
    assert_eq!(
        second.node.sm.state.read().unwrap().catalog_checksum(),
        first.node.sm.state.read().unwrap().catalog_checksum()
    );
    // And it keeps replicating after the snapshot.
    let CommandResult::Applied { version, .. } =
        first.node.write(upsert(&first, "later", 9)).await.unwrap()
    else {
        panic!()
    };
    wait_for("replication after snapshot", || applied(&second) >= version).await;
    // Removing it leaves a one-node cluster that still commits.
    first
        .node
        .raft
        .change_membership([1u64], false)
        .await
        .unwrap();
    assert!(matches!(
        first.node.write(upsert(&first, "alone", 1)).await.unwrap(),
        CommandResult::Applied { .. }
    ));
}

/// Stops a member, drops it (releasing RocksDB), and starts it again on the same address.
async fn restart(mut m: Member) -> Member {
    stop(&mut m).await;
    let (id, dir, addr) = (m.node.id, m.dir.clone(), m.addr.clone());
    drop(m);
    start(id, &dir, Some(bind_again(&addr).await)).await
}

/// Binds the address a stopped member served on, once its server has let go of it.
async fn bind_again(addr: &str) -> tokio::net::TcpListener {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("binding {addr} again: {e}"),
        }
    }
}

async fn restart_all(members: Vec<Member>) -> Vec<Member> {
    let mut out = Vec::new();
    for m in members {
        out.push(restart(m).await);
    }
    out
}

fn import_chunk(import_id: &str, seq: u64, first: usize, count: usize) -> Command {
    let changes = (first..first + count)
        .map(|n| Change {
            action: Action::Upsert,
            record_set: RecordSet {
                name: Name::parse(&format!("host-{n}.example.com."), None).unwrap(),
                rtype: RType::TXT,
                ttl: 300,
                // About 100 bytes per set: 5,000-set chunks are about a megabyte each.
                rdatas: vec![{
                    let text = format!("{n:0>99}");
                    let mut rd = vec![text.len() as u8];
                    rd.extend_from_slice(text.as_bytes());
                    rd
                }],
                set_identifier: None,
                policy: None,
                health_check: None,
                alias: None,
                fail_closed: false,
            },
        })
        .collect();
    Command::ImportChunk {
        import_id: import_id.to_string(),
        seq,
        batch: ChangeBatch {
            comment: String::new(),
            changes,
        },
        submitted_ms: 0,
    }
}

/// A staged import of 60,000 sets in twelve ~1 MB entries: a follower that was down catches
/// up over byte-capped AppendEntries (several calls, partial successes); the staging survives
/// a snapshot and every node restarting; the commit switches every node to exactly the
/// imported content; and a second restart loads that content from the new generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staged_import_survives_restarts_and_large_catch_up() {
    const CHUNKS: u64 = 12;
    const CHUNK_SETS: usize = 5_000;
    let tmp = tempfile::tempdir().unwrap();
    let mut members = start_three(tmp.path()).await;
    let refs: Vec<&Member> = members.iter().collect();
    leader(&refs).await;
    let m0 = &members[0];
    m0.node.write(create_zone(m0)).await.unwrap();
    m0.node.write(upsert(m0, "old", 1)).await.unwrap();

    // A follower goes down for the whole staging.
    let lead = leader(&refs).await;
    let down_idx = members.iter().position(|m| m.node.id != lead).unwrap();
    stop(&mut members[down_idx]).await;
    let up_idx = members.iter().position(|m| m.node.id == lead).unwrap();
    let writer = members[up_idx].node.clone();
    let before_checksum = writer.sm.state.read().unwrap().catalog_checksum();

    let begin = Command::ImportBegin {
        zone: origin(),
        import_id: "I-test".into(),
        comment: "bulk".into(),
        expected_zone_version: None,
        submitted_ms: 0,
    };
    assert!(matches!(
        writer.write(begin).await.unwrap(),
        CommandResult::Applied { .. }
    ));
    for seq in 0..CHUNKS {
        let result = writer
            .write(import_chunk(
                "I-test",
                seq,
                seq as usize * CHUNK_SETS,
                CHUNK_SETS,
            ))
            .await
            .unwrap();
        assert!(
            matches!(result, CommandResult::Applied { .. }),
            "{result:?}"
        );
    }
    // Staging changes nothing that is served.
    assert_eq!(
        writer.sm.state.read().unwrap().catalog_checksum(),
        before_checksum
    );
    writer.raft.trigger().snapshot().await.unwrap();

    // The follower comes back and catches up on ~12 MB of entries, 2 MB per call.
    let down = members.remove(down_idx);
    let (id, dir, addr) = (down.node.id, down.dir.clone(), down.addr.clone());
    drop(down);
    members.insert(
        down_idx,
        start(id, &dir, Some(bind_again(&addr).await)).await,
    );
    let target = applied(&members[up_idx]);
    wait_for("the follower to catch up on the import chunks", || {
        applied(&members[down_idx]) >= target
    })
    .await;
    assert_eq!(
        members[down_idx].node.sm.state.read().unwrap().imports["I-test"]
            .data
            .sets
            .len(),
        CHUNK_SETS * CHUNKS as usize + 2
    );

    // Every node restarts with the import still staged (from RocksDB).
    drop(writer);
    let members = restart_all(members).await;
    let refs: Vec<&Member> = members.iter().collect();
    leader(&refs).await;
    for m in &members {
        assert_eq!(
            m.node.sm.state.read().unwrap().imports["I-test"]
                .meta
                .chunks_applied
                .len(),
            CHUNKS as usize
        );
    }
    let commit = Command::ImportCommit {
        import_id: "I-test".into(),
        chunks: CHUNKS,
        change_id: members[0].node.next_change_id(),
        submitted_ms: 0,
    };
    let CommandResult::Applied { version, .. } = members[0].node.write(commit).await.unwrap()
    else {
        panic!("commit refused")
    };
    for m in &members {
        wait_for("the commit everywhere", || applied(m) >= version).await;
    }
    let expected = sets_of(&members[0]);
    assert_eq!(expected.len(), CHUNK_SETS * CHUNKS as usize + 2);
    let old_key = (
        Name::parse("old.example.com.", None)
            .unwrap()
            .wire()
            .to_vec(),
        RType::A.0,
    );
    assert!(!expected.contains_key(&old_key));
    for m in &members {
        assert_eq!(sets_of(m), expected);
        assert!(m.node.sm.state.read().unwrap().imports.is_empty());
    }
    // The switch is durable: after another restart every node loads the new generation only.
    let mut members = restart_all(members).await;
    for m in &members {
        assert_eq!(sets_of(m), expected);
    }
    for m in members.iter_mut() {
        stop(m).await;
    }
}
