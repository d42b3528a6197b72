"""A reproducible shop workload for the reference services.

Users register, change e-mail and sometimes leave; products are created, renamed,
repriced, restocked and reviewed; orders are placed (their lines drawn from a Zipf-skewed
product popularity: a few hot products, a long tail of cold ones), stock is reserved for
them, and they are paid, shipped or cancelled (stock returned). Every business action is
one transaction in its own service database, writing the state change and its outbox
rows together.

Everything comes from one seeded random generator and a simulated clock, and nothing is
read back from the databases, so the same seed always produces the same final state in
the services' tables (UUIDs included). Each service keeps one open connection; statements
repeat with the same shape, so the drivers reuse prepared statements. On PostgreSQL the
simulator's sessions commit with ``synchronous_commit = off``: it is a load generator,
and a crash of the database server is not what it tests.

This module plans a run and drives it; the actions are in
:mod:`projections.reference.shop_actions`, what the shop remembers in
:mod:`projections.reference.shop_state`, the chat part in :mod:`projections.reference.chat`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from config import Settings
from outbox.errors import ReadmodelError
from projections.reference.chat import ChatSimulation
from projections.reference.chat_service import NO_CHAT, chat_source
from projections.reference.events import CHAT
from projections.reference.provision import init_services, service_sources
from projections.reference.shop_actions import ShopActions
from projections.reference.shop_state import SimulationResult
from projections.reference.writer import ServiceWriter


def planned_actions(users_count: int, orders_count: int) -> dict[str, int]:
    """How many actions of each kind a run performs (stock reservations follow each order)."""
    product_count = max(10, min(400, orders_count // 50 or 10))
    return {
        "register": users_count,
        "change_email": users_count // 5,
        "deactivate": users_count // 30,
        "create_product": product_count,
        "update_product": product_count // 2,
        "reprice": product_count * 2,
        "restock": product_count,
        "review": orders_count // 10,
        "place_order": orders_count,
        "pay": orders_count * 85 // 100,
        "ship": orders_count * 70 // 100,
        "cancel": orders_count * 7 // 100,
    }


class Simulator(ShopActions):
    """Runs the workload against the services configured in ``settings``.

    ``progress(done, total)`` is called after every action; ``rate`` caps actions per
    second (``None``: as fast as the databases go).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        seed: int = 1,
        rate: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        start: datetime = datetime(2025, 1, 6, 9, 0, tzinfo=UTC),
    ) -> None:
        super().__init__(seed=seed, start=start)
        self.settings = settings
        self.seed = seed
        self.rate = rate
        self.progress = progress or (lambda done, total: None)

    def run(self, users_count: int, orders_count: int) -> SimulationResult:
        """Create missing tables, then perform the planned actions in a seeded random mix."""
        init_services(self.settings)
        self.services = {
            name: ServiceWriter(name, s) for name, s in service_sources(self.settings).items()
        }
        remaining = planned_actions(users_count, orders_count)
        total = sum(remaining.values()) + orders_count + remaining["cancel"]  # + stock moves
        chat = chat_source(self.settings)
        if chat is None:
            self.result.notes.append(NO_CHAT)
        else:
            self.chat = ChatSimulation(
                chat, seed=self.seed, users=users_count, orders=orders_count, shop_actions=total
            )
            total += self.chat.planned + remaining["ship"]  # + notifications of shipments
        started = time.monotonic()
        done = 0
        try:
            while True:
                kinds = [k for k, n in remaining.items() if n > 0 and self._possible(k)]
                if not kinds:
                    break
                weights = [remaining[k] for k in kinds]
                kind = self.rng.choices(kinds, weights)[0]
                remaining[kind] -= 1
                done += self._perform(kind)
                if self.chat is not None:
                    done += self.chat.step(self.now, self.active_users)
                self.now += timedelta(seconds=7)
                self.progress(done, total)
                if self.rate:
                    ahead = started + done / self.rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            if self.chat is not None:
                done += self.chat.finish(self.now, self.active_users)
        finally:
            errors = []
            for service in [*self.services.values(), *([self.chat] if self.chat else [])]:
                try:
                    service.close()
                except ReadmodelError as exc:
                    errors.append(exc)
            if errors:
                raise errors[0]
        if self.chat is not None:
            for kind, n in self.chat.actions.items():
                self.result.actions[kind] = n
            self.result.events[CHAT] = self.chat.events
        self.progress(total, total)
        self.result.seconds = time.monotonic() - started
        return self.result

    def _possible(self, kind: str) -> bool:
        if kind in ("change_email", "deactivate"):
            return len(self.active_users) > 1
        if kind in ("update_product", "reprice", "restock"):
            return bool(self.products)
        if kind == "review":
            return bool(self.products) and bool(self.users)
        if kind == "place_order":
            return bool(self.products) and bool(self.active_users)
        if kind == "pay":
            return bool(self.placed)
        if kind == "ship":
            return bool(self.paid)
        if kind == "cancel":
            return bool(self.placed) or bool(self.paid)
        return True

    def _perform(self, kind: str) -> int:
        action = getattr(self, f"_{kind}")
        actions = action()
        self.result.actions[kind] = self.result.actions.get(kind, 0) + 1
        return actions or 1
