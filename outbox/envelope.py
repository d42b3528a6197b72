"""The event envelope: what the log stores and what projections receive."""

from __future__ import annotations

import zlib
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Envelope(BaseModel):
    """One domain event as recorded in the event log.

    ``position`` is the event's gap-free position in its source's log (``None``
    before it is appended). ``headers`` carries ``correlation_id`` and
    ``causation_id`` when the service set them.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    source: str
    tenant: str | None = None
    aggregate_type: str
    aggregate_id: str
    event_type: str
    payload: dict[str, Any]
    headers: dict[str, Any] = Field(default_factory=dict)
    occurred_at: datetime | None = None
    position: int | None = None

    @property
    def correlation_id(self) -> str | None:
        value = self.headers.get("correlation_id") or self.headers.get("correlationId")
        return None if value is None else str(value)

    @property
    def causation_id(self) -> str | None:
        value = self.headers.get("causation_id") or self.headers.get("causationId")
        return None if value is None else str(value)


def aggregate_hash(aggregate_type: str, aggregate_id: str) -> int:
    """A stable non-negative 31-bit hash of an aggregate, for partitions (same in every process)."""
    return zlib.crc32(f"{aggregate_type}\x1f{aggregate_id}".encode()) & 0x7FFFFFFF
