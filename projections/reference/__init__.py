"""The reference e-commerce system: service schemas, events, a workload simulator, four
projections and ``verify``, which recomputes every read model from the services.

Register the projections with
``projections = ["projections.reference.user_directory", "projections.reference.product_catalog",
"projections.reference.order_summary", "projections.reference.customer_stats"]``
(:data:`PROJECTION_MODULES`); the sources must be named ``auth``, ``products`` and ``orders``.
The chat service (a MongoDB source named ``chat``) is optional; its read model,
``projections.reference.conversation_inbox`` (:data:`CHAT_PROJECTION_MODULES`), keeps documents
in a MongoDB store named ``docs``.
"""

from __future__ import annotations

PROJECTION_MODULES = [
    "projections.reference.user_directory",
    "projections.reference.product_catalog",
    "projections.reference.order_summary",
    "projections.reference.customer_stats",
]

CHAT_PROJECTION_MODULES = ["projections.reference.conversation_inbox"]

__all__ = ["CHAT_PROJECTION_MODULES", "PROJECTION_MODULES"]
