"""A worker: holds one Work stream to a node, runs a handler per leased job
(up to its concurrency), heartbeats every held lease, and reports results.

Jobs keep running across a reconnect: their heartbeats and results go out
on the next stream. A result the node could not log yet (no leader, the
node stopping) is sent again after a jittered backoff until it is
acknowledged or finally refused; sending it twice is safe, the node fences
by (job, attempt)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib
import inspect
import logging
import os
import queue
import signal
import socket
import threading
import time
from typing import Any, Awaitable, Callable, ContextManager, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from ._wire import PROTOCOL_VERSION, Nodes, Servers, backoff, error_of, pb
from .errors import JobError

log = logging.getLogger("drover.worker")

_WORK = "/drover.v1.WorkerService/Work"
#: How long a stopped worker with nothing held waits for its node to close
#: the stream.
STOP_WAIT = 5.0
#: Refusals no reconnect can fix: `run` raises them.
_FINAL = ("unauthenticated", "permission_denied", "invalid_argument")
_PING = "/drover.v1.ProducerService/Ping"

Result = Union[bytes, str, None]
Handler = Callable[["Job"], Union[Result, Awaitable[Result]]]
Lease = Tuple[int, int]


def _job_span(job: "Job") -> ContextManager[Any]:
    """An OpenTelemetry span for the handler, a child of the job's trace
    context; nothing when opentelemetry is not installed or the job has no
    trace context."""
    if not job.traceparent:
        return contextlib.nullcontext()
    try:
        trace = importlib.import_module("opentelemetry.trace")
        propagate = importlib.import_module("opentelemetry.propagate")
    except ImportError:
        return contextlib.nullcontext()
    parent = propagate.extract({"traceparent": job.traceparent})
    span: ContextManager[Any] = trace.get_tracer("drover.worker").start_as_current_span(
        f"drover job {job.job_type}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={
            "drover.job_id": job.id,
            "drover.attempt": job.attempt,
            "drover.queue": job.queue,
            "drover.tenant": job.tenant,
        },
    )
    return span


class Job:
    """A leased job, as a handler gets it."""

    def __init__(self, leased: pb.LeasedJob, worker: "Worker") -> None:
        self.id: int = leased.job_id
        self.attempt: int = leased.attempt
        self.queue: str = leased.queue
        self.job_type: str = leased.job_type
        self.tenant: str = leased.tenant
        self.run_id: str = leased.run_id
        self.priority: int = leased.priority
        self.payload: bytes = leased.payload
        self.labels: Dict[str, str] = dict(leased.labels)
        #: The W3C trace context the job was enqueued in ("" if none): the
        #: handler runs in an OpenTelemetry span that is its child, when
        #: opentelemetry is installed.
        self.traceparent: str = leased.traceparent
        #: Set when the node took the lease back (timeout, expiry, an
        #: operator): a result is refused; a long handler should check it.
        self.cancelled = threading.Event()
        self._worker = worker
        self.progress: float = 0.0
        self.progress_message: str = ""
        self.cost_usd: float = 0.0
        self.usage: Dict[str, int] = {}

    def heartbeat(self, progress: Optional[float] = None, message: str = "") -> None:
        """Reports progress (a fraction in [0, 1] and a short message) with
        the next heartbeat, which goes out now. Heartbeats are automatic:
        call this only to report progress."""
        if progress is not None:
            self.progress = min(max(float(progress), 0.0), 1.0)
        if message:
            self.progress_message = message
        self._worker._beat_now.set()

    def report_usage(self, cost_usd: float = 0.0, **usage: int) -> None:
        """What this attempt used: cost in USD and named amounts
        (``tokens_in=1200``), counted against the run's budgets."""
        self.cost_usd += cost_usd
        for k, v in usage.items():
            self.usage[k] = self.usage.get(k, 0) + int(v)


