//! The admin API's bodies: what `/api/v1` takes and answers, as typed
//! structs. They are the contract (the OpenAPI document is generated from
//! them, the CLI decodes them), so they are separate from the machine's own
//! records, which may change shape without the API changing.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::JobView;
use crate::job::{Job, JobEvent};

pub use crate::wire::{ErrorBody, ErrorInfo};

/// `GET /health`: the process answers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    pub status: String,
}

/// `GET /ready`: whether this node is worth sending traffic to (200 when
/// ready, 503 when not).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// A leader is known and this node has applied everything it knows to
    /// be committed.
    pub ready: bool,
    /// The leader this node knows (0: none).
    pub leader_id: u64,
    /// Why the node is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `POST /api/v1/queues/{queue}/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueBody {
    /// The job type, which retry policies key on.
    #[serde(rename = "type", default)]
    pub job_type: String,
    /// Who the job is for: fair shares, budgets and token scopes go by it.
    /// Empty or absent: `default`.
    #[serde(default)]
    pub tenant: String,
    /// Groups jobs into a run, for budgets.
    #[serde(default)]
    pub run_id: String,
    /// 1 (highest) to 5 (lowest); 0 or absent means 3.
    #[serde(default)]
    pub priority: u32,
    /// Payload as text.
    #[serde(default)]
    pub payload: Option<String>,
    /// Payload as base64, for binary payloads.
    #[serde(default)]
    pub payload_base64: Option<String>,
    /// Names the job: an enqueue with a key already used answers the first
    /// job's id, marked duplicate.
    #[serde(default)]
    pub idempotency_key: String,
    /// Wait this many milliseconds before the job is ready.
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Wait this long before the job is ready: "30s", "5m".
    #[serde(default)]
    pub delay: Option<String>,
    /// Free-form labels, shown with the job: at most 32, keys 1 to 128
    /// bytes, values at most 1024 bytes. Keys starting `drover.` are
    /// drover's own, not the producer's.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// At most N jobs of this key are leased at once (N: concurrency_limit,
    /// else the config's `[limits."PREFIX"]` for the key).
    #[serde(default)]
    pub concurrency_key: String,
    /// 0 or absent: the config's limit for the key.
    #[serde(default)]
    pub concurrency_limit: u32,
    /// At most N leases of this key per period.
    #[serde(default)]
    pub rate_key: String,
    /// `N/PERIOD`: "10/s", "100/m", "5/30s"; absent: the config's.
    #[serde(default)]
    pub rate_limit: String,
    /// How long a lease of it may run: "30m"; absent: its type's or
    /// queue's `timeout`.
    #[serde(default)]
    pub timeout: Option<String>,
    /// Ids of jobs (of the same tenant) it runs after: it becomes ready
    /// when all of them succeeded.
    #[serde(default)]
    pub after: Vec<u64>,
    /// `cancel` (default) or `run`: what happens to it when a job it waits
    /// for ends dead or cancelled.
    #[serde(default)]
    pub on_dependency_failure: String,
    /// The W3C trace context it is enqueued in
    /// (`00-<trace id>-<parent id>-<flags>`), kept with the job and handed
    /// to its workers. Absent: the request's `traceparent` header, if any.
    #[serde(default)]
    pub traceparent: String,
}

/// What an enqueue answers (201 Created).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EnqueuedBody {
    /// The new job's id; for a duplicate, the id of the job the key named
    /// first.
    pub id: u64,
    /// The idempotency key named an existing job, whose id this is.
    pub duplicate: bool,
}

/// A job's state, as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStateBody {
    /// Waiting for its delay or a retry's backoff to pass.
    Scheduled,
    /// Waiting for a worker.
    Ready,
    /// Held by a worker under a lease.
    Leased,
    /// Completed by a worker. Finished: it never changes state again.
    Succeeded,
    /// Failed more often than its retry policy allows, or with a class it
    /// does not retry: in the dead letters (a replay runs it again).
    Dead,
    /// Cancelled before it finished: by a request, a purge, a run cancel,
    /// or a job it waited for failing. Finished.
    Cancelled,
    /// Waiting for the jobs it runs after.
    Waiting,
}

impl From<crate::job::JobState> for JobStateBody {
    fn from(s: crate::job::JobState) -> JobStateBody {
        use crate::job::JobState as S;
        match s {
            S::Scheduled => JobStateBody::Scheduled,
            S::Ready => JobStateBody::Ready,
            S::Leased => JobStateBody::Leased,
            S::Succeeded => JobStateBody::Succeeded,
            S::Dead => JobStateBody::Dead,
            S::Cancelled => JobStateBody::Cancelled,
            S::Waiting => JobStateBody::Waiting,
        }
    }
}

impl From<JobStateBody> for crate::job::JobState {
    fn from(s: JobStateBody) -> crate::job::JobState {
        use crate::job::JobState as S;
        match s {
            JobStateBody::Scheduled => S::Scheduled,
            JobStateBody::Ready => S::Ready,
            JobStateBody::Leased => S::Leased,
            JobStateBody::Succeeded => S::Succeeded,
            JobStateBody::Dead => S::Dead,
            JobStateBody::Cancelled => S::Cancelled,
            JobStateBody::Waiting => S::Waiting,
        }
    }
}

/// One line of a job list: what the job is and where it stands, without
/// payload, result or timeline (`GET /api/v1/jobs/{id}` has those).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobSummaryBody {
    /// The job's id: unique in the cluster, increasing in enqueue order.
    pub id: u64,
    /// The queue it is in (after an escalation, the queue it moved to).
    pub queue: String,
    /// Its type (`default` when none was given).
    #[serde(rename = "type")]
    pub job_type: String,
    /// Its tenant (`default` when none was given).
    pub tenant: String,
    /// The run it belongs to; empty: none.
    pub run_id: String,
    /// 1 (highest) to 5 (lowest).
    pub priority: u8,
    /// Where it is in its life.
    pub state: JobStateBody,
    /// How many times it has been leased.
    pub attempts: u32,
    /// When it was enqueued (ms since the epoch).
    pub enqueued_at_ms: u64,
    /// When it entered its state (leased, became ready, finished).
    pub state_since_ms: u64,
    /// The worker holding a leased job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The error class of its latest failure (`timeout` for a lease past
    /// its timeout); empty if it never failed.
    pub last_error_class: String,
    /// The message of its latest failure; empty if it never failed.
    pub last_error: String,
}

impl From<&crate::job::Job> for JobSummaryBody {
    fn from(j: &crate::job::Job) -> JobSummaryBody {
        JobSummaryBody {
            id: j.id,
            queue: j.queue.clone(),
            job_type: j.job_type.clone(),
            tenant: j.tenant.clone(),
            run_id: j.run_id.clone(),
            priority: j.priority,
            state: j.state.into(),
            attempts: j.attempts,
            enqueued_at_ms: j.enqueued_at_ms,
            state_since_ms: crate::machine::find::state_since(j),
            worker: j.lease.as_ref().map(|l| l.worker.clone()),
            last_error_class: j.last_error_class.clone(),
            last_error: j.last_error.clone(),
        }
    }
}

