"""The error of a query that is itself wrong (:class:`QueryError`).

Its own module because the readers, the value and cursor parsing, the cache keys, the
consistency wait and the tenant scoping all raise it, and none of them should import a
reader for it.
"""

from __future__ import annotations

from outbox.errors import ReadmodelError


class QueryError(ReadmodelError):
    """The query itself is wrong: unknown projection, table, column or query, a column
    without an index, a bad key or cursor. Nothing was read."""
