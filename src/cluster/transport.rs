//! Raft messages to peers: one sender task per peer, each batching whatever
//! queued while its previous batch was in flight into one `Raft` call.
//!
//! Raft tolerates lost messages, so a full queue drops and a failed call is
//! reported to raft as the peer being unreachable (it then probes instead of
//! streaming appends) rather than retried here.

use std::collections::HashMap;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_client::PeerServiceClient;

use super::Control;

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 8192;
/// Most messages in one call.
const MAX_BATCH: usize = 1024;
/// A call that takes longer than this counts as failed (a partitioned peer).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Transport {
    peers: HashMap<u64, mpsc::Sender<Message>>,
}

impl Transport {
    /// Starts a sender task for every peer but this node.
    pub fn start(cfg: &Config, control: mpsc::Sender<Control>) -> Transport {
        let mut peers = HashMap::new();
        for p in cfg.peers.iter().filter(|p| p.id != cfg.node_id) {
            let (tx, rx) = mpsc::channel(QUEUE);
            let header = super::header(cfg);
            tokio::spawn(send_loop(p.id, p.addr.clone(), header, rx, control.clone()));
            peers.insert(p.id, tx);
        }
        Transport { peers }
    }

    pub fn send(&self, msg: Message) {
        match self.peers.get(&msg.to) {
            Some(tx) => {
                if tx.try_send(msg).is_err() {
                    tracing::debug!("raft message to a slow peer dropped");
                }
            }
            None => tracing::warn!(
                event = "raft_message_to_unknown_peer",
                to = msg.to,
                "raft wants to reach a node that is not in the peer list"
            ),
        }
    }
}

async fn send_loop(
    peer: u64,
    addr: String,
    header: pb::PeerHeader,
    mut rx: mpsc::Receiver<Message>,
    control: mpsc::Sender<Control>,
) {
    let endpoint = match crate::client::endpoint(&addr) {
        Ok(e) => e
            .connect_timeout(Duration::from_millis(500))
            .timeout(CALL_TIMEOUT),
        Err(e) => {
            tracing::error!(event = "peer_address_invalid", peer, error = %e, "cannot reach this peer");
            return;
        }
    };
    let mut client = PeerServiceClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(crate::node::MAX_GRPC_MESSAGE)
        .max_encoding_message_size(crate::node::MAX_GRPC_MESSAGE);
    let mut reachable = true;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let mut messages = Vec::with_capacity(batch.len());
        for m in batch.drain(..) {
            match m.write_to_bytes() {
                Ok(b) => messages.push(bytes::Bytes::from(b)),
                Err(e) => tracing::error!(peer, error = %e, "cannot encode a raft message"),
            }
        }
        let request = pb::RaftBatch {
            header: Some(header.clone()),
            messages,
        };
        match client.raft(request).await {
            Ok(_) => {
                if !reachable {
                    tracing::info!(event = "peer_reachable", peer, %addr, "peer is reachable again");
                    reachable = true;
                }
            }
            Err(status) => {
                if reachable {
                    tracing::warn!(event = "peer_unreachable", peer, %addr, error = %status.message(), "cannot send raft messages to peer");
                    reachable = false;
                }
                let _ = control.try_send(Control::Unreachable(peer));
            }
        }
    }
}
