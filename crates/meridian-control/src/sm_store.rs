//! The state machine: [`State`] in memory for reads, persisted to RocksDB column families after
//! every applied batch (one atomic WriteBatch carrying `last_applied`). The write is not synced:
//! the log is the durable record, and after a crash openraft re-applies the entries after the
//! persisted `last_applied`.

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

use crate::state::{Persist, SetData, SnapshotDoc, State, ZoneData, ZoneDoc, ZoneMeta};
use crate::types::{ChangeRecord, CommandResult, LogId, NodeId, StorageError, TypeConfig};

pub const CF_SM_META: &str = "sm_meta";
pub const CF_SM_ZONES: &str = "sm_zones";
pub const CF_SM_SETS: &str = "sm_sets";
pub const CF_SM_CHANGES: &str = "sm_changes";
pub const CF_SM_TOKENS: &str = "sm_tokens";
const SM_FAMILIES: [&str; 5] = [
    CF_SM_META,
    CF_SM_ZONES,
    CF_SM_SETS,
    CF_SM_CHANGES,
    CF_SM_TOKENS,
];

#[derive(Serialize, Deserialize, Default)]
struct SmMeta {
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, BasicNode>,
    catalog_version: u64,
}

fn set_key(origin: &Name, name: &[u8], rtype: u16) -> Vec<u8> {
    let mut k = origin.wire().to_vec();
    k.extend_from_slice(name);
    k.extend_from_slice(&rtype.to_be_bytes());
    k
}

fn io_read(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn io_write(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
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
                Persist::ZoneDeleted(origin) => batch.delete_cf(cf(CF_SM_ZONES), origin.wire()),
                Persist::Set(origin, name, rtype) => {
                    let key = set_key(origin, name, *rtype);
                    match state
                        .zones
                        .get(origin)
                        .and_then(|z| z.sets.get(&(name.clone(), *rtype)))
                    {
                        Some(d) => batch.put_cf(
                            cf(CF_SM_SETS),
                            key,
                            serde_json::to_vec(d).map_err(io_write)?,
                        ),
                        None => batch.delete_cf(cf(CF_SM_SETS), key),
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

    fn rewrite_all(&self, state: &State) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        for name in SM_FAMILIES {
            let cf = self
                .db
                .cf_handle(name)
                .expect("state machine column family");
            for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                let (k, _) = item.map_err(io_read)?;
                batch.delete_cf(cf, k);
            }
        }
        self.db.write(batch).map_err(io_write)?;
        let mut items = Vec::new();
        for (origin, z) in &state.zones {
            items.push(Persist::Zone(origin.clone()));
            for (n, t) in z.sets.keys() {
                items.push(Persist::Set(origin.clone(), n.clone(), *t));
            }
        }
        for id in state.changes.keys() {
            items.push(Persist::Change(id.clone()));
        }
        self.persist(state, &items)
    }
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
    let mut sets: Vec<(Name, Vec<u8>, u16, SetData)> = Vec::new();
    for item in db.iterator_cf(cf(CF_SM_SETS), IteratorMode::Start) {
        let (k, v) = item.map_err(io_read)?;
        let bad = || io_read(std::io::Error::other("corrupt record-set key"));
        let origin_len = wire_name_len(&k).ok_or_else(bad)?;
        let name_len = wire_name_len(&k[origin_len..]).ok_or_else(bad)?;
        let origin = Name::from_wire(&k[..origin_len]).map_err(|_| bad())?;
        let name = k[origin_len..origin_len + name_len].to_vec();
        let rtype = u16::from_be_bytes(k[origin_len + name_len..].try_into().map_err(|_| bad())?);
        sets.push((
            origin,
            name,
            rtype,
            serde_json::from_slice(&v).map_err(io_read)?,
        ));
    }
    let mut doc_zones: Vec<ZoneDoc> = state
        .zones
        .values()
        .map(|z| (z.meta().clone(), Vec::new()))
        .collect();
    for (origin, name, rtype, data) in sets {
        if let Some(entry) = doc_zones.iter_mut().find(|(m, _)| m.name == origin) {
            entry.1.push((name, rtype, data));
        }
    }
    let mut changes: Vec<ChangeRecord> = Vec::new();
    for item in db.iterator_cf(cf(CF_SM_CHANGES), IteratorMode::Start) {
        let (_, v) = item.map_err(io_read)?;
        changes.push(serde_json::from_slice(&v).map_err(io_read)?);
    }
    changes.sort_by_key(|c| c.version);
    let mut tokens = Vec::new();
    for item in db.iterator_cf(cf(CF_SM_TOKENS), IteratorMode::Start) {
        let (k, v) = item.map_err(io_read)?;
        tokens.push((
            String::from_utf8_lossy(&k).into_owned(),
            String::from_utf8_lossy(&v).into_owned(),
        ));
    }
    Ok(State::from_doc(SnapshotDoc {
        last_applied: state.last_applied,
        membership: state.membership,
        catalog_version: state.catalog_version,
        zones: doc_zones,
        changes,
        tokens,
    }))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let (bytes, meta) = {
            let state = self.state.read().expect("state lock");
            let bytes = serde_json::to_vec(&state.to_doc()).map_err(io_read)?;
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: format!(
                    "{}-{}",
                    state.last_applied.map(|l| l.index).unwrap_or(0),
                    bytes.len()
                ),
            };
            (bytes, meta)
        };
        *self.snapshot.write().expect("snapshot lock") = Some((meta.clone(), bytes.clone()));
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
        let doc: SnapshotDoc = serde_json::from_slice(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let mut new_state = State::from_doc(doc);
        new_state.last_applied = meta.last_log_id;
        new_state.membership = meta.last_membership.clone();
        self.rewrite_all(&new_state)?;
        let version = new_state.catalog_version;
        *self.state.write().expect("state lock") = new_state;
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