@dataclasses.dataclass
class _Done:
    job_id: int
    attempt: int
    result: bytes = b""
    error_class: str = ""
    message: str = ""
    cost_usd: float = 0.0
    usage: Dict[str, int] = dataclasses.field(default_factory=dict)

    def message_proto(self) -> pb.WorkerMessage:
        if self.error_class:
            f = pb.Failure(
                job_id=self.job_id,
                attempt=self.attempt,
                error_class=self.error_class,
                message=self.message,
                cost_usd=self.cost_usd,
                usage=self.usage,
            )
            return pb.WorkerMessage(fail=pb.Fail(failures=[f]))
        c = pb.Completion(
            job_id=self.job_id,
            attempt=self.attempt,
            result=self.result,
            cost_usd=self.cost_usd,
            usage=self.usage,
        )
        return pb.WorkerMessage(complete=pb.Complete(completions=[c]))


class _NodeLeaving(Exception):
    """The node asked this worker to move to another."""


class Worker:
    """Runs handlers for the jobs of ``queues``, ``concurrency`` at once.

    >>> worker = Worker("127.0.0.1:7070", queues=["emails"], concurrency=4)
    >>> @worker.handler("emails")
    ... def send(job):
    ...     return b"sent"
    >>> worker.run()  # doctest: +SKIP

    A handler gets a :class:`Job` and returns the result (bytes, str or
    None), or raises :class:`JobError` to fail it with an error class (any
    other exception fails it with the exception's type name). ``async def``
    handlers run on an event loop of the worker's own. Handlers are chosen
    by the job's type, then its queue, then ``"*"``."""

    def __init__(
        self,
        servers: Optional[Servers],
        queues: Sequence[str],
        concurrency: int = 1,
        *,
        worker_id: Optional[str] = None,
        version: str = "",
        token: Optional[str] = None,
        stop_timeout: float = 30.0,
        compression: bool = False,
        root_certificates: Optional[bytes] = None,
    ) -> None:
        if not queues:
            raise ValueError("name at least one queue to serve")
        if concurrency < 1:
            raise ValueError("concurrency must be 1 or more")
        self.queues = list(queues)
        self.concurrency = concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.version = version
        self.stop_timeout = stop_timeout
        self._nodes = Nodes(servers, token, compression, root_certificates)
        self._handlers: Dict[str, Handler] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._lock = threading.Lock()
        self._held: Dict[Lease, Job] = {}
        self._unacked: Dict[Lease, _Done] = {}
        # SimpleQueue: its put is reentrant, so stop() may run in a signal
        # handler that interrupted a put.
        self._out: Optional["queue.SimpleQueue[Optional[pb.WorkerMessage]]"] = None
        self._stop = threading.Event()
        self._stop_began: Optional[float] = None
        self._beat_now = threading.Event()
        #: Jobs run and results the node took, since start.
        self.completed = 0
        self.failed = 0

    def handler(self, name: str) -> Callable[[Handler], Handler]:
        """Registers the decorated function for jobs of this type or queue."""

        def register(fn: Handler) -> Handler:
            self._handlers[name] = fn
            return fn

        return register

    def stop(self) -> None:
        """Stops taking jobs, lets held ones finish and report, then
        ``run`` returns. Safe from any thread and from a signal handler."""
        self._stop.set()
        self._beat_now.set()
        out = self._out
        if out is not None:
            out.put(pb.WorkerMessage(drain=pb.Drain()))

    async def run_async(self) -> None:
        """:meth:`run` for an asyncio program: works on a thread of its own
        until :meth:`stop`, without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.run)

    # -- the run loop ---------------------------------------------------

    def run(self) -> None:
        """Works until :meth:`stop`, SIGTERM (from the main thread) or an
        operator's ``drover workers shutdown``."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, self._interrupted)
        beats = threading.Thread(target=self._heartbeats, name="drover-heartbeats", daemon=True)
        beats.start()
        failures = 0
        try:
            while True:
                if self._finished():
                    return
                try:
                    registered = self._session()
                    if registered:
                        failures = 0
                    if self._finished():
                        return
                except _NodeLeaving:
                    failures = 0
                    continue
                except grpc.RpcError as e:
                    if self._finished():
                        return
                    err = error_of(e)
                    if err.code in _FINAL:
                        # Another node would say the same: a wrong token,
                        # role or registration is the caller's to fix.
                        raise err from None
                    log.warning("worker stream lost (%s); reconnecting", err)
                    index, _ = self._nodes.channel()
                    self._nodes.move_on(index)
                if self._stop_began is not None and time.monotonic() - self._stop_began > self.stop_timeout:
                    log.error("stopping worker reached no node in time; its unreported jobs run again after their leases")
                    return
                time.sleep(backoff(failures, base=0.1, cap=5.0))
                failures += 1
        finally:
            self._stop.set()
            self._beat_now.set()
            self._pool.shutdown(wait=False)
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
            self._nodes.close()

    def _interrupted(self, signum: int, frame: object) -> None:
        """Ctrl-C drains as SIGTERM does: held jobs finish and report (a
        result already computed is not lost); a second Ctrl-C quits now."""
        if self._stop.is_set():
            raise KeyboardInterrupt
        log.warning("interrupted: finishing and reporting the jobs held (ctrl-c again to quit now)")
        self.stop()

    def _finished(self) -> bool:
        if not self._stop.is_set():
            return False
        if self._stop_began is None:
            self._stop_began = time.monotonic()
        with self._lock:
            return not self._held and not self._unacked

    def _session(self) -> bool:
        """One Work stream; returns whether it registered."""
        # Leases and results go to the leader anyway: connect there.
        try:
            self._nodes.call(_PING, pb.PingRequest(), pb.PingResponse, timeout=5, attempts=1)
        except Exception:  # the stream below says what is wrong
            pass
        index, channel = self._nodes.channel()
        out: "queue.SimpleQueue[Optional[pb.WorkerMessage]]" = queue.SimpleQueue()
        out.put(
            pb.WorkerMessage(
                register=pb.Register(
                    worker_id=self.worker_id,
                    queues=self.queues,
                    capacity=self.concurrency,
                    version=self.version,
                    protocol_version=PROTOCOL_VERSION,
                )
            )
        )
        if self._stop.is_set():
            out.put(pb.WorkerMessage(drain=pb.Drain()))

        def requests() -> Iterator[pb.WorkerMessage]:
            while True:
                m = out.get()
                if m is None:
                    return
                yield m

        work = channel.stream_stream(
            _WORK,
            request_serializer=pb.WorkerMessage.SerializeToString,
            response_deserializer=pb.ServerMessage.FromString,
        )
        call = work(requests(), metadata=self._nodes.metadata)
        registered = False
        closing: Optional[threading.Timer] = None
        try:
            for m in call:
                kind = m.WhichOneof("msg")
                if kind == "registered":
                    registered = True
                    self._interval = max(m.registered.heartbeat_interval_ms, 10) / 1000
                    with self._lock:
                        self._out = out
                        pending = list(self._unacked.values())
                    for d in pending:
                        out.put(d.message_proto())
                    log.info("worker %s registered with node %d", self.worker_id, m.registered.node_id)
                elif kind == "leases":
                    for leased in m.leases.jobs:
                        self._start(leased)
                elif kind == "acks":
                    for ack in m.acks.acks:
                        self._on_ack(ack)
                elif kind == "cancel":
                    self._cancel((m.cancel.job_id, m.cancel.attempt), m.cancel.reason)
                elif kind == "shutdown":
                    out.put(pb.WorkerMessage(drain=pb.Drain()))
                    if m.shutdown.reconnect:
                        log.info("the node is shutting down (%s); moving to another", m.shutdown.reason)
                        self._nodes.move_on(index)
                        raise _NodeLeaving()
                    log.info("asked to stop: %s", m.shutdown.reason)
                    self._stop.set()
                if closing is None and self._finished():
                    # The node closes a drained stream once every lease it
                    # sent is reported (one may still be on its way, and is
                    # run); a node that does not is left after a while.
                    closing = threading.Timer(STOP_WAIT, call.cancel)
                    closing.daemon = True
                    closing.start()
        finally:
            if closing is not None:
                closing.cancel()
            with self._lock:
                if self._out is out:
                    self._out = None
            out.put(None)
            call.cancel()
        return registered

    # -- jobs -------------------------------------------------------------

    def _start(self, leased: pb.LeasedJob) -> None:
        lease = (leased.job_id, leased.attempt)
        with self._lock:
            if lease in self._held or lease in self._unacked:
                return  # a reclaim names leases this worker knows
            job = Job(leased, self)
            self._held[lease] = job
        fn = self._handlers.get(job.job_type) or self._handlers.get(job.queue) or self._handlers.get("*")
        if fn is None:
            self._finish(job, error=JobError("no_handler", f"this worker has no handler for type {job.job_type!r} or queue {job.queue!r}"))
            return
        if inspect.iscoroutinefunction(fn):
            loop = self._event_loop()
            afn = fn

            async def traced() -> Any:
                with _job_span(job):
                    return await afn(job)

            fut = asyncio.run_coroutine_threadsafe(traced(), loop)
            fut.add_done_callback(lambda f: self._done(job, f))
        else:
            sfn = fn

            def run() -> Any:
                with _job_span(job):
                    return sfn(job)

            self._pool.submit(run).add_done_callback(lambda f: self._done(job, f))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="drover-async", daemon=True).start()
                self._loop = loop
            return self._loop

    def _done(self, job: Job, fut: "concurrent.futures.Future[Any]") -> None:
        try:
            value = fut.result()
        except JobError as e:
            job.cost_usd += e.cost_usd
            self._finish(job, error=e)
            return
        except BaseException as e:  # a handler's bug fails its job, not the worker
            log.error(
                "the handler of job %d (attempt %d) raised %s; the job fails with error class %r",
                job.id,
                job.attempt,
                type(e).__name__,
                type(e).__name__,
                exc_info=e,
            )
            self._finish(job, error=JobError(type(e).__name__, str(e)))
            return
        if isinstance(value, str):
            value = value.encode()
        self._finish(job, result=value or b"")

    def _finish(self, job: Job, result: bytes = b"", error: Optional[JobError] = None) -> None:
        lease = (job.id, job.attempt)
        done = _Done(job.id, job.attempt, result, cost_usd=job.cost_usd, usage=dict(job.usage))
        if error is not None:
            done.error_class, done.message = error.error_class, error.message
        with self._lock:
            self._held.pop(lease, None)
            if job.cancelled.is_set():
                return  # the lease is gone: the node refuses a result
            self._unacked[lease] = done
            out = self._out
        if out is not None:
            out.put(done.message_proto())

    def _on_ack(self, ack: pb.Ack) -> None:
        lease = (ack.job_id, ack.attempt)
        if ack.kind == pb.ACK_KIND_HEARTBEAT:
            if not ack.ok:
                self._cancel(lease, ack.error)
            return
        with self._lock:
            done = self._unacked.get(lease)
            if done is None:
                return
            if ack.ok or not ack.transient:
                del self._unacked[lease]
                if ack.ok and ack.kind == pb.ACK_KIND_COMPLETE:
                    self.completed += 1
                elif ack.ok:
                    self.failed += 1
        if not ack.ok and not ack.transient:
            log.warning("the node refused the result of job %d attempt %d: %s", ack.job_id, ack.attempt, ack.error)
        elif not ack.ok:
            # Not logged yet (an election, the node stopping): again soon.
            threading.Timer(backoff(1, base=0.1), self._resend, args=(lease,)).start()

    def _resend(self, lease: Lease) -> None:
        with self._lock:
            done = self._unacked.get(lease)
            out = self._out
        if done is not None and out is not None:
            out.put(done.message_proto())

    def _cancel(self, lease: Lease, reason: str) -> None:
        with self._lock:
            job = self._held.pop(lease, None)
        if job is not None:
            job.cancelled.set()
            log.warning("job %d attempt %d was taken back: %s", lease[0], lease[1], reason)

    def _heartbeats(self) -> None:
        self._interval = 1.0
        while True:
            self._beat_now.wait(self._interval)
            self._beat_now.clear()
            with self._lock:
                jobs = list(self._held.values())
                out = self._out
            if out is not None:
                # Sent when idle too (no leases): the node sees the worker
                # is alive.
                refs = [
                    pb.LeaseRef(job_id=j.id, attempt=j.attempt, progress=j.progress, progress_message=j.progress_message)
                    for j in jobs
                ]
                out.put(pb.WorkerMessage(heartbeat=pb.Heartbeat(leases=refs)))
            if self._stop.is_set() and self._finished() and out is None:
                return


__all__ = ["Worker", "Job"]
