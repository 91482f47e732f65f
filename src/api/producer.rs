//! The gRPC producer service: enqueue in batches, read and cancel jobs.

use futures::stream::{BoxStream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::auth::{caller_of, Caller};
use crate::api::App;
use crate::proto::v1 as pb;
use crate::proto::v1::producer_service_server::ProducerService;

/// The gRPC `ProducerService`: `Enqueue`, `EnqueueStream`, and reading
/// and cancelling jobs.
pub struct Producer {
    /// The node it serves for.
    pub app: App,
}

/// Requests of one enqueue stream being worked on at once. A producer that
/// waits for each reply has one; more let a pipelining producer's requests
/// share raft entries. It also bounds what one stream can hold in memory:
/// this many requests of at most the gRPC message limit each.
const STREAM_PIPELINE: usize = 16;

/// How long a stopping node goes on reading (and refusing) an enqueue
/// stream's requests before it ends the stream.
const STOP_DRAIN: std::time::Duration = std::time::Duration::from_millis(300);

/// The request's `traceparent` metadata, if it is a valid one (W3C: an
/// invalid one is ignored, not refused).
fn traceparent_of<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| crate::job::valid_traceparent(t))
        .map(str::to_string)
}

/// Enqueues the jobs of one request, unary or on a stream; those without
/// a trace context of their own take the request's.
async fn enqueue_jobs(
    app: &App,
    caller: &Caller,
    jobs: Vec<pb::NewJob>,
    traceparent: Option<&str>,
) -> Result<pb::EnqueueResponse, Status> {
    let requests = jobs
        .into_iter()
        .map(|mut j| {
            if j.traceparent.is_empty() {
                if let Some(t) = traceparent {
                    j.traceparent = t.to_string();
                }
            }
            j.into()
        })
        .collect();
    let ids = app.enqueue(caller, requests).await?;
    Ok(pb::EnqueueResponse {
        jobs: ids
            .into_iter()
            .map(|e| pb::EnqueuedJob {
                id: e.id,
                duplicate: e.duplicate,
            })
            .collect(),
    })
}

#[tonic::async_trait]
impl ProducerService for Producer {
    async fn enqueue(
        &self,
        req: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let caller = caller_of(&req)?;
        let traceparent = traceparent_of(&req);
        let reply = enqueue_jobs(
            &self.app,
            &caller,
            req.into_inner().jobs,
            traceparent.as_deref(),
        )
        .await?;
        Ok(self.app.hint_leader(Response::new(reply)))
    }

    type EnqueueStreamStream = BoxStream<'static, Result<pb::EnqueueReply, Status>>;

    async fn enqueue_stream(
        &self,
        req: Request<Streaming<pb::EnqueueRequest>>,
    ) -> Result<Response<Self::EnqueueStreamStream>, Status> {
        let app = self.app.clone();
        let caller = caller_of(&req)?;
        let traceparent = traceparent_of(&req);
        let mut shutdown = self.app.shutdown.clone();
        let stopped = self.app.shutdown.clone();
        // A stopping node answers the requests it took, refuses (retry-safe)
        // what comes in for a short while, then ends the stream with a
        // retry-safe status: a request still waiting for its reply was never
        // read, so it may go to another node. Reading on for that while
        // leaves no request unread in the socket when the connection closes,
        // which would reset it and lose the answers on their way.
        let stopping = async move {
            let _ = shutdown.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(STOP_DRAIN).await;
        };
        let refusing = self.app.shutdown.clone();
        let farewell = futures::stream::once(async move {
            (*stopped.borrow()).then(|| Err(Status::from(crate::error::Error::ShuttingDown)))
        })
        .filter_map(std::future::ready);
        // A frame or decode error leaves the stream's framing unknown: the
        // bytes after it may be the inside of the refused message. So the
        // first such error ends the stream (after the replies to what came
        // before it); nothing after it is read.
        let requests = futures::stream::unfold(
            Some(req.into_inner().take_until(stopping).boxed()),
            |inbound| async move {
                let mut inbound = inbound?;
                match inbound.next().await? {
                    Ok(request) => Some((Ok(request), Some(inbound))),
                    Err(status) => Some((Err(crate::wire::inbound_stream_error(status)), None)),
                }
            },
        );
        let replies = requests
            .map(move |request| {
                let app = app.clone();
                let caller = caller.clone();
                let traceparent = traceparent.clone();
                let refusing = *refusing.borrow();
                async move {
                    let request = request?;
                    let result = if refusing {
                        Err(Status::from(crate::error::Error::ShuttingDown))
                    } else if let Err(e) = caller.check_rate() {
                        Err(Status::from(e))
                    } else {
                        enqueue_jobs(&app, &caller, request.jobs, traceparent.as_deref()).await
                    };
                    Ok(pb::EnqueueReply {
                        result: Some(match result {
                            Ok(ok) => pb::enqueue_reply::Result::Ok(ok),
                            Err(status) => pb::enqueue_reply::Result::Error(
                                crate::wire::request_error(&status),
                            ),
                        }),
                    })
                }
            })
            .buffered(STREAM_PIPELINE)
            .chain(farewell);
        Ok(self.app.hint_leader(Response::new(replies.boxed())))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        let caller = caller_of(&req)?;
        let r = req.into_inner();
        let view = if r.id == 0 && !r.idempotency_key.is_empty() {
            self.app
                .job_by_key(&caller, &r.tenant, &r.queue, &r.idempotency_key)
                .await?
        } else {
            self.app.get_job(&caller, r.id).await?
        };
        Ok(self.app.hint_leader(Response::new(view.into())))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let caller = caller_of(&req)?;
        let was = self.app.cancel(&caller, req.into_inner().id).await?;
        Ok(self.app.hint_leader(Response::new(pb::CancelResponse {
            state: was.as_str().to_string(),
        })))
    }

    async fn ping(
        &self,
        _req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        Ok(self.app.hint_leader(Response::new(pb::PingResponse {})))
    }
}
