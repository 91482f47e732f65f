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
