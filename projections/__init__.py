"""Projections: what a projection author imports lives here.

See ``projections/api.py`` for a complete example and README.md for how to run one.
"""

from projections.api import (
    Event,
    PayloadError,
    Projection,
    TenantError,
    Tx,
    UnstorableValueError,
    WideIntegerError,
    load_projections,
    on,
)
from projections.consistency import (
    ConsistencyError,
    ConsistencyParked,
    ConsistencyTimeout,
    ConsistencyToken,
)
from projections.engine import ProjectionEngine, RetryLater
from projections.mongo_tx import DocumentTx
from projections.queries import QuerySpec, Reader, query
from projections.query_errors import QueryError
from projections.query_reader import Page
from projections.query_service import Queries, Result, open_queries
from projections.store import BatchResult, HandlerFailed, Lane, ParkedEvent, Store

__all__ = [
    "BatchResult",
    "ConsistencyError",
    "ConsistencyParked",
    "ConsistencyTimeout",
    "ConsistencyToken",
    "DocumentTx",
    "Event",
    "HandlerFailed",
    "Lane",
    "Page",
    "ParkedEvent",
    "PayloadError",
    "Projection",
    "ProjectionEngine",
    "Queries",
    "QueryError",
    "QuerySpec",
    "Reader",
    "Result",
    "RetryLater",
    "Store",
    "TenantError",
    "Tx",
    "UnstorableValueError",
    "WideIntegerError",
    "load_projections",
    "on",
    "open_queries",
    "query",
]
