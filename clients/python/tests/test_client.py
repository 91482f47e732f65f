"""The Python client against a real node: producers, workers (threads and
asyncio), error classes, progress and cost, a killed worker, a restarted
node."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

import drover
from conftest import Node, wait_until


def run_in_thread(worker: drover.Worker) -> threading.Thread:
    t = threading.Thread(target=worker.run, daemon=True)
    t.start()
    return t


def test_enqueue_get_cancel_and_keys(node: Node) -> None:
    with drover.Producer(node.addr) as p:
        job_id = p.enqueue("emails", b"hello", priority=2, tenant="acme", idempotency_key="k1")
        job = p.get(job_id)
        assert (job.state, job.payload, job.priority, job.tenant) == ("ready", b"hello", 2, "acme")
        again = p.enqueue_many([drover.NewJob("emails", b"other", tenant="acme", idempotency_key="k1")])
        assert again == [drover.Enqueued(job_id, True)]
        by_key = p.get_by_key("emails", "k1", tenant="acme")
        assert by_key is not None and by_key.id == job_id
        assert p.get_by_key("emails", "nope", tenant="acme") is None
        assert p.cancel(job_id) == "ready"
        assert p.get(job_id).state == "cancelled"
        with pytest.raises(drover.DroverError) as bad:
            p.enqueue("bad queue name!", b"")
        assert bad.value.code == "invalid_argument"
        with pytest.raises(drover.DroverError) as missing:
            p.get(999_999)
        assert missing.value.code == "not_found"


def test_enqueue_stream_keeps_order(node: Node) -> None:
    with drover.Producer([node.addr]) as p:
        jobs = (drover.NewJob("bulk", f"{i}".encode()) for i in range(500))
        out = list(p.enqueue_stream(jobs, batch=64))
        assert len(out) == 500 and len({e.id for e in out}) == 500
        assert p.get(out[123].id).payload == b"123"


def grpc_requests(node: Node, method: str) -> int:
    """drover_grpc_requests_total of `method` (any status) on the node."""
    import urllib.request

    text = urllib.request.urlopen(f"{node.http}/metrics", timeout=10).read().decode()
    total = 0
    for line in text.splitlines():
        if line.startswith("drover_grpc_requests_total{") and f'method="/drover.v1.ProducerService/{method}"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def test_enqueue_goes_on_one_stream_and_survives_refusals_and_restarts(node: Node) -> None:
    with drover.Producer(node.addr) as p:
        ids = [p.enqueue("streamed", f"{i}".encode()) for i in range(30)]
        assert len(set(ids)) == 30 and ids == sorted(ids)
        # A refused message raises the node's words and leaves the stream usable.
        with pytest.raises(drover.DroverError) as bad:
            p.enqueue("bad queue name!", b"")
        assert bad.value.code == "invalid_argument" and "queue" in bad.value.message
        ids += [e.id for e in p.enqueue_many([drover.NewJob("streamed", b"x")] * 3)]
        assert p.get(ids[-1]).payload == b"x"
        # One stream carried all of it; no call was made.
        assert grpc_requests(node, "Enqueue") == 0
        # The node restarts while the stream is idle: the next enqueue opens
        # a new stream (the old one ended) and nothing is sent twice.
        assert node.stop() == 0
        node.start()
        after = p.enqueue("streamed", b"after")
        assert p.get(after).payload == b"after" and after > ids[-1]
        assert grpc_requests(node, "Enqueue") == 0
        # Threads share the producer: one sends on the stream, the others
        # make calls of their own instead of waiting for it.
        out: "list[int]" = []
        lock = threading.Lock()

        def send(n: int) -> None:
            for i in range(n):
                got = p.enqueue("streamed", b"t")
                with lock:
                    out.append(got)

        threads = [threading.Thread(target=send, args=(20,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(set(out)) == 80


def test_an_interrupted_send_never_hands_its_reply_to_the_next(node: Node) -> None:
    p = drover.Producer(node.addr, timeout=1e-6)
    with pytest.raises(drover.DroverError) as late:
        p.enqueue("owed", b"first")
    assert late.value.code == "deadline_exceeded" and "may or may not" in late.value.message
    p._timeout = 30.0
    second = p.enqueue("owed", b"second")
    assert p.get(second).payload == b"second"
    # A producer dropped without close() ends its stream's threads.
    import gc

    def stream_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "drover-enqueue-stream")

    assert stream_threads() >= 1
    del p, late  # (the exception's traceback holds the producer too)
    gc.collect()
    wait_until("the stream's thread to end", lambda: stream_threads() == 0)


def test_enqueue_falls_back_to_a_call_when_the_node_is_down_at_first(tmp_path: pathlib.Path) -> None:
    node = Node(tmp_path)
    try:
        assert node.stop() == 0
        p = drover.Producer(node.addr, timeout=20)
        started = threading.Timer(1.0, node.start)
        started.start()
        # The stream cannot reach the node: the jobs go as a call, which
        # retries until the node is back.
        job = p.enqueue("late", b"1")
        started.join()
        assert p.get(job).payload == b"1"
        assert grpc_requests(node, "Enqueue") == 1
        p.close()
    finally:
        node.kill()


def test_a_worker_completes_jobs_with_progress_and_cost(node: Node) -> None:
    p = drover.Producer(node.addr)
    ids = [p.enqueue("emails", f"to-{i}".encode(), run_id="r1") for i in range(20)]
    worker = drover.Worker(node.addr, queues=["emails"], concurrency=4)

    @worker.handler("emails")
    def send(job: drover.Job) -> bytes:
        job.heartbeat(progress=0.5, message="half way")
        job.report_usage(cost_usd=0.01, tokens_in=7)
        return b"sent " + job.payload

    t = run_in_thread(worker)
    wait_until("all jobs succeeded", lambda: all(p.get(i).state == "succeeded" for i in ids))
    job = p.get(ids[0])
    assert job.result == b"sent to-0"
    assert abs(job.cost_usd - 0.01) < 1e-9
    worker.stop()
    t.join(timeout=30)
    assert not t.is_alive() and worker.completed == 20


def test_async_handlers_run_on_the_workers_loop(node: Node) -> None:
    p = drover.Producer(node.addr)
    ids = [p.enqueue("async", b"x") for _ in range(10)]
    worker = drover.Worker(node.addr, queues=["async"], concurrency=10)

    @worker.handler("async")
    async def handle(job: drover.Job) -> str:
        await asyncio.sleep(0.05)
        return f"done {job.id}"

    t = run_in_thread(worker)
    wait_until("async jobs succeeded", lambda: all(p.get(i).state == "succeeded" for i in ids))
    assert p.get(ids[3]).result == f"done {ids[3]}".encode()
    worker.stop()
    t.join(timeout=30)


def test_a_failing_handler_sets_the_error_class(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="drover.worker")
    p = drover.Producer(node.addr)
    failing = p.enqueue("fragile-q", b"", job_type="fragile")
    crashing = p.enqueue("fragile-q", b"boom", job_type="fragile")
    worker = drover.Worker(node.addr, queues=["fragile-q"])

    @worker.handler("fragile")
    def handle(job: drover.Job) -> bytes:
        if job.payload == b"boom":
            raise KeyError("no such thing")
        raise drover.JobError("smtp_down", "the mail server refused")

    t = run_in_thread(worker)
    wait_until("both dead", lambda: p.get(failing).state == "dead" and p.get(crashing).state == "dead")
    j = p.get(failing)
    assert (j.last_error_class, j.last_error) == ("smtp_down", "the mail server refused")
    assert p.get(crashing).last_error_class == "KeyError"
    worker.stop()
    t.join(timeout=30)
    # A handler's bug is logged with its traceback; a JobError is not a bug.
    raised = [r for r in caplog.records if r.exc_info and r.exc_info[0] is KeyError]
    assert raised and "handle" in caplog.text and "no such thing" in caplog.text, caplog.text
    assert not any(r.exc_info and r.exc_info[0] is drover.JobError for r in caplog.records)


def test_ctrl_c_drains_and_reports_the_job_it_runs(node: Node, tmp_path: pathlib.Path) -> None:
    p = drover.Producer(node.addr)
    job_id = p.enqueue("slow", b"")
    w = spawn_worker(tmp_path, node, "interrupted", 2)
    assert w.stdout is not None
    assert w.stdout.readline().startswith(b"running")
    w.send_signal(signal.SIGINT)
    assert w.wait(timeout=30) == 0, "ctrl-c drains and exits cleanly"
    job = p.get(job_id)
    assert (job.state, job.attempts, job.result) == ("succeeded", 1, b"done by interrupted")


def test_addresses_tokens_and_the_ca_come_from_the_environment(
    node: Node, monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path
) -> None:
    monkeypatch.setenv("DROVER_SERVER", node.addr)
    assert drover.Producer().enqueue("env-q", b"x") > 0
    monkeypatch.delenv("DROVER_SERVER")
    with pytest.raises(ValueError, match="DROVER_SERVER"):
        drover.Producer()
    # https:// without a CA would not be encrypted: refused, saying how.
    with pytest.raises(ValueError, match="DROVER_CA"):
        drover.Producer("https://127.0.0.1:7070")
    with pytest.raises(ValueError, match="DROVER_CA"):
        drover.Worker("https://127.0.0.1:7070", queues=["q"])
    monkeypatch.setenv("DROVER_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match="cannot read DROVER_CA"):
        drover.Producer("https://127.0.0.1:7070")


WORKER_SCRIPT = """
import sys, time, drover
w = drover.Worker(sys.argv[1], queues=["slow"], worker_id=sys.argv[2])
@w.handler("slow")
def slow(job):
    print("running", job.id, flush=True)
    time.sleep(float(sys.argv[3]))
    return b"done by " + sys.argv[2].encode()
