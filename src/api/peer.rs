//! The gRPC peer service: raft messages in, commands forwarded by followers,
//! and this node's view of the cluster. Only members of this cluster get in.

use futures::StreamExt;
use protobuf::Message as _;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use crate::api::App;
use crate::cluster::{Control, Forwardable};
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_server::PeerService;
use crate::snapshot;
use crate::wire::inbound_stream_error;

/// The gRPC `PeerService`, which the other members of the cluster call.
pub struct Peer {
    /// The node it serves for.
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
        let mine = self.app.driver.incarnation().get();
        if h.incarnation != 0 && mine != 0 && h.incarnation != mine {
            use crate::cluster::identity::show;
            tracing::warn!(event = "incarnation_mismatch", peer = h.from, theirs = %show(h.incarnation), ours = %show(mine), "refused a node of another incarnation of this cluster");
            return Err(Status::permission_denied(format!(
                "node {} belongs to incarnation {} of cluster {:?}, and this node (node {}) to incarnation {}: they are different clusters (one was restored from a backup, or bootstrapped anew on an empty data dir). Do not mix them: restore every member from the same backup (drover snapshot restore FILE --config NODE.toml), or empty the other node's data dir and start it with --join before `drover cluster add`",
                h.from,
                show(h.incarnation),
                cfg.cluster_id,
                cfg.node_id,
                show(mine)
            )));
        }
        self.check_member(h.from)?;
        Ok(h.from)
    }

    /// A node that has no incarnation yet (joining) takes the one of the
    /// leader that replicates to it.
    fn adopt_incarnation(&self, header: Option<&pb::PeerHeader>) {
        if let Some(h) = header {
            if self.app.driver.incarnation().adopt(h.incarnation) {
                self.app.driver.control(Control::Incarnation(h.incarnation));
            }
        }
    }

    /// Reads a peer stream's first message, which names the sender, and
    /// admits the sender.
    async fn open<T>(
        &self,
        stream: &mut Streaming<T>,
        header: impl Fn(&T) -> Option<&pb::PeerHeader>,
        empty: &'static str,
    ) -> Result<(u64, T), Status> {
        let first = stream
            .message()
            .await
            .map_err(inbound_stream_error)?
            .ok_or_else(|| Status::invalid_argument(empty))?;
        let from = self.admit(header(&first))?;
        Ok((from, first))
    }

    /// Refuses a node that is not (or no longer) a member of this cluster.
    fn check_member(&self, from: u64) -> Result<(), Status> {
        let cfg = &self.app.config;
        // One look at the status: it is read on every raft batch, while the
        // driver publishes a new one every turn.
        let (removed_at, member) = {
            let status = self.app.driver.status_ref();
            (
                status.removed_members.get(&from).copied(),
                status.members.iter().any(|m| m.id == from),
            )
        };
        if let Some(at) = removed_at {
            return Err(crate::wire::removed_status(from, at));
        }
        let known = member || cfg.peers.iter().any(|p| p.id == from);
        if !known || from == cfg.node_id {
            return Err(Status::permission_denied(format!(
                "node {from} is not a member of this cluster; add it with `drover cluster add` first"
            )));
        }
        Ok(())
    }

    /// Keeps what member `from` reported of its disk and memory.
    fn note_resources(&self, from: u64, resources: Option<&pb::NodeResources>) {
        if let Some(r) = resources {
            self.app.driver.pressure().note_peer(from, r.into());
        }
    }

    /// Keeps what member `from`'s batch said of its clocks: its wall
    /// clock (compared with ours) and, from a leader, the log's time.
    fn note_clocks(&self, from: u64, batch: &pb::RaftBatch) {
        let now = std::time::Instant::now();
        self.app
            .driver
            .clocks()
            .note(from, batch.sent_at_ms, crate::driver::now_ms(), now);
        // Only the leader this node follows sets its time: one voted out
        // that has not noticed yet still sends its own.
        if batch.log_ms != 0 && self.app.driver.status_ref().leader_id == from {
            self.app.driver.log_time().heard(batch.log_ms, now);
        }
    }

    /// Whether to drop a vote request from `from`: its clock is too far
    /// from a majority's for it to lead.
    fn refuse_vote(&self, from: u64, msg: &raft::eraftpb::Message) -> bool {
        use raft::eraftpb::MessageType::{MsgRequestPreVote, MsgRequestVote};
        if !matches!(msg.get_msg_type(), MsgRequestVote | MsgRequestPreVote) {
            return false;
        }
        let voters: Vec<u64> = self
            .app
            .driver
            .status()
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        let clocks = self.app.driver.clocks();
        match clocks.refuses_vote(from, &voters, std::time::Instant::now()) {
            Some(offset_ms) => {
                tracing::warn!(event = "vote_refused_clock", candidate = from, offset_ms, max_offset_ms = clocks.max_offset_ms(), "refused a vote: the candidate's clock is too far from the majority's (see drover cluster members)");
                true
            }
            None => false,
        }
    }

    /// Hands raft messages from member `from` to the driver.
    fn step(&self, from: u64, messages: Vec<bytes::Bytes>) -> Result<(), Status> {
        let me = self.app.config.node_id;
        for bytes in messages {
            let msg = raft::eraftpb::Message::parse_from_bytes(&bytes).map_err(|e| {
                Status::invalid_argument(format!("undecodable raft message from node {from}: {e}"))
            })?;
            if msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot {
                return Err(Status::invalid_argument(
                    "snapshots travel through InstallSnapshot, not Raft",
                ));
            }
            if msg.from != from || msg.to != me {
                return Err(Status::invalid_argument(format!(
                    "raft message from {} to {} arrived from node {from} at node {me}",
                    msg.from, msg.to
                )));
            }
            if self.refuse_vote(from, &msg) {
                continue;
            }
            self.app.driver.control(Control::Step(msg));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl PeerService for Peer {
    type RaftStream =
        std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::RaftAck, Status>> + Send>>;

    async fn raft(
        &self,
        req: Request<Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::RaftStream>, Status> {
        let mut stream = req.into_inner();
        let (from, first) = self
            .open(
                &mut stream,
                |b| b.header.as_ref(),
                "raft stream ended before its header",
            )
            .await?;
        if let Some(h) = &first.header {
            let format = u8::try_from(h.entry_version).unwrap_or(u8::MAX);
            self.app.driver.peer_formats().note(from, format);
        }
        self.adopt_incarnation(first.header.as_ref());
        self.note_resources(from, first.resources.as_ref());
        self.note_clocks(from, &first);
        self.step(from, first.messages)?;
        let peer = Peer {
            app: self.app.clone(),
        };
        let mut shutdown = self.app.shutdown.clone();
        let taken = async move {
            loop {
                tokio::select! {
                    batch = stream.message() => match batch.map_err(inbound_stream_error)? {
                        Some(batch) => {
                            // A member removed while its stream was open
                            // is refused from its next batch on.
                            peer.check_member(from)?;
                            peer.note_resources(from, batch.resources.as_ref());
                            peer.note_clocks(from, &batch);
                            peer.step(from, batch.messages)?;
                        }
                        None => return Ok(()),
                    },
                    // Ended, so the server's graceful stop need not wait
                    // for peers to hang up.
                    _ = shutdown.wait_for(|stopping| *stopping) => {
                        return Err(Status::unavailable("this node is stopping"));
                    }
                }
            }
        };
        // Yields nothing; ends with the inbound stream, or with its error.
        let answer = futures::stream::once(taken)
            .filter_map(|ended| std::future::ready(ended.err().map(Err)));
        Ok(Response::new(Box::pin(answer)))
    }

    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardResponse>, Status> {
        let req = req.into_inner();
        self.admit(req.header.as_ref())?;
        let what: Forwardable =
            bincode::serde::decode_from_slice(&req.command, bincode::config::standard())
                .map(|(c, _)| c)
                .map_err(|e| {
                    Status::invalid_argument(format!(
                        "undecodable command: {e}; are all nodes running the same drover version?"
                    ))
                })?;
        let (outcome, index) = self.app.router.local(what).await?;
        let outcome = bincode::serde::encode_to_vec(&outcome, bincode::config::standard())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ForwardResponse {
            outcome: outcome.into(),
            index,
        }))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::SnapshotAck>, Status> {
        let mut stream = req.into_inner();
        let (from, first) = self
            .open(&mut stream, |c| c.header.as_ref(), "empty snapshot stream")
            .await?;
        self.adopt_incarnation(first.header.as_ref());
        let mut msg = raft::eraftpb::Message::parse_from_bytes(&first.message).map_err(|e| {
            Status::invalid_argument(format!(
                "undecodable snapshot message from node {from}: {e}"
            ))
        })?;
        let me = self.app.config.node_id;
        if msg.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot
            || msg.from != from
            || msg.to != me
        {
            return Err(Status::invalid_argument(format!(
                "expected a snapshot from node {from} to node {me}, got {:?} from {} to {}",
                msg.get_msg_type(),
                msg.from,
                msg.to
            )));
        }
        let (index, term) = {
            let md = msg.get_snapshot().get_metadata();
            (md.index, md.term)
        };
        let dir = self.app.config.data_dir.join("snapshots");
        let tmp = dir.join(format!("recv-{index:020}-{term}-from-{from}.part"));
        let received = receive(&mut stream, &tmp).await;
        let checked = match received {
            Ok(()) => {
                let path = tmp.clone();
                tokio::task::spawn_blocking(move || snapshot::verify(&path))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))
                    .and_then(|r| r.map_err(|e| Status::invalid_argument(e.to_string())))
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(meta) if meta.index == index && meta.term == term => {}
            Ok(meta) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(Status::invalid_argument(format!(
                    "snapshot file is at ({}, {}), the message says ({index}, {term})",
                    meta.index, meta.term
                )));
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        }
        let path = dir.join(format!("recv-{index:020}-{term}.bin"));
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| Status::internal(format!("cannot keep the received snapshot: {e}")))?;
        msg.mut_snapshot().data = path.to_string_lossy().into_owned().into_bytes().into();
        tracing::info!(
            event = "snapshot_received",
            from,
            index,
            term,
            "received a snapshot; installing it"
        );
        self.app.driver.control(Control::Step(msg));
        Ok(Response::new(pb::SnapshotAck {}))
    }

    async fn members(
        &self,
        req: Request<pb::MembersRequest>,
    ) -> Result<Response<pb::MembersResponse>, Status> {
        self.admit(req.into_inner().header.as_ref())?;
        let json = serde_json::to_string(&self.app.driver.members_status())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::MembersResponse { json }))
    }

    async fn workers(
        &self,
        req: Request<pb::WorkersRequest>,
    ) -> Result<Response<pb::WorkersResponse>, Status> {
        let req = req.into_inner();
        self.admit(req.header.as_ref())?;
        let asked = if req.all || !req.stop.is_empty() {
            self.app.workers.stop(&req.stop, req.all)
        } else {
            0
        };
        let list = self.app.local_workers();
        let json = serde_json::to_string(&list).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::WorkersResponse {
            json,
            asked: u32::try_from(asked).unwrap_or(u32::MAX),
        }))
    }
}

/// Writes the rest of a snapshot stream to `path`, synced.
async fn receive(
    stream: &mut Streaming<pb::SnapshotChunk>,
    path: &std::path::Path,
) -> Result<(), Status> {
    let io = |e: std::io::Error| Status::internal(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    while let Some(chunk) = stream.message().await.map_err(inbound_stream_error)? {
        file.write_all(&chunk.data).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok(())
}
