//! The state machine: [`State`] in memory for reads, persisted to RocksDB column families after
//! every applied batch (one atomic WriteBatch carrying `last_applied`). The write is not synced:
//! the log is the durable record, and after a crash openraft re-applies the entries after the
//! persisted `last_applied`.
//!
//! Record sets are keyed by zone *generation*, so a staged import writes its sets beside the
//! live ones and its commit is a meta rewrite plus a range deletion. Raft snapshots are the
//! column families' contents read through a RocksDB snapshot: building one holds the state lock
//! only for the instant it takes to open the RocksDB snapshot.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use meridian_core::Name;
use meridian_core::name::wire_name_len;
use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError, StoredMembership,
};
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::state::{Import, ImportMeta, Persist, SetData, State, ZoneData, ZoneMeta};
use crate::types::{ChangeRecord, CommandResult, LogId, NodeId, StorageError, TypeConfig};

pub const CF_SM_META: &str = "sm_meta";
pub const CF_SM_ZONES: &str = "sm_zones";
pub const CF_SM_SETS: &str = "sm_sets";
pub const CF_SM_CHANGES: &str = "sm_changes";
pub const CF_SM_TOKENS: &str = "sm_tokens";
pub const CF_SM_IMPORTS: &str = "sm_imports";
/// Every state-machine column family; a snapshot is their contents, in this order.
pub const SM_FAMILIES: [&str; 6] = [
    CF_SM_META,
    CF_SM_ZONES,
    CF_SM_SETS,
    CF_SM_CHANGES,
    CF_SM_TOKENS,
    CF_SM_IMPORTS,
];
/// First bytes of a snapshot: the format (column family contents as length-prefixed pairs).
const SNAPSHOT_MAGIC: &[u8; 8] = b"MRDNSNP1";
/// Keys and values in a snapshot: RocksDB allows more, but nothing we store comes close (a set
/// of 400 records of 64 KB each as JSON is the largest value).
const SNAPSHOT_ITEM_BYTES_MAX: usize = 256 << 20;
/// Key-value pairs written per RocksDB batch while installing a snapshot.
const INSTALL_BATCH_ITEMS: usize = 100_000;

#[derive(Serialize, Deserialize, Default)]
struct SmMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    catalog_version: u64,
}

/// `origin ‖ generation ‖ owner ‖ type`: one zone generation's sets are one key range.
fn set_key(origin: &Name, generation: u64, name: &[u8], rtype: u16) -> Vec<u8> {
    let mut k = generation_prefix(origin, generation);
    k.extend_from_slice(name);
    k.extend_from_slice(&rtype.to_be_bytes());
    k
}

fn generation_prefix(origin: &Name, generation: u64) -> Vec<u8> {
    let mut k = origin.wire().to_vec();
    k.extend_from_slice(&generation.to_be_bytes());
    k
}

/// The key range of one zone generation's sets (for a range deletion).
fn generation_range(origin: &Name, generation: u64) -> (Vec<u8>, Vec<u8>) {
    (
        generation_prefix(origin, generation),
        generation_prefix(origin, generation + 1),
    )
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn bad_snapshot(what: &str) -> StorageError {
    io_read(std::io::Error::other(format!("corrupt snapshot: {what}")))
}

/// The latest snapshot: its metadata and serialized state.
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// Shared handle: the Raft state machine and the API readers both hold one.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    pub state: Arc<RwLock<State>>,
    /// The newest catalog version; edge-sync streams wait on it.
    pub version_tx: Arc<watch::Sender<u64>>,
    snapshot: Arc<RwLock<Option<StoredSnapshot>>>,
}

impl StateMachine {
    /// Opens the persisted state.
    pub fn open(db: Arc<DB>) -> Result<StateMachine, StorageError> {
        let state = load(&db)?;
        let (version_tx, _) = watch::channel(state.catalog_version);
        Ok(StateMachine {
            db,
            state: Arc::new(RwLock::new(state)),
            version_tx: Arc::new(version_tx),
            snapshot: Arc::new(RwLock::new(None)),
        })
    }