/// A page of jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobsPageBody {
    /// The jobs that matched: in id order, or newest first when a finished
    /// state was asked for.
    pub jobs: Vec<JobSummaryBody>,
    /// Pass as `after` for the next page; absent on the last. A page may
    /// hold fewer than `limit` jobs and still have a next one (each page
    /// examines a bounded number of candidates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl JobStateBody {
    /// The state's name in the API: `ready`, `leased`...
    pub fn as_str(self) -> &'static str {
        match self {
            JobStateBody::Scheduled => "scheduled",
            JobStateBody::Ready => "ready",
            JobStateBody::Leased => "leased",
            JobStateBody::Succeeded => "succeeded",
            JobStateBody::Dead => "dead",
            JobStateBody::Cancelled => "cancelled",
            JobStateBody::Waiting => "waiting",
        }
    }
}

/// A worker's hold on a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LeaseBody {
    /// The id of the worker holding it.
    pub worker: String,
    /// Which lease of the job this is (1 for the first); reports naming
    /// another attempt are refused as stale.
    pub attempt: u32,
    /// When the lease expires unless heartbeated (ms since the epoch).
    pub deadline_ms: u64,
}

/// What a worker last reported of a long job's progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProgressBody {
    /// How far along the job is, 0 to 1.
    pub fraction: f32,
    /// The worker's note, at most 256 bytes; may be empty.
    pub message: String,
}

/// One event of a job's timeline.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventBody {
    /// The time of the log entry that did it.
    pub at_ms: u64,
    /// `enqueued`, `leased`, `waited_past_sla`, `progress`, `completed`,
    /// `failed`, `requeued`, `cancelled`, `replayed`, or `note` (a text
    /// event from an earlier drover).
    pub kind: String,
    /// The event as one line of English.
    pub what: String,
    /// The worker whose lease it is about (`leased`, `completed`, `failed`,
    /// `requeued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The attempt it is about (`leased`, `progress`, `completed`,
    /// `failed`, `requeued`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The failure's error class (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
}

impl From<&JobEvent> for EventBody {
    fn from(e: &JobEvent) -> EventBody {
        EventBody {
            at_ms: e.at_ms,
            kind: e.kind.name().to_string(),
            what: e.kind.to_string(),
            worker: e.kind.worker().map(str::to_string),
            attempt: e.kind.attempt(),
            error_class: e.kind.error_class().map(str::to_string),
        }
    }
}

/// A job as read back: its record, and its payload and result as text when
/// they are UTF-8, as base64 otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobBody {
    /// The job's id: unique in the cluster, increasing in enqueue order.
    pub id: u64,
    /// The queue it is in (after an escalation, the queue it moved to).
    pub queue: String,
    /// Its type, which its retry policy keys on (`default` when none was
    /// given).
    pub job_type: String,
    /// Its tenant (`default` when none was given).
    pub tenant: String,
    /// The run it belongs to; empty: none.
    pub run_id: String,
    /// 1 (highest) to 5 (lowest).
    pub priority: u8,
    /// Where it is in its life.
    pub state: JobStateBody,
    /// How many times it has been leased.
    pub attempts: u32,
    /// The key it was enqueued with; empty: none.
    pub idempotency_key: String,
    /// The producer's labels, and drover's own (`drover.concurrency_key`,
    /// `drover.escalated_from`...).
    pub labels: BTreeMap<String, String>,
    /// When it was enqueued (ms since the epoch).
    pub enqueued_at_ms: u64,
    /// When it became, or becomes, ready (ms since the epoch): its enqueue
    /// plus its delay, or when its latest retry is due.
    pub run_at_ms: u64,
    /// The lease a worker holds on it; absent unless it is leased.
    pub lease: Option<LeaseBody>,
    /// What its worker reported of its progress in the latest attempt;
    /// absent when it reported none.
    pub progress: Option<ProgressBody>,
    /// The error class of its latest failure (`timeout` for a lease past
    /// its timeout); empty if it never failed.
    pub last_error_class: String,
    /// The message of its latest failure; empty if it never failed.
    pub last_error: String,
    /// When it succeeded, died or was cancelled (ms since the epoch); 0
    /// while it is unfinished.
    pub finished_at_ms: u64,
    /// The job's timeline, oldest first.
    pub events: Vec<EventBody>,
    /// What its workers reported it cost, over all its attempts.
    #[serde(default)]
    pub cost_usd: f64,
    /// Named usage its workers reported (`tokens_in`...), summed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, u64>,
    /// Time its leases were held, summed.
    #[serde(default)]
    pub lease_ms: u64,
    /// Jobs it waits for (it runs once all of them succeeded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<u64>,
    /// Why a ready job is not leased yet, in words: the first of
    /// `blocked` ("queue paused", "tenant paused", "held: breaker", "held:
    /// budget BUDGET", "limit KEY", "limit KEY (rate)"...); absent when
    /// nothing holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Everything that holds a ready job back, the one its queue's counts
    /// show first; empty when nothing does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<BlockedBody>,
    /// The payload, when it is UTF-8 text (empty when none was given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in base64, in place of `payload` when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// What the worker that completed it sent back, when it is UTF-8 text;
    /// empty until then, or when the worker sent nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The result in base64, in place of `result` when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_base64: Option<String>,
}

fn text_or_base64(b: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(b)),
        ),
    }
}

impl From<JobView> for JobBody {
    fn from(v: JobView) -> JobBody {
        let (payload, payload_base64) = text_or_base64(&v.payload);
        let (result, result_base64) = text_or_base64(&v.result);
        let blocked = v
            .holds
            .iter()
            .map(|h| BlockedBody::of(&v.job.queue, h.reason, &h.scope, None, Some(&h.detail)))
            .collect();
        let Job {
            id,
            queue,
            job_type,
            tenant,
            run_id,
            priority,
            state,
            attempts,
            idempotency_key,
            labels,
            enqueued_at_ms,
            run_at_ms,
            lease,
            progress,
            last_error_class,
            last_error,
            finished_at_ms,
            events,
            cost_micros,
            usage,
            lease_ms,
            after,
            waiting_for: _,
        } = v.job;
        JobBody {
            id,
            queue,
            job_type,
            tenant,
            run_id,
            priority,
            state: state.into(),
            attempts,
            idempotency_key,
            labels,
            enqueued_at_ms,
            run_at_ms,
            lease: lease.map(|l| LeaseBody {
                worker: l.worker,
                attempt: l.attempt,
                deadline_ms: l.deadline_ms,
            }),
            progress: progress.map(|p| ProgressBody {
                fraction: p.fraction,
                message: p.message,
            }),
            last_error_class,
            last_error,
            finished_at_ms,
            events: events.iter().map(EventBody::from).collect(),
            cost_usd: crate::policies::micros_to_usd(cost_micros),
            usage,
            lease_ms,
            after,
            waiting: v.waiting,
            blocked,
            payload,
            payload_base64,
            result,
            result_base64,
        }
    }
}

/// What a cancel did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CancelledBody {
    /// The job cancelled.
    pub id: u64,
    /// Always `cancelled`.
    pub state: JobStateBody,
    /// The state the job was in.
    pub was: JobStateBody,
}

/// A node's part in its raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleBody {
    /// Follows a leader, or waits to hear from one.
    Follower,
    /// Campaigning to lead, in a new term.
    Candidate,
    /// Asking whether it could win before campaigning (raft's pre-vote), so
    /// a node cut off does not disturb the cluster.
    Precandidate,
    /// Leads the group: every write goes through it.
    Leader,
}

impl RoleBody {
    /// The role's name in the API: `leader`, `follower`...
    pub fn as_str(self) -> &'static str {
        match self {
            RoleBody::Follower => "follower",
            RoleBody::Candidate => "candidate",
            RoleBody::Precandidate => "precandidate",
            RoleBody::Leader => "leader",
        }
    }
}

