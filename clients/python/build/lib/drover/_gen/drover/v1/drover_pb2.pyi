from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AckKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACK_KIND_UNSPECIFIED: _ClassVar[AckKind]
    ACK_KIND_HEARTBEAT: _ClassVar[AckKind]
    ACK_KIND_COMPLETE: _ClassVar[AckKind]
    ACK_KIND_FAIL: _ClassVar[AckKind]
ACK_KIND_UNSPECIFIED: AckKind
ACK_KIND_HEARTBEAT: AckKind
ACK_KIND_COMPLETE: AckKind
ACK_KIND_FAIL: AckKind

class NewJob(_message.Message):
    __slots__ = ("queue", "job_type", "tenant", "run_id", "priority", "payload", "idempotency_key", "delay_ms", "labels", "concurrency_key", "concurrency_limit", "rate_key", "rate_limit", "timeout_ms", "after", "on_dependency_failure")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RATE_KEY_FIELD_NUMBER: _ClassVar[int]
    RATE_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    ON_DEPENDENCY_FAILURE_FIELD_NUMBER: _ClassVar[int]
    queue: str
    job_type: str
    tenant: str
    run_id: str
    priority: int
    payload: bytes
    idempotency_key: str
    delay_ms: int
    labels: _containers.ScalarMap[str, str]
    concurrency_key: str
    concurrency_limit: int
    rate_key: str
    rate_limit: str
    timeout_ms: int
    after: _containers.RepeatedScalarFieldContainer[str]
    on_dependency_failure: str
    def __init__(self, queue: _Optional[str] = ..., job_type: _Optional[str] = ..., tenant: _Optional[str] = ..., run_id: _Optional[str] = ..., priority: _Optional[int] = ..., payload: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ..., delay_ms: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., concurrency_key: _Optional[str] = ..., concurrency_limit: _Optional[int] = ..., rate_key: _Optional[str] = ..., rate_limit: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., after: _Optional[_Iterable[str]] = ..., on_dependency_failure: _Optional[str] = ...) -> None: ...

class EnqueueRequest(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[NewJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[NewJob, _Mapping]]] = ...) -> None: ...

class EnqueuedJob(_message.Message):
    __slots__ = ("id", "duplicate")
    ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    id: int
    duplicate: bool
    def __init__(self, id: _Optional[int] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class EnqueueResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[EnqueuedJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[EnqueuedJob, _Mapping]]] = ...) -> None: ...

