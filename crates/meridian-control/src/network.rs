//! Raft traffic between control nodes over the same gRPC port as the API. openraft's messages
//! travel in the cluster's binary encoding (`codec`) inside `RaftPayload`; snapshot chunk bytes
//! travel raw beside it.

use std::time::Duration;

use meridian_proto::v1::RaftPayload;
use meridian_proto::v1::raft_client::RaftClient;
use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use crate::types::{NodeId, TypeConfig};

/// Connect timeout for a peer: short, so a dead peer does not stall replication to the others.
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// gRPC message size: snapshot chunks and large batches (a 10,000-set batch is a few MB).
pub const RAFT_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Entries one AppendEntries carries, by estimated size: openraft gives each call one heartbeat
/// interval, and a follower catching up on hundreds of multi-megabyte import chunks must get
/// them a few at a time (the rest follow at once, as a partial success) instead of timing out
/// forever on one huge message.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 2 << 20;

pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5)))
}

pub fn raft_client(addr: &str) -> Result<RaftClient<Channel>, tonic::transport::Error> {
    Ok(RaftClient::new(endpoint(addr)?.connect_lazy())
        .max_decoding_message_size(RAFT_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RAFT_MESSAGE_BYTES_MAX))
}

#[derive(Clone, Default)]
pub struct Network;

pub struct PeerClient {
    target: NodeId,
    node: BasicNode,
    client: Option<RaftClient<Channel>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        PeerClient {
            target,
            node: node.clone(),
            client: raft_client(&node.addr).ok(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call<Req, Resp, E>(
        &mut self,
        kind: Kind,
        req: &Req,
        blob: Vec<u8>,
        timeout: Duration,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self.client.as_mut().ok_or_else(|| {
            RPCError::Unreachable(Unreachable::new(&TransportError(format!(
                "bad address {}",
                self.node.addr
            ))))
        })?;
        let data =
            crate::codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data, blob });
        request.set_timeout(timeout);
        let reply = match kind {
            Kind::Append => client.append_entries(request).await,
            Kind::Vote => client.vote(request).await,
            Kind::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let e = TransportError(format!("{}: {}", status.code(), status.message()));
            match status.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            crate::codec::decode(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

enum Kind {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        let mut rpc = rpc;
        let mut bytes = 0;
        let keep = rpc
            .entries
            .iter()
            .position(|e| {
                bytes += match &e.payload {
                    openraft::EntryPayload::Normal(c) => c.approx_bytes(),
                    _ => 256,
                };
                bytes > APPEND_ENTRIES_BYTES_MAX
            })
            .map_or(rpc.entries.len(), |over| over.max(1));
        if keep == rpc.entries.len() {
            return self
                .call(Kind::Append, &rpc, Vec::new(), option.hard_ttl())
                .await;
        }
        rpc.entries.truncate(keep);
        let last = rpc.entries.last().map(|e| e.log_id);
        let reply: AppendEntriesResponse<NodeId> = self
            .call(Kind::Append, &rpc, Vec::new(), option.hard_ttl())
            .await?;
        Ok(match reply {
            AppendEntriesResponse::Success => AppendEntriesResponse::PartialSuccess(last),
            other => other,
        })
    }

    async fn install_snapshot(
        &mut self,
        mut rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let blob = std::mem::take(&mut rpc.data);
        self.call(Kind::Snapshot, &rpc, blob, option.hard_ttl())
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Kind::Vote, &rpc, Vec::new(), option.hard_ttl())
            .await
    }
}
