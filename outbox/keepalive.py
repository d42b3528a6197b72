"""A leader's session must end soon after its host dies, so a standby takes over.

PostgreSQL: the leader holds a session advisory lock; if its machine dies without closing
TCP, the server keeps the session (and the lock) until its TCP keepalive notices, about two
hours by the operating system's defaults. The leader's sessions (the one that takes the
lock, and the LISTEN one) therefore set the server's keepalive probes and
``tcp_user_timeout`` (session settings any user may set), and connect with libpq's
client-side ones: a dead peer is dropped within about half a minute (idle 10 s, then 4 probes
5 s apart; data unacknowledged for 30 s). Values the DSN sets win: libpq's in its query,
the server's in its ``options`` (``-c tcp_keepalives_idle=60``).

MySQL/MariaDB: ``GET_LOCK`` is released when the session ends; the server has no per-session
keepalive setting, but the leader's session is never idle for long (it claims at least every
``poll_max``), so its ``wait_timeout`` is lowered to :func:`mysql_wait_timeout` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

CLIENT: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 4,
    "tcp_user_timeout": 30_000,  # milliseconds
}
SERVER: dict[str, int] = {
    "tcp_keepalives_idle": 10,
    "tcp_keepalives_interval": 5,
    "tcp_keepalives_count": 4,
    "tcp_user_timeout": 30_000,  # milliseconds; PostgreSQL 12+
}
MYSQL_IDLE_FLOOR = 60  # seconds: the least wait_timeout a MySQL leader's session gets


def client_keepalives(url: str) -> dict[str, Any]:
    """libpq's keepalive connect parameters for a PostgreSQL DSN, less those it sets."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        return {}
    return {key: value for key, value in CLIENT.items() if key not in parsed.query}


def server_keepalives(url: str) -> list[str]:
    """``SET`` statements for the server's keepalive settings the DSN's ``options`` leaves
    unset, ``tcp_user_timeout`` last (a server before 12 refuses it)."""
    options = sa.make_url(url).query.get("options", "")
    text = " ".join(options) if isinstance(options, tuple) else options
    return [f"SET {name} = {value}" for name, value in SERVER.items() if name not in text]


def apply_server_keepalives(url: str, execute: Callable[[str], None]) -> None:
    """Run :func:`server_keepalives` one by one through ``execute``, which must absorb a
    refusal itself (a server without ``tcp_user_timeout``)."""
    for statement in server_keepalives(url):
        execute(statement)


def mysql_wait_timeout(url: str, poll_max: timedelta) -> int | None:
    """Seconds of idleness after which the server ends a MySQL leader's session (a dead host
    sends nothing more): well past the longest wait between claims; ``None`` when the DSN's
    ``init_command`` sets ``wait_timeout`` itself."""
    init = sa.make_url(url).query.get("init_command", "")
    if "wait_timeout" in (" ".join(init) if isinstance(init, tuple) else init):
        return None
    return max(MYSQL_IDLE_FLOOR, math.ceil(poll_max.total_seconds() * 4))
