//! Raft messages to peers: one sender task per peer, each keeping one
//! long-lived `Raft` stream open and writing whatever queued since its last
//! write as one batch. A stream costs one frame per batch, where a call per
//! batch cost a request, a response and a wait for it.
//!
//! Raft tolerates lost messages, so nothing is retried here: a full queue
//! drops, and while a stream is down what would go on it is dropped and
//! reported to raft as the peer being unreachable (it then probes instead of
//! streaming appends) until a new stream is open.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_client::PeerServiceClient;
use crate::resources::Pressure;
use crate::wire::{Conn, Credentials};

use super::Control;

/// Messages queued per peer before new ones are dropped.
/// How often a link sends its clock when it has nothing else to send.
const CLOCK_BEACON: Duration = Duration::from_secs(1);
const QUEUE: usize = 8192;
/// Most messages taken from the queue at once.
const MAX_BATCH: usize = 1024;
/// Most encoded bytes in one stream frame, well under the gRPC message
/// limit: a leader catching a follower up sends hundreds of appends of up
/// to 1 MiB at once.
const MAX_FRAME_BYTES: usize = 16 << 20;
/// Batches written to a stream and not yet taken by HTTP/2; past it the
/// peer counts as unreachable (it stopped reading) and messages drop.
const STREAM_QUEUE: usize = 256;
/// A peer that answers no HTTP/2 ping for this long has its stream closed.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// Waits before opening a new stream after one failed, doubling to the max.
const RECONNECT_MIN: Duration = Duration::from_millis(20);
const RECONNECT_MAX: Duration = Duration::from_millis(500);

/// How long streaming one snapshot may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes of snapshot file per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;

struct Link {
    tx: mpsc::Sender<Message>,
    /// Snapshots go on their own connection, so a long transfer does not
    /// hold up heartbeats and appends.
    snapshots: PeerServiceClient<Conn>,
}

/// Sends raft messages to the peers: one link (a stream task, and a
/// connection for snapshots) per peer the driver knows.
pub struct Transport {
    peers: HashMap<u64, Link>,
    credentials: Credentials,
    local: Local,
}

/// What every link says of this node and where it reports back: shared by
/// the sender tasks.
#[derive(Clone)]
struct Local {
    header: pb::PeerHeader,
    control: mpsc::Sender<Control>,
    /// This node's disk and memory, reported to each peer as they change.
    pressure: Arc<Pressure>,
    incarnation: super::identity::Incarnation,
    /// The log's time, sent with every batch while this node leads.
    log_time: Arc<crate::clock::LogTime>,
}

impl Local {
    /// A batch of `messages`, stamped with this node's clocks.
    fn batch(
        &self,
        header: Option<pb::PeerHeader>,
        messages: Vec<bytes::Bytes>,
        resources: Option<pb::NodeResources>,
    ) -> pb::RaftBatch {
        pb::RaftBatch {
            header,
            messages,
            resources,
            sent_at_ms: crate::clock::now_ms(),
            log_ms: self.log_time.leader_ms().unwrap_or(0),
        }
    }

    /// The header as it stands now (a joining node takes an incarnation).
    fn header(&self) -> pb::PeerHeader {
        pb::PeerHeader {
            incarnation: self.incarnation.get(),
            ..self.header.clone()
        }
    }
}

impl Transport {
    /// Starts a sender task for every member in `addrs` but this node.
    pub fn start(
        cfg: &Config,
        addrs: &BTreeMap<u64, String>,
        control: mpsc::Sender<Control>,
        pressure: Arc<Pressure>,
        incarnation: super::identity::Incarnation,
        log_time: Arc<crate::clock::LogTime>,
    ) -> Transport {
        let mut t = Transport {
            peers: HashMap::new(),
            credentials: super::peer_credentials(cfg),
            local: Local {
                header: super::header(cfg, &incarnation),
                control,
                pressure,
                incarnation,
                log_time,
            },
        };
        for (id, addr) in addrs.iter().filter(|(id, _)| **id != cfg.node_id) {
            t.add_peer(*id, addr);
        }
        t
    }

