"""A tenant registry's read bounded in time: one stuck where the connect and query timeouts
do not reach (a TCP stall mid-query, which the server's statement timeout cannot answer,
and a stalled proxy in between hides from TCP keepalives) is given up with a warning, and
ended (:meth:`TenantRegistry.abort`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import structlog

from outbox.errors import SourceError
from outbox.keepers import Appends
from outbox.registry_members import Members
from outbox.tenant_registry import TenantRegistry

logger = structlog.get_logger("readmodel.relay")

READ_BOUND = 30.0
"""Seconds a registry's read may take: its connect (5 s) and query (10 s) timeouts end it
well before; one still going is stuck where they do not reach. It is given up with a
warning and ended, and the registry read again on a new connection."""

_STOP_POLL = 0.1  # seconds: how soon a read waited for sees its process stopping

GIVEN_UP = (
    "tenant registry read gives no answer; given up, and the registry read again on a new "
    "connection"
)
GIVEN_UP_ONCE = "tenant registry read gives no answer; given up"
"""The warning of a one-shot command (``relay --once``, ``outbox init``, ``status``): no
read follows."""


def given_up_error(group: str, bound: float) -> str:
    return f"tenant registry {group!r}: its read gave no answer within {bound:g}s"


class ReadStopped(SourceError):
    """The read was ended because its process is stopping (``stop`` set): no failure."""


def read_within(
    registry: TenantRegistry,
    appends: Callable[[], Appends] | None,
    bound: float,
    stop: threading.Event | None = None,
    retry_in: str | None = None,
) -> Members:
    """``registry.read(appends)``, given up after ``bound`` seconds (a warning logged, the
    read ended): raises :class:`SourceError` then, as for an unreadable registry. Once
    ``stop`` is set, the read is ended at once (no warning): :class:`ReadStopped`.
    ``retry_in``: when a running relay reads it again (the warning says so); ``None``: a
    one-shot command, no read follows."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def read() -> None:
        try:
            outcome["members"] = registry.read(appends)
        except BaseException as exc:  # the caller's to raise
            outcome["error"] = exc
        finally:
            done.set()

    thread = threading.Thread(target=read, name=f"registry-read-{registry.group}", daemon=True)
    thread.start()
    deadline = time.monotonic() + bound
    while not done.wait(max(0.0, min(_STOP_POLL, deadline - time.monotonic()))):
        if stop is not None and stop.is_set():  # SIGTERM: not worth waiting for, nor a failure
            registry.abort()
            raise ReadStopped(f"tenant registry {registry.group!r}: its read ended: stopping")
        if time.monotonic() < deadline:
            continue
        registry.abort()
        if retry_in is None:
            logger.warning(GIVEN_UP_ONCE, registry=registry.group, after=f"{bound:g}s")
        else:
            logger.warning(
                GIVEN_UP, registry=registry.group, after=f"{bound:g}s", retry_in=retry_in
            )
        raise SourceError(given_up_error(registry.group, bound))
    if "error" in outcome:
        raise outcome["error"]
    members: Members = outcome["members"]
    return members
