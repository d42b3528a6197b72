"""The reference e-commerce system: service schemas, events, a workload simulator, four
projections and ``verify``, which recomputes every read model from the services.

Register the projections with
``projections = ["projections.reference.user_directory", "projections.reference.product_catalog",
"projections.reference.order_summary", "projections.reference.customer_stats"]``
(:data:`PROJECTION_MODULES`); the sources must be named ``auth``, ``products`` and ``orders``.
"""

from __future__ import annotations

PROJECTION_MODULES = [
    "projections.reference.user_directory",
    "projections.reference.product_catalog",
    "projections.reference.order_summary",
    "projections.reference.customer_stats",
]

__all__ = ["PROJECTION_MODULES"]
