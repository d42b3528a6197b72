"""Which tenant a query's reader reads for (DESIGN.md invariant 6: a query for tenant A can
never return tenant B's rows).

A reader is scoped once. :meth:`projections.Queries.reader` scopes a copy of the
projection's unscoped reader to the tenant asked for, and a ``@query`` run for a tenant reads
through that copy, which keeps its tenant: ``read.for_tenant(other)`` is refused, naming the
query, and so is the store's raw handle (``read.engine``, a document reader's
``read.database``), which would reach every tenant's rows. An unscoped reader (of a
projection without a ``tenant_column``, or one made directly, as an operator's script may)
keeps both: it has no tenant to leave.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

from projections.query_errors import QueryError

_Reader = TypeVar("_Reader")


def scoped_to_tenant(
    reader: _Reader, projection: str, tenant_column: str | None, tenant: str | None, kept: str
) -> _Reader:
    """A copy of ``reader`` reading for ``tenant``. A projection with a ``tenant_column`` must
    be read for a tenant, one without has none to give; a reader already scoped stays with
    its tenant (asked for it again, it is itself)."""
    current = getattr(reader, "_tenant", None)
    if current is not None:
        if tenant == current:
            return reader
        raise QueryError(
            f"{_reading(reader, projection)} reads for one tenant: its reader cannot be "
            f"scoped to another (read.for_tenant); a query reads the rows of the tenant it "
            f"is run for"
        )
    if tenant_column is None:
        if tenant is not None:
            raise QueryError(
                f"projection {projection!r} keeps no tenant column: read it without one"
            )
        return reader
    if tenant is None:
        raise QueryError(
            f"projection {projection!r} keeps {kept} per tenant: give the tenant "
            f"(tenant=..., readmodel query --tenant T)"
        )
    scoped = copy.copy(reader)
    scoped._tenant = tenant  # type: ignore[attr-defined]
    return scoped


def for_query(reader: _Reader, name: str) -> _Reader:
    """A copy of ``reader`` whose refusals name the ``@query`` ``name`` it is given to."""
    named = copy.copy(reader)
    named._query = name  # type: ignore[attr-defined]
    return named


def raw_handle(reader: Any, handle: Any, what: str, projection: str) -> Any:
    """``handle`` (the store's own engine or database) for an unscoped reader; refused for a
    reader scoped to a tenant, as it reads every tenant's rows."""
    if getattr(reader, "_tenant", None) is None:
        return handle
    raise QueryError(
        f"{_reading(reader, projection)} reads for one tenant: {what} (the store itself, "
        f"every tenant's rows) is not given to a tenant's reader; read with get, first or find"
    )


def _reading(reader: Any, projection: str) -> str:
    name = getattr(reader, "_query", None)
    return f"projection {projection!r}" if name is None else f"query {projection}.{name}"
