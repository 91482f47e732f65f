//! Where a command goes: proposed here when this node leads, forwarded to
//! the leader otherwise, and held briefly while an election runs. Clients can
//! talk to any node and never need to know which one leads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::{Control, Forwardable, MemberChange};
use crate::command::{Command, Outcome};
use crate::config::Config;
use crate::driver::{DriverHandle, NodeStatus};
use crate::error::Error;
use crate::proto::v1 as pb;
use crate::proto::v1::peer_service_client::PeerServiceClient;
use crate::wire::{Conn, Credentials};

/// How long a follower waits to apply what the leader applied for it, so its
/// client reads its own write here. Past it the answer goes out anyway: the
/// command took effect, this node is only slow.
const APPLY_WAIT: Duration = Duration::from_secs(5);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// The workers connected to a peer, and how many of them it asked to stop.
pub struct PeerWorkers {
    /// The workers connected to it, as it listed them.
    pub workers: Vec<crate::workers::WorkerInfo>,
    /// How many of them it asked to stop.
    pub asked: usize,
}

/// Peer clients by member id, with the address each was made for.
type Clients = HashMap<u64, (String, PeerServiceClient<Conn>)>;

/// Sends commands to where they are proposed: this node's driver when it
/// leads, the leader otherwise.
#[derive(Clone)]
pub struct Router {
    driver: DriverHandle,
    node_id: u64,
    header: pb::PeerHeader,
    clients: Arc<Mutex<Clients>>,
    credentials: Credentials,
}

impl Router {
    /// A router for this node, with its peer header and credentials from `cfg`;
    /// it connects to peers as it first needs them.
    pub fn new(cfg: &Config, driver: DriverHandle) -> Router {
        Router {
            header: super::header(cfg, driver.incarnation()),
            driver,
            node_id: cfg.node_id,
            clients: Arc::default(),
            credentials: super::peer_credentials(cfg),
        }
    }

    /// What this node shows its peers.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// What this node says of itself on every peer request.
    pub fn header(&self) -> pb::PeerHeader {
        pb::PeerHeader {
            incarnation: self.driver.incarnation().get(),
            ..self.header.clone()
        }
    }

    /// This node's driver.
    pub fn driver(&self) -> &DriverHandle {
        &self.driver
    }

    /// The leader's address when another node leads (and is known).
    pub fn leader_addr(&self) -> Option<String> {
        let status = self.driver.status_ref();
        if status.is_leader() || status.leader_id == 0 {
            return None;
        }
        status.addr_of(status.leader_id).map(String::from)
    }

    /// Proposes `command` on the leader and returns its outcome once this
    /// node has applied it too.
    pub async fn propose(&self, command: Command) -> Result<Outcome, Error> {
        self.submit(Forwardable::Command(command))
            .await
            .map(|(outcome, _)| outcome)
    }

    /// Proposes a membership change on the leader; returns its log index.
    pub async fn change_members(&self, change: MemberChange) -> Result<u64, Error> {
        self.submit(Forwardable::Member(change))
            .await
            .map(|(_, index)| index)
    }