impl From<crate::status::Role> for RoleBody {
    fn from(r: crate::status::Role) -> RoleBody {
        use crate::status::Role as R;
        match r {
            R::Follower => RoleBody::Follower,
            R::Candidate => RoleBody::Candidate,
            R::PreCandidate => RoleBody::Precandidate,
            R::Leader => RoleBody::Leader,
        }
    }
}

/// A node's raft state, and the alarms it knows of.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NodeBody {
    /// Its id (`node_id` in its config).
    pub node_id: u64,
    /// Its part in the group now.
    pub role: RoleBody,
    /// The raft term it is in; every election starts a new one.
    pub term: u64,
    /// 0 when no leader is known.
    pub leader_id: u64,
    /// The highest log index it knows to be committed (on a majority of the
    /// voters).
    pub commit_index: u64,
    /// The highest log index it has applied to its state.
    pub applied_index: u64,
    /// The highest index in its log, committed or not.
    pub last_index: u64,
    /// Disk and memory alarms standing, as this node knows them (its own;
    /// on the leader, every voter's). The leader refuses new jobs while
    /// any voter's memory alarm stands, or its own disk alarm, or a
    /// majority's.
    #[serde(default)]
    pub alarms: Vec<AlarmBody>,
}

/// One node's backups, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupsBody {
    /// The node that answered.
    pub node: u64,
    /// Where the node writes them (`[backup] dir`, else `DATA_DIR/backups`).
    pub dir: String,
    /// Its backup files, newest first.
    pub backups: Vec<BackupBody>,
}

/// A backup file on a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupBody {
    /// The node it lies on.
    pub node: u64,
    /// Its path on that node.
    pub path: String,
    /// The file's size in bytes.
    pub bytes: u64,
    /// When it was taken, in seconds since the epoch.
    pub taken_at_secs: u64,
    /// The log index whose state it holds.
    pub index: u64,
}

/// A disk or memory alarm on a member.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AlarmBody {
    /// The member whose alarm it is.
    pub node: u64,
    /// `disk_full` or `memory_high`.
    pub alarm: String,
}

impl From<&crate::status::NodeStatus> for NodeBody {
    fn from(s: &crate::status::NodeStatus) -> NodeBody {
        NodeBody {
            node_id: s.node_id,
            role: s.role.into(),
            term: s.term,
            leader_id: s.leader_id,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            last_index: s.last_index,
            alarms: s
                .members
                .iter()
                .flat_map(|m| {
                    m.alarms.iter().map(|a| AlarmBody {
                        node: m.id,
                        alarm: a.code().to_string(),
                    })
                })
                .collect(),
        }
    }
}

/// Jobs of one queue by state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueBody {
    /// Ready jobs by priority, 1 to 5.
    pub ready: [u64; 5],
    /// Jobs waiting for a delay or a retry's backoff to pass.
    pub scheduled: u64,
    /// Jobs held by workers.
    pub leased: u64,
    /// Succeeded jobs still kept (`jobs.retention` removes them).
    pub succeeded: u64,
    /// Dead jobs still kept (`jobs.dead_retention` removes them).
    pub dead: u64,
    /// Cancelled jobs still kept (`jobs.retention` removes them).
    pub cancelled: u64,
    /// Jobs waiting for the jobs they run after.
    #[serde(default)]
    pub waiting: u64,
}

impl From<&crate::machine::QueueCounts> for QueueBody {
    fn from(c: &crate::machine::QueueCounts) -> QueueBody {
        QueueBody {
            ready: c.ready,
            scheduled: c.scheduled,
            leased: c.leased,
            succeeded: c.succeeded,
            dead: c.dead,
            cancelled: c.cancelled,
            waiting: c.waiting,
        }
    }
}

/// Counters since this node opened its state (a restart resets them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TotalsBody {
    /// Jobs enqueued (an enqueue answered as a duplicate is not counted).
    pub enqueued: u64,
    /// Leases granted.
    pub dispatched: u64,
    /// Jobs completed by their workers.
    pub completed: u64,
    /// Failed attempts, execution timeouts included.
    pub failed: u64,
    /// Failures after which the job was scheduled to run again.
    pub retried: u64,
    /// Leases that expired for want of a heartbeat; their jobs were made
    /// ready again.
    pub requeued: u64,
    /// Jobs dead-lettered.
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
}

impl From<&crate::machine::Totals> for TotalsBody {
    fn from(t: &crate::machine::Totals) -> TotalsBody {
        TotalsBody {
            enqueued: t.enqueued,
            dispatched: t.dispatched,
            completed: t.completed,
            failed: t.failed,
            retried: t.retried,
            requeued: t.requeued,
            dead: t.dead,
            cancelled: t.cancelled,
        }
    }
}

/// A connected worker: the registry's own record, which peers already
/// exchange as JSON.
pub use crate::workers::WorkerInfo as WorkerBody;

/// The workers of the whole cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkersBody {
    /// The workers connected to every member that answered, by worker id.
    pub workers: Vec<WorkerBody>,
    /// Members that did not answer, with why: their workers are missing
    /// from the list.
    pub unreachable: BTreeMap<String, String>,
    /// Workers asked to stop by this request (shutdown only).
    #[serde(default)]
    pub asked_to_stop: usize,
    /// Every quarantined worker of the cluster, connected or not.
    #[serde(default)]
    pub quarantined: BTreeMap<String, crate::machine::quarantine::Quarantined>,
}

/// A quarantined worker let go.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleasedWorkerBody {
    /// The worker let go.
    pub worker_id: String,
    /// Its quarantine as it was.
    pub was: Option<crate::machine::quarantine::Quarantined>,
}

/// `GET /api/v1/stats`: the answering node, its queues, counters and
/// workers.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StatsBody {
    /// The answering node's raft state.
    pub node: NodeBody,
    /// Jobs by state, by queue name.
    pub queues: BTreeMap<String, QueueBody>,
    /// Counters since this node opened its state.
    pub totals: TotalsBody,
    /// Workers connected to this node.
    pub workers: Vec<WorkerBody>,
}

/// A voter or learner of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MemberBody {
    /// Its id (`node_id` in its config).
    pub id: u64,
    /// The address its peers reach it on.
    pub addr: String,
    /// A voter; otherwise a learner catching up.
    pub voter: bool,
    /// How far its log matches the leader's (known on the leader only).
    pub match_index: Option<u64>,
    /// Whether the leader hears from it (known on the leader only).
    pub reachable: Option<bool>,
    /// Its standing disk and memory alarms (`disk_full`, `memory_high`):
    /// every voter's on the leader, the node's own elsewhere.
    #[serde(default)]
    pub alarms: Vec<String>,
    /// Its wall clock minus the answering node's, in ms (absent: not heard
    /// lately). The answering node is normally the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_offset_ms: Option<i64>,
}

/// The cluster's members, as the answering node (normally the leader) sees
/// them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct MembersBody {
    /// The leader the answering node knows (0: none).
    pub leader_id: u64,
    /// The answering node's raft term.
    pub term: u64,
    /// The highest log index the answering node knows to be committed.
    pub commit_index: u64,
    /// The node that answered.
    pub seen_from: u64,
    /// The cluster's incarnation, as the answering node knows it: made when
    /// the cluster was bootstrapped or restored (16 hex digits, or
    /// "unknown"). Nodes of another incarnation are refused.
    #[serde(default)]
    pub incarnation: String,
    /// Set when the answering node was removed from the cluster: how it
    /// learned it (it no longer campaigns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
    /// Set while the answering node's clock is too far from a majority's
    /// (`[cluster] max_clock_offset`): it does not lead until it is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew: Option<String>,
    /// Every voter and learner.
    pub members: Vec<MemberBody>,
}