w.run()
"""


def spawn_worker(tmp: pathlib.Path, node: Node, worker_id: str, seconds: float) -> "subprocess.Popen[bytes]":
    script = tmp / "worker.py"
    script.write_text(WORKER_SCRIPT)
    return subprocess.Popen(
        [sys.executable, str(script), node.addr, worker_id, str(seconds)],
        stdout=subprocess.PIPE,
    )


def test_a_killed_workers_job_runs_again_after_its_lease(node: Node, tmp_path: pathlib.Path) -> None:
    p = drover.Producer(node.addr)
    job_id = p.enqueue("slow", b"")
    doomed = spawn_worker(tmp_path, node, "doomed", 60)
    assert doomed.stdout is not None
    assert doomed.stdout.readline().startswith(b"running")
    doomed.kill()
    doomed.wait()
    second = spawn_worker(tmp_path, node, "second", 0)
    try:
        wait_until("the job to run again", lambda: p.get(job_id).state == "succeeded", limit=30)
        job = p.get(job_id)
        assert job.attempts == 2 and job.result == b"done by second"
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, "SIGTERM stops a worker cleanly"


def test_a_worker_survives_its_node_restarting(node: Node) -> None:
    p = drover.Producer(node.addr)
    worker = drover.Worker(node.addr, queues=["steady"], concurrency=2)
    worker.handler("steady")(lambda job: b"ok")
    t = run_in_thread(worker)
    first = p.enqueue("steady", b"1")
    wait_until("the first job", lambda: p.get(first).state == "succeeded")
    assert node.stop() == 0
    node.start()
    later = [p.enqueue("steady", b"2") for _ in range(5)]
    wait_until("jobs after the restart", lambda: all(p.get(i).state == "succeeded" for i in later), limit=30)
    worker.stop()
    t.join(timeout=30)
    assert not t.is_alive()


def test_a_worker_with_a_wrong_token_stops_with_the_refusal(tmp_path: pathlib.Path) -> None:
    hashed = "sha256:" + "0" * 64
    node = Node(tmp_path, f'[[tokens]]\nname = "w"\nrole = "worker"\nhash = "{hashed}"\n')
    try:
        worker = drover.Worker(node.addr, queues=["q"], token="drv_wrong")
        with pytest.raises(drover.DroverError) as refused:
            worker.run()
        assert refused.value.code == "unauthenticated"
    finally:
        node.kill()