    /// Writes what one apply call changed, with `last_applied`, in one RocksDB batch. Called
    /// with the state write lock held, so that the stored state always equals the in-memory
    /// state whenever the lock is free (snapshots rely on it).
    fn persist(&self, state: &State, items: &[Persist]) -> Result<(), StorageError> {
        let cf = |name| {
            self.db
                .cf_handle(name)
                .expect("state machine column family")
        };
        let mut batch = WriteBatch::default();
        let meta = SmMeta {
            last_applied: state.last_applied,
            membership: state.membership.clone(),
            catalog_version: state.catalog_version,
        };
        batch.put_cf(
            cf(CF_SM_META),
            "meta",
            serde_json::to_vec(&meta).map_err(io_write)?,
        );
        // Range deletions first: every later put in this batch is of a live value.
        for item in items {
            match item {
                Persist::ZoneDeleted(origin, generation)
                | Persist::GenerationDropped(origin, generation) => {
                    let (from, to) = generation_range(origin, *generation);
                    batch.delete_range_cf(cf(CF_SM_SETS), from, to);
                }
                Persist::ImportDropped {
                    zone,
                    generation,
                    committed: false,
                    ..
                } => {
                    let (from, to) = generation_range(zone, *generation);
                    batch.delete_range_cf(cf(CF_SM_SETS), from, to);
                }
                _ => {}
            }
        }
        let put_set = |batch: &mut WriteBatch,
                       data: &crate::state::ZoneData,
                       origin: &Name,
                       generation: u64,
                       name: &[u8],
                       rtype: u16|
         -> Result<(), StorageError> {
            let key = set_key(origin, generation, name, rtype);
            match data.sets.get(&(name.to_vec(), rtype)) {
                Some(d) => batch.put_cf(
                    cf(CF_SM_SETS),
                    key,
                    serde_json::to_vec(d).map_err(io_write)?,
                ),
                None => batch.delete_cf(cf(CF_SM_SETS), key),
            }
            Ok(())
        };
        for item in items {
            match item {
                Persist::Zone(origin) => {
                    if let Some(z) = state.zones.get(origin) {
                        batch.put_cf(
                            cf(CF_SM_ZONES),
                            origin.wire(),
                            serde_json::to_vec(z.meta()).map_err(io_write)?,
                        );
                    }
                }
                Persist::ZoneDeleted(origin, _) => {
                    if !state.zones.contains_key(origin) {
                        batch.delete_cf(cf(CF_SM_ZONES), origin.wire());
                    }
                }
                Persist::Set(origin, name, rtype) => {
                    if let Some(z) = state.zones.get(origin) {
                        put_set(&mut batch, z, origin, z.meta().generation, name, *rtype)?;
                    }
                }
                Persist::SetAt(origin, generation, name, rtype) => {
                    // The generation lives on in a staged import or, once committed, the zone.
                    let holder = state
                        .imports
                        .values()
                        .find(|i| i.meta.zone == *origin && i.meta.generation == *generation)
                        .map(|i| &i.data)
                        .or_else(|| {
                            state
                                .zones
                                .get(origin)
                                .filter(|z| z.meta().generation == *generation)
                        });
                    if let Some(data) = holder {
                        put_set(&mut batch, data, origin, *generation, name, *rtype)?;
                    }
                }
                Persist::GenerationDropped(..) => {}
                Persist::Routing => {
                    batch.put_cf(
                        cf(CF_SM_META),
                        "routing",
                        serde_json::to_vec(&state.routing_objects).map_err(io_write)?,
                    );
                }
                Persist::Import(id) => {
                    if let Some(i) = state.imports.get(id) {
                        batch.put_cf(
                            cf(CF_SM_IMPORTS),
                            id,
                            serde_json::to_vec(&i.meta).map_err(io_write)?,
                        );
                    }
                }
                Persist::ImportDropped { id, .. } => {
                    if !state.imports.contains_key(id) {
                        batch.delete_cf(cf(CF_SM_IMPORTS), id);
                    }
                }
                Persist::Change(id) => {
                    if let Some(c) = state.changes.get(id) {
                        batch.put_cf(
                            cf(CF_SM_CHANGES),
                            id,
                            serde_json::to_vec(c).map_err(io_write)?,
                        );
                    }
                    for (token, change) in &state.tokens {
                        if change == id {
                            batch.put_cf(cf(CF_SM_TOKENS), token, id);
                        }
                    }
                }
            }
        }
        self.db.write(batch).map_err(io_write)
    }
}

/// Lowers the calling thread to the lowest CPU priority. Building a snapshot of a million-set
/// zone takes seconds of CPU; on a small machine it must yield to the threads that append,
/// replicate and apply, or commit latency spikes meanwhile. Failure leaves the priority as is.
fn lower_thread_priority() {
    // SAFETY: plain syscalls on this thread's own id.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 19);
    }
}

