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

import structlog

from outbox.error_text import describe_error
from projections.resp3_reader import (
    _encode,
    _ProtocolError,
    _Push,
    _pushed_keys,
    _Reader,
    _RedisError,
)

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
                    logger.warning(
                        "near cache: tracking connection lost", error=describe_error(exc)
                    )
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
        error = describe_error(exc)
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
