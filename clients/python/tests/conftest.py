"""A real drover node per test: the binary of this checkout
(target/debug/drover, or $DROVER_BIN), on loopback ports, in a temp dir."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import time
from typing import Iterator, Optional

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]


def drover_bin() -> str:
    if os.environ.get("DROVER_BIN"):
        return os.environ["DROVER_BIN"]
    for profile in ("debug", "release"):
        p = REPO / "target" / profile / "drover"
        if p.exists():
            return str(p)
    raise RuntimeError("build drover first (cargo build) or set DROVER_BIN")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """A `drover serve` process that keeps its ports across restarts."""

    def __init__(self, tmp: pathlib.Path, config: str = "") -> None:
        self.dir = tmp
        self.grpc_port = free_port()
        self.http_port = free_port()
        self.addr = f"127.0.0.1:{self.grpc_port}"
        self.http = f"http://127.0.0.1:{self.http_port}"
        (tmp / "node.toml").write_text(
            f'data_dir = "{tmp / "data"}"\n'
            f'grpc_addr = "{self.addr}"\n'
            f'http_addr = "127.0.0.1:{self.http_port}"\n'
            + config
            + '\n[log]\nlevel = "warn"\n'
        )
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [drover_bin(), "serve", "--config", str(self.dir / "node.toml")],
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert " ready " in line, f"node did not start: {line!r}"

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[Node]:
    n = Node(tmp_path, '[jobs]\nheartbeat_timeout = "2s"\n[retry.fragile]\nmax_retries = 0\n')
    yield n
    n.kill()


def wait_until(what: str, cond, limit: float = 20.0):  # type: ignore[no-untyped-def]
    """Polls `cond` until it returns something truthy, or fails the test."""
    deadline = time.monotonic() + limit
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last saw {last!r}")
