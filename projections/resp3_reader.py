"""A minimal RESP3 reader: what the near cache's listener needs of Redis's protocol.

The listener (:mod:`projections.near_cache`) reads pushes and simple replies on its own
socket, outside redis-py; the parsing is its own concern (resuming a push cut anywhere),
kept here apart from the cache's coherence logic.
"""

from __future__ import annotations

import socket
from typing import Any


class _ProtocolError(Exception):
    pass


class _RedisError(str):
    pass


class _Push:
    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _Incomplete(Exception):
    pass


def _pushed_keys(items: list[Any]) -> list[str] | None:
    """The keys of an ``invalidate`` push; ``None`` (drop every copy) for a flush or a list
    it cannot read. A key that is not UTF-8 is none of the near cache's (its keys are JSON
    text): kept undecodable, it drops nothing, where decoding it stopped the listener."""
    keys = items[1] if len(items) > 1 else None
    if not isinstance(keys, list) or not all(isinstance(k, bytes) for k in keys):
        return None
    return [k.decode(errors="surrogateescape") for k in keys]


def _encode(args: list[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = _Parser()

    def next_reply(self, timeout: float) -> Any:
        """The next message that is not a push (the handshake)."""
        self.sock.settimeout(timeout)
        while True:
            message = self.next()
            if not isinstance(message, _Push):
                return message

    def next(self) -> Any:
        while True:
            try:
                return self.parser.next()
            except _Incomplete:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise _ProtocolError("connection closed by Redis") from None
                self.parser.buffer += chunk


_AGGREGATES = frozenset((b"*", b"~", b">", b"%", b"|"))
_OPENED = object()
_ATTRIBUTES = object()


class _Parser:
    """A RESP3 parser that resumes where the data ran out: an invalidation push can hold
    every key a script touched (hundreds of thousands); parsing it again from its start at
    each chunk received took seconds, while the copies it invalidates were served."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.pos = 0
        self.stack: list[list[Any]] = []  # open aggregates: [kind, items left, items]

    def next(self) -> Any:
        """The next complete message; raises :class:`_Incomplete` (keeping its progress)."""
        while True:
            value = self._element()
            if value is _OPENED:
                if self.stack[-1][1] > 0:
                    continue
                value = self._close()  # an empty aggregate
            while value is not _ATTRIBUTES:  # attributes precede the value they describe
                if not self.stack:
                    del self.buffer[: self.pos]
                    self.pos = 0
                    return value
                frame = self.stack[-1]
                frame[2].append(value)
                frame[1] -= 1
                if frame[1] > 0:
                    break
                value = self._close()

    def _close(self) -> Any:
        kind, _, items = self.stack.pop()
        if kind == b">":
            return _Push(items)
        if kind == b"|":
            return _ATTRIBUTES
        return items

    def _element(self) -> Any:
        """Parse one element at ``pos``: a value, or :data:`_OPENED` for an aggregate."""
        buf = self.buffer
        eol = buf.find(b"\r\n", self.pos)
        if eol < 0:
            raise _Incomplete
        kind, head, start = (
            bytes(buf[self.pos : self.pos + 1]),
            bytes(buf[self.pos + 1 : eol]),
            eol + 2,
        )
        if kind in _AGGREGATES:
            count = int(head)
            self.pos = start
            if count < 0:
                return None
            self.stack.append([kind, count * 2 if kind in (b"%", b"|") else count, []])
            return _OPENED
        if kind in (b"$", b"=", b"!"):
            size = int(head)
            if size < 0:
                self.pos = start
                return None
            if len(buf) < start + size + 2:
                raise _Incomplete
            data = bytes(buf[start : start + size])
            self.pos = start + size + 2
            return _RedisError(data.decode(errors="replace")) if kind == b"!" else data
        self.pos = start
        if kind in (b"+", b"(", b",", b"#"):
            return head
        if kind == b"-":
            return _RedisError(head.decode(errors="replace"))
        if kind == b":":
            return int(head)
        if kind == b"_":
            return None
        raise _ProtocolError(f"unexpected RESP3 type {kind!r}")
