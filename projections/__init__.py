"""Projections: what a projection author imports lives here.

See ``projections/api.py`` for a complete example and README.md for how to run one.
"""

from projections.api import Event, PayloadError, Projection, Tx, load_projections, on
from projections.engine import ProjectionEngine, RetryLater
from projections.store import BatchResult, HandlerFailed, Lane, ParkedEvent, Store

__all__ = [
    "BatchResult",
    "Event",
    "HandlerFailed",
    "Lane",
    "ParkedEvent",
    "PayloadError",
    "Projection",
    "ProjectionEngine",
    "RetryLater",
    "Store",
    "Tx",
    "load_projections",
    "on",
]
