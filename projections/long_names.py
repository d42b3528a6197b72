"""The refusal of a PostgreSQL table (or schema) name longer than the 63 bytes PostgreSQL
keeps of a name (:func:`projections.store_identifiers.pg_kept`). PostgreSQL cuts such a
name short in every statement (with a notice), so the first start creates the table under
the cut name; but SQLAlchemy looks it up by the whole name, finds nothing, and the next
start fails creating it again ("already exists"), while a replay does not find the live
table. SQLAlchemy itself refuses a name over 63 characters only when it makes the table; a
name of fewer characters but more bytes (``é`` is two) reached PostgreSQL. Refused when the
projections are loaded instead, naming the table and what PostgreSQL would keep of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from projections.store_identifiers import PG_NAME_BYTES, POSTGRESQL, pg_kept, pg_too_long


def check_name_lengths(projections: Sequence[Any], kinds: Mapping[str, str]) -> None:
    """Raise ``ValueError`` naming the first table of a PostgreSQL store (``kinds``:
    :func:`~projections.store_identifiers.store_kinds`) whose name or schema PostgreSQL
    would cut short."""
    for projection in projections:
        store = getattr(projection, "store", "default")
        if kinds.get(store) != POSTGRESQL:
            continue
        for table in projection.tables:
            for what, name in (("schema", table.schema), ("name", table.name)):
                if name is not None and pg_too_long(str(name)):
                    raise ValueError(
                        f"table {_full(table)} of projection {projection.name!r} in store "
                        f"{store!r}: its {what} is {len(str(name).encode())} bytes long "
                        f"(UTF-8) and PostgreSQL keeps the first {PG_NAME_BYTES} of a name: "
                        f"it would be {pg_kept(str(name))!r}, under which readmodel does not "
                        f"find it again (the next start would fail creating it, a replay "
                        f"would not find it); give it a name of at most {PG_NAME_BYTES} bytes"
                    )


def _full(table: Any) -> str:
    return f"{table.schema}.{table.name}" if table.schema else table.name
