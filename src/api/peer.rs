//! The gRPC peer service: raft messages in, commands forwarded by followers,
//! and this node's view of the cluster. Only members of this cluster get in.

use protobuf::Message as _;
use tonic::{Request, Response, Status};

use crate::api::App;
use crate::cluster::Control;
use crate::command::Command;
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_server::PeerService;

pub struct Peer {
    pub app: App,
}

impl Peer {
    /// The sender's id, if it is a member of this cluster.
    fn admit(&self, header: Option<&pb::PeerHeader>) -> Result<u64, Status> {
        let h = header.ok_or_else(|| Status::invalid_argument("peer request without a header"))?;
        let cfg = &self.app.config;
        if h.cluster_id != cfg.cluster_id {
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster {:?}, not {:?}; check cluster_id in both nodes' config",
                cfg.cluster_id, h.cluster_id
            )));
        }
        let known = cfg.peers.iter().any(|p| p.id == h.from)
            || self
                .app
                .driver
                .status()
                .members
                .iter()
                .any(|m| m.id == h.from);
        if !known || h.from == cfg.node_id {
            return Err(Status::permission_denied(format!(
                "node {} is not a member of this cluster; add it with `drover cluster add` first",
                h.from
            )));
        }
        Ok(h.from)
    }
}

#[tonic::async_trait]
impl PeerService for Peer {
    async fn raft(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let batch = req.into_inner();
        let from = self.admit(batch.header.as_ref())?;
        let me = self.app.config.node_id;
        for bytes in batch.messages {
            let msg = raft::eraftpb::Message::parse_from_bytes(&bytes).map_err(|e| {
                Status::invalid_argument(format!("undecodable raft message from node {from}: {e}"))
            })?;
            if msg.from != from || msg.to != me {
                return Err(Status::invalid_argument(format!(
                    "raft message from {} to {} arrived from node {from} at node {me}",
                    msg.from, msg.to
                )));
            }
            self.app.driver.control(Control::Step(msg));
        }
        Ok(Response::new(pb::RaftAck {}))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let req = req.into_inner();
        self.admit(req.header.as_ref())?;
        let command: Command =
            bincode::serde::decode_from_slice(&req.command, bincode::config::standard())
                .map(|(c, _)| c)
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "undecodable command: {e}; are all nodes running the same drover version?"
                    ))
                })?;
        let (outcome, index) = self.app.driver.propose_at(command).await?;
        let outcome = bincode::serde::encode_to_vec(&outcome, bincode::config::standard())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ForwardResponse {
            outcome: outcome.into(),
            index,
        }))
    }

    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.admit(req.into_inner().header.as_ref())?;
        let json = serde_json::to_string(&self.app.driver.status())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::MembersResponse { json }))
    }
}