/// Appends one length-prefixed item to a snapshot.
fn put_item(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Serializes every state-machine column family as of a RocksDB snapshot taken while the state
/// lock was held (so it matches `last_applied`); the lock is released before the long part.
fn serialize_state(
    db: &DB,
    state: &RwLock<State>,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>), StorageError> {
    let (db_snapshot, last_applied, membership) = {
        let state = state.read().expect("state lock");
        (db.snapshot(), state.last_applied, state.membership.clone())
    };
    let mut out = SNAPSHOT_MAGIC.to_vec();
    for (family, name) in SM_FAMILIES.iter().enumerate() {
        let cf = db.cf_handle(name).expect("state machine column family");
        let mut opts = rocksdb::ReadOptions::default();
        opts.set_snapshot(&db_snapshot);
        for item in db.iterator_cf_opt(cf, opts, IteratorMode::Start) {
            let (k, v) = item.map_err(io_read)?;
            out.push(family as u8);
            put_item(&mut out, &k);
            put_item(&mut out, &v);
        }
    }
    let meta = SnapshotMeta {
        last_log_id: last_applied,
        last_membership: membership,
        snapshot_id: format!(
            "{}-{}",
            last_applied.map(|l| l.index).unwrap_or(0),
            out.len()
        ),
    };
    Ok((meta, out))
}

/// Replaces every state-machine column family by a snapshot's contents.
fn restore_state(db: &DB, bytes: &[u8]) -> Result<(), StorageError> {
    let rest = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or_else(|| bad_snapshot("unknown format"))?;
    // Parse it all before touching the database: a bad snapshot leaves the state as it was.
    let mut items: Vec<(usize, &[u8], &[u8])> = Vec::new();
    let mut pos = 0;
    let take = |pos: &mut usize| -> Result<&[u8], StorageError> {
        let len_bytes = rest
            .get(*pos..*pos + 4)
            .ok_or_else(|| bad_snapshot("truncated"))?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        if len > SNAPSHOT_ITEM_BYTES_MAX {
            return Err(bad_snapshot("item too large"));
        }
        let item = rest
            .get(*pos + 4..*pos + 4 + len)
            .ok_or_else(|| bad_snapshot("truncated"))?;
        *pos += 4 + len;
        Ok(item)
    };
    while pos < rest.len() {
        let family = rest[pos] as usize;
        if family >= SM_FAMILIES.len() {
            return Err(bad_snapshot("unknown column family"));
        }
        pos += 1;
        let k = take(&mut pos)?;
        let v = take(&mut pos)?;
        items.push((family, k, v));
    }
    let mut batch = WriteBatch::default();
    for name in SM_FAMILIES {
        let cf = db.cf_handle(name).expect("state machine column family");
        for item in db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item.map_err(io_read)?;
            batch.delete_cf(cf, k);
        }
    }
    db.write(batch).map_err(io_write)?;
    for chunk in items.chunks(INSTALL_BATCH_ITEMS) {
        let mut batch = WriteBatch::default();
        for (family, k, v) in chunk {
            let cf = db
                .cf_handle(SM_FAMILIES[*family])
                .expect("state machine column family");
            batch.put_cf(cf, k, v);
        }
        db.write(batch).map_err(io_write)?;
    }
    Ok(())
}

