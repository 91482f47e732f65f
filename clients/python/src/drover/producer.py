"""Enqueue, read and cancel jobs."""

from __future__ import annotations

import dataclasses
import importlib
import queue
import threading
import weakref
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import grpc

from ._wire import Nodes, Servers, backoff, error_of, pb
from .errors import DroverError

_P = "/drover.v1.ProducerService/"

#: gRPC status codes by number, as the node's errors name them.
_CODE_NAMES: Dict[int, str] = {c.value[0]: c.name.lower() for c in grpc.StatusCode}


def current_traceparent() -> str:
    """The active OpenTelemetry span's context as a W3C traceparent, or ""
    (no opentelemetry installed, or no span active)."""
    try:
        propagate = importlib.import_module("opentelemetry.propagate")
    except ImportError:
        return ""
    carrier: Dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


@dataclasses.dataclass
class NewJob:
    """A job to enqueue. Unset fields take the node's defaults."""

    queue: str
    payload: bytes = b""
    job_type: str = ""
    tenant: str = ""
    run_id: str = ""
    #: 1 (highest) to 5; 0 is the default, 3.
    priority: int = 0
    idempotency_key: str = ""
    #: Seconds before it becomes ready.
    delay: float = 0.0
    labels: Dict[str, str] = dataclasses.field(default_factory=dict)
    concurrency_key: str = ""
    concurrency_limit: int = 0
    rate_key: str = ""
    rate_limit: str = ""
    #: Seconds a lease may run; 0: the job type's or queue's timeout.
    timeout: float = 0.0
    #: Ids of jobs (of the same tenant) it runs after, or "@N" for the Nth
    #: job of the same batch.
    after: Sequence[str] = ()
    #: The W3C trace context to enqueue it in
    #: (``00-<trace id>-<parent id>-<flags>``); empty: the current
    #: OpenTelemetry span's, when opentelemetry is installed and one is active.
    traceparent: str = ""

    def to_proto(self) -> pb.NewJob:
        return pb.NewJob(
            queue=self.queue,
            payload=self.payload,
            job_type=self.job_type,
            tenant=self.tenant,
            run_id=self.run_id,
            priority=self.priority,
            idempotency_key=self.idempotency_key,
            delay_ms=int(self.delay * 1000),
            labels=self.labels,
            concurrency_key=self.concurrency_key,
            concurrency_limit=self.concurrency_limit,
            rate_key=self.rate_key,
            rate_limit=self.rate_limit,
            timeout_ms=int(self.timeout * 1000),
            after=list(self.after),
            traceparent=self.traceparent or current_traceparent(),
        )


@dataclasses.dataclass(frozen=True)
class Enqueued:
    id: int
    #: The idempotency key named a job that existed: `id` is that job's.
    duplicate: bool


@dataclasses.dataclass(frozen=True)
class JobEvent:
    at_ms: int
    kind: str
    what: str
    worker: str
    attempt: int
    error_class: str


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """A job as the node reads it back."""

    id: int
    queue: str
    job_type: str
    tenant: str
    run_id: str
    priority: int
    #: scheduled, ready, waiting, leased, succeeded, dead or cancelled.
    state: str
    attempts: int
    payload: bytes
    result: bytes
    last_error_class: str
    last_error: str
    idempotency_key: str
    labels: Dict[str, str]
    cost_usd: float
    events: List[JobEvent]

    @staticmethod
    def from_proto(j: pb.Job) -> "JobInfo":
        return JobInfo(
            id=j.id,
            queue=j.queue,
            job_type=j.job_type,
            tenant=j.tenant,
            run_id=j.run_id,
            priority=j.priority,
            state=j.state,
            attempts=j.attempts,
            payload=j.payload,
            result=j.result,
            last_error_class=j.last_error_class,
            last_error=j.last_error,
            idempotency_key=j.idempotency_key,
            labels=dict(j.labels),
            cost_usd=j.cost_usd,
            events=[
                JobEvent(e.at_ms, e.kind, e.what, e.worker, e.attempt, e.error_class)
                for e in j.events
            ],
        )


