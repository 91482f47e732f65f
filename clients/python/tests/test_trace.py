"""Trace context from producer to worker: a job enqueued inside an
OpenTelemetry span carries its traceparent, and the worker's handler runs in
a span that is that span's child (one trace across both processes' spans)."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

import drover
from conftest import Node, wait_until

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tp = sdk_trace.TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(tp)


def test_the_handlers_span_is_a_child_of_the_producers(node: Node) -> None:
    p = drover.Producer(node.addr)
    with trace.get_tracer("test").start_as_current_span("produce") as produce:
        job_id = p.enqueue("traced", b"x")
        # Its own traceparent wins over the current span's.
        other = p.enqueue("traced", b"y", traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    plain = p.enqueue("traced", b"z")
    seen: List[Any] = []
    lock = threading.Lock()
    worker = drover.Worker(node.addr, queues=["traced"])

    @worker.handler("traced")
    def handle(job: drover.Job) -> bytes:
        with lock:
            seen.append((job.id, job.traceparent, trace.get_current_span().get_span_context()))
        return b"ok"

    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    wait_until("three jobs handled", lambda: len(seen) == 3)
    worker.stop()
    t.join(timeout=30)
    by_id = {s[0]: s for s in seen}
    ctx = produce.get_span_context()
    # The flags are the SDK's (sampled, perhaps random); the ids are the span's.
    assert by_id[job_id][1].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")
    assert by_id[job_id][2].trace_id == ctx.trace_id, "the handler ran in the producer's trace"
    assert by_id[other][1].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert by_id[other][2].trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert by_id[plain][1] == "" and not by_id[plain][2].is_valid, "no context, no span"
    spans = {s.context.span_id: s for s in EXPORTER.get_finished_spans()}
    handler = [s for s in spans.values() if s.name == "drover job default" and s.attributes.get("drover.job_id") == job_id]
    assert len(handler) == 1 and handler[0].parent is not None
    assert handler[0].parent.span_id == ctx.span_id, "a child of the producer's span"
    assert p.get(job_id).state == "succeeded"


def test_node_spans_share_the_jobs_trace(tmp_path: Any) -> None:
    """A collector (in this process) gets the node's enqueue, lease and
    completion spans of a job, in the trace of the producer's span, beside
    the worker's handler span."""
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    got: List[Any] = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    got.extend(ss.spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    node = Node(tmp_path, f'[tracing]\notlp_endpoint = "http://127.0.0.1:{port}"\n')
    try:
        p = drover.Producer(node.addr)
        with trace.get_tracer("test").start_as_current_span("produce") as produce:
            job_id = p.enqueue("spans", b"x", job_type="traced")
        untraced = p.enqueue("spans", b"y", job_type="traced")
        worker = drover.Worker(node.addr, queues=["spans"])

        @worker.handler("traced")
        def handle(job: drover.Job) -> bytes:
            return b"ok"

        t = threading.Thread(target=worker.run, daemon=True)
        t.start()
        wait_until("both jobs done", lambda: p.get(job_id).state == "succeeded" and p.get(untraced).state == "succeeded")
        ctx = produce.get_span_context()
        want = ctx.trace_id.to_bytes(16, "big")

        def node_spans() -> List[Any]:
            return [s for s in got if s.trace_id == want]

        wait_until("the node's three spans", lambda: {s.name for s in node_spans()} >= {"drover.enqueue", "drover.lease", "drover.complete"})
        worker.stop()
        t.join(timeout=30)
        spans = {s.name: s for s in node_spans()}
        for name in ("drover.enqueue", "drover.lease", "drover.complete"):
            s = spans[name]
            assert s.parent_span_id == ctx.span_id.to_bytes(8, "big"), f"{name} is a child of the producer's span"
            attrs = {a.key: a.value for a in s.attributes}
            assert attrs["drover.job_id"].int_value == job_id
        complete = {a.key: a.value for a in spans["drover.complete"].attributes}
        assert complete["drover.outcome"].string_value == "completed"
        # Only the traced job has spans; the worker's span is in the same trace.
        assert all(s.trace_id == want for s in got if s.name.startswith("drover."))
        handler = [s for s in EXPORTER.get_finished_spans() if s.name == "drover job traced" and s.context.trace_id == ctx.trace_id]
        assert len(handler) == 1 and handler[0].attributes.get("drover.job_id") == job_id
    finally:
        node.kill()
        server.stop(0)
