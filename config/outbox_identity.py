"""Which outbox a source reads: two sources reading one outbox would mix their rows.

The relay's leader lock is per database and table, so two sources (two tenants) naming the
same outbox would each take whatever rows they claim first, under their own name and
tenant. The identity compares where the rows are (engine, host, port, database, schema,
table) after normalising what the DSN may spell differently; never the user or password.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import make_url

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mongodb": 27017}
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}


def outbox_identity(settings: Any) -> tuple[str, ...]:
    """Where ``settings`` (a :class:`config.SourceSettings`) reads its rows."""
    url: str = settings.url
    if url.lower().startswith(("mongodb://", "mongodb+srv://")):
        return _mongo_identity(url, settings.table)
    parsed = make_url(re.sub(r"^postgres(?=[+:])", "postgresql", url))
    kind = parsed.get_backend_name()
    kind = "mysql" if kind == "mariadb" else kind
    if kind == "sqlite":
        path = parsed.database or ":memory:"
        if path != ":memory:":
            path = os.path.realpath(path)
        return (kind, path, settings.schema_name or "main", settings.table)
    query_host = parsed.query.get("host")
    host = parsed.host or (query_host if isinstance(query_host, str) else "") or "localhost"
    database = parsed.database or parsed.username or ""
    if kind == "mysql":
        schema = settings.schema_name or database
    else:
        schema = settings.schema_name or "public"
    return (
        kind,
        _host(host),
        str(parsed.port or _DEFAULT_PORTS.get(kind, 0)),
        database,
        schema,
        settings.table,
    )


def _mongo_identity(url: str, collection: str) -> tuple[str, ...]:
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    hosts = authority.rpartition("@")[2]
    default = "" if scheme.lower() == "mongodb+srv" else str(_DEFAULT_PORTS["mongodb"])
    names = []
    for host in hosts.split(","):
        if host.startswith("["):  # [::1]:27017
            name, _, port = host[1:].partition("]")
            port = port.removeprefix(":")
        else:
            name, _, port = host.partition(":")
        names.append(f"{_host(name)}:{port or default}")
    database = unquote(path.split("?", 1)[0])
    return ("mongodb", ",".join(sorted(names)), database, collection)


def _host(host: str) -> str:
    host = host.lower().rstrip(".")
    return "127.0.0.1" if host in _LOOPBACK else host


def shared_outboxes(sources: Mapping[str, Any]) -> list[list[str]]:
    """The names of sources reading one outbox, each list sorted, for every outbox that more
    than one of ``sources`` reads."""
    by_outbox: dict[tuple[str, ...], list[str]] = {}
    for name, settings in sources.items():
        by_outbox.setdefault(outbox_identity(settings), []).append(name)
    return sorted(sorted(names) for names in by_outbox.values() if len(names) > 1)