    /// Starts sending to a member (replacing any earlier address of it).
    pub fn add_peer(&mut self, id: u64, addr: &str) {
        let endpoint = match self.credentials.endpoint(addr) {
            Ok(e) => e.connect_timeout(Duration::from_millis(500)),
            Err(e) => {
                tracing::error!(event = "peer_address_invalid", peer = id, error = %e, "cannot reach this peer");
                return;
            }
        };
        let credentials = self.credentials.clone();
        let client = |endpoint: tonic::transport::Endpoint| {
            PeerServiceClient::new(credentials.wrap(endpoint.connect_lazy()))
                .max_decoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
                .max_encoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
        };
        // A stream has no deadline; pings find a peer that went silent.
        let streaming = endpoint
            .clone()
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(send_loop(
            id,
            addr.to_string(),
            client(streaming),
            rx,
            self.local.clone(),
        ));
        // Dropping an old link's sender ends its task.
        self.peers.insert(
            id,
            Link {
                tx,
                snapshots: client(endpoint.timeout(SNAPSHOT_TIMEOUT)),
            },
        );
    }

    /// Forgets peer `id`; dropping its link ends its sender task.
    pub fn remove_peer(&mut self, id: u64) {
        self.peers.remove(&id);
    }

    /// Queues `msg` for its peer, or streams the snapshot it names on a task of
    /// its own; dropped if the peer's queue is full or the peer is unknown.
    pub fn send(&self, msg: Message) {
        match self.peers.get(&msg.to) {
            Some(link) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                tokio::spawn(send_snapshot(
                    link.snapshots.clone(),
                    self.local.header(),
                    msg,
                    self.local.control.clone(),
                ));
            }
            Some(link) => {
                if link.tx.try_send(msg).is_err() {
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

/// Streams the snapshot file named in `msg` to its follower and tells raft
/// how it went.
async fn send_snapshot(
    mut client: PeerServiceClient<Conn>,
    header: pb::PeerHeader,
    mut msg: Message,
    control: mpsc::Sender<Control>,
) {
    let to = msg.to;
    let path =
        std::path::PathBuf::from(String::from_utf8_lossy(&msg.get_snapshot().data).into_owned());
    // The follower learns the file from the stream, not from our path.
    msg.mut_snapshot().data = Default::default();
    let result = async {
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let first = pb::SnapshotChunk {
            header: Some(header),
            message: msg.write_to_bytes().map_err(|e| e.to_string())?.into(),
            data: Default::default(),
        };
        let rest = futures::stream::unfold(Some(file), |file| async move {
            let mut file = file?;
            let mut buf = vec![0u8; SNAPSHOT_CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let chunk = pb::SnapshotChunk {
                        data: buf.into(),
                        ..Default::default()
                    };
                    Some((chunk, Some(file)))
                }
                Err(e) => {
                    // Ending early makes the follower refuse the file.
                    tracing::error!(error = %e, "cannot read a snapshot file being sent");
                    None
                }
            }
        });
        client
            .install_snapshot(futures::stream::once(async { first }).chain(rest))
            .await
            .map_err(|s| s.message().to_string())
    }
    .await;
    let ok = match result {
        Ok(_) => {
            tracing::info!(event = "snapshot_sent", to, "snapshot sent to a follower");
            true
        }
        Err(e) => {
            tracing::warn!(event = "snapshot_send_failed", to, error = %e, "cannot send a snapshot");
            false
        }
    };
    let _ = control.send(Control::SnapshotSent { to, ok }).await;
}

async fn send_loop(
    peer: u64,
    addr: String,
    client: PeerServiceClient<Conn>,
    mut rx: mpsc::Receiver<Message>,
    local: Local,
) {
    let Local {
        control, pressure, ..
    } = local.clone();
    let mut reachable = true;
    let mut backoff = crate::wire::Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let (stream_tx, stream_rx) = mpsc::channel(STREAM_QUEUE);
        // The first batch names this node; the peer admits us on it.
        let (mut reported, reading) = pressure.local_versioned();
        let _ = stream_tx.try_send(local.batch(
            Some(local.header()),
            Vec::new(),
            Some((&reading).into()),
        ));
        // Followers send each other nothing else: a clock reading a second
        // keeps every node's view of every clock fresh.
        let mut beacon = tokio::time::interval(CLOCK_BEACON);
        beacon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (up_tx, up) = tokio::sync::oneshot::channel();
        // Fused: once answered (or dropped) it stays pending.
        let mut up = futures::FutureExt::fuse(up);
        let mut call = {
            let mut client = client.clone();
            tokio::spawn(async move {
                let stream = tokio_stream::wrappers::ReceiverStream::new(stream_rx);
                let mut answer = client.raft(stream).await?.into_inner();
                let _ = up_tx.send(());
                while answer.message().await?.is_some() {}
                Ok::<(), tonic::Status>(())
            })
        };
        let failure = loop {
            tokio::select! {
                Ok(()) = &mut up, if !reachable => {
                    tracing::info!(event = "peer_reachable", peer, %addr, "peer is reachable again");
                    reachable = true;
                    backoff.reset();
                }
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        // The link was replaced or removed.
                        call.abort();
                        return;
                    }
                    let frames = frames(encode(peer, batch.drain(..)));
                    // A new reading rides on the next batch (a follower
                    // answers its leader every heartbeat, so the leader
                    // hears within one).
                    let (version, reading) = pressure.local_versioned();
                    let mut resources = (version != reported).then(|| (&reading).into());
                    reported = version;
                    if frames.into_iter().any(|messages| {
                        let resources = resources.take();
                        stream_tx.try_send(local.batch(None, messages, resources)).is_err()
                    }) {
                        // The peer takes nothing in: treat it as gone.
                        break "the peer stopped reading raft messages".to_string();
                    }
                }
                _ = beacon.tick() => {
                    if stream_tx.try_send(local.batch(None, Vec::new(), None)).is_err() {
                        break "the peer stopped reading raft messages".to_string();
                    }
                }
                ended = &mut call => break match ended {
                    Ok(Ok(())) => "the peer closed the raft stream".to_string(),
                    Ok(Err(status)) => {
                        if let Some(at) = crate::wire::removed_at(&status) {
                            let reason = status.message().to_string();
                            let _ = control.try_send(Control::Removed { by: peer, at, reason });
                        }
                        status.message().to_string()
                    }
                    Err(e) => e.to_string(),
                },
            }
        };
        call.abort();
        if reachable {
            tracing::warn!(event = "peer_unreachable", peer, %addr, error = %failure, "cannot send raft messages to peer");
            reachable = false;
        }
        let _ = control.try_send(Control::Unreachable(peer));
        // Messages raft sends meanwhile are dropped: it sends them again.
        let until = tokio::time::Instant::now() + backoff.next_delay();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                n = rx.recv_many(&mut batch, MAX_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    batch.clear();
                    let _ = control.try_send(Control::Unreachable(peer));
                }
            }
        }
    }
}

