"""A tenant table in a handler's transaction (:class:`projections.sql_tx.SqlTx`): the rows a
handler reads and writes are its event's tenant's, as a document projection's are.

A row written is placed in the event's tenant (:func:`placed`); a key that another tenant's
row holds is not the handler's to read (``get`` finds nothing), to overwrite (the upsert fails
with :class:`TenantError`: an upsert would move the row, with the columns it does not write,
into the event's tenant) or to delete (the other tenant's row stays). A row without a tenant
(NULL, as a readmodel before these checks let a handler leave it) is no tenant's: the same,
and its upsert's error says to rebuild the projection (:func:`taken`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from outbox.envelope import Envelope
from projections.api import TenantError

_MISSING: Any = object()


def _what(event: Envelope) -> str:
    return f"{event.event_type} at {event.source}:{event.position}"


def placed(
    projection: str, event: Envelope | None, table: sa.Table, column: str, row: Mapping[str, Any]
) -> Mapping[str, Any]:
    """``row`` in the tenant of the event being handled (filled in when it lacks the
    column); :class:`TenantError` when it names another tenant or there is none."""
    tenant = None if event is None else event.tenant
    given = row.get(column, _MISSING)
    if tenant is not None and given == tenant:
        return row
    if event is None:
        raise TenantError(
            f"{projection}: a row of {table.name!r} written outside any event cannot be "
            f"placed in a tenant (tenant column {column!r})"
        )
    if tenant is None:
        raise TenantError(
            f"{projection}: {_what(event)} has no tenant, so its row of {table.name!r} cannot "
            f"be placed (tenant column {column!r})"
        )
    if given is _MISSING:
        return {**row, column: tenant}
    raise TenantError(  # not the row's value: any, a hidden payload field's too, may be there
        f"{projection}: a row of {table.name!r} names another tenant than the event's "
        f"({tenant!r}) in {column!r} ({_what(event)}; the value is not shown); a handler "
        "writes only its event's tenant's rows"
    )


def reading_tenant(
    projection: str, event: Envelope | None, table: sa.Table, column: str, doing: str
) -> str:
    """The tenant whose rows of ``table`` a handler reads or deletes: its event's;
    :class:`TenantError` for an event without one (or code outside any event)."""
    if event is not None and event.tenant is not None:
        return event.tenant
    what = "code outside any event" if event is None else f"{_what(event)}, which has no tenant,"
    raise TenantError(
        f"{projection}: {what} cannot {doing} rows of {table.name!r}: they belong to tenants "
        f"(tenant column {column!r})"
    )


def mine(row: Mapping[str, Any] | None, column: str, tenant: str) -> bool:
    """Whether ``row`` (``None``: no row) is free for ``tenant`` or its own."""
    return row is None or row.get(column) == tenant


def taken(
    projection: str,
    event: Envelope | None,
    table: sa.Table,
    column: str,
    found: Mapping[str, Any] | None,
) -> TenantError:
    """The error of an upsert whose key another tenant's row holds, or a row without a
    tenant (``found``): an older readmodel left the column NULL where a handler did not
    write it; whose row it is, is not known, so it is not taken over: a rebuild from the
    log writes every row in its event's tenant."""
    what = "code outside any event" if event is None else _what(event)
    if found is not None and found.get(column) is None:
        return TenantError(
            f"{projection}: a row of {table.name!r} written by {what} has the key of a row "
            f"without a tenant (NULL in {column!r}, as a readmodel before tenant checks left "
            "it when a handler did not write the column; the key is not shown): not "
            "overwritten, as its other columns may be any tenant's",
            remedy="rebuild the projection from the event log, which writes every row in its "
            f"event's tenant and applies this event again: `readmodel replay {projection} "
            "--yes` (`readmodel parked skip` drops the event instead)",
        )
    return TenantError(
        f"{projection}: a row of {table.name!r} written by {what} has the key of another "
        f"tenant's row (tenant column {column!r}; the key is not shown): not overwritten; "
        "give each tenant's rows keys of their own (or a key that includes the tenant column)"
    )
