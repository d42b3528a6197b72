"""A proxy in front of a MongoDB-wire server that loses a connection at a transaction's
commit *after* the server got it: the ``commitTransaction`` is forwarded, the server
commits, its answer is dropped and the connection ends. The client only knows that its
connection was lost at the commit.

It reads the client's byte stream as wire messages (a 16-byte header: messageLength,
requestID, responseTo, opCode; an OP_MSG, opCode 2013, then has its flagBits and its
sections, kind 0 being one BSON document whose first key names the command). Compressed
messages (OP_COMPRESSED) are not read: the project's clients configure no compressor.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import bson

from tests.stall_proxy_helpers import CutProxy

OP_MSG = 2013
_HEADER = struct.Struct("<iiii")
_CHECKSUM_PRESENT = 1


def split_messages(stream: bytes) -> tuple[list[bytes], bytes]:
    """The whole wire messages at the start of ``stream``, and the bytes of the next one
    not all received yet."""
    messages = []
    while len(stream) >= 4:
        (length,) = struct.unpack_from("<i", stream)
        if len(stream) < length:
            break
        messages.append(stream[:length])
        stream = stream[length:]
    return messages, stream


def command_name(message: bytes) -> str | None:
    """The command an OP_MSG carries (its body's first key); None for another opCode."""
    body = command_body(message)
    return None if body is None else next(iter(body), None)


def command_body(message: bytes) -> dict[str, Any] | None:
    """The body of an OP_MSG (its kind 0 section); None for another opCode."""
    length, _, _, op_code = _HEADER.unpack_from(message)
    if op_code != OP_MSG:
        return None
    (flags,) = struct.unpack_from("<I", message, _HEADER.size)
    end = length - (4 if flags & _CHECKSUM_PRESENT else 0)
    at = _HEADER.size + 4
    while at < end:
        kind = message[at]
        (size,) = struct.unpack_from("<i", message, at + 1)
        if kind == 0:  # the body: one BSON document, its size included
            body: dict[str, Any] = bson.decode(message[at + 1 : at + 1 + size])
            return body
        at += 1 + size  # kind 1, a document sequence: its size covers its identifier too
    return None


class MongoCommitCutProxy(CutProxy):
    """A :class:`CutProxy` that, once :attr:`armed`, forwards the next ``commitTransaction``
    a client sends, drops the server's answer and ends that connection (counted in
    :attr:`cuts`; disarmed after one). With :attr:`stay_away` it then :meth:`cut`\\s: the
    server is unreachable to the clients until :meth:`mend` (a client's own retry of the
    commit cannot reach it); without, the other connections go on and new ones get
    through.

    With :attr:`marks` (a test of a command's body), only the commit of a session that sent
    a command it holds true of while armed is the one. With :attr:`hold`, the commit's
    answer is held instead of dropped: the connection stays open, forwarding nothing more
    to the client (counted in :attr:`held` once the server has answered, that is committed),
    until :meth:`let_go` ends it; the other connections go on."""

    def __init__(self, upstream: tuple[str, int], *, stay_away: bool = True) -> None:
        super().__init__(upstream)
        self.armed = False
        self.stay_away = stay_away
        self.marks: Callable[[dict[str, Any]], bool] | None = None
        self.hold = False
        self.cuts = 0
        self._partial: dict[int, bytes] = {}  # per connection: a message not all received
        self._committing: set[int] = set()  # connections whose commit was forwarded
        self._sessions: set[Any] = set()  # the lsids of sessions that sent a marked command

    def _relay(
        self,
        pair: tuple[socket.socket, socket.socket],
        from_client: bool,
        data: bytes,
        dst: socket.socket,
    ) -> bool:
        key = id(pair)
        if not from_client:
            with self._lock:
                committing = key in self._committing
                if committing:
                    self.cuts += 1
            if not committing:
                return super()._relay(pair, from_client, data, dst)
            if self.hold:  # the commit's answer is held, the connection kept
                self._hold(pair)
                return True
            if self.stay_away:  # the commit's answer is dropped, and the server goes away
                self.cut()
            return False
        with self._lock:
            messages, self._partial[key] = split_messages(self._partial.pop(key, b"") + data)
        for message in messages:
            body = command_body(message) or {}
            session = (body.get("lsid") or {}).get("id")
            if self.armed and self.marks is not None and self.marks(body):
                with self._lock:
                    self._sessions.add(session)
            if next(iter(body), None) == "commitTransaction":
                with self._lock:
                    if self.armed and (self.marks is None or session in self._sessions):
                        self.armed = False  # marked before the server can answer
                        self._committing.add(key)
            super()._relay(pair, from_client, message, dst)
        return True

    def _forget(self, pair_id: int) -> None:
        super()._forget(pair_id)
        self._partial.pop(pair_id, None)
        self._committing.discard(pair_id)