impl From<&crate::status::NodeStatus> for MembersBody {
    fn from(s: &crate::status::NodeStatus) -> MembersBody {
        MembersBody {
            leader_id: s.leader_id,
            term: s.term,
            commit_index: s.commit_index,
            seen_from: s.node_id,
            incarnation: crate::cluster::identity::show(s.incarnation),
            removed: s.removed.clone(),
            clock_skew: s.clock_skew.clone(),
            members: s
                .members
                .iter()
                .map(|m| MemberBody {
                    id: m.id,
                    addr: m.addr.clone(),
                    voter: m.voter,
                    match_index: m.match_index,
                    reachable: m.reachable,
                    alarms: m.alarms.iter().map(|a| a.code().to_string()).collect(),
                    clock_offset_ms: m.clock_offset_ms,
                })
                .collect(),
        }
    }
}

/// `POST /api/v1/cluster/members`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    /// The new node's `node_id`.
    pub id: u64,
    /// The gRPC address the new node's peers reach it on, `host:port`.
    pub addr: String,
}

/// `POST /api/v1/cluster/transfer-leader`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeRefBody {
    /// The member to hand the lead to.
    pub id: u64,
}

/// `GET /api/v1/debug/digest`: one node's state, hashed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DigestBody {
    /// The node that answered.
    pub node_id: u64,
    /// The log index the digest covers.
    pub applied_index: u64,
    /// Hex; nodes that applied the same log have the same digest.
    pub digest: String,
}

/// One change made through the admin API.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditBody {
    /// Where this record is in the log (pass as `before` for older ones).
    pub cursor: String,
    /// When it took effect (ms since the epoch).
    pub at_ms: u64,
    /// The token's name (`anonymous` on a node without tokens).
    pub who: String,
    /// The token's role; empty on a node without tokens.
    pub role: String,
    /// `job.cancel`, `cluster.add`, `cluster.remove`,
    /// `cluster.transfer_leader`, `snapshot`...
    pub action: String,
    /// What it was done to: `job 42`, `queue emails`, `node 4 at
    /// 10.0.0.4:7070`...
    pub target: String,
    /// As given with `X-Drover-Reason` (the CLI's `--reason`).
    pub reason: String,
    /// `ok`: only changes that took effect are recorded.
    pub outcome: String,
}

/// A page of the audit log (`GET /api/v1/audit`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditPageBody {
    /// Newest first.
    pub records: Vec<AuditBody>,
    /// The cursor of the next (older) page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// How jobs are leased and retried, as `[jobs]` keys of the config
/// (durations as "30s").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobPoliciesBody {
    /// A lease not heartbeated within this expires, and its job is ready
    /// again (a queue may set its own).
    pub heartbeat_timeout: String,
    /// Retries after the first attempt before a failing job is
    /// dead-lettered, unless its `[retry]` table says otherwise.
    pub max_retries: u32,
    /// The first retry's delay; it doubles with each retry up to
    /// `retry_max_delay`, unless a `[retry]` table says otherwise.
    pub retry_base_delay: String,
    /// The longest delay between retries.
    pub retry_max_delay: String,
}

/// `[limits]` keys that are policies, and the `[limits."PREFIX"]` tables.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LimitPoliciesBody {
    /// 0: no limit.
    pub max_pending: u64,
    /// By key prefix: the limits of jobs whose concurrency or rate key
    /// starts with it.
    #[serde(flatten)]
    pub keys: BTreeMap<String, KeyLimitBody>,
}

/// `[limits."PREFIX"]`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyLimitBody {
    /// Most jobs of one key leased at once, cluster-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// `N/PERIOD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
}

/// A queue's policy as `[queues.NAME]` writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct QueuePolicyBody {
    /// Most jobs waiting (ready and scheduled); enqueues past it are
    /// refused with 429 `shed`. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Most of its jobs leased at once, cluster-wide. Absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u64>,
    /// Its lease timeout: a lease not heartbeated within this expires.
    /// Absent: `jobs.heartbeat_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout: Option<String>,
    /// Priority -> fraction of max_depth.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub shed: BTreeMap<String, f64>,
    /// A job that waits longer than this for its lease counts in
    /// `drover_sla_missed_total` and its timeline says so. Absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<String>,
    /// A ready job counts one priority level higher per this much waiting.
    /// Absent: no aging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aging_after: Option<String>,
    /// How long a lease of its jobs may run, however well its worker
    /// heartbeats, unless the job or its type sets its own. Absent: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Its circuit breakers (`[queues.NAME.breaker]`); keys not set take
    /// the `*` entry's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerPolicyBody>,
    /// A worker whose failures reach this share (0 to 1) of its results in
    /// `quarantine_window` gets no new leases. Absent: no quarantine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_failure_rate: Option<f64>,
    /// How far back a worker's results count (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_window: Option<String>,
    /// Results a worker needs in the window before its failure rate counts
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_min_jobs: Option<u64>,
    /// How long a quarantine lasts at least: it lifts when the worker
    /// reconnects after this, or with `drover workers release` (default
    /// 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine_for: Option<String>,
    /// How many workers the queue wants: the bounds of
    /// `drover_queue_desired_workers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<crate::pools::WorkerPool>,
    /// `[queues.NAME.canary]` as the config set it (a rule set at run time
    /// is in `drover canary status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryPolicyBody>,
}

/// `[queues.NAME.canary]`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CanaryPolicyBody {
    /// The worker version that gets the canary share.
    pub version: String,
    /// The share of the queue's jobs only that version's workers get, 0 to
    /// 100.
    pub percent: u8,
    /// How long a canary job waits for a canary worker before others may
    /// take it.
    pub max_wait: String,
}

/// `[queues.NAME.breaker]` as the config writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BreakerPolicyBody {
    /// `false` turns the queue's breakers off. Absent: the `*` entry's,
    /// else on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Failures of one class within `window` that open a breaker (default
    /// 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// How far back failures count (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// How long an open breaker holds jobs before it lets one through
    /// (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<String>,
}

fn config_ms(ms: u64) -> String {
    crate::wire::config_duration(std::time::Duration::from_millis(ms))
}

impl From<&crate::policies::QueuePolicy> for QueuePolicyBody {
    fn from(q: &crate::policies::QueuePolicy) -> QueuePolicyBody {
        let d = config_ms;
        QueuePolicyBody {
            max_depth: q.max_depth,
            concurrency_limit: q.concurrency_limit,
            heartbeat_timeout: q.heartbeat_timeout_ms.map(d),
            shed: q.shed.iter().map(|(p, f)| (p.to_string(), *f)).collect(),
            sla: q.sla_ms.map(d),
            aging_after: q.aging_after_ms.map(d),
            timeout: q.timeout_ms.map(d),
            breaker: q.breaker.as_ref().map(|b| BreakerPolicyBody {
                enabled: b.enabled,
                threshold: b.threshold,
                window: b.window_ms.map(d),
                cooldown: b.cooldown_ms.map(d),
            }),
            quarantine_failure_rate: q.quarantine_failure_rate,
            quarantine_window: q.quarantine_window_ms.map(d),
            quarantine_min_jobs: q.quarantine_min_jobs,
            quarantine_for: q.quarantine_for_ms.map(d),
            workers: q.workers,
            canary: q.canary.as_ref().map(|c| CanaryPolicyBody {
                version: c.version.clone(),
                percent: c.percent,
                max_wait: d(c.max_wait_ms),
            }),
        }
    }
}

