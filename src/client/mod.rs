//! The Rust client: a producer over the gRPC producer service, a worker
//! runtime over the worker stream and a typed client of the admin API. The CLI and the benchmark use these, so
//! they are exercised by every integration test.

pub mod admin;
pub mod worker;

use tonic::transport::{Channel, Endpoint};

pub use crate::wire::{ClientTls, Conn, Credentials};

use crate::proto::v1 as pb;
use crate::proto::v1::producer_service_client::ProducerServiceClient;

/// Why a producer or worker call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A server address that cannot be used.
    #[error("{url:?} is not a usable server address: {reason}")]
    BadUrl {
        /// The address as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection to the node (down, wrong port, TLS mismatch).
    #[error("cannot connect to {url}: {}", connect_failure(.url, .source))]
    Connect {
        /// The address tried.
        url: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
    /// Not a `source`: the message is the whole story, and an error chain
    /// printed with its causes would say it twice.
    #[error("{}", status_failure(.0))]
    Status(tonic::Status),
    /// The server answered something this client does not understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node is going away and asked the worker to move.
    #[error("the node is shutting down ({0}); reconnecting to another")]
    NodeLeaving(String),
    /// A stopping worker could reach no node to report to.
    #[error("stopped without reporting {results} results and {running} running jobs: no node answered for {waited:?} ({last_error}); those jobs run again once their leases expire")]
    Abandoned {
        /// Results never reported.
        results: usize,
        /// Jobs still running when it gave up.
        running: usize,
        /// How long it tried to reach a node.
        waited: std::time::Duration,
        /// The last failure to reach one.
        last_error: String,
    },
}

fn connect_failure(url: &str, e: &tonic::transport::Error) -> String {
    let chain = crate::wire::error_chain(e);
    match crate::wire::connection_hint(Some(url), &chain, crate::wire::ca_in_use()) {
        Some(fix) => format!("{fix} ({chain})"),
        None => format!("{chain}; is a drover node running there?"),
    }
}

/// A refusal names its code; a call that failed on the way (the node
/// dropped the connection: often a TLS mismatch) says so, with the cause.
fn status_failure(status: &tonic::Status) -> String {
    let code = crate::wire::drover_code(status).unwrap_or(crate::wire::code_name(status.code()));
    if let Some(cause) = std::error::Error::source(status) {
        let chain = format!("{}: {}", status.message(), crate::wire::error_chain(cause));
        let fix = crate::wire::connection_hint(None, &chain, crate::wire::ca_in_use())
            .map(|f| format!("; {f}"))
            .unwrap_or_default();
        return format!("the call failed on the way ({code}): {chain}{fix}");
    }
    format!(
        "the server refused the request ({code}): {}",
        status.message()
    )
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> ClientError {
        ClientError::Status(s)
    }
}

/// The endpoint of `url` (`http://host:port`, `https://host:port`; a bare
/// `host:port` is https with TLS credentials and http without).
pub fn endpoint(url: &str, credentials: &Credentials) -> Result<Endpoint, ClientError> {
    credentials
        .endpoint(url)
        .map_err(|reason| ClientError::BadUrl {
            url: url.to_string(),
            reason,
        })
}

/// A connection to the node at `url` with `credentials`.
pub async fn connect(url: &str, credentials: &Credentials) -> Result<Conn, ClientError> {
    let channel = endpoint(url, credentials)?
        .connect()
        .await
        .map_err(|source| ClientError::Connect {
            url: url.to_string(),
            source,
        })?;
    Ok(credentials.wrap(channel))
}

/// The addresses in a `--server` value: one node, or several separated by
/// commas.
pub fn server_list(servers: &str) -> Vec<String> {
    servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The position in `urls` of the node an answer names as the leader
/// (`drover-leader`, set by followers), if the caller was given that node.
pub fn hinted_leader<T>(response: &tonic::Response<T>, urls: &[String]) -> Option<usize> {
    let leader = response
        .metadata()
        .get(crate::wire::LEADER_HINT)?
        .to_str()
        .ok()?;
    let bare = |u: &str| u.split_once("://").map_or(u, |(_, rest)| rest).to_string();
    let leader = bare(leader);
    urls.iter().position(|u| bare(u) == leader)
}

/// Asks the node behind `channel` who leads; the position in `urls` of the
/// leader if it is another node the caller knows (never, given one node).
pub async fn find_leader(channel: Conn, urls: &[String]) -> Option<usize> {
    if urls.len() < 2 {
        return None;
    }
    let response = client(channel).ping(pb::PingRequest {}).await.ok()?;
    hinted_leader(&response, urls)
}

/// Retries of one call across nodes before its error is returned.
const MAX_ATTEMPTS: u32 = 12;

pub use crate::wire::{backoff, retryable};

/// A producer: enqueues, reads and cancels jobs. Given several nodes, it
/// sends to one and moves to the next when a call fails in a way that is
/// safe to retry (no leader yet, node down or stopping), and to the leader
/// when a follower names it, which saves the follower's hop.
///
/// ```no_run
/// use drover::client::Producer;
/// use drover::proto::v1::NewJob;
///
/// # async fn example() -> Result<(), drover::client::ClientError> {
/// let mut producer = Producer::connect("127.0.0.1:7070,127.0.0.1:7071").await?;
/// let job = NewJob { queue: "emails".into(), payload: b"hi".to_vec().into(), ..Default::default() };
/// let ids = producer.enqueue(vec![job]).await?; // on an enqueue stream
/// let job = producer.get(ids[0].id).await?;
/// println!("{} is {}", job.id, job.state);
/// # Ok(()) }
/// ```
pub struct Producer {
    nodes: Vec<ProducerServiceClient<Conn>>,
    urls: Vec<String>,
    current: usize,
    /// The enqueue stream `enqueue` uses, opened on first use.
    stream: Option<EnqueueStream>,
}

impl Clone for Producer {
    /// Another producer on the same connections, with a stream of its own.
    fn clone(&self) -> Producer {
        Producer {
            nodes: self.nodes.clone(),
            urls: self.urls.clone(),
            current: self.current,
            stream: None,
        }
    }
}

impl Producer {
    /// Connects to the first reachable of `servers` (comma separated), with
    /// no token and no TLS.
    pub async fn connect(servers: &str) -> Result<Producer, ClientError> {
        Self::connect_with(servers, &Credentials::default()).await
    }

    /// Connects to the first reachable of `servers` (comma separated).
    pub async fn connect_with(
        servers: &str,
        credentials: &Credentials,
    ) -> Result<Producer, ClientError> {
        let urls = server_list(servers);
        let mut nodes = Vec::with_capacity(urls.len());
        let mut first_error = None;
        let mut current = None;
        for url in &urls {
            let endpoint = endpoint(url, credentials)?;
            if current.is_none() {
                match endpoint.connect().await {
                    Ok(ch) => {
                        current = Some(nodes.len());
                        nodes.push(credentials.wrap(ch));
                        continue;
                    }
                    Err(source) => {
                        first_error.get_or_insert(ClientError::Connect {
                            url: url.clone(),
                            source,
                        });
                    }
                }
            }
            nodes.push(credentials.wrap(endpoint.connect_lazy()));
        }
        // Start at the leader if the node reached names it.
        if let Some(i) = current {
            if let Some(leader) = find_leader(nodes[i].clone(), &urls).await {
                current = Some(leader);
            }
        }
        match current {
            Some(current) => Ok(Producer {
                nodes: nodes.into_iter().map(client).collect(),
                urls,
                current,
                stream: None,
            }),
            None => Err(first_error.unwrap_or_else(|| ClientError::BadUrl {
                url: servers.to_string(),
                reason: "no server address given".into(),
            })),
        }
    }

    /// A producer over an open channel, without credentials.
    pub fn new(channel: Channel) -> Producer {
        Producer {
            nodes: vec![client(Credentials::default().wrap(channel))],
            urls: Vec::new(),
            current: 0,
            stream: None,
        }
    }

    /// Runs `call` against the current node, moving on to the next one on a
    /// retryable failure.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut(ProducerServiceClient<Conn>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            match call(self.nodes[self.current].clone()).await {
                Ok(r) => {
                    if let Some(leader) = hinted_leader(&r, &self.urls) {
                        self.current = leader;
                    }
                    return Ok(r.into_inner());
                }
                Err(status) if attempt + 1 < MAX_ATTEMPTS && retryable(&status) => {
                    tokio::time::sleep(backoff(&status, attempt)).await;
                    self.current = (self.current + 1) % self.nodes.len();
                    attempt += 1;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Enqueues a batch; returns once every job in it is durable. It goes
    /// on this producer's enqueue stream (opened on first use), which costs
    /// client and node about half the CPU of a call; when the stream fails
    /// in a way that is safe to retry (or cannot be opened) the batch goes
    /// as a call, which moves between nodes, and the next one opens a new
    /// stream.
    pub async fn enqueue(
        &mut self,
        jobs: Vec<pb::NewJob>,
    ) -> Result<Vec<pb::EnqueuedJob>, ClientError> {
        if self.stream.is_none() {
            self.stream = self.enqueue_stream().await.ok();
        }
        if let Some(stream) = self.stream.as_mut() {
            match stream.enqueue(jobs.clone()).await {
                Ok(ids) => return Ok(ids),
                Err(ClientError::Status(status)) if retryable(&status) => {
                    self.stream = None;
                }
                Err(e) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        self.enqueue_call(jobs).await
    }

    /// Gzips every request from now on (the node accepts gzip): for large
    /// payloads on a slow link; it costs CPU on both ends.
    pub fn with_compression(mut self) -> Producer {
        use tonic::codec::CompressionEncoding::Gzip;
        self.nodes = self
            .nodes
            .into_iter()
            .map(|c| c.send_compressed(Gzip))
            .collect();
        self.stream = None;
        self
    }

    /// [`Producer::enqueue`] as a call of its own (no stream).
    pub async fn enqueue_call(
        &mut self,
        jobs: Vec<pb::NewJob>,
    ) -> Result<Vec<pb::EnqueuedJob>, ClientError> {
        let request = pb::EnqueueRequest { jobs };
        let reply = self
            .call(|mut c| {
                let r = request.clone();
                async move { c.enqueue(r).await }
            })
            .await?;
        Ok(reply.jobs)
    }

    /// The job `id`, as the producer service shows it.
    pub async fn get(&mut self, id: u64) -> Result<pb::Job, ClientError> {
        let request = pb::GetJobRequest {
            id,
            ..Default::default()
        };
        self.call(|mut c| {
            let request = request.clone();
            async move { c.get_job(request).await }
        })
        .await
    }

    /// The job `key` names in `queue` for `tenant` ("" for the default),
    /// until the key expires (`jobs.idempotency_ttl`).
    pub async fn get_by_key(
        &mut self,
        queue: &str,
        key: &str,
        tenant: &str,
    ) -> Result<pb::Job, ClientError> {
        let request = pb::GetJobRequest {
            id: 0,
            idempotency_key: key.into(),
            queue: queue.into(),
            tenant: tenant.into(),
        };
        self.call(|mut c| {
            let request = request.clone();
            async move { c.get_job(request).await }
        })
        .await
    }

    /// Cancels job `id`; the state it was in.
    pub async fn cancel(&mut self, id: u64) -> Result<String, ClientError> {
        let reply = self
            .call(|mut c| async move { c.cancel(pb::CancelRequest { id }).await })
            .await?;
        Ok(reply.state)
    }

    /// Opens an enqueue stream on the current node (the leader, when the
    /// node first reached named it).
    pub async fn enqueue_stream(&self) -> Result<EnqueueStream, ClientError> {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
        let replies = self.nodes[self.current]
            .clone()
            .enqueue_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(EnqueueStream {
            tx,
            replies,
            unread: 0,
        })
    }

    /// A no-op call: the node answers (and the token is valid).
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        let mut c = self.nodes[self.current].clone();
        c.ping(pb::PingRequest {}).await?;
        Ok(())
    }
}

/// Requests an [`EnqueueStream`] buffers before `enqueue` waits to send.
const STREAM_QUEUE: usize = 64;

/// Enqueues over one long-lived stream to one node (see
/// `ProducerService.EnqueueStream`): each enqueue is a message rather than a
/// call, which costs client and server about half as much. It does not move
/// between nodes: when the stream fails, open another from a [`Producer`].
///
/// ```no_run
/// # async fn example() -> Result<(), drover::client::ClientError> {
/// let producer = drover::client::Producer::connect("127.0.0.1:7070").await?;
/// let mut stream = producer.enqueue_stream().await?;
/// for i in 0..100 {
///     let job = drover::proto::v1::NewJob { queue: "bulk".into(), payload: format!("{i}").into_bytes().into(), ..Default::default() };
///     let ids = stream.enqueue(vec![job]).await?; // once durable, in order
///     assert_eq!(ids.len(), 1);
/// }
/// # Ok(()) }
/// ```
pub struct EnqueueStream {
    tx: tokio::sync::mpsc::Sender<pb::EnqueueRequest>,
    replies: tonic::Streaming<pb::EnqueueReply>,
    /// Replies owed to requests whose `enqueue` was dropped before reading
    /// them; skipped so later replies stay matched to their requests.
    unread: usize,
}

impl EnqueueStream {
    /// Enqueues a batch; returns once every job in it is durable. An error
    /// that is [`retryable`] means nothing was enqueued.
    pub async fn enqueue(
        &mut self,
        jobs: Vec<pb::NewJob>,
    ) -> Result<Vec<pb::EnqueuedJob>, ClientError> {
        while self.unread > 0 {
            self.replies.message().await?;
            self.unread -= 1;
        }
        if self.tx.send(pb::EnqueueRequest { jobs }).await.is_err() {
            return Err(crate::wire::status_of(pb::RequestError {
                code: tonic::Code::Unavailable as i32,
                message:
                    "the enqueue stream is closed and the request was not sent; open a new stream"
                        .into(),
                retry_safe: true,
                retry_after_ms: 0,
            })
            .into());
        }
        self.unread = 1;
        let reply = self.replies.message().await?;
        self.unread = 0;
        match reply {
            Some(pb::EnqueueReply {
                result: Some(pb::enqueue_reply::Result::Ok(ok)),
            }) => Ok(ok.jobs),
            Some(pb::EnqueueReply {
                result: Some(pb::enqueue_reply::Result::Error(e)),
            }) => Err(crate::wire::status_of(e).into()),
            Some(pb::EnqueueReply { result: None }) => Err(ClientError::Protocol(
                "an enqueue reply carried neither ids nor an error".into(),
            )),
            None => Err(tonic::Status::unavailable(
                "the node ended the enqueue stream before answering; the jobs may or may not have been enqueued",
            )
            .into()),
        }
    }
}

fn client(channel: Conn) -> ProducerServiceClient<Conn> {
    ProducerServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}
