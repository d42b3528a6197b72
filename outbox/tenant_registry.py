"""Tenant registries: the member sources of a source group, read from a master database.

``[tenants.pos]`` names a database and a query giving each tenant's id and the DSN of its
database (clear or ``fernet:``); each row becomes the member source ``pos:<tenant id>``,
whose rows are all that tenant's (``tenant`` set, ``columns.tenant = ""``). A bad row is
reported naming the registry and the tenant, never the DSN, and the other rows stand.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from config import Settings, SourceSettings, TenantRegistrySettings
from config.outbox_identity import shared_outboxes
from outbox.db import create_engine, describe_db_error, engine_kind, redact_dsn
from outbox.errors import SourceError
from outbox.keepers import Appends, precedence, split_note
from outbox.registry_members import (
    Members,
    RegistryProblem,
    behind_unknown_databases,
    member_settings,
)
from outbox.source_groups import NAME, member_source
from outbox.source_list import list_sources

__all__ = [  # Members and list_sources live in their own modules; importable here too
    "Members",
    "TenantRegistry",
    "list_sources",
    "registries",
]

_CONNECT_TIMEOUT = 5  # seconds: a registry that does not answer keeps the last members
_QUERY_TIMEOUT = 10.0  # seconds: a query that blocks (a locked table) keeps them too
_USER_TIMEOUT_MS = 60_000  # data sent and not acknowledged this long: the connection is dead
_NO_KEEPER = (
    "; the event log has no events of {} row yet, so no row can be kept: delete or fix one "
    "row (see README, A tenant registry)"
)


class TenantRegistry:
    """One ``[tenants.NAME]`` registry; :meth:`read` lists its member sources."""

    def __init__(
        self,
        group: str,
        settings: TenantRegistrySettings,
        others: Mapping[str, SourceSettings] | None = None,
    ) -> None:
        self.group = group
        self.settings = settings
        self.others = dict(others or {})
        """The configuration's ``[sources.*]``: a member may not read one of their outboxes."""
        self._engine: sa.Engine | None = None
        self._sockets: dict[int, socket.socket] = {}
        """Reads in flight: reading thread -> a duplicate of its connection's socket, for
        :meth:`abort` to shut down (the duplicate stays this connection's, whatever the
        driver closes meanwhile)."""
        self._sockets_lock = threading.Lock()
        self._id_column = "tenant id"  # the query's first column, named in bad rows

    @property
    def display_url(self) -> str:
        """Where the registry is, for ``status``: no user, password or query (as logged)."""
        return redact_dsn(self.settings.url, location=True)

    def read(self, appends: Callable[[], Appends] | None = None) -> Members:
        """The members the registry lists now. Raises :class:`SourceError` when it cannot be
        read (unreachable, or the query fails): keep the members known before.

        ``appends`` gives what the event log has of each source
        (:func:`outbox.keepers.last_appends`), asked only when two rows name one database:
        the member it has events of keeps it. Without it, both rows are refused."""
        started = time.monotonic()
        sources: dict[str, SourceSettings] = {}
        problems: list[RegistryProblem] = []
        rows: dict[str, int] = {}
        for number, row in enumerate(self._rows(), start=1):
            member = self._member(number, row, sources)
            if isinstance(member, RegistryProblem):
                problems.append(member)
            else:
                name = member_source(self.group, member.tenant or "")
                sources[name], rows[name] = member, number
        problems += self._shared_outboxes(sources, rows, appends)
        if appends is not None and any(p.unknown_database for p in problems):
            logged = appends()
            unreadable = bool(getattr(appends, "unreadable", None))
            held = behind_unknown_databases(self.group, sources, problems, logged, unreadable)
            for name, reason in held.items():
                tenant = sources.pop(name).tenant
                problems.append(
                    RegistryProblem(self.group, tenant, reason, rows[name], waiting=True)
                )
        return Members(self.group, sources, problems, started)

    def _shared_outboxes(
        self,
        sources: dict[str, SourceSettings],
        rows: Mapping[str, int],
        appends: Callable[[], Appends] | None,
    ) -> list[RegistryProblem]:
        """Members whose DSNs name one database and outbox table (with each other, or with
        a ``[sources.*]``): the relay's lock is per outbox, so whichever led would take the
        others' rows as its own tenant's. Of rows of this registry alone, the member the
        event log has events of keeps it (:mod:`outbox.keepers`; a mistyped new row does
        not stop a tenant relaying); otherwise each is a bad row. The refused are removed
        from ``sources``."""
        problems: list[RegistryProblem] = []
        logged: Appends | None = None
        for names in shared_outboxes({**self.others, **sources}):
            members = [n for n in names if n in sources]
            keeper, split, fresh = None, [], False
            if appends is not None and len(members) == len(names):  # no [sources.*] in it
                logged = appends() if logged is None else logged
                split = sorted(n for n in members if n in logged)
                if split:
                    keeper = min(split, key=lambda n: precedence(n, logged or {}))
                # read, and no events of any (StoreAppends: {} when it could not be read)
                fresh = not split and not getattr(appends, "unreadable", None)
            for name in members:
                if name == keeper:
                    continue
                tenant = sources.pop(name).tenant
                if keeper is not None:
                    reason = (
                        f"row {rows[name]} names the same database and outbox table as tenant "
                        f"{sources[keeper].tenant!r} (row {rows[keeper]}), which relays it: not "
                        f"relayed (each tenant needs a database of its own)"
                    )
                    if len(split) > 1:
                        reason += split_note(split)
                else:
                    also = ", ".join(
                        f"tenant {n.partition(':')[2]!r}" if n in members else f"source {n!r}"
                        for n in names
                        if n != name
                    )
                    reason = (
                        f"the same database and outbox table as {also}: not relayed (each "
                        f"tenant needs a database of its own)"
                    )
                    if fresh:
                        reason += _NO_KEEPER.format("either" if len(members) == 2 else "any")
                problems.append(
                    RegistryProblem(self.group, tenant, reason, rows[name], conflict=True)
                )
        return problems

    def _rows(self) -> list[tuple[Any, ...]]:
        with self._sockets_lock:
            if self._engine is None:
                self._engine = _registry_engine(self.settings.url)
                track = self._tracker(self._engine)
                # On connect too: a new connection is set up (the dialect's first queries)
                # before the pool hands it out, and a stall there is ended the same way.
                sa.event.listen(self._engine, "connect", track, insert=True)
                sa.event.listen(self._engine, "checkout", track, insert=True)
            engine = self._engine
        try:
            with engine.connect() as conn:
                if engine.dialect.name == "postgresql":  # the query's own transaction
                    conn.exec_driver_sql(
                        f"SET LOCAL statement_timeout = {int(_QUERY_TIMEOUT * 1000)}"
                    )
                result = conn.exec_driver_sql(self.settings.query)
                if len(result.keys()) < 2:
                    raise SourceError(
                        f"tenant registry {self.group!r}: the query gives "
                        f"{len(result.keys())} column(s); expected tenant id, DSN"
                    )
                self._id_column = str(next(iter(result.keys())))
                return [tuple(row) for row in result]
        except SQLAlchemyError as exc:
            where = redact_dsn(self.settings.url, location=True)  # logged: no user, no query
            raise SourceError(
                f"tenant registry {self.group!r} ({where}) cannot be read: {describe_db_error(exc)}"
            ) from exc
        finally:
            with self._sockets_lock:
                tracked = self._sockets.pop(threading.get_ident(), None)
            if tracked is not None:
                tracked.close()

    def _tracker(self, engine: sa.Engine) -> Callable[..., None]:
        """A connect and checkout listener keeping the socket of each connection a read
        opens or takes (before its setup queries and ping), and ending at once one of an
        engine :meth:`abort` dropped."""

        def track(dbapi_connection: Any, *_record: Any) -> None:
            fileno = _fileno(dbapi_connection)
            if fileno is None or fileno < 0:
                return
            sock = socket.socket(fileno=os.dup(fileno))
            with self._sockets_lock:
                old = self._sockets.pop(threading.get_ident(), None)
                self._sockets[threading.get_ident()] = sock
                if self._engine is not engine:  # given up meanwhile: this read ends too
                    _shut(sock)
            if old is not None:
                old.close()

        return track

    def abort(self) -> None:
        """End the reads in flight (a read given up, from another thread): their
        connections' sockets are shut down, so a read blocked on one (a TCP stall
        mid-query) fails at once, its thread ends and the connection is discarded; the next
        read connects anew."""
        with self._sockets_lock:
            for sock in self._sockets.values():
                _shut(sock)
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    def _member(
        self, number: int, row: tuple[Any, ...], seen: dict[str, SourceSettings]
    ) -> SourceSettings | RegistryProblem:
        tenant, dsn = row[0], row[1]
        tenant = None if tenant is None else str(tenant)
        if not tenant:
            return RegistryProblem(self.group, None, "no tenant id", number)
        if "://" in tenant or tenant.startswith("fernet:"):
            reason = "the tenant id looks like a DSN: the query gives tenant id, DSN, in order"
            return RegistryProblem(self.group, None, reason, number)
        if not NAME.fullmatch(tenant):  # match() would take "acme\n"
            reason = (
                f"the first column ({self._id_column!r}) is no tenant id (not shown: a "
                "password or DSN selected first would be): expected a source name (letters, "
                "digits, '.', '_', '-'; at most 100), then the DSN"
            )
            return RegistryProblem(self.group, None, reason, number)
        if member_source(self.group, tenant) in seen:
            return RegistryProblem(
                self.group, None, f"tenant {tenant!r} listed again; its first row is used", number
            )
        if not isinstance(dsn, str) or not dsn.strip():
            return RegistryProblem(self.group, tenant, "no DSN", number, unknown_database=True)
        try:
            return member_settings(self.settings, tenant, dsn.strip())
        except ValidationError as exc:
            reasons = "; ".join(_reason(error) for error in exc.errors())
            return RegistryProblem(
                self.group, tenant, f"DSN refused: {reasons}", number, unknown_database=True
            )

    def close(self) -> None:
        with self._sockets_lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()