    /// Asks the leader to hand leadership to `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<(), Error> {
        self.submit(Forwardable::TransferLeader(id))
            .await
            .map(|_| ())
    }

    /// Carries out `what` on this node, which must lead.
    pub async fn local(&self, what: Forwardable) -> Result<(Outcome, u64), Error> {
        match what {
            Forwardable::Command(c) => self.driver.propose_at(c).await,
            Forwardable::Member(m) => self
                .driver
                .change_members(m)
                .await
                .map(|index| (Outcome::Noop, index)),
            Forwardable::TransferLeader(id) => {
                if !self.driver.status().is_leader() {
                    return Err(Error::NoLeader {
                        retry_after_ms: self.driver.retry_after_ms(),
                    });
                }
                self.driver.control(Control::TransferLeader(id));
                Ok((Outcome::Noop, 0))
            }
        }
    }

    async fn submit(&self, what: Forwardable) -> Result<(Outcome, u64), Error> {
        let retry_after_ms = self.driver.retry_after_ms();
        let deadline = Instant::now() + Duration::from_millis(retry_after_ms);
        let mut status_rx = self.driver.status_watch();
        let mut encoded: Option<(u8, bytes::Bytes)> = None;
        loop {
            // The whole status (members and all) is copied only to forward.
            let (leading, leader_id) = {
                let s = status_rx.borrow_and_update();
                (s.is_leader(), s.leader_id)
            };
            if leading {
                return self.local(what).await;
            }
            if leader_id != 0 && leader_id != self.node_id {
                let status = self.driver.status();
                // As the leader's build reads it: a follower must not send a
                // command of a format its leader cannot decode.
                let format = self
                    .driver
                    .peer_formats()
                    .of(leader_id)
                    .min(crate::command::ENTRY_VERSION);
                let bytes = match &encoded {
                    Some((f, b)) if *f == format => b.clone(),
                    _ => {
                        let b = encode_for(&what, format)?;
                        encoded = Some((format, b.clone()));
                        b
                    }
                };
                match self.forward(&status, bytes).await {
                    Ok((outcome, index)) => {
                        // A lease is answered with payloads read here, so
                        // this node must have applied the jobs first. Other
                        // answers need nothing local (reads use a read
                        // index), and waiting would cost a round trip.
                        if matches!(
                            what,
                            Forwardable::Command(Command::Lease { .. } | Command::LeaseAs { .. })
                        ) {
                            self.wait_applied(index).await;
                        }
                        return Ok((outcome, index));
                    }
                    Err(Forwarded::Final(e)) => return Err(e),
                    Err(Forwarded::Retry) => {}
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::NoLeader { retry_after_ms });
            }
            // Woken by a new leader or term; polls too, since a leader that
            // refused us may still be the leader we know.
            let _ = tokio::time::timeout(left.min(Duration::from_millis(50)), status_rx.changed())
                .await;
        }
    }

    /// [`Router::propose`], tried again while it fails in a way that is safe
    /// to retry, for up to `patience`.
    pub async fn propose_retrying(
        &self,
        command: Command,
        patience: Duration,
    ) -> Result<Outcome, Error> {
        let deadline = Instant::now() + patience;
        let mut backoff =
            crate::wire::Backoff::new(Duration::from_millis(50), Duration::from_millis(800));
        loop {
            match self.propose(command.clone()).await {
                Err(e) if e.retry_safe() && Instant::now() < deadline => {
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                result => return result,
            }
        }
    }

    async fn forward(
        &self,
        status: &NodeStatus,
        command: bytes::Bytes,
    ) -> Result<(Outcome, u64), Forwarded> {
        let leader = status.leader_id;
        let mut client = self.client(status, leader).map_err(Forwarded::Final)?;
        let request = pb::ForwardRequest {
            header: Some(self.header()),
            command,
        };
        match client.forward(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                let outcome = bincode::serde::decode_from_slice::<Outcome, _>(
                    &reply.outcome,
                    bincode::config::standard(),
                )
                .map(|(o, _)| o)
                .map_err(|e| {
                    Forwarded::Final(Error::Forward {
                        leader,
                        status: tonic::Status::internal(format!(
                            "undecodable outcome from the leader: {e}; are all nodes running the same drover version?"
                        )),
                    })
                })?;
                Ok((outcome, reply.index))
            }
            // The leader is busy becoming or ceasing to be one: ask again
            // (a refusal for load is the leader's answer, not a failure).
            Err(status)
                if crate::wire::retryable(&status)
                    && status.code() != tonic::Code::ResourceExhausted =>
            {
                Err(Forwarded::Retry)
            }
            Err(status) if lost_contact(&status) => Err(Forwarded::Final(Error::ForwardLost {
                leader,
                reason: status.message().to_string(),
            })),
            Err(status) => Err(Forwarded::Final(Error::Forward { leader, status })),
        }
    }

    /// A client for member `id`, at the address the membership gives.
    fn client(&self, status: &NodeStatus, id: u64) -> Result<PeerServiceClient<Conn>, Error> {
        let addr = status
            .addr_of(id)
            .map(String::from)
            .ok_or(Error::NoLeader {
                retry_after_ms: self.driver.retry_after_ms(),
            })?;
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, c)) = clients.get(&id) {
            if *known == addr {
                return Ok(c.clone());
            }
        }
        let endpoint = self
            .credentials
            .endpoint(&addr)
            .map_err(|e| Error::invalid("peers", e.to_string()))?
            .connect_timeout(Duration::from_millis(500))
            .timeout(FORWARD_TIMEOUT);
        let client = PeerServiceClient::new(self.credentials.wrap(endpoint.connect_lazy()))
            .max_decoding_message_size(crate::wire::MAX_GRPC_MESSAGE)
            .max_encoding_message_size(crate::wire::MAX_GRPC_MESSAGE);
        clients.insert(id, (addr, client.clone()));
        Ok(client)
    }

    /// The leader's view of the cluster, or this node's if it leads or no
    /// leader answers.
    pub async fn members(&self) -> Result<NodeStatus, Error> {
        let status = self.driver.members_status();
        if status.is_leader() || status.leader_id == 0 {
            return Ok(status);
        }
        let mut client = self.client(&status, status.leader_id)?;
        let request = pb::MembersRequest {
            header: Some(self.header()),
        };
        match client.members(request).await {
            Ok(reply) => {
                serde_json::from_str(&reply.into_inner().json).map_err(|e| Error::Forward {
                    leader: status.leader_id,
                    status: tonic::Status::internal(e.to_string()),
                })
            }
            // The leader is unreachable from here: say what this node knows.
            Err(_) => Ok(status),
        }
    }

    /// The workers connected to every other member, asking them first to
    /// stop `stop` (a worker id) or all when `all`. Members that do not
    /// answer are listed as errors, so the caller can say the list is
    /// partial.
    pub async fn peer_workers(
        &self,
        stop: &str,
        all: bool,
    ) -> Vec<(u64, Result<PeerWorkers, String>)> {
        let status = self.driver.status();
        let others: Vec<u64> = status
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != self.node_id)
            .collect();
        let calls = others.into_iter().map(|id| {
            let status = &status;
            async move {
                let answer = async {
                    let mut client = self.client(status, id).map_err(|e| e.to_string())?;
                    let reply = client
                        .workers(pb::WorkersRequest {
                            header: Some(self.header()),
                            stop: stop.to_string(),
                            all,
                        })
                        .await
                        .map_err(|e| e.message().to_string())?;
                    let reply = reply.into_inner();
                    Ok(PeerWorkers {
                        workers: serde_json::from_str(&reply.json).map_err(|e| e.to_string())?,
                        asked: reply.asked as usize,
                    })
                };
                (id, answer.await)
            }
        });
        futures::future::join_all(calls).await
    }

    /// Waits until this node has applied everything committed before now,
    /// as confirmed by a quorum: reads after it are current (linearizable).
    pub async fn read_barrier(&self) -> Result<(), Error> {
        // A read raft dropped (a leader just elected, or none known) is
        // asked again, for up to two election timeouts.
        let mut attempts = 2;
        let index = loop {
            match self.driver.read_index().await {
                Ok(index) => break index,
                Err(e) if attempts > 1 && e.retry_safe() => attempts -= 1,
                Err(e) => return Err(e),
            }
        };
        let mut rx = self.driver.status_watch();
        tokio::time::timeout(APPLY_WAIT, rx.wait_for(|s| s.applied_index >= index))
            .await
            .map(|_| ())
            .map_err(|_| Error::NoLeader {
                retry_after_ms: self.driver.retry_after_ms(),
            })
    }

    async fn wait_applied(&self, index: u64) {
        let mut rx = self.driver.status_watch();
        let _ = tokio::time::timeout(APPLY_WAIT, rx.wait_for(|s| s.applied_index >= index)).await;
    }
}

enum Forwarded {
    /// The leader refused before proposing (it no longer leads, or is
    /// stopping): safe to send again once a leader is known.
    Retry,
    Final(Error),
}

/// A status made by the transport, not by the leader: the call broke or
/// timed out after it may have been delivered.
fn lost_contact(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unknown | tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
    ) || (status.code() == tonic::Code::Unavailable && status.metadata().is_empty())
}

/// `what` as a leader that reads entry `format` decodes it; a command it
/// cannot carry yet is refused.
fn encode_for(what: &Forwardable, format: u8) -> Result<bytes::Bytes, Error> {
    match what {
        Forwardable::Command(c) if c.min_format() > format => match c.clone().for_format(format) {
            Some(c) => Ok(encode(&Forwardable::Command(c))),
            None => Err(Error::Upgrading {
                needs: c.min_format(),
                writing: format,
            }),
        },
        _ => Ok(encode(what)),
    }
}

fn encode(what: &Forwardable) -> bytes::Bytes {
    bincode::serde::encode_to_vec(what, bincode::config::standard())
        .expect("bincode encoding of in-memory values cannot fail")
        .into()
}
