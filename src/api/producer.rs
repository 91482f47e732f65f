//! The gRPC producer service: enqueue in batches, read and cancel jobs.

use tonic::{Request, Response, Status};

use crate::api::App;
use crate::proto::v1 as pb;
use crate::proto::v1::producer_service_server::ProducerService;

pub struct Producer {
    pub app: App,
}

#[tonic::async_trait]
impl ProducerService for Producer {
    async fn enqueue(
        &self,
        req: Request<pb::EnqueueRequest>,
    ) -> Result<Response<pb::EnqueueResponse>, Status> {
        let jobs = req.into_inner().jobs.into_iter().map(Into::into).collect();
        let ids = self.app.enqueue(jobs).await?;
        Ok(self.app.hint_leader(Response::new(pb::EnqueueResponse {
            jobs: ids
                .into_iter()
                .map(|e| pb::EnqueuedJob {
                    id: e.id,
                    duplicate: e.duplicate,
                })
                .collect(),
        })))
    }

    async fn get_job(&self, req: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        Ok(self.app.hint_leader(Response::new(
            self.app.get_job(req.into_inner().id).await?.into(),
        )))
    }

    async fn cancel(
        &self,
        req: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let was = self.app.cancel(req.into_inner().id).await?;
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
