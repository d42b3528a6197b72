"""A near cache: copies of Redis cache entries in process memory, kept coherent by Redis.

A listener thread holds one RESP3 connection with ``CLIENT TRACKING ON BCAST PREFIX
<entry prefix>``: Redis pushes the name of every entry key that changes (invalidated,
stored, expired), and the listener drops the local copy.

Why a copy is never older than an invalidation it could have seen: a copy is only
filled from a Redis reply, and only if no push for that key arrived between sending the
request and receiving the reply (:meth:`NearCache.begin` / :meth:`NearCache.fill`).
Any change after Redis read the value is pushed after it, so it either cancels the fill
or removes the copy once it arrives. While the listener is disconnected, pushes may be
lost, so the near cache is emptied and not filled until tracking is on again.

Inside this process an invalidation is final when :meth:`RedisCache.invalidate` returns:
it waits for a PING it sends after the invalidation to come back on the listener's
connection (:meth:`NearCache.sync`); Redis queues the pushes of a command before its
reply is written, so they precede that PONG. Other processes drop their copies when the
push reaches them, a fraction of a millisecond later.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from typing import Any

import structlog

logger = structlog.get_logger("readmodel.cache")

_HEARTBEAT = 0.5  # seconds of silence before the listener pings; two unanswered: reconnect
_FIRST_BACKOFF = 0.05  # seconds before reconnecting, doubled up to 1 s while it keeps failing
_STEADY = 5.0  # seconds of tracking after which a failure starts the backoff afresh
_WARN_EVERY = 60.0


class NearCache:
    """LRU of ``entry key -> (JSON bytes, expires at in epoch ms)``."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        prefix: str,
        size: int,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.25,
    ) -> None:
        self.size = size
        self._entries: OrderedDict[str, tuple[bytes, int]] = OrderedDict()
        self._pending: dict[str, object] = {}
        self._lock = threading.Lock()
        self._live = False
        self._epoch = 0
        self._address = (host, port)
        self._prefix = prefix
        self._auth = (username or "default", password) if password else None
        self._timeout = timeout
        self._closed = threading.Event()
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._pings_sent = 0
        self._pongs = 0
        self._answered = threading.Condition(threading.Lock())
        self._live_since = 0.0
        self._failed_with = ""
        self._failed_at = 0.0
        self._failures_unlogged = 0
        self._thread = threading.Thread(target=self._run, name="near-cache", daemon=True)
        self._started = False

    def start(self) -> None:
        """Connect the listener (done by the first :meth:`get`: a process that only
        invalidates, such as a worker, never holds a tracking connection)."""
        with self._lock:
            if self._started or self._closed.is_set():
                return
            self._started = True
            self._thread.start()

    # -- reads -----------------------------------------------------------------------

    def get(self, key: str) -> bytes | None:
        if not self._started:
            self.start()
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= time.time() * 1000:
            with self._lock:
                if self._entries.get(key) is item:
                    del self._entries[key]
            return None
        try:
            self._entries.move_to_end(key)
        except KeyError:
            pass
        return item[0]

    def begin(self, key: str) -> tuple[object, int] | None:
        """Call before asking Redis for ``key``; pass the result to :meth:`fill`."""
        if not self._live:
            return None
        token = object()
        with self._lock:
            self._pending[key] = token
            return token, self._epoch

    def fill(self, key: str, ticket: tuple[object, int] | None, blob: bytes, expires: int) -> None:
        """Keep Redis's reply for ``key`` unless it may have changed since :meth:`begin`."""
        if ticket is None:
            return
        token, epoch = ticket
        with self._lock:
            if self._pending.get(key) is not token:
                return
            del self._pending[key]
            if not self._live or epoch != self._epoch:
                return
            self._entries[key] = (blob, expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def end(self, key: str, ticket: tuple[object, int] | None) -> None:
        """Forget a :meth:`begin` that will not :meth:`fill` (no reply, or a miss)."""
        if ticket is None:
            return
        with self._lock:
            if self._pending.get(key) is ticket[0]:
                del self._pending[key]

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def live(self) -> bool:
        return self._live

    # -- coherence -------------------------------------------------------------------

    def _invalidate(self, keys: list[str] | None) -> None:
        with self._lock:
            if keys is None:
                self._entries.clear()
                self._pending.clear()
                return
            for key in keys:
                self._entries.pop(key, None)
                self._pending.pop(key, None)

    def _reset(self, live: bool) -> None:
        with self._lock:
            self._live = live
            self._epoch += 1
            self._entries.clear()
            self._pending.clear()

    def sync(self, timeout: float = 1.0) -> bool:
        """Return once every push Redis queued before now has been applied. On failure the
        near cache is emptied, so nothing older than now can be served either way."""
        if not self._live:
            self._reset(False)
            return False
        sent = self._ping()
        if sent is not None:
            deadline = time.monotonic() + timeout
            with self._answered:
                while self._pongs < sent and self._live:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._answered.wait(left)
                if self._pongs >= sent:
                    return True
        self._reset(self._live)
        return False

    def _ping(self) -> int | None:
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return None
            try:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            except OSError:
                return None
            self._pings_sent += 1
            return self._pings_sent

    # -- the listener ----------------------------------------------------------------

    def _run(self) -> None:
        """Listen until closed. Whatever ends a connection (a lost socket, a reply it cannot
        read, a bug), the copies are dropped (pushes may have been missed) and it connects
        again: a listener that stopped would leave the near cache off for good."""
        backoff = _FIRST_BACKOFF
        while not self._closed.is_set():
            try:
                self._listen()
            except (OSError, _ProtocolError) as exc:
                if not self._closed.is_set():
                    logger.warning("near cache: tracking connection lost", error=repr(exc))
            except Exception as exc:
                if not self._closed.is_set():
                    self._log_failure(exc)
            finally:
                self._reset(False)
                self._disconnect()
            if self._live_since and time.monotonic() - self._live_since >= _STEADY:
                backoff = _FIRST_BACKOFF  # it served a while: not the same failure again
            self._live_since = 0.0
            self._closed.wait(backoff)
            backoff = min(backoff * 2, 1.0)

    def _log_failure(self, exc: Exception) -> None:
        """One warning per kind of failure a minute (a failure that recurs at each
        reconnection is not logged every second). Only the error's type and text: never the
        connection's settings, which hold the password."""
        error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if error == self._failed_with and now - self._failed_at < _WARN_EVERY:
            self._failures_unlogged += 1
            return
        logger.warning(
            "near cache: listener failed; local copies dropped, reconnecting",
            error=error,
            repeated=self._failures_unlogged,
        )
        self._failed_with, self._failed_at, self._failures_unlogged = error, now, 0

    def _listen(self) -> None:
        sock = socket.create_connection(self._address, timeout=self._timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = _Reader(sock)
        hello = ["HELLO", "3"] + (["AUTH", *self._auth] if self._auth else [])
        with self._send_lock:
            self._sock = sock
            self._pings_sent = 0
        with self._answered:
            self._pongs = 0
        if self._closed.is_set():
            return
        for command in (hello, ["CLIENT", "TRACKING", "ON", "BCAST", "PREFIX", self._prefix]):
            sock.sendall(_encode(command))
            reply = reader.next_reply(self._timeout)
            if isinstance(reply, _RedisError):
                raise _ProtocolError(f"{command[0]} failed: {reply}")
        self._reset(True)
        self._live_since = time.monotonic()
        sock.settimeout(_HEARTBEAT)
        silent = 0
        while not self._closed.is_set():
            try:
                message = reader.next()
            except TimeoutError:
                silent += 1
                if silent > 2:
                    raise _ProtocolError("no answer to PING") from None
                if self._ping() is None:
                    raise _ProtocolError("cannot send PING") from None
                continue
            silent = 0
            if isinstance(message, _Push):
                if message.items and message.items[0] == b"invalidate":
                    self._invalidate(_pushed_keys(message.items))
            elif message == b"PONG":
                with self._answered:
                    self._pongs += 1
                    self._answered.notify_all()
            elif isinstance(message, _RedisError):
                raise _ProtocolError(str(message))

    def _disconnect(self) -> None:
        with self._send_lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        with self._answered:
            self._answered.notify_all()

    def close(self) -> None:
        self._closed.set()
        with self._send_lock:
            sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            started = self._started
        if started:
            self._thread.join(timeout=5)
        self._disconnect()


# -- a minimal RESP3 reader (the listener only needs pushes and simple replies) -----------


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