/// Splits encoded messages into frames of at most [`MAX_FRAME_BYTES`]
/// (a bigger message gets a frame of its own).
fn frames(messages: Vec<bytes::Bytes>) -> Vec<Vec<bytes::Bytes>> {
    let mut out: Vec<Vec<bytes::Bytes>> = Vec::new();
    let mut size = 0;
    for m in messages {
        match out.last_mut() {
            Some(frame) if size + m.len() <= MAX_FRAME_BYTES => {
                size += m.len();
                frame.push(m);
            }
            _ => {
                size = m.len();
                out.push(vec![m]);
            }
        }
    }
    out
}

fn encode(peer: u64, messages: impl Iterator<Item = Message>) -> Vec<bytes::Bytes> {
    messages
        .filter_map(|m| match m.write_to_bytes() {
            Ok(b) => Some(bytes::Bytes::from(b)),
            Err(e) => {
                tracing::error!(peer, error = %e, "cannot encode a raft message");
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stay_under_the_limit_and_keep_order() {
        let big = MAX_FRAME_BYTES / 3 + 1;
        let messages: Vec<bytes::Bytes> = (0..7u8)
            .map(|i| bytes::Bytes::from(vec![i; big]))
            .chain([bytes::Bytes::from(vec![9u8; MAX_FRAME_BYTES + 5])])
            .chain([bytes::Bytes::from_static(b"x")])
            .collect();
        let frames = frames(messages.clone());
        assert!(frames
            .iter()
            .all(|f| f.len() == 1 || f.iter().map(|m| m.len()).sum::<usize>() <= MAX_FRAME_BYTES));
        assert_eq!(frames.concat(), messages, "nothing lost or reordered");
        assert_eq!(frames.len(), 6);
    }
}
