"""examples/python_worker.py runs as its header says."""

from __future__ import annotations

import signal
import subprocess
import sys

import drover
from conftest import REPO, Node, wait_until


def test_the_python_worker_example_reverses_payloads(node: Node) -> None:
    p = drover.Producer(node.addr)
    ok = p.enqueue("reverse", b"hello")
    empty = p.enqueue("reverse", b"", job_type="fragile")
    worker = subprocess.Popen([sys.executable, str(REPO / "examples" / "python_worker.py"), node.addr])
    try:
        wait_until("the example's results", lambda: p.get(ok).state == "succeeded" and p.get(empty).state == "dead")
        assert p.get(ok).result == b"olleh"
        assert p.get(empty).last_error_class == "empty"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
