"""Which table a declared name is, as the store holding it resolves names: the key the load
checks (:mod:`projections.owned_names`, :mod:`projections.rebuild_names`) compare.

- PostgreSQL: SQLAlchemy quotes a name unless it is plain lower-case ASCII (or the table was
  declared ``quote=False``); a quoted name is kept as written (``"Orders"`` and ``orders``
  are two tables), an unquoted one folded to lower case. No schema is ``public`` (the
  default ``search_path``'s).
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
        return (_pg(schema) if schema is not None else "public", _pg(name))
    if kind == SQLITE:
        return ((schema or "main").translate(_ASCII_LOWER), name.translate(_ASCII_LOWER))
    return (schema, name.casefold())


def _pg(name: str) -> str:
    """The name PostgreSQL's catalog holds: as written when SQLAlchemy quotes it, else
    folded to lower case (ASCII letters, as PostgreSQL folds a UTF-8 identifier)."""
    return name if _PG.quote(name) != name else name.translate(_ASCII_LOWER)