/// `[tenants.NAME]` as the config writes it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantPolicyBody {
    /// Its share of dispatches against other tenants of the same priority
    /// (default 1).
    pub weight: u32,
    /// `[tenants.NAME.budgets]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budgets: Option<TenantBudgetsBody>,
}

/// `[retry.JOB_TYPE]` as the config writes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RetryPolicyBody {
    /// Retries after the first attempt before the job is exhausted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
    /// `exponential`, `linear`, `fixed` or `immediate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<String>,
    /// The first retry's delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_delay: Option<String>,
    /// The longest delay between retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<String>,
    /// When not empty, only these error classes are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_on: Vec<String>,
    /// Error classes that end the job at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_retry: Vec<String>,
    /// `queue:NAME`; absent: dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exhausted: Option<String>,
    /// How long a lease of a job of this type may run, unless the job sets
    /// its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

/// Policies to compare with those the cluster applies
/// (`POST /api/v1/policies/diff`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PoliciesDiffRequest {
    /// The policies as a config yields them, in their JSON record form
    /// (`drover policies diff FILE` sends its file's); fields left out
    /// take their defaults.
    #[schema(value_type = Object)]
    pub policies: serde_json::Value,
}

/// What the policies sent would change, value by value, in key order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoliciesDiffBody {
    /// Every value that differs; empty when nothing would change.
    pub changes: Vec<crate::policies::PolicyChange>,
}

/// The policies the cluster applies, as the log last set them (from the
/// leader's config), in the config file's shape.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PoliciesBody {
    /// `[jobs]`: the lease timeout and the default retries.
    pub jobs: JobPoliciesBody,
    /// `[limits]`: `max_pending` and the limits by key prefix.
    pub limits: LimitPoliciesBody,
    /// `[queues.NAME]` by queue; `*` holds the defaults of queues not
    /// named.
    pub queues: BTreeMap<String, QueuePolicyBody>,
    /// `[tenants.NAME]` by tenant; a tenant not named has weight 1.
    pub tenants: BTreeMap<String, TenantPolicyBody>,
    /// `[retry.TYPE]` by job type; `*` holds the defaults of types not
    /// named, and `[jobs]` what neither sets.
    pub retry: BTreeMap<String, RetryPolicyBody>,
    /// `[budgets]`: every run's limits unless its tenant sets its own.
    #[serde(default)]
    pub budgets: TenantBudgetsBody,
}

impl From<&crate::policies::Policies> for PoliciesBody {
    fn from(p: &crate::policies::Policies) -> PoliciesBody {
        let d = config_ms;
        PoliciesBody {
            jobs: JobPoliciesBody {
                heartbeat_timeout: d(p.jobs.heartbeat_timeout_ms),
                max_retries: p.jobs.max_retries,
                retry_base_delay: d(p.jobs.retry_base_delay_ms),
                retry_max_delay: d(p.jobs.retry_max_delay_ms),
            },
            limits: LimitPoliciesBody {
                max_pending: p.max_pending,
                keys: p
                    .keys
                    .iter()
                    .map(|(prefix, l)| {
                        let body = KeyLimitBody {
                            concurrency: l.concurrency,
                            rate: l.rate.map(|r| r.to_string()),
                        };
                        (prefix.clone(), body)
                    })
                    .collect(),
            },
            queues: p
                .queues
                .iter()
                .map(|(name, q)| (name.clone(), q.into()))
                .collect(),
            tenants: p
                .tenants
                .iter()
                .map(|(name, t)| {
                    let body = TenantPolicyBody {
                        weight: t.weight,
                        budgets: (t.budgets != crate::policies::Budgets::default())
                            .then(|| t.budgets.into()),
                    };
                    (name.clone(), body)
                })
                .collect(),
            retry: p
                .retry
                .iter()
                .map(|(t, r)| {
                    let body = RetryPolicyBody {
                        max_retries: r.max_retries,
                        backoff: r.backoff.map(|b| b.as_str().to_string()),
                        base_delay: r.base_delay_ms.map(d),
                        max_delay: r.max_delay_ms.map(d),
                        retry_on: r.retry_on.clone(),
                        no_retry: r.no_retry.clone(),
                        on_exhausted: r.escalate_to.as_ref().map(|q| format!("queue:{q}")),
                        timeout: r.timeout_ms.map(d),
                    };
                    (t.clone(), body)
                })
                .collect(),
            budgets: p.budgets.into(),
        }
    }
}

/// A queue as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueStatusBody {
    /// The queue's name.
    pub name: String,
    /// Its jobs by state.
    #[serde(flatten)]
    pub counts: QueueBody,
    /// Leases nothing.
    pub paused: bool,
    /// Takes no new jobs.
    pub draining: bool,
    /// When its longest-waiting ready job became ready (ms since the
    /// epoch); absent when none is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ready_at_ms: Option<u64>,
    /// Leases past its sla since this node started (all priorities).
    #[serde(default)]
    pub sla_missed: u64,
    /// Ready jobs nothing holds back.
    #[serde(default)]
    pub runnable: u64,
    /// The other ready jobs by reason (`paused`, `tenant_paused`,
    /// `breaker`, `budget`, `daily_cap`, `key_limit`, `concurrency_limit`,
    /// `version`, `no_workers`); `drover queues why` says what holds them.
    #[serde(default)]
    pub blocked: BTreeMap<String, u64>,
    /// Its policy, with the defaults of `[queues."*"]` filled in.
    pub policy: QueuePolicyBody,
}

/// Ready jobs held back for one reason, at one scope.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BlockedBody {
    /// `paused`, `tenant_paused`, `breaker`, `budget`, `daily_cap`,
    /// `key_limit`, `concurrency_limit`, `version` or `no_workers`.
    pub reason: String,
    /// What holds them: a tenant, a breaker (`QUEUE/TENANT/CLASS`), a run
    /// (`TENANT/RUN`), a key, a limit, worker versions; empty for the
    /// queue itself.
    #[serde(default)]
    pub scope: String,
    /// How many (absent for one job's view).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<u64>,
    /// In words, for one job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// What releases them: a command, or what to wait for.
    pub release: String,
}

impl BlockedBody {
    /// The body of `reason` at `scope` in `queue`.
    pub fn of(
        queue: &str,
        reason: crate::machine::blocked::BlockReason,
        scope: &str,
        jobs: Option<u64>,
        detail: Option<&str>,
    ) -> BlockedBody {
        BlockedBody {
            reason: reason.as_str().into(),
            scope: scope.into(),
            jobs,
            detail: detail.map(str::to_string),
            release: reason.release(queue, scope),
        }
    }
}

/// `GET /api/v1/queues/{queue}/why`: why a queue's jobs are not moving.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueWhyBody {
    /// The queue.
    pub queue: String,
    /// Ready jobs.
    pub ready: u64,
    /// Ready jobs nothing holds back.
    pub runnable: u64,
    /// The other ready jobs, by reason and scope, each counted once (under
    /// the first reason that holds it), with what releases them.
    pub blocked: Vec<BlockedBody>,
    /// Jobs waiting for the jobs they run after.
    pub waiting: u64,
    /// Jobs waiting for their time (a delay or a retry's backoff).
    pub scheduled: u64,
    /// Jobs held by workers now.
    pub leased: u64,
    /// Workers connected for the queue that take new leases (absent when a
    /// node did not answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    /// What holds some jobs that the counts cannot say (a canary's share,
    /// a version switched off for some tenants).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// `GET /api/v1/queues/{queue}/history` and `GET /api/v1/history`: what
