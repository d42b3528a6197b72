"""Which table a declared name is, as the store holding it resolves names: the key the load
checks (:mod:`projections.owned_names`, :mod:`projections.rebuild_names`) compare.

- PostgreSQL: SQLAlchemy quotes a name unless it is plain lower-case ASCII (or the table was
  declared ``quote=False``); a quoted name is kept as written (``"Orders"`` and ``orders``
  are two tables), an unquoted one folded to lower case. No schema is ``public`` (the
  default ``search_path``'s). PostgreSQL keeps the first 63 bytes of a name (NAMEDATALEN
  - 1), cut at a character boundary: names that differ only after that are one table
  (:func:`pg_kept`).
- SQLite: names match without case, ASCII letters only (``Straße`` and ``STRASSE`` are two
  tables); no schema is ``main``.
- A store of unknown kind (no URL given: a Python caller's ``load_projections``): names
  match without any case and schemas as written, so no clash is missed where it could be
  one.

MongoDB collection names match exactly, as written."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

POSTGRESQL = "postgresql"
PG_NAME_BYTES = 63
SQLITE = "sqlite"
_PG = postgresql.dialect().identifier_preparer
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

TableKey = tuple[str | None, str]


def store_kinds(urls: Mapping[str, str]) -> dict[str, str]:
    """``{store name: kind}`` for ``{store name: URL}`` (``default``: ``[store]``)."""
    return {name: _kind(url) for name, url in urls.items()}


def _kind(url: str) -> str:
    backend = make_url(url).get_backend_name().lower()
    return POSTGRESQL if backend == "postgres" else backend


def table_key(name: str, schema: str | None, kind: str | None) -> TableKey:
    """``(schema, name)`` as the store of ``kind`` resolves them: equal keys, one table."""
    if kind == POSTGRESQL:
        return (pg_kept(_pg(schema)) if schema is not None else "public", pg_kept(_pg(name)))
    if kind == SQLITE:
        return ((schema or "main").translate(_ASCII_LOWER), name.translate(_ASCII_LOWER))
    return (schema, name.casefold())


def _pg(name: str) -> str:
    """The name PostgreSQL's catalog holds: as written when SQLAlchemy quotes it, else
    folded to lower case (ASCII letters, as PostgreSQL folds a UTF-8 identifier)."""
    return name if _PG.quote(name) != name else name.translate(_ASCII_LOWER)


def pg_kept(name: str) -> str:
    """What PostgreSQL keeps of ``name``: its first 63 bytes in UTF-8, cut before a character
    that would not fit whole (as its server does, with a notice, in every statement)."""
    if len(name.encode()) <= PG_NAME_BYTES:
        return name
    kept, size = [], 0
    for char in name:
        size += len(char.encode())
        if size > PG_NAME_BYTES:
            break
        kept.append(char)
    return "".join(kept)


def pg_too_long(name: str) -> bool:
    """Whether PostgreSQL would cut ``name`` short (:func:`pg_kept`)."""
    return len(name.encode()) > PG_NAME_BYTES