class Producer:
    """Enqueues, reads and cancels jobs on a drover cluster.

    ``servers`` is one node ("127.0.0.1:7070") or several (a list, or comma
    separated): calls go to one and move to another when that is safe (no
    leader yet, a node down or stopping), and to the leader when a follower
    names it. ``token`` is a bearer token of role producer (or above)."""

    def __init__(
        self,
        servers: Optional[Servers] = None,
        token: Optional[str] = None,
        timeout: float = 30.0,
        compression: bool = False,
        root_certificates: Optional[bytes] = None,
    ) -> None:
        self._nodes = Nodes(servers, token, compression, root_certificates)
        self._timeout = timeout
        # enqueue and enqueue_many send on one EnqueueStream, far cheaper
        # per job for the node than a call each; a second thread that finds
        # it busy makes a call of its own rather than wait.
        # The stream sits in a one-slot holder a finalizer shares, so a
        # producer dropped without close() still ends its stream and threads.
        self._stream_slot: List[Optional[_EnqueueStream]] = [None]
        self._stream_lock = threading.Lock()
        weakref.finalize(self, _close_slot, self._stream_slot)

    def close(self) -> None:
        # Not behind the stream's lock: a send waiting on it ends with an
        # error instead of holding close() up.
        _close_slot(self._stream_slot)
        self._nodes.close()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def enqueue(
        self,
        queue: str,
        payload: bytes = b"",
        *,
        job_type: str = "",
        tenant: str = "",
        run_id: str = "",
        priority: int = 0,
        idempotency_key: str = "",
        delay: float = 0.0,
        labels: Optional[Dict[str, str]] = None,
        timeout: float = 0.0,
        after: Sequence[str] = (),
        traceparent: str = "",
    ) -> int:
        """Enqueues one job once it is durable; returns its id."""
        job = NewJob(
            queue=queue,
            payload=payload,
            job_type=job_type,
            tenant=tenant,
            run_id=run_id,
            priority=priority,
            idempotency_key=idempotency_key,
            delay=delay,
            labels=dict(labels or {}),
            timeout=timeout,
            after=after,
            traceparent=traceparent,
        )
        return self.enqueue_many([job])[0].id

    def enqueue_many(self, jobs: Sequence[NewJob]) -> List[Enqueued]:
        """Enqueues a batch at once, all or none; ids in order. It goes as
        one message on the producer's enqueue stream; when that stream
        cannot take it safely (no node reachable yet, a node stopping, no
        leader) it goes as a call of its own, which moves between nodes and
        retries as every call does."""
        request = pb.EnqueueRequest(jobs=[j.to_proto() for j in jobs])
        if self._stream_lock.acquire(blocking=False):
            try:
                reply = self._on_stream(request)
            finally:
                self._stream_lock.release()
            if reply is not None:
                return [Enqueued(e.id, e.duplicate) for e in reply.jobs]
        response = self._nodes.call(_P + "Enqueue", request, pb.EnqueueResponse, self._timeout)
        assert isinstance(response, pb.EnqueueResponse)
        return [Enqueued(e.id, e.duplicate) for e in response.jobs]

    def _on_stream(self, request: pb.EnqueueRequest) -> Optional[pb.EnqueueResponse]:
        """Sends `request` on the stream (opened if there is none) and
        answers its reply; None when it is safe to send it as a call instead
        (the stream is dropped then). Raises what is not safe to retry: the
        node refused the jobs, or the stream broke after they were sent."""
        stream = self._stream_slot[0]
        if stream is not None and stream.ended():
            _close_slot(self._stream_slot)
            stream = None
        if stream is None:
            stream = self._stream_slot[0] = _EnqueueStream(self._nodes)
        try:
            reply = stream.send(request, self._timeout)
        except DroverError as e:
            if e.retry_safe or not stream.usable():
                _close_slot(self._stream_slot)
            if e.retry_safe:
                return None
            raise
        if stream.leader_elsewhere():
            # A follower answered (it forwards): the next stream goes to
            # the leader it names, as calls do.
            _close_slot(self._stream_slot)
        return reply

    def enqueue_stream(self, jobs: Iterable[NewJob], batch: int = 100) -> Iterator[Enqueued]:
        """Enqueues many jobs over one stream (far cheaper per job than a
        call each), `batch` jobs per message; yields each job's outcome in
        order. A refused message raises its error; what was yielded before
        is enqueued."""
        requests: "queue.Queue[Optional[pb.EnqueueRequest]]" = queue.Queue(maxsize=16)
        failure: List[BaseException] = []
        done = threading.Event()

        def put(r: Optional[pb.EnqueueRequest]) -> bool:
            # Gives up once the caller stopped reading the outcomes.
            while not done.is_set():
                try:
                    requests.put(r, timeout=0.2)
                    return True
                except queue.Full:
                    continue
            return False

        def feed() -> None:
            chunk: List[pb.NewJob] = []
            try:
                for j in jobs:
                    chunk.append(j.to_proto())
                    if len(chunk) >= batch:
                        if not put(pb.EnqueueRequest(jobs=chunk)):
                            return
                        chunk = []
                if chunk:
                    put(pb.EnqueueRequest(jobs=chunk))
            except BaseException as e:  # the caller's iterator failed
                failure.append(e)
            finally:
                put(None)

        def request_iter() -> Iterator[pb.EnqueueRequest]:
            while True:
                r = requests.get()
                if r is None:
                    return
                yield r

        threading.Thread(target=feed, daemon=True).start()
        index, channel = self._nodes.channel()
        stream = channel.stream_stream(
            _P + "EnqueueStream",
            request_serializer=pb.EnqueueRequest.SerializeToString,
            response_deserializer=pb.EnqueueReply.FromString,
        )
        call = stream(request_iter(), metadata=self._nodes.metadata)
        # A refused message does not stop the others (each is answered on
        # its own): read every reply, then say which were refused.
        refused: List[DroverError] = []
        replies = 0
        try:
            for reply in call:
                replies += 1
                if reply.HasField("error"):
                    e = reply.error
                    refused.append(
                        DroverError(_CODE_NAMES.get(e.code, "unknown"), e.message, e.retry_safe, e.retry_after_ms)
                    )
                    continue
                for j in reply.ok.jobs:
                    yield Enqueued(j.id, j.duplicate)
        except grpc.RpcError as e:
            err = error_of(e)
            if err.retry_safe:
                self._nodes.move_on(index)
            raise err from None
        finally:
            done.set()
            call.cancel()
        if failure:
            raise failure[0]
        if refused:
            first = refused[0]
            raise DroverError(
                first.code,
                f"{len(refused)} of {replies} messages were refused (the first: {first.message}); "
                "the jobs of the others were enqueued and yielded",
                first.retry_safe,
                first.retry_after_ms,
            )

    def get(self, job_id: int) -> JobInfo:
        """A job with its payload, result and timeline."""
        response = self._nodes.call(_P + "GetJob", pb.GetJobRequest(id=job_id), pb.Job, self._timeout)
        assert isinstance(response, pb.Job)
        return JobInfo.from_proto(response)

    def get_by_key(self, queue: str, idempotency_key: str, tenant: str = "") -> Optional[JobInfo]:
        """The job an idempotency key names in ``queue`` for ``tenant``, or
        None if none does (any more: keys are kept for
        ``jobs.idempotency_ttl``)."""
        try:
            response = self._nodes.call(
                _P + "GetJob",
                pb.GetJobRequest(idempotency_key=idempotency_key, queue=queue, tenant=tenant),
                pb.Job,
                self._timeout,
            )
        except DroverError as e:
            if e.code == "not_found":
                return None
            raise
        assert isinstance(response, pb.Job)
        return JobInfo.from_proto(response)

    def cancel(self, job_id: int) -> str:
        """Cancels a job that has not finished; returns the state it was in."""
        response = self._nodes.call(_P + "Cancel", pb.CancelRequest(id=job_id), pb.CancelResponse, self._timeout)
        assert isinstance(response, pb.CancelResponse)
        return str(response.state)