/// this node saw over the last hour (10-second buckets) or day (5-minute
/// buckets), oldest first, one point per bucket (zeros where nothing
/// happened). Each node keeps its own from the jobs it applies, in memory:
/// it starts at the node's start (`since_ms`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HistoryBody {
    /// The queue; absent for all queues together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// `1h` or `24h`.
    pub range: String,
    /// Each point's width.
    pub bucket_seconds: u64,
    /// When this node started counting (ms since the epoch): nothing
    /// before it is in the points, and counters on this node count from it.
    pub since_ms: u64,
    /// The node that answered.
    pub node_id: u64,
    /// One per bucket, oldest first; the last is the bucket being filled,
    /// its rates over the part of it that has passed.
    pub points: Vec<crate::history::Point>,
}

/// `GET /api/v1/queues`: every queue that holds jobs or is paused or
/// draining.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueuesBody {
    /// The queues, by name.
    pub queues: Vec<QueueStatusBody>,
}

/// What a pause, drain or resume changed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ControlledBody {
    /// `pause`, `drain` or `resume`.
    pub action: String,
    /// The queues whose state changed (a queue already so is not listed).
    pub changed: Vec<String>,
}

/// A tenant as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantStatusBody {
    /// The tenant's name.
    pub name: String,
    /// Ready jobs, all queues.
    pub ready: u64,
    /// Its share of dispatches against other tenants of the same priority.
    pub weight: u32,
    /// Its jobs are not leased.
    pub paused: bool,
    /// Its new jobs are refused.
    pub draining: bool,
}

/// `GET /api/v1/tenants`: every tenant with ready jobs, a policy, or a
/// pause or drain.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantsBody {
    /// The tenants, by name.
    pub tenants: Vec<TenantStatusBody>,
}

/// A recurring job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleBody {
    /// Its name, as in `[schedules.NAME]`.
    pub name: String,
    /// When it fires: `sec min hour day month weekday`, seconds optional.
    pub cron: String,
    /// The IANA time zone its cron is read in: `UTC`, `Europe/Berlin`.
    pub timezone: String,
    /// `skip` or `run_once`.
    pub misfire: String,
    /// The queue its jobs go to.
    pub queue: String,
    /// An operator paused it: its slots pass without jobs.
    pub paused: bool,
    /// The last slot fired (ms since the epoch; 0: none yet).
    pub last_slot_ms: u64,
    /// The next slot (ms since the epoch), if there is one.
    pub next_slot_ms: Option<u64>,
    /// Jobs it enqueued.
    pub fired: u64,
}

/// `GET /api/v1/schedules`: every schedule of the policies in effect.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SchedulesBody {
    /// The schedules, by name.
    pub schedules: Vec<ScheduleBody>,
}

/// What a schedule action did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleActionBody {
    /// The schedule's name.
    pub schedule: String,
    /// `pause`, `resume` or `trigger`.
    pub action: String,
    /// The job a trigger enqueued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<u64>,
    /// Whether a pause or resume changed anything.
    pub changed: bool,
}

/// `POST /api/v1/queues/{queue}/purge`: which waiting jobs to cancel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeBody {
    /// `ready` or `scheduled`; absent: both.
    #[serde(default)]
    pub state: Option<PurgeState>,
    /// Only this tenant's jobs; absent: every tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only jobs waiting at least this long: "1h".
    #[serde(default)]
    pub older_than: Option<String>,
    /// Only jobs of this type (needs every node on a build that writes
    /// log format 5).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
}

/// Which waiting jobs a queue purge cancels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PurgeState {
    /// Jobs waiting for a worker.
    Ready,
    /// Jobs waiting for a delay or a retry's backoff to pass.
    Scheduled,
}

/// What a queue purge did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurgedBody {
    /// The queue purged.
    pub queue: String,
    /// Jobs cancelled.
    pub cancelled: u64,
}

/// Dead jobs of one queue and error class.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadCountBody {
    /// The queue they died in.
    pub queue: String,
    /// The error class of their last failure.
    pub class: String,
    /// Dead jobs of that queue and class still kept.
    pub count: u64,
}

/// A version switch: workers of `version` get no jobs of `queue` (all when
/// absent) and `tenant` (all when absent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionSwitchBody {
    /// The workers' version label (`drover worker --version`).
    pub version: String,
    /// The queue whose jobs it keeps from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The tenant whose jobs it keeps from them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl From<&crate::command::VersionSwitch> for VersionSwitchBody {
    fn from(s: &crate::command::VersionSwitch) -> VersionSwitchBody {
        VersionSwitchBody {
            version: s.version.clone(),
            queue: s.queue.clone(),
            tenant: s.tenant.clone(),
        }
    }
}

/// Which jobs a switch covers.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionSwitchRequest {
    /// Only this queue's jobs; absent: every queue's.
    #[serde(default)]
    pub queue: Option<String>,
    /// Only this tenant's jobs; absent: every tenant's.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Switch off a version no connected worker has (yet).
    #[serde(default)]
    pub force: bool,
}

/// Version switches and the workers connected by version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionsBody {
    /// The switches in effect: versions kept from some jobs.
    pub switches: Vec<VersionSwitchBody>,
    /// Connected workers by version ("" for none given).
    pub connected: BTreeMap<String, usize>,
    /// Members that did not answer: their workers are not counted.
    pub unreachable: BTreeMap<String, String>,
    /// When each version was first and last seen leasing, cluster-wide
    /// (the last to within a minute); kept for the 256 seen most recently.
    #[serde(default)]
    pub seen: BTreeMap<String, VersionSeenBody>,
}

/// When a worker version was first and last seen leasing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VersionSeenBody {
    /// Its first lease request (ms since the epoch, log time).
    pub first_seen_ms: u64,
    /// Its last, to within a minute (ms since the epoch, log time).
    pub last_seen_ms: u64,
}

/// A queue's canary rule, and (from `status`) how the canary compares.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CanaryBody {
    /// The queue the rule is on.
    pub queue: String,
    /// The worker version that gets the canary share.
    pub version: String,
    /// The share of the queue's jobs only its workers get, 0 to 100.
    pub percent: u8,
    /// How long a canary job waits for a canary worker before others take it.
    pub max_wait: String,
    /// Results since the rule was set or changed, as the node answering
    /// counted them since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<CanaryStatsBody>,
}

/// The canary's results against the control's (other versions').
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CanaryStatsBody {
    /// Results of the canary version's workers.
    pub canary: CanaryArmBody,
    /// Results of the other versions' workers.
    pub control: CanaryArmBody,
    /// `success_rate_delta`, `duration_ratio`, `cost_ratio`, each with a
    /// verdict: `ok`, `worse` or `not enough data`.
    pub comparison: Vec<CanaryJudgedBody>,
}

/// One side of a canary comparison: its results over the last hour.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CanaryArmBody {
    /// Results counted: completions and failures.
    pub jobs: u64,
    /// Completions over results, 0 to 1 (0 with no results).
    pub success_rate: f64,
    /// Mean time from lease to result, in ms.
    pub mean_run_ms: f64,
    /// The time from lease to result 95% of results stayed under, in ms,
    /// rounded up to a power of two (0 with no results).
    pub p95_run_ms: u64,
    /// Mean cost its workers reported per result, in USD.
    pub mean_cost_usd: f64,
}

