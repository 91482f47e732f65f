"""Connections to a list of drover nodes: which node to call, the token,
the retry rules every call shares, and the typed method handles."""

from __future__ import annotations

import os
import random
import threading
from typing import Callable, List, Optional, Sequence, Tuple, Union

import grpc

from ._gen.drover.v1 import drover_pb2 as pb
from .errors import DroverError

Servers = Union[str, Sequence[str]]
Metadata = List[Tuple[str, str]]

LEADER_HINT = "drover-leader"
RETRY_SAFE = "drover-retry-safe"
RETRY_AFTER = "drover-retry-after-ms"

#: The protocol revision this client speaks (Register.protocol_version).
PROTOCOL_VERSION = 1

MAX_MESSAGE = 64 * 1024 * 1024


def server_list(servers: Servers) -> List[str]:
    """Node addresses as grpc targets: "host:port", from "host:port",
    "http://host:port" or a comma separated list of them."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out = []
    for item in items:
        item = item.strip()
        for scheme in ("http://", "https://"):
            if item.startswith(scheme):
                item = item[len(scheme):]
        if item:
            out.append(item.rstrip("/"))
    if not out:
        raise ValueError("no drover node address given (such as 127.0.0.1:7070)")
    return out


def backoff(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Seconds to wait before retry `attempt` (0-based): exponential with
    full jitter, so a fleet that lost its node does not come back in step."""
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 16))))


def error_of(e: grpc.RpcError) -> DroverError:
    """A drover error from a failed call, with the node's retry hints."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = e.details() if hasattr(e, "details") else str(e)
    trailers = dict(e.trailing_metadata() or ()) if hasattr(e, "trailing_metadata") else {}
    # Never reached a node (grpc's own words when it has no connection):
    # nothing can have been done. A node's own UNAVAILABLE says whether it
    # is safe in its trailers.
    never_sent = code == grpc.StatusCode.UNAVAILABLE and not trailers and (
        (details or "").startswith("failed to connect to all addresses")
        or "Connection refused" in (details or "")
    )
    retry_safe = trailers.get(RETRY_SAFE) == "1" or never_sent
    after = trailers.get(RETRY_AFTER)
    return DroverError(
        code=code.name.lower() if code is not None else "unknown",
        message=details or "",
        retry_safe=retry_safe,
        retry_after_ms=int(after) if after and str(after).isdigit() else 0,
    )


class Nodes:
    """The nodes a client was given and the channel to the one in use.
    Calls go to one node and move on (to the next, or to the leader a
    follower names) when one fails in a way that is safe to retry."""

    def __init__(
        self,
        servers: Optional[Servers],
        token: Optional[str] = None,
        compression: bool = False,
        root_certificates: Optional[bytes] = None,
    ) -> None:
        # What is not passed comes from the environment, as for the CLI.
        if servers is None:
            servers = os.environ.get("DROVER_SERVER", "")
            if not servers:
                raise ValueError("no drover node address: pass servers (such as \"127.0.0.1:7070\") or set DROVER_SERVER")
        if token is None:
            token = os.environ.get("DROVER_TOKEN") or None
        if root_certificates is None and os.environ.get("DROVER_CA"):
            ca = os.environ["DROVER_CA"]
            try:
                with open(ca, "rb") as f:
                    root_certificates = f.read()
            except OSError as e:
                raise ValueError(f"cannot read DROVER_CA {ca}: {e}") from None
        listed = servers.split(",") if isinstance(servers, str) else list(servers)
        if root_certificates is None and any(s.strip().startswith("https://") for s in listed):
            raise ValueError(
                "an https:// address needs the cluster's CA certificate: pass "
                "root_certificates=open(CA_FILE, 'rb').read() or set DROVER_CA=CA_FILE "
                "(without it the connection would not be encrypted)"
            )
        self.targets = server_list(servers)
        self.metadata: Metadata = [("authorization", f"Bearer {token}")] if token else []
        self.compression = grpc.Compression.Gzip if compression else grpc.Compression.NoCompression
        self.root_certificates = root_certificates
        self._lock = threading.Lock()
        self._index = 0
        self._channel: Optional[grpc.Channel] = None

    def channel(self) -> Tuple[int, grpc.Channel]:
        with self._lock:
            if self._channel is None:
                target = self.targets[self._index]
                options = [
                    ("grpc.max_receive_message_length", MAX_MESSAGE),
                    ("grpc.max_send_message_length", MAX_MESSAGE),
                ]
                if self.root_certificates is not None:
                    creds = grpc.ssl_channel_credentials(self.root_certificates)
                    self._channel = grpc.secure_channel(
                        target, creds, options=options, compression=self.compression
                    )
                else:
                    self._channel = grpc.insecure_channel(
                        target, options=options, compression=self.compression
                    )
            return self._index, self._channel

    def move_on(self, from_index: int, to: Optional[str] = None) -> None:
        """Uses another node: `to` if it is one of ours, else the next."""
        with self._lock:
            if from_index != self._index:
                return  # another thread moved already
            if to is not None:
                bare = server_list(to)[0]
                if bare in self.targets:
                    self._index = self.targets.index(bare)
                else:
                    self._index = (self._index + 1) % len(self.targets)
            else:
                self._index = (self._index + 1) % len(self.targets)
            if self._channel is not None:
                self._channel.close()
            self._channel = None

    def follow_hint(self, index: int, initial_metadata: Optional[Sequence[Tuple[str, str]]]) -> None:
        """A follower named the leader: the next calls go there directly."""
        hint = dict(initial_metadata or ()).get(LEADER_HINT)
        if hint and len(self.targets) > 1:
            bare = server_list(hint)[0]
            if bare in self.targets and self.targets.index(bare) != index:
                self.move_on(index, bare)

    def close(self) -> None:
        with self._lock:
            if self._channel is not None:
                self._channel.close()
            self._channel = None

    def call(self, method: str, request: object, response_type: type, timeout: float, attempts: int = 12) -> object:
        """Calls `method`, moving to another node and retrying (with
        jittered backoff) while the failure is safe to retry."""
        last: Optional[DroverError] = None
        for attempt in range(attempts):
            index, channel = self.channel()
            fn = channel.unary_unary(
                method,
                request_serializer=type(request).SerializeToString,  # type: ignore[attr-defined]
                response_deserializer=response_type.FromString,  # type: ignore[attr-defined]
            )
            try:
                response, call = fn.with_call(request, timeout=timeout, metadata=self.metadata)
                self.follow_hint(index, call.initial_metadata())
                return response
            except grpc.RpcError as e:
                last = error_of(e)
                if not last.retry_safe:
                    raise last from None
                hint = dict(e.initial_metadata() or ()).get(LEADER_HINT) if hasattr(e, "initial_metadata") else None
                self.move_on(index, hint)
                wait = last.retry_after_ms / 1000 if last.retry_after_ms else backoff(attempt)
                threading.Event().wait(wait)
        assert last is not None
        raise last


__all__ = ["Nodes", "backoff", "error_of", "server_list", "pb", "PROTOCOL_VERSION"]