class EnqueueReply(_message.Message):
    __slots__ = ("ok", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: EnqueueResponse
    error: RequestError
    def __init__(self, ok: _Optional[_Union[EnqueueResponse, _Mapping]] = ..., error: _Optional[_Union[RequestError, _Mapping]] = ...) -> None: ...

class RequestError(_message.Message):
    __slots__ = ("code", "message", "retry_safe", "retry_after_ms")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRY_SAFE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    retry_safe: bool
    retry_after_ms: int
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., retry_safe: _Optional[bool] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id", "idempotency_key", "queue", "tenant")
    ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    id: int
    idempotency_key: str
    queue: str
    tenant: str
    def __init__(self, id: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., queue: _Optional[str] = ..., tenant: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: str
    def __init__(self, state: _Optional[str] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("at_ms", "what", "kind", "worker", "attempt", "error_class")
    AT_MS_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    at_ms: int
    what: str
    kind: str
    worker: str
    attempt: int
    error_class: str
    def __init__(self, at_ms: _Optional[int] = ..., what: _Optional[str] = ..., kind: _Optional[str] = ..., worker: _Optional[str] = ..., attempt: _Optional[int] = ..., error_class: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "queue", "job_type", "tenant", "run_id", "priority", "state", "attempts", "payload", "result", "last_error_class", "last_error", "enqueued_at_ms", "run_at_ms", "idempotency_key", "labels", "events", "worker_id", "waiting", "cost_usd", "usage", "lease_ms", "after")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ENQUEUED_AT_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_MS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    queue: str
    job_type: str
    tenant: str
    run_id: str
    priority: int
    state: str
    attempts: int
    payload: bytes
    result: bytes
    last_error_class: str
    last_error: str
    enqueued_at_ms: int
    run_at_ms: int
    idempotency_key: str
    labels: _containers.ScalarMap[str, str]
    events: _containers.RepeatedCompositeFieldContainer[JobEvent]
    worker_id: str
    waiting: str
    cost_usd: float
    usage: _containers.ScalarMap[str, int]
    lease_ms: int
    after: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[int] = ..., queue: _Optional[str] = ..., job_type: _Optional[str] = ..., tenant: _Optional[str] = ..., run_id: _Optional[str] = ..., priority: _Optional[int] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., payload: _Optional[bytes] = ..., result: _Optional[bytes] = ..., last_error_class: _Optional[str] = ..., last_error: _Optional[str] = ..., enqueued_at_ms: _Optional[int] = ..., run_at_ms: _Optional[int] = ..., idempotency_key: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., events: _Optional[_Iterable[_Union[JobEvent, _Mapping]]] = ..., worker_id: _Optional[str] = ..., waiting: _Optional[str] = ..., cost_usd: _Optional[float] = ..., usage: _Optional[_Mapping[str, int]] = ..., lease_ms: _Optional[int] = ..., after: _Optional[_Iterable[int]] = ...) -> None: ...

class WorkerMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "complete", "fail", "drain")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FAIL_FIELD_NUMBER: _ClassVar[int]
    DRAIN_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    complete: Complete
    fail: Fail
    drain: Drain
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., complete: _Optional[_Union[Complete, _Mapping]] = ..., fail: _Optional[_Union[Fail, _Mapping]] = ..., drain: _Optional[_Union[Drain, _Mapping]] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("worker_id", "queues", "capacity", "version", "protocol_version")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    queues: _containers.RepeatedScalarFieldContainer[str]
    capacity: int
    version: str
    protocol_version: int
    def __init__(self, worker_id: _Optional[str] = ..., queues: _Optional[_Iterable[str]] = ..., capacity: _Optional[int] = ..., version: _Optional[str] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class LeaseRef(_message.Message):
    __slots__ = ("job_id", "attempt", "progress", "progress_message")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    progress: float
    progress_message: str
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., progress: _Optional[float] = ..., progress_message: _Optional[str] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseRef]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseRef, _Mapping]]] = ...) -> None: ...

class Completion(_message.Message):
    __slots__ = ("job_id", "attempt", "result", "cost_usd", "usage")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    result: bytes
    cost_usd: float
    usage: _containers.ScalarMap[str, int]
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., result: _Optional[bytes] = ..., cost_usd: _Optional[float] = ..., usage: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Complete(_message.Message):
    __slots__ = ("completions",)
    COMPLETIONS_FIELD_NUMBER: _ClassVar[int]
    completions: _containers.RepeatedCompositeFieldContainer[Completion]
    def __init__(self, completions: _Optional[_Iterable[_Union[Completion, _Mapping]]] = ...) -> None: ...

class Failure(_message.Message):
    __slots__ = ("job_id", "attempt", "error_class", "message", "cost_usd", "usage")
    class UsageEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ERROR_CLASS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    error_class: str
    message: str
    cost_usd: float
    usage: _containers.ScalarMap[str, int]
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., error_class: _Optional[str] = ..., message: _Optional[str] = ..., cost_usd: _Optional[float] = ..., usage: _Optional[_Mapping[str, int]] = ...) -> None: ...

class Fail(_message.Message):
    __slots__ = ("failures",)
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    failures: _containers.RepeatedCompositeFieldContainer[Failure]
    def __init__(self, failures: _Optional[_Iterable[_Union[Failure, _Mapping]]] = ...) -> None: ...

class Drain(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("registered", "leases", "acks", "shutdown", "cancel")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    LEASES_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    SHUTDOWN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    leases: Leases
    acks: Acks
    shutdown: Shutdown
    cancel: Cancel
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., leases: _Optional[_Union[Leases, _Mapping]] = ..., acks: _Optional[_Union[Acks, _Mapping]] = ..., shutdown: _Optional[_Union[Shutdown, _Mapping]] = ..., cancel: _Optional[_Union[Cancel, _Mapping]] = ...) -> None: ...

