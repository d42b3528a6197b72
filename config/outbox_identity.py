"""Which outbox a source reads: two sources reading one outbox would mix their rows.

The relay's leader lock is per database and table, so two sources (two tenants) naming the
same outbox would each take whatever rows they claim first, under their own name and
tenant. The identity compares where the rows are (engine, host, port, database, schema,
table) after normalising what the DSN may spell differently; never the user or password.

Where is read from what the driver will be given (SQLAlchemy's connect arguments), so the
libpq forms count: ``?dbname=`` (over the path), ``?host=``/``?port=``, ``?hostaddr=`` (where
libpq connects, over the host name), a list of hosts (one outbox with each source reading
one of its servers: :func:`outbox_groups`), a ``?service=`` read from the service file
libpq reads, and a ``search_path`` set in ``?options=-csearch_path=...``: an unqualified
outbox table is the one in that schema, so two tenants of one database in two schemas are
two outboxes. A MySQL / MariaDB ``schema`` is a database: the one it names, not the DSN's.

A URL cannot prove that a Unix socket and a TCP address reach one server (only the server
could say, e.g. by ``pg_control_system()``): a socket (PostgreSQL: any directory, or none
given; MySQL / MariaDB: ``?unix_socket=``) is taken as the loopback address with the
URL's port, so it conflicts with ``127.0.0.1``/``localhost`` on that port. Two local
servers on one port (one socket-only) would be refused as one, aloud; the reverse mistake
would mix two tenants' rows. Not seen either: two host names of one machine, ``"$user"``
in a search path (skipped, as the default path is read as ``public``), and ``PGHOST`` /
``PGPORT`` / ``PGOPTIONS`` / ``PGSERVICE`` set outside the DSN.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from sqlalchemy.engine import URL, make_url

_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mongodb": 27017}
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
_DIALECTS: dict[str, Any] = {}
_SERVICE_FILES: dict[str, tuple[int, dict[str, dict[str, str]]]] = {}  # path: (mtime, services)


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
    args = _connect_args(parsed)
    if kind == "mysql":  # ?unix_socket=: the local server (its path tells no port)
        database = str(args.get("database") or args.get("db") or parsed.database or "")
        host = (
            "127.0.0.1" if args.get("unix_socket") else _host(str(args.get("host") or "localhost"))
        )
        port = str(args.get("port") or _DEFAULT_PORTS["mysql"])
        # A MySQL schema is a database: the one named reads its table, whatever the DSN's.
        return (kind, host, port, settings.schema_name or database, settings.table)
    if args.get("service"):  # what the DSN sets itself over what the service file does
        args = {**_pg_service(str(args["service"])), **{k: v for k, v in args.items() if v}}
    user = str(args.get("user") or parsed.username or "")
    return (  # PostgreSQL (the URL was checked: no other engine)
        kind,
        _pg_servers(args),
        str(args.get("dbname") or user),
        settings.schema_name or _search_path_schema(str(args.get("options") or "")) or "public",
        settings.table,
    )


def _connect_args(parsed: URL) -> dict[str, Any]:
    """The keyword arguments the driver will be given (query parameters included), or the
    URL's own parts when its dialect cannot say."""
    if "+" not in parsed.drivername:
        driver = {"postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
        backend = parsed.get_backend_name()
        if backend in driver:
            parsed = parsed.set(drivername=f"{backend}+{driver[backend]}")
    try:
        return dict(_dialect(parsed.drivername, parsed).create_connect_args(parsed)[1])
    except Exception:  # a driver this machine lacks: the URL as written
        query = {k: v for k, v in parsed.query.items() if isinstance(v, str)}
        return {"host": parsed.host, "port": parsed.port, "user": parsed.username, **query}


def _dialect(drivername: str, parsed: URL) -> Any:
    """A dialect of ``drivername``, made once (a registry of many rows asks for each)."""
    if drivername not in _DIALECTS:
        _DIALECTS[drivername] = parsed.get_dialect()()
    return _DIALECTS[drivername]


def _pg_servers(args: Mapping[str, Any]) -> str:
    """The servers libpq may connect to, ``host:port`` each, sorted, once each: a host's
    ``hostaddr`` (where libpq connects; the host name is then only for authentication)
    over its name, and one port for all hosts or one per host (an empty one: the default)."""
    hosts = str(args.get("host") or "").split(",")
    addresses = str(args.get("hostaddr") or "").split(",")
    ports = str(args.get("port") or "").split(",")
    count = max(len(hosts), len(addresses))

    def nth(items: list[str], i: int) -> str:
        return items[i] if len(items) == count else items[0] if len(items) == 1 else ""

    servers = {
        f"{_pg_host(nth(addresses, i) or nth(hosts, i))}:"
        f"{nth(ports, i).strip() or _DEFAULT_PORTS['postgresql']}"
        for i in range(count)
    }
    return ",".join(sorted(servers))


def _pg_service(name: str) -> dict[str, str]:
    """The connection parameters of the libpq service ``name``: the user's service file
    (``PGSERVICEFILE``, or ``~/.pg_service.conf``) first, then ``PGSYSCONFDIR``'s. A
    service found in neither (libpq will not connect) stands for itself."""
    files = [os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")]
    if os.environ.get("PGSYSCONFDIR"):
        files.append(os.path.join(os.environ["PGSYSCONFDIR"], "pg_service.conf"))
    for path in files:
        try:
            stamp = os.stat(path).st_mtime_ns
        except OSError:
            continue
        if _SERVICE_FILES.get(path, (None, {}))[0] != stamp:
            _SERVICE_FILES[path] = (stamp, _service_file(path))
        if name in _SERVICE_FILES[path][1]:
            return _SERVICE_FILES[path][1][name]
    return {"host": f"service={name}"}


def _service_file(path: str) -> dict[str, dict[str, str]]:
    """``{service: {parameter: value}}`` of a libpq service file."""
    services: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    try:
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                if line.startswith("[") and line.endswith("]"):
                    current = services.setdefault(line[1:-1], {})
                elif current is not None and "=" in line:
                    key, _, value = line.partition("=")
                    current.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    return services


def _pg_host(host: str) -> str:
    """A libpq host; a Unix socket (a directory, or none given: the default one) as the
    loopback address: its file is named by the port, so with the port it is taken to be
    the local server listening there (a false conflict is refused aloud, a missed one would
    mix two tenants' rows)."""
    host = host.strip()
    return "127.0.0.1" if not host or host.startswith("/") else _host(host)


def _search_path_schema(options: str) -> str:
    """The first schema of a ``search_path`` set in libpq ``options`` (``-c search_path=a``,
    ``-csearch_path=a``, ``--search_path=a``), ``""`` when none is set."""
    found = ""
    for arg in re.findall(r"(?:\\.|[^\s])+", options.replace("-c ", "-c")):
        arg = re.sub(r"\\(.)", r"\1", arg)
        setting = arg.removeprefix("--") if arg.startswith("--") else arg.removeprefix("-c")
        name, equals, value = setting.partition("=")
        if equals and name.strip().lower().replace("-", "_") == "search_path":
            found = value
    for schema in found.split(","):
        schema = schema.strip()
        if schema and schema != '"$user"' and schema != "$user":
            return schema[1:-1].replace('""', '"') if schema.startswith('"') else schema.lower()
    return ""


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


def outbox_groups(sources: Mapping[str, Any]) -> list[list[str]]:
    """The names of ``sources`` by the outbox they read, each list sorted (one list per
    outbox, one name or more). A PostgreSQL list of hosts reads the outbox of whichever of
    its servers answers first, so it is one with every source reading one of them."""
    parent = {name: name for name in sources}

    def root(name: str) -> str:
        while parent[name] != name:
            parent[name] = name = parent[parent[name]]
        return name

    first: dict[tuple[str, ...], str] = {}
    for name, settings in sources.items():
        identity = outbox_identity(settings)
        servers = identity[1].split(",") if identity[0] == "postgresql" else [identity[1]]
        for server in servers:
            other = first.setdefault((identity[0], server, *identity[2:]), name)
            parent[root(name)] = root(other)
    groups: dict[str, list[str]] = {}
    for name in sources:
        groups.setdefault(root(name), []).append(name)
    return [sorted(names) for names in groups.values()]


def shared_outboxes(sources: Mapping[str, Any]) -> list[list[str]]:
    """The names of sources reading one outbox, each list sorted, for every outbox that more
    than one of ``sources`` reads."""
    return sorted(names for names in outbox_groups(sources) if len(names) > 1)
