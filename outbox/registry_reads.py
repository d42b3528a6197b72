"""A tenant registry's read bounded in time: one stuck where the connect and query timeouts
do not reach (a TCP stall mid-query, which the server's statement timeout cannot answer,
and a stalled proxy in between hides from TCP keepalives) is given up with a warning, and
ended (:meth:`TenantRegistry.abort`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import structlog

from outbox.errors import SourceError
from outbox.keepers import Appends
from outbox.tenant_registry import Members, TenantRegistry

logger = structlog.get_logger("readmodel.relay")

READ_BOUND = 30.0
"""Seconds a registry's read may take: its connect (5 s) and query (10 s) timeouts end it
well before; one still going is stuck where they do not reach. It is given up with a
warning and ended, and the registry read again on a new connection."""

GIVEN_UP = (
    "tenant registry read gives no answer; given up, and the registry read again on a new "
    "connection"
)


def given_up_error(group: str, bound: float) -> str:
    return f"tenant registry {group!r}: its read gave no answer within {bound:g}s"


def read_within(
    registry: TenantRegistry, appends: Callable[[], Appends] | None, bound: float
) -> Members:
    """``registry.read(appends)``, given up after ``bound`` seconds (a warning logged, the
    read ended): raises :class:`SourceError` then, as for an unreadable registry."""
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
    if not done.wait(bound):
        registry.abort()
        logger.warning(
            GIVEN_UP, registry=registry.group, after=f"{bound:g}s", retry_in="the next refresh"
        )
        raise SourceError(given_up_error(registry.group, bound))
    if "error" in outcome:
        raise outcome["error"]
    members: Members = outcome["members"]
    return members