def registries(settings: Settings) -> list[TenantRegistry]:
    return [
        TenantRegistry(group, s, settings.sources) for group, s in sorted(settings.tenants.items())
    ]


def _reason(error: Any) -> str:
    """A validation error's message only: its input is the DSN."""
    return str(error["msg"]).removeprefix("Value error, ")


def _fileno(dbapi_connection: Any) -> int | None:
    """The socket of a psycopg or PyMySQL connection (None: SQLite, or none open)."""
    try:
        if hasattr(dbapi_connection, "pgconn"):  # psycopg
            return int(dbapi_connection.fileno())
        sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
        return None if sock is None else int(sock.fileno())
    except Exception:
        return None


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _registry_engine(url: str) -> sa.Engine:
    """A small pool with bounded connects: an unreachable registry must not stall a refresh."""
    kind = engine_kind(url)
    if kind == "sqlite":
        return create_engine(url)
    connect_args: dict[str, Any] = {"connect_timeout": _CONNECT_TIMEOUT}
    if kind == "postgresql":  # a peer gone from the network (not a stalled proxy: see abort)
        alive = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10}
        alive.update(keepalives_count=3, tcp_user_timeout=_USER_TIMEOUT_MS)
        query = sa.make_url(url).query  # what the DSN sets itself stands
        connect_args.update({k: v for k, v in alive.items() if k not in query})
    if kind == "mysql":  # a query that does not answer in time fails the connection
        connect_args["read_timeout"] = max(1, int(_QUERY_TIMEOUT))
    return create_engine(url, pool_size=1, max_overflow=1, connect_args=connect_args)
