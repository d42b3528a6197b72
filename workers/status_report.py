"""The report ``status``, ``health`` and metrics share (:func:`workers.status.collect` reads
it): sources, projections, the broker queue and the read stores, and its stable ``status
--json`` document."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from outbox.status import SourceStatus
from projections.status import ProjectionStatus, iso_utc
from workers.queues import QueueDepth

SCHEMA_VERSION = 2  # 2: taken_at in ISO-8601 UTC; log_head, parked null when the log is unread


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A read store holding projections; ``error`` when it could not be read (its
    projections are then left out of the report, the other stores' are not)."""

    store: str
    url: str
    projections: list[str]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Report:
    sources: list[SourceStatus]
    projections: list[ProjectionStatus]
    broker: QueueDepth
    taken_at: float = field(default_factory=time.time)
    stores: list[StoreStatus] = field(default_factory=list)

    def unreachable_stores(self) -> list[StoreStatus]:
        return [s for s in self.stores if s.error]

    def as_dict(self) -> dict[str, Any]:
        """The stable ``status --json`` document (see README, "Watching it run")."""
        return {
            "version": SCHEMA_VERSION,
            "taken_at": iso_utc(self.taken_at),
            "sources": [s.as_dict() for s in self.sources],
            "projections": [p.as_dict() for p in self.projections],
            "broker": self.broker.as_dict(),
            "stores": [s.as_dict() for s in self.stores],
        }