class _Refused(Exception):
    """The node answered a message with an error: the stream stays usable."""

    def __init__(self, error: DroverError) -> None:
        super().__init__(str(error))
        self.error = error


def _close_slot(slot: List[Optional["_EnqueueStream"]]) -> None:
    stream, slot[0] = slot[0], None
    if stream is not None:
        stream.close()


class _EnqueueStream:
    """One EnqueueStream held open: a message at a time, each answered in
    order. A thread reads the replies so a send can wait with a timeout."""

    _END = object()

    def __init__(self, nodes: Nodes) -> None:
        self._nodes = nodes
        self._index, channel = nodes.channel()
        self._requests: "queue.Queue[object]" = queue.Queue()
        self._replies: "queue.Queue[object]" = queue.Queue()
        self._broken = False
        self._hint_checked = False
        method = channel.stream_stream(
            _P + "EnqueueStream",
            request_serializer=pb.EnqueueRequest.SerializeToString,
            response_deserializer=pb.EnqueueReply.FromString,
        )
        self._call = method(iter(self._requests.get, _EnqueueStream._END), metadata=nodes.metadata)
        threading.Thread(target=self._read, name="drover-enqueue-stream", daemon=True).start()

    def _read(self) -> None:
        try:
            for reply in self._call:
                self._replies.put(reply)
            self._replies.put(None)
        except grpc.RpcError as e:
            self._replies.put(e)

    def ended(self) -> bool:
        """The node ended the stream (or the connection broke) while it was
        idle: the next message needs a new one."""
        return self._broken or not self._replies.empty() or self._call.done()

    def usable(self) -> bool:
        return not self._broken

    def leader_elsewhere(self) -> bool:
        """Whether the node that answered named another as the leader; if
        so the producer's calls move there (the stream is closed after)."""
        if self._hint_checked:
            return False
        self._hint_checked = True
        try:
            metadata = self._call.initial_metadata()
        except grpc.RpcError:
            return False
        before = self._nodes.channel()[0]
        self._nodes.follow_hint(self._index, metadata)
        return self._nodes.channel()[0] != before

    def send(self, request: pb.EnqueueRequest, timeout: float) -> pb.EnqueueResponse:
        # Whatever interrupts the wait (a timeout, Ctrl-C) leaves a reply
        # owed on this stream: it is closed, so no later send takes that
        # reply for its own.
        try:
            return self._exchange(request, timeout)
        except _Refused as r:
            raise r.error from None
        except BaseException:
            self.close()
            raise

    def _exchange(self, request: pb.EnqueueRequest, timeout: float) -> pb.EnqueueResponse:
        self._requests.put(request)
        try:
            got = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise DroverError(
                "deadline_exceeded",
                f"no answer on the enqueue stream within {timeout:g} s; the jobs may or may not "
                "have been enqueued (enqueue with idempotency keys to send them again safely)",
                False,
                0,
            ) from None
        if isinstance(got, pb.EnqueueReply):
            if got.HasField("error"):
                # The node refused this message; the stream goes on.
                e = got.error
                err = DroverError(_CODE_NAMES.get(e.code, "unknown"), e.message, e.retry_safe, e.retry_after_ms)
                raise _Refused(err)
            return pb.EnqueueResponse(jobs=got.ok.jobs)
        if got is None:
            raise DroverError(
                "unavailable",
                "the node ended the enqueue stream before answering; the jobs may or may not have "
                "been enqueued (enqueue with idempotency keys to send them again safely)",
                False,
                0,
            )
        assert isinstance(got, grpc.RpcError)
        # A retry-safe end (the node stopping, or never reached) sends the
        # request as a call, which moves to another node itself.
        raise error_of(got)

    def close(self) -> None:
        self._broken = True
        self._requests.put(_EnqueueStream._END)
        self._call.cancel()


__all__ = ["Producer", "NewJob", "Enqueued", "JobInfo", "JobEvent", "backoff"]