fn load(db: &DB) -> Result<State, StorageError> {
    let cf = |name| db.cf_handle(name).expect("state machine column family");
    let meta: SmMeta = match db.get_cf(cf(CF_SM_META), "meta").map_err(io_read)? {
        Some(b) => serde_json::from_slice(&b).map_err(io_read)?,
        None => SmMeta::default(),
    };
    let mut state = State {
        last_applied: meta.last_applied,
        membership: meta.membership,
        catalog_version: meta.catalog_version,
        ..State::default()
    };
    if let Some(b) = db.get_cf(cf(CF_SM_META), "routing").map_err(io_read)? {
        state.routing_objects = serde_json::from_slice(&b).map_err(io_read)?;
        state.routing = std::sync::Arc::new(state.routing_objects.routing_state());
    }
    for item in db.iterator_cf(cf(CF_SM_ZONES), IteratorMode::Start) {
        let (_, v) = item.map_err(io_read)?;
        let zm: ZoneMeta = serde_json::from_slice(&v).map_err(io_read)?;
        state.zones.insert(
            zm.name.clone(),
            ZoneData {
                meta: Some(zm),
                ..ZoneData::default()
            },
        );
    }
    for item in db.iterator_cf(cf(CF_SM_IMPORTS), IteratorMode::Start) {
        let (_, v) = item.map_err(io_read)?;
        let im: ImportMeta = serde_json::from_slice(&v).map_err(io_read)?;
        let zone_meta = state.zones.get(&im.zone).map(|z| ZoneMeta {
            generation: im.generation,
            ..z.meta().clone()
        });
        state.imports.insert(
            im.id.clone(),
            Import {
                data: ZoneData {
                    meta: zone_meta,
                    ..ZoneData::default()
                },
                meta: im,
            },
        );
    }
    for item in db.iterator_cf(cf(CF_SM_SETS), IteratorMode::Start) {
        let (k, v) = item.map_err(io_read)?;
        let bad = || io_read(std::io::Error::other("corrupt record-set key"));
        let origin_len = wire_name_len(&k).ok_or_else(bad)?;
        let generation = u64::from_be_bytes(
            k.get(origin_len..origin_len + 8)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        );
        let rest = &k[origin_len + 8..];
        let name_len = wire_name_len(rest).ok_or_else(bad)?;
        let origin = Name::from_wire(&k[..origin_len]).map_err(|_| bad())?;
        let name = rest[..name_len].to_vec();
        let rtype = u16::from_be_bytes(rest[name_len..].try_into().map_err(|_| bad())?);
        let data: SetData = serde_json::from_slice(&v).map_err(io_read)?;
        if let Some(z) = state
            .zones
            .get_mut(&origin)
            .filter(|z| z.meta().generation == generation)
        {
            z.put(name, rtype, data);
        } else if let Some(i) = state
            .imports
            .values_mut()
            .find(|i| i.meta.zone == origin && i.meta.generation == generation)
        {
            i.data.put(name, rtype, data);
        }
    }
    let mut changes: Vec<ChangeRecord> = Vec::new();
    for item in db.iterator_cf(cf(CF_SM_CHANGES), IteratorMode::Start) {
        let (_, v) = item.map_err(io_read)?;
        changes.push(serde_json::from_slice(&v).map_err(io_read)?);
    }
    changes.sort_by_key(|c| c.version);
    for c in changes {
        state.change_order.push_back(c.id.clone());
        state.changes.insert(c.id.clone(), c);
    }
    for item in db.iterator_cf(cf(CF_SM_TOKENS), IteratorMode::Start) {
        let (k, v) = item.map_err(io_read)?;
        state.tokens.insert(
            String::from_utf8_lossy(&k).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        );
    }
    Ok(state)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // Off the async runtime and outside the state lock: applies go on meanwhile.
        let db = self.db.clone();
        let state = self.state.clone();
        // A thread of its own (not the runtime's blocking pool) because it lowers its priority.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("raft-snapshot".into())
            .spawn(move || {
                lower_thread_priority();
                // The copy kept for `get_current_snapshot` is made here too: copying a few
                // hundred megabytes on a runtime worker would stall it.
                let _ = tx.send(serialize_state(&db, &state).map(|(meta, bytes)| {
                    let kept = bytes.clone();
                    (meta, bytes, kept)
                }));
            })
            .map_err(io_read)?;
        let (meta, bytes, kept) = rx.await.map_err(io_read)??;
        *self.snapshot.write().expect("snapshot lock") = Some((meta.clone(), kept));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        let state = self.state.read().expect("state lock");
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        let mut persist = Vec::new();
        let version = {
            let mut state = self.state.write().expect("state lock");
            for entry in entries {
                state.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(CommandResult::Applied {
                        change_id: String::new(),
                        version: state.catalog_version,
                    }),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(CommandResult::Applied {
                            change_id: String::new(),
                            version: state.catalog_version,
                        });
                    }
                    EntryPayload::Normal(command) => {
                        let (result, _delta) =
                            state.apply(entry.log_id.index, &command, &mut persist);
                        if let CommandResult::Rejected { code, message } = &result {
                            tracing::info!(index = entry.log_id.index, change = command.change_id(), %code, %message, "change rejected");
                        }
                        results.push(result);
                    }
                }
            }
            self.persist(&state, &persist)?;
            state.catalog_version
        };
        self.version_tx.send_replace(version);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let version = {
            // Held across the rewrite so that no snapshot is built from a half-written state.
            let mut state = self.state.write().expect("state lock");
            restore_state(&self.db, &bytes)?;
            let mut new_state = load(&self.db)?;
            new_state.last_applied = meta.last_log_id;
            new_state.membership = meta.last_membership.clone();
            let version = new_state.catalog_version;
            *state = new_state;
            version
        };
        *self.snapshot.write().expect("snapshot lock") = Some((meta.clone(), bytes));
        self.version_tx.send_replace(version);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self
            .snapshot
            .read()
            .expect("snapshot lock")
            .as_ref()
            .map(|(meta, bytes)| Snapshot {
                meta: meta.clone(),
                snapshot: Box::new(Cursor::new(bytes.clone())),
            }))
    }
}