impl From<&crate::machine::canary::Arm> for CanaryArmBody {
    fn from(a: &crate::machine::canary::Arm) -> CanaryArmBody {
        CanaryArmBody {
            jobs: a.jobs,
            success_rate: a.success_rate(),
            mean_run_ms: a.mean_ran_ms(),
            p95_run_ms: a.p95_ran_ms(),
            mean_cost_usd: a.mean_cost(),
        }
    }
}

/// One metric of a canary comparison, with its verdict.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CanaryJudgedBody {
    /// `success_rate_delta`, `duration_ratio` or `cost_ratio`.
    pub metric: String,
    /// The canary's success rate minus the control's (-1 to 1) for
    /// `success_rate_delta`; the canary's mean over the control's for the
    /// ratios.
    pub value: f64,
    /// `ok`, `worse` (at 95% confidence), or `not enough data` (fewer than
    /// 30 results on a side).
    pub verdict: String,
}

/// Sets a canary rule, or changes one (absent fields keep their value).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanarySetBody {
    /// The worker version to send the share to; required for a new rule.
    #[serde(default)]
    pub version: Option<String>,
    /// The share of the queue's jobs only that version's workers get, 0 to
    /// 100; required for a new rule.
    #[serde(default)]
    pub percent: Option<u32>,
    /// A duration: "5m" (default 5m); "never": other versions never take
    /// the canary's jobs (a pin, as `drover versions only` sets).
    #[serde(default)]
    pub max_wait: Option<String>,
}

/// Faults injected into a queue (shares are 0 to 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChaosRuleBody {
    /// Share of lease grants not sent to the worker (they expire and run
    /// again).
    pub drop_leases: f64,
    /// Lease grants sent this much later (at most 60000).
    pub delay_ms: u64,
    /// Share of leases taken back right after they are sent.
    pub revoke: f64,
    /// Share of completions turned into failures of `fail_class`.
    pub fail: f64,
    /// The error class of the failures `fail` makes (empty: `chaos`), at
    /// most 128 bytes.
    pub fail_class: String,
}

impl From<&crate::command::ChaosRule> for ChaosRuleBody {
    fn from(r: &crate::command::ChaosRule) -> ChaosRuleBody {
        ChaosRuleBody {
            drop_leases: r.drop_leases,
            delay_ms: r.delay_ms,
            revoke: r.revoke,
            fail: r.fail,
            fail_class: r.fail_class.clone(),
        }
    }
}

/// A fault this node injected, and how often.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChaosInjectedBody {
    /// The queue it was injected into.
    pub queue: String,
    /// drop, delay, revoke or fail.
    pub kind: String,
    /// How many times this node injected it since it started.
    pub count: u64,
}

/// What is injected, and what this node did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChaosBody {
    /// Whether this node allows chaos (`[chaos] allowed`).
    pub allowed: bool,
    /// The rules in effect, by queue.
    pub rules: BTreeMap<String, ChaosRuleBody>,
    /// Faults this node injected since it started.
    pub injected: Vec<ChaosInjectedBody>,
}

/// The caller, as its token says.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WhoAmIBody {
    /// The token's name (`anonymous` on a node without tokens).
    pub name: String,
    /// read, operate, admin, producer or worker; absent on a node without
    /// tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Whether the node checks tokens.
    pub auth: bool,
}

/// A page of dead jobs, newest first, and the counts of all of them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadPageBody {
    /// This page's dead jobs, newest first.
    pub jobs: Vec<JobSummaryBody>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Every dead job (not only this page's) by queue and error class.
    pub counts: Vec<DeadCountBody>,
}

/// A dead job and its failures, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeadJobBody {
    /// The job, with its payload, timeline and last error.
    pub job: JobBody,
    /// The failures on its timeline.
    pub errors: Vec<EventBody>,
}

/// Which dead jobs a bulk replay or purge takes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadFilterBody {
    /// Only jobs that died in this queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// Only jobs of this type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub job_type: Option<String>,
    /// The last error's class.
    #[serde(default)]
    pub class: Option<String>,
    /// Died within this long ("1h") or since this time (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// Died longer ago than this ("7d").
    #[serde(default)]
    pub older_than: Option<String>,
    /// Most jobs to take, 1 to 1000 (default 100); repeat for more.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// What a dead-letter replay did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayedBody {
    /// The jobs now ready again.
    pub replayed: Vec<u64>,
}

/// What a dead-letter purge did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurgedDeadBody {
    /// Dead jobs removed.
    pub purged: u32,
}

/// Which leases of a queue `clear-stuck` takes back.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClearStuckBody {
    /// Leased longer than this (default "10m" when no worker is named).
    #[serde(default)]
    pub older_than: Option<String>,
    /// Held by this worker, however long.
    #[serde(default)]
    pub worker: Option<String>,
}

/// What `clear-stuck` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequeuedBody {
    /// The jobs whose leases were taken back, ready again.
    pub requeued: Vec<u64>,
}

/// A circuit breaker of (queue, tenant, error class).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakerBody {
    /// The queue whose failures it counts.
    pub queue: String,
    /// The tenant whose jobs it holds while open.
    pub tenant: String,
    /// The error class it counts.
    pub class: String,
    /// `closed`, `half-open` or `open`.
    pub state: String,
    /// Failures of the class within the window (while closed).
    pub failures: u32,
    /// When it last opened (0: never).
    pub opened_at_ms: u64,
    /// Failures of the class within the window that open it, as the
    /// queue's policy says now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    /// While open: when its cooldown ends and one job goes through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown_until_ms: Option<u64>,
    /// The job let through while half-open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<u64>,
}

/// `GET /api/v1/breakers`: every breaker that is open, half-open, or closed
/// with failures in its window.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BreakersBody {
    /// The breakers, by queue, tenant and class.
    pub breakers: Vec<BreakerBody>,
}

/// Which breaker to reset: a scope, or `all`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetBreakersBody {
    /// The breaker's queue (with `tenant` and `class`).
    #[serde(default)]
    pub queue: Option<String>,
    /// The breaker's tenant (with `queue` and `class`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The breaker's error class (with `queue` and `tenant`).
    #[serde(default)]
    pub class: Option<String>,
    /// Every breaker.
    #[serde(default)]
    pub all: bool,
}

/// What a breaker reset did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResetBreakersDoneBody {
    /// Breakers closed.
    pub reset: u32,
}

/// A job's timeline, oldest first, and its latest progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TimelineBody {
    /// The job asked for.
    pub id: u64,
    /// Its state now.
    pub state: JobStateBody,
    /// Its events, oldest first (at most 32: past that the oldest progress
    /// reports go first, then the oldest events).
    pub events: Vec<EventBody>,
    /// What its worker reported of its progress in the latest attempt;
    /// absent when it reported none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressBody>,
}

/// One budget of a run: its limit, what was used, what is left (USD for
/// `cost_usd`, seconds for `time`, leases for `attempts`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BudgetUseBody {
    /// `cost_usd`, `time` or `attempts`.
    pub budget: String,
    /// The limit, in the budget's unit.
    pub limit: f64,
    /// What the run used, in that unit.
    pub used: f64,
    /// What is left, in that unit; 0 once the limit is reached.
    pub remaining: f64,
}