class Cancel(_message.Message):
    __slots__ = ("job_id", "attempt", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    reason: str
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("heartbeat_interval_ms", "lease_timeout_ms", "node_id", "protocol_version")
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    heartbeat_interval_ms: int
    lease_timeout_ms: int
    node_id: int
    protocol_version: int
    def __init__(self, heartbeat_interval_ms: _Optional[int] = ..., lease_timeout_ms: _Optional[int] = ..., node_id: _Optional[int] = ..., protocol_version: _Optional[int] = ...) -> None: ...

class LeasedJob(_message.Message):
    __slots__ = ("job_id", "attempt", "queue", "job_type", "tenant", "run_id", "priority", "payload", "labels", "lease_deadline_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    JOB_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LEASE_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    queue: str
    job_type: str
    tenant: str
    run_id: str
    priority: int
    payload: bytes
    labels: _containers.ScalarMap[str, str]
    lease_deadline_ms: int
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., queue: _Optional[str] = ..., job_type: _Optional[str] = ..., tenant: _Optional[str] = ..., run_id: _Optional[str] = ..., priority: _Optional[int] = ..., payload: _Optional[bytes] = ..., labels: _Optional[_Mapping[str, str]] = ..., lease_deadline_ms: _Optional[int] = ...) -> None: ...

class Leases(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[LeasedJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[LeasedJob, _Mapping]]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("job_id", "attempt", "kind", "ok", "error", "transient")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSIENT_FIELD_NUMBER: _ClassVar[int]
    job_id: int
    attempt: int
    kind: AckKind
    ok: bool
    error: str
    transient: bool
    def __init__(self, job_id: _Optional[int] = ..., attempt: _Optional[int] = ..., kind: _Optional[_Union[AckKind, str]] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ..., transient: _Optional[bool] = ...) -> None: ...

class Acks(_message.Message):
    __slots__ = ("acks",)
    ACKS_FIELD_NUMBER: _ClassVar[int]
    acks: _containers.RepeatedCompositeFieldContainer[Ack]
    def __init__(self, acks: _Optional[_Iterable[_Union[Ack, _Mapping]]] = ...) -> None: ...

class Shutdown(_message.Message):
    __slots__ = ("reason", "reconnect")
    REASON_FIELD_NUMBER: _ClassVar[int]
    RECONNECT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    reconnect: bool
    def __init__(self, reason: _Optional[str] = ..., reconnect: _Optional[bool] = ...) -> None: ...

class WorkersRequest(_message.Message):
    __slots__ = ("header", "stop", "all")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    stop: str
    all: bool
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., stop: _Optional[str] = ..., all: _Optional[bool] = ...) -> None: ...

class WorkersResponse(_message.Message):
    __slots__ = ("json", "asked")
    JSON_FIELD_NUMBER: _ClassVar[int]
    ASKED_FIELD_NUMBER: _ClassVar[int]
    json: str
    asked: int
    def __init__(self, json: _Optional[str] = ..., asked: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("header", "message", "data")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    message: bytes
    data: bytes
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., message: _Optional[bytes] = ..., data: _Optional[bytes] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PeerHeader(_message.Message):
    __slots__ = ("cluster_id", "entry_version")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_FIELD_NUMBER: _ClassVar[int]
    ENTRY_VERSION_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    entry_version: int
    def __init__(self, cluster_id: _Optional[str] = ..., entry_version: _Optional[int] = ..., **kwargs) -> None: ...

class RaftBatch(_message.Message):
    __slots__ = ("header", "messages")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    messages: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., messages: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RaftAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("header", "command")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    command: bytes
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ..., command: _Optional[bytes] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("outcome", "index")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    outcome: bytes
    index: int
    def __init__(self, outcome: _Optional[bytes] = ..., index: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("header",)
    HEADER_FIELD_NUMBER: _ClassVar[int]
    header: PeerHeader
    def __init__(self, header: _Optional[_Union[PeerHeader, _Mapping]] = ...) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: str
    def __init__(self, json: _Optional[str] = ...) -> None: ...
