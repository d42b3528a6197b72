"""A TCP proxy in front of a database that answers, slowly: every chunk the server sends
reaches the client ``delay`` seconds late (a database across a slow link). A source behind
it answers, but takes a few round trips' delays to connect and query."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


class LatencyProxy:
    def __init__(self, upstream: tuple[str, int], delay: float) -> None:
        self.upstream = upstream
        self.delay = delay
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True, name="latency-proxy").start()

    def url(self, dsn: str) -> str:
        """``dsn`` pointed at the proxy."""
        url = sa.make_url(dsn).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets += [client, server]
            for src, dst, delay in ((client, server, 0.0), (server, client, self.delay)):
                threading.Thread(target=self._pump, args=(src, dst, delay), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while data := src.recv(65536):
                time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@contextmanager
def slow_database(dsn: str, delay: float) -> Iterator[str]:
    """``dsn`` reached through a :class:`LatencyProxy` (closed afterwards)."""
    url = sa.make_url(dsn)
    proxy = LatencyProxy((url.host or "127.0.0.1", url.port or 5432), delay)
    try:
        yield proxy.url(dsn)
    finally:
        proxy.close()