impl From<crate::machine::runs::BudgetUse> for BudgetUseBody {
    fn from(u: crate::machine::runs::BudgetUse) -> BudgetUseBody {
        let unit = |v: u64| match u.budget {
            "cost_usd" | "daily_cost_cap_usd" => crate::policies::micros_to_usd(v),
            "time" => v as f64 / 1000.0,
            _ => v as f64,
        };
        BudgetUseBody {
            budget: u.budget.to_string(),
            limit: unit(u.limit),
            used: unit(u.used),
            remaining: unit(u.limit.saturating_sub(u.used)),
        }
    }
}

/// A run's budgets and what it used.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunBudgetBody {
    /// The run's tenant.
    pub tenant: String,
    /// The run's id.
    pub run: String,
    /// `active`, `held` (over a budget, or its tenant over its daily cap)
    /// or `done` (every job finished).
    pub state: String,
    /// The budget that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
    /// Each budget that is set, with its limit, use and what is left.
    pub budgets: Vec<BudgetUseBody>,
    /// What its workers reported its jobs cost, in USD.
    pub cost_usd: f64,
    /// Time its jobs' leases were held, summed, in ms.
    pub lease_ms: u64,
    /// Leases granted to its jobs.
    pub attempts: u64,
    /// Named usage its workers reported (`tokens_in`...), summed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, u64>,
}

/// A run's jobs by how they ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunJobsBody {
    /// Jobs enqueued into the run.
    pub enqueued: u64,
    /// Ready, scheduled or leased.
    pub unfinished: u64,
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs that ended dead.
    pub dead: u64,
    /// Jobs that were cancelled.
    pub cancelled: u64,
}

/// A run: its jobs, budgets and when it was active.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunBody {
    /// The run's tenant.
    pub tenant: String,
    /// The run's id.
    pub run: String,
    /// When it first changed, normally as its first job was enqueued (ms
    /// since the epoch).
    pub first_at_ms: u64,
    /// When it last changed: a job of it enqueued, leased or finished, or
    /// an override (ms since the epoch).
    pub last_at_ms: u64,
    /// The run (`tenant/run`) this one replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// Its jobs by how they ended.
    pub jobs: RunJobsBody,
    /// Its budgets, what it used, and whether it is held.
    pub budget: RunBudgetBody,
}

/// A page of runs (`GET /api/v1/runs`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunsBody {
    /// This page's runs, by tenant then run id.
    pub runs: Vec<RunBody>,
    /// Give it as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /api/v1/runs/{run}/override`: the run's new limits (those given;
/// the others stay), and why (or the `X-Drover-Reason` header).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    /// The run's tenant (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The run's new cost limit, in USD.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// A duration: `"1h"`.
    #[serde(default)]
    pub time: Option<String>,
    /// The run's new limit of leases granted.
    #[serde(default)]
    pub attempts: Option<u64>,
    /// Why, for the audit log (else the `X-Drover-Reason` header); one of
    /// the two is required.
    #[serde(default)]
    pub reason: Option<String>,
}

/// A tenant's run limits and daily cap (`PUT /api/v1/tenants/{tenant}/budgets`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantBudgetsBody {
    /// Most one run may cost, in USD (what its workers reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// A duration: `"30m"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// Most leases one run's jobs may be granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u64>,
    /// Most the tenant's jobs may cost in one UTC day, in USD; past it all
    /// its jobs are held until the next day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_cap_usd: Option<f64>,
}

impl From<crate::policies::Budgets> for TenantBudgetsBody {
    fn from(b: crate::policies::Budgets) -> TenantBudgetsBody {
        TenantBudgetsBody {
            cost_usd: b.cost_micros.map(crate::policies::micros_to_usd),
            time: b.time_ms.map(config_ms),
            attempts: b.attempts,
            daily_cost_cap_usd: b.daily_cost_cap_micros.map(crate::policies::micros_to_usd),
        }
    }
}

/// What jobs cost, summed.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CostSumBody {
    /// Finished jobs summed.
    pub jobs: u64,
    /// What their workers reported they cost, in USD.
    pub cost_usd: f64,
    /// Time their leases were held, summed, in ms.
    pub lease_ms: u64,
    /// Named usage their workers reported (`tokens_in`...), summed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, u64>,
}

/// `GET /api/v1/costs`: the jobs that finished since a time, their cost and
/// named usage summed by tenant, run, queue and job type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CostsBody {
    /// The jobs summed finished at or after this time (ms since the epoch).
    pub since_ms: u64,
    /// Every job summed.
    pub total: CostSumBody,
    /// Sums by tenant.
    pub by_tenant: BTreeMap<String, CostSumBody>,
    /// Keyed `tenant/run`.
    pub by_run: BTreeMap<String, CostSumBody>,
    /// Sums by the queue each job finished in.
    pub by_queue: BTreeMap<String, CostSumBody>,
    /// Sums by job type.
    pub by_job_type: BTreeMap<String, CostSumBody>,
    /// More jobs finished than one request sums: narrow `since` or `tenant`.
    pub truncated: bool,
}

/// One event of a run's timeline: a job's event, with the job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunEventBody {
    /// The job the event happened to.
    pub job_id: u64,
    /// The event, its fields inline.
    #[serde(flatten)]
    pub event: EventBody,
}

/// A page of a run's timeline: its jobs' events merged in time order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunTimelineBody {
    /// The run's tenant.
    pub tenant: String,
    /// The run's id.
    pub run: String,
    /// This page's events, oldest first.
    pub events: Vec<RunEventBody>,
    /// Give it as `after` for the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The run has more jobs than a timeline merges (the first ones are).
    #[serde(default)]
    pub truncated: bool,
}

/// `POST /api/v1/tenants/{tenant}/erase`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseTenantBody {
    /// Why (or the `X-Drover-Reason` header); required.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What erasing a tenant removed, on every node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantErasedBody {
    /// The tenant erased.
    pub tenant: String,
    /// Jobs removed (unfinished ones cancelled first), each with its
    /// payload, result and idempotency record.
    pub jobs: u64,
    /// Runs removed, with their held state and job index.
    pub runs: u64,
    /// Circuit breakers of the tenant's scopes removed.
    pub breakers: u64,
    /// Queues whose fair-share clocks named the tenant.
    pub clocks: u64,
    /// Other records: daily cost, budgets set at run time, pause or drain,
    /// version switches naming the tenant.
    pub other: u64,
    /// Log entries the erasure took (slices of job records, then the rest).
    pub slices: u64,
}

/// `POST /api/v1/runs/{run}/cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRunBody {
    /// The run's tenant (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Why (or the `X-Drover-Reason` header); required.
    #[serde(default)]
    pub reason: Option<String>,
}

/// What a run cancel did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunCancelledBody {
    /// The run's tenant.
    pub tenant: String,
    /// The run's id.
    pub run: String,
    /// Its jobs that were unfinished and are now cancelled.
    pub cancelled: u32,
}

/// `POST /api/v1/runs/{run}/replay`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRunBody {
    /// The run's tenant (default `default`).
    #[serde(default)]
    pub tenant: Option<String>,
    /// Only the jobs that ended dead or cancelled.
    #[serde(default)]
    pub failed_only: bool,
    /// The new run's id (default: RUN-replay-N, the first one free).
    #[serde(default)]
    pub into: Option<String>,
}

/// What a run replay did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunReplayedBody {
    /// The tenant of both runs.
    pub tenant: String,
    /// The new run.
    pub run: String,
    /// The run replayed, as `tenant/run`.
    pub replay_of: String,
    /// The new jobs' ids, in the order of the old ones.
    pub jobs: Vec<u64>,
}
