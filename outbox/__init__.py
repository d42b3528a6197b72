"""Outbox sources, the relay and the durable event log.

Usable from plain Python (no Dramatiq, no CLI)::

    from config import load_settings
    from outbox import Relay

    relay = Relay(load_settings("readmodel.toml"))
    relay.drain()          # or relay.run(stop_event)
"""

from outbox.envelope import Envelope, aggregate_hash
from outbox.errors import LogError, NotLeaderError, ReadmodelError, SourceError, StoreError
from outbox.log import AppendResult, EventLog
from outbox.relay import Relay
from outbox.source import OutboxSource, PendingStats
from outbox.source_relay import RelayHooks, SourceRelay
from outbox.sources import open_source

__all__ = [
    "AppendResult",
    "Envelope",
    "EventLog",
    "LogError",
    "NotLeaderError",
    "OutboxSource",
    "PendingStats",
    "ReadmodelError",
    "Relay",
    "RelayHooks",
    "SourceError",
    "SourceRelay",
    "StoreError",
    "aggregate_hash",
    "open_source",
]
