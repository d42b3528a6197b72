"""Blue/green document rebuilds with ``--skip-errors`` whose handlers fail after writing,
and what such a rebuild leaves (tests/test_document_replay_skip_in_memory.py): each runs
the one log into a MongoDB database of its own, so a rebuild in one transaction and one
event per transaction can be compared."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from outbox.envelope import Envelope
from outbox.log import EventLog
from projections.api import Event, Projection, on
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayOptions
from tests.document_fixtures import DocTotals

SHOP = "shop"


class CountingTotals(DocTotals):
    """:class:`DocTotals` counting the handler runs of each position. Its ``Boom`` writes a
    document of its own, changes ``acct-0``'s (read with ``get``), deletes ``acct-1``'s and
    adds a cache tag, then fails; with ``flush`` in its payload it reads with ``tx.find``
    (a flush) before failing, with ``find_first`` before its first write (a flush of the
    batch's earlier writes alone)."""

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()

    def handle(self, envelope: Envelope, tx: Any) -> bool:
        self.runs[envelope.position or 0] += 1
        return super().handle(envelope, tx)

    @on("bank", "Boom")
    def boom(self, event: Event[dict[str, Any]], tx: Any) -> None:
        if event.payload.get("find_first"):
            tx.find("doc_totals", events=-1)
        tx.upsert("doc_totals", {"_id": f"boom-{event.position}", "events": -1})
        other = tx.get("doc_totals", "acct-0")
        if other is not None:
            tx.upsert("doc_totals", {**other, "total": other["total"] + 1000})
        tx.delete("doc_totals", "acct-1")
        tx.invalidate("boom:tag")
        if event.payload.get("flush"):
            tx.find("doc_totals", events=-1)
        raise ValueError(f"boom {event.aggregate_id}")


class TenantSteps(Projection):
    """Orders' steps per tenant (``doc_tenant_steps``, ``_id`` ``tenant:order``) and every
    tenant's arrivals per order in one shared document (``doc_step_log``): an event applied
    past a hold shows there. An event without a tenant writes the shared document only. A
    ``poison`` step fails after its writes and a cache tag; the prefetch reads every
    tenant's documents of the batch's orders."""

    name = "doc_tenant_steps"
    store = "docs"
    collections = ("doc_tenant_steps", "doc_step_log")
    shared_collections = ("doc_step_log",)
    tenant_column = "tenant"
    replay_safe = True

    def __init__(self) -> None:
        self.runs: Counter[int] = Counter()

    def handle(self, envelope: Envelope, tx: Any) -> bool:
        self.runs[envelope.position or 0] += 1
        return super().handle(envelope, tx)

    def prefetch(self, events: Sequence[Envelope], tx: Any) -> None:
        tx.prefetch("doc_tenant_steps", [f"{e.tenant}:{e.aggregate_id}" for e in events])
        tx.prefetch("doc_step_log", [e.aggregate_id for e in events])

    @on(SHOP, "Stepped")
    def stepped(self, event: Event[dict[str, Any]], tx: Any) -> None:
        step = f"{event.tenant or '-'}:{event.payload['step']}"
        log = tx.get("doc_step_log", event.aggregate_id) or {"_id": event.aggregate_id}
        tx.upsert("doc_step_log", {**log, "seen": [*log.get("seen", []), step]})
        if event.tenant is not None:
            key = f"{event.tenant}:{event.aggregate_id}"
            document = tx.get("doc_tenant_steps", key) or {"_id": key, "steps": []}
            document["steps"].append(event.payload["step"])
            tx.upsert("doc_tenant_steps", document)
        if event.payload.get("poison"):
            tx.invalidate(f"poison:{event.aggregate_id}")
            raise RuntimeError(f"poison {step}")


def tenant_steps(n: int, seed: int) -> list[tuple[str | None, str, str, dict[str, Any]]]:
    """``n`` steps of orders ``o0``..``o7`` of tenants ``acme``, ``globex`` and none (about
    one in twelve), about one in fifteen poison: events without a tenant meet tenants'
    holds and tenants' events meet holds naming none."""
    rng = random.Random(seed)
    steps: Counter[tuple[str | None, str]] = Counter()
    events = []
    for _ in range(n):
        tenant = None if rng.random() < 1 / 12 else rng.choice(["acme", "globex"])
        order = f"o{rng.randrange(8)}"
        steps[(tenant, order)] += 1
        payload: dict[str, Any] = {"step": steps[(tenant, order)]}
        if rng.random() < 1 / 15:
            payload["poison"] = True
        events.append((tenant, order, "Stepped", payload))
    return events


@dataclass(frozen=True)
class Rebuilt:
    """What a rebuild left: the new generation's documents per declared collection, the
    skipped events (in the order listed, with their holds), the parked ones, the count
    applied."""

    documents: dict[str, list[dict[str, Any]]]
    skipped: list[tuple[Any, ...]]
    parked: list[tuple[int, str, str]]
    applied: int


def rebuild(log: EventLog, url: str, projection: Projection, batch: int) -> Rebuilt:
    """A blue/green rebuild skipping errors of ``projection`` from ``log`` into the MongoDB
    database at ``url``, ``batch`` events per transaction."""
    store = MongoStore(url)
    try:
        store.create_tables([projection])
        replayer = DocumentReplayer(
            LogReader(log), projection, store, batch_size=batch, retire_after=0.0
        )
        summary = replayer.run(ReplayOptions(skip_errors=True))
        database = store.database
        physical = collections_at(projection, generation_of(database, projection.name))
        documents = {c: list(database[p].find().sort("_id", 1)) for c, p in physical.items()}
        named = database.name  # in a refusal's text: another in each rebuild compared

        def unnamed(text: str) -> str:
            return text.replace(named, "<database>")

        skipped = [
            (s.source, s.position, s.event_id, unnamed(s.error), s.held_behind, s.tenant)
            + (s.event_tenant,)
            for s in summary.skipped
        ]
        parked = [(p.position, p.tenant, unnamed(p.reason)) for p in store.parked(projection.name)]
        return Rebuilt(documents, skipped, parked, summary.events)
    finally:
        store.close()
