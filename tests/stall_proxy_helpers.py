"""A TCP proxy in front of a database that stalls mid-query: it forwards every connection
until the client sends ``marker`` (a query's text), then forwards nothing more either way,
while the kernel still ACKs (what keepalives and the server's statement timeout cannot see).
A client that closes or shuts down its socket ends its connection through the proxy."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa


class StallProxy:
    def __init__(self, upstream: tuple[str, int], marker: bytes) -> None:
        self.upstream = upstream
        self.marker = marker
        self.stalling = True
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._stalled: set[int] = set()  # ids of stalled pairs
        self.stalls = 0  # connections stalled so far, ended or not
        self.held = 0  # connections whose answer is held back (:meth:`_hold`)
        self._holding: list[tuple[socket.socket, socket.socket]] = []
        threading.Thread(target=self._accept, daemon=True, name="stall-proxy").start()

    def url(self, dsn: str) -> str:
        """``dsn`` pointed at the proxy."""
        url = sa.make_url(dsn).set(host="127.0.0.1", port=self.port)
        return url.render_as_string(hide_password=False)

    def live(self) -> int:
        """Connections through the proxy that neither end has closed."""
        with self._lock:
            return len(self._pairs)

    def stalled(self) -> int:
        with self._lock:
            return len(self._stalled)

    def close(self) -> None:
        self._server.close()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, server in pairs:
            client.close()
            server.close()

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
            pair = (client, server)
            with self._lock:
                self._pairs.append(pair)
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(pair, src, dst), daemon=True).start()

    def _pump(
        self, pair: tuple[socket.socket, socket.socket], src: socket.socket, dst: socket.socket
    ) -> None:
        from_client = src is pair[0]
        try:
            while data := src.recv(65536):
                if not self._relay(pair, from_client, data, dst):
                    break
        except OSError:
            pass
        with self._lock:
            if pair in self._pairs:
                self._pairs.remove(pair)
            self._forget(id(pair))
        for sock in pair:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _relay(
        self,
        pair: tuple[socket.socket, socket.socket],
        from_client: bool,
        data: bytes,
        dst: socket.socket,
    ) -> bool:
        """Forward ``data`` to ``dst``, or not (stalled: read on, to see the client go);
        False ends the connection. Subclasses decide otherwise."""
        with self._lock:
            if from_client and self.stalling and self.marker in data:
                self.stalls += id(pair) not in self._stalled
                self._stalled.add(id(pair))
            stalled = id(pair) in self._stalled
        if not stalled:
            dst.sendall(data)
        return True

    def _hold(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Keep ``pair`` open with its answer held back, until :meth:`let_go`."""
        with self._lock:
            if pair not in self._holding:
                self.held += 1
                self._holding.append(pair)

    def let_go(self) -> None:
        """End the connections whose answer is held."""
        with self._lock:
            holding, self._holding = self._holding, []
        for pair in holding:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _forget(self, pair_id: int) -> None:
        """Drop what is kept of an ended connection (called holding the lock)."""
        self._stalled.discard(pair_id)


@contextmanager
def stall_proxy(dsn: str, marker: bytes) -> Iterator[StallProxy]:
    """A :class:`StallProxy` to the server of ``dsn``, closed after."""
    url = sa.make_url(dsn)
    proxy = StallProxy((url.host or "127.0.0.1", url.port or 5432), marker)
    try:
        yield proxy
    finally:
        proxy.close()


class CutProxy(StallProxy):
    """A proxy that forwards everything until :meth:`cut`: then the connections through it
    are closed and new ones stall at once, so that to its clients the server is unreachable
    (the server and its other clients go on) until :meth:`mend`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(upstream, b"")  # every message holds b""
        self.stalling = False

    def cut(self) -> None:
        with self._lock:
            self.stalling = True
            pairs = self._pairs[:]
        for pair in pairs:
            for sock in pair:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def mend(self) -> None:
        with self._lock:
            self.stalling = False


class CommitCutProxy(StallProxy):
    """A proxy that forwards everything; once :attr:`armed`, the connection that sends
    ``marker`` (a statement of the transaction to cut) has its next ``COMMIT`` forwarded to
    the server and the server's answer dropped, and the connection ends: the server has
    committed, and all its client knows is that its connection was lost at the commit.
    Disarmed after one cut (counted in :attr:`cuts`).

    With :attr:`hold`, the answer is held instead: the connection stays open, forwarding
    nothing more to the client (counted in :attr:`held` once the server has answered, that
    is committed), until :meth:`let_go` ends it: the client waits at its commit meanwhile
    (a test types Ctrl-C there)."""

    def __init__(self, upstream: tuple[str, int], marker: bytes, *, hold: bool = False) -> None:
        super().__init__(upstream, marker)
        self.stalling = False
        self.armed = False
        self.hold = hold
        self.cuts = 0
        self._marked: set[int] = set()  # ids of pairs that sent the marker while armed
        self._committing: set[int] = set()  # ... and then a COMMIT

    def _relay(
        self,
        pair: tuple[socket.socket, socket.socket],
        from_client: bool,
        data: bytes,
        dst: socket.socket,
    ) -> bool:
        with self._lock:
            if from_client and self.armed and self.marker in data:
                self._marked.add(id(pair))
            if from_client and id(pair) in self._marked and b"COMMIT" in data:
                self._committing.add(id(pair))
                self.armed = False
            committing = id(pair) in self._committing
        if committing and not from_client and self.hold:  # the COMMIT's answer: held
            self._hold(pair)
            return True
        if committing and not from_client:  # the COMMIT's answer: dropped
            with self._lock:
                self.cuts += 1
            return False
        dst.sendall(data)
        return True

    def _forget(self, pair_id: int) -> None:
        super()._forget(pair_id)
        self._marked.discard(pair_id)
        self._committing.discard(pair_id)
