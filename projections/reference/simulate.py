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
"""

from __future__ import annotations

import bisect
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from config import Settings
from outbox.errors import ReadmodelError
from projections.reference.chat import ChatSimulation
from projections.reference.chat_service import NO_CHAT, chat_source
from projections.reference.events import AUTH, CHAT, ORDERS, PRODUCTS
from projections.reference.provision import init_services, service_sources
from projections.reference.services import (
    inventory_movements,
    order_line_items,
    orders,
    product_reviews,
    product_variants,
    products,
    users,
)
from projections.reference.writer import Event, ServiceWriter, Write, insert, update

FIRST = [
    "ana",
    "ben",
    "chloe",
    "dmitri",
    "elena",
    "farid",
    "grace",
    "hugo",
    "ines",
    "jonas",
    "kai",
    "lena",
    "marta",
    "nils",
    "olga",
    "pablo",
    "queenie",
    "rui",
    "sofia",
    "tomas",
]
LAST = [
    "alvarez",
    "berg",
    "costa",
    "dubois",
    "eriksen",
    "fischer",
    "garcia",
    "hansen",
    "ito",
    "jensen",
    "kowalski",
    "larsen",
    "moreau",
    "novak",
    "oliveira",
    "petrov",
    "rossi",
]
ADJECTIVES = [
    "Classic",
    "Compact",
    "Deluxe",
    "Eco",
    "Ergonomic",
    "Foldable",
    "Heavy-Duty",
    "Lightweight",
    "Modern",
    "Portable",
    "Premium",
    "Rugged",
    "Smart",
    "Vintage",
]
NOUNS = [
    "Backpack",
    "Blender",
    "Chair",
    "Desk Lamp",
    "Headphones",
    "Kettle",
    "Keyboard",
    "Mug",
    "Notebook",
    "Pan",
    "Sneakers",
    "Tent",
    "Umbrella",
    "Water Bottle",
    "Watch",
]
VARIANTS = ["Black", "White", "Red", "Blue", "Green", "Small", "Medium", "Large"]
REVIEW_TITLES = {1: "Disappointing", 2: "Not great", 3: "Okay", 4: "Very good", 5: "Excellent"}
CANCEL_REASONS = ["customer request", "payment failed", "out of stock", "fraud suspected"]

ZIPF_EXPONENT = 1.1


@dataclass
class SimulationResult:
    """What a run did: actions by kind, outbox events by source, and what it skipped."""

    actions: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def total_actions(self) -> int:
        return sum(self.actions.values())

    @property
    def total_events(self) -> int:
        return sum(self.events.values())


@dataclass
class _User:
    id: str
    first: str
    last: str
    email: str
    active: bool = True


@dataclass
class _Variant:
    id: str
    title: str
    stock: int


@dataclass
class _Product:
    id: str
    name: str
    slug: str
    sku: str
    price: int
    variants: list[_Variant]

    @property
    def stock(self) -> int:
        return sum(v.stock for v in self.variants)


@dataclass
class _Order:
    id: str
    user_id: str
    total: int
    lines: list[tuple[_Product, _Variant, int]]
    status: str = "placed"


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


class Simulator:
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
        self.settings = settings
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        self.progress = progress or (lambda done, total: None)
        self.now = start
        self.services: dict[str, ServiceWriter] = {}
        self.result = SimulationResult()
        self.users: list[_User] = []
        self.active_users: list[_User] = []
        self.products: list[_Product] = []
        self.popularity: list[float] = []  # cumulative Zipf weights by product rank
        self.placed: list[_Order] = []  # waiting for payment
        self.paid: list[_Order] = []  # waiting for shipping
        self.chat: ChatSimulation | None = None  # with a [sources.chat] (chat.py)

    # -- driving --------------------------------------------------------------------

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

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _token(self, length: int = 8) -> str:
        return f"{self.rng.getrandbits(4 * length):0{length}x}"

    def _transaction(self, service: str, writes: list[Write], events: list[Event]) -> None:
        """One business action: its state changes, then its outbox rows, in one commit."""
        event_ids = [self._uuid() for _ in events]
        self.services[service].submit(writes, events, event_ids)
        self.result.events[service] = self.result.events.get(service, 0) + len(events)

    # -- auth -----------------------------------------------------------------------

    def _register(self) -> None:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        user = _User(self._uuid(), first, last, f"{first}.{last}.{self._token(6)}@example.com")
        self._transaction(
            AUTH,
            [
                insert(
                    users,
                    {
                        "id": user.id,
                        "email": user.email,
                        "password_hash": f"$argon2id$v=19${self._token(32)}",
                        "first_name": first.title(),
                        "last_name": last.title(),
                        "is_active": True,
                        "created_at": self.now,
                        "updated_at": self.now,
                    },
                )
            ],
            [
                (
                    "user",
                    user.id,
                    "UserRegistered",
                    {
                        "user_id": user.id,
                        "email": user.email,
                        "first_name": first.title(),
                        "last_name": last.title(),
                    },
                )
            ],
        )
        self.users.append(user)
        self.active_users.append(user)

    def _change_email(self) -> None:
        user = self.rng.choice(self.active_users)
        previous = user.email
        user.email = f"{user.first}.{user.last}.{self._token(6)}@mail.example.org"
        self._transaction(
            AUTH,
            [
                update(
                    users,
                    "id",
                    {"id": user.id, "email": user.email, "updated_at": self.now},
                )
            ],
            [
                (
                    "user",
                    user.id,
                    "UserEmailChanged",
                    {"user_id": user.id, "email": user.email, "previous_email": previous},
                )
            ],
        )

    def _deactivate(self) -> None:
        user = self.active_users.pop(self.rng.randrange(len(self.active_users)))
        user.active = False
        self._transaction(
            AUTH,
            [
                update(
                    users,
                    "id",
                    {"id": user.id, "is_active": False, "updated_at": self.now},
                )
            ],
            [("user", user.id, "UserDeactivated", {"user_id": user.id})],
        )

    # -- products -------------------------------------------------------------------

    def _create_product(self) -> None:
        name = f"{self.rng.choice(ADJECTIVES)} {self.rng.choice(NOUNS)}"
        token = self._token(6)
        product = _Product(
            id=self._uuid(),
            name=name,
            slug=f"{name.lower().replace(' ', '-')}-{token}",
            sku=f"SKU-{token.upper()}",
            price=self.rng.choice([499, 999, 1499, 1999, 2499, 4999, 7999, 12999, 19999]),
            variants=[],
        )
        titles = self.rng.sample(VARIANTS, self.rng.randint(1, 3))
        for title in titles:
            product.variants.append(_Variant(self._uuid(), title, 0))
        description = f"{name}: a {self.rng.choice(['bestselling', 'new', 'popular'])} pick."
        writes: list[Write] = [
            insert(
                products,
                {
                    "id": product.id,
                    "name": product.name,
                    "slug": product.slug,
                    "sku": product.sku,
                    "description": description,
                    "price_cents": product.price,
                    "is_active": True,
                    "created_at": self.now,
                    "updated_at": self.now,
                },
            ),
            insert(
                product_variants,
                [
                    {
                        "id": v.id,
                        "product_id": product.id,
                        "title": v.title,
                        "sku": f"{product.sku}-{i}",
                        "inventory_quantity": 0,
                        "created_at": self.now,
                    }
                    for i, v in enumerate(product.variants)
                ],
            ),
        ]
        events = [
            (
                "product",
                product.id,
                "ProductCreated",
                {
                    "product_id": product.id,
                    "name": product.name,
                    "slug": product.slug,
                    "sku": product.sku,
                    "description": description,
                    "price_cents": product.price,
                    "variants": [
                        {"variant_id": v.id, "title": v.title, "sku": f"{product.sku}-{i}"}
                        for i, v in enumerate(product.variants)
                    ],
                },
            )
        ]
        for variant in product.variants:
            self._move(product, variant, "restock", self.rng.randint(20, 200), None, writes, events)
        self._transaction(PRODUCTS, writes, events)
        self.products.append(product)
        rank = len(self.products)
        last = self.popularity[-1] if self.popularity else 0.0
        self.popularity.append(last + 1.0 / rank**ZIPF_EXPONENT)

    def _move(
        self,
        product: _Product,
        variant: _Variant,
        kind: str,
        quantity: int,
        reference: str | None,
        writes: list[Write],
        events: list[Event],
    ) -> None:
        """Add a stock movement of one variant to an action's writes and events."""
        variant.stock += quantity
        movement = self._uuid()
        writes.append(
            insert(
                inventory_movements,
                {
                    "id": movement,
                    "product_variant_id": variant.id,
                    "product_id": product.id,
                    "movement_type": kind,
                    "quantity": quantity,
                    "reference_id": reference,
                    "reference_type": "order" if reference else None,
                    "created_at": self.now,
                },
            )
        )
        writes.append(
            update(
                product_variants,
                "id",
                {"id": variant.id, "inventory_quantity": variant.stock},
            )
        )
        events.append(
            (
                "product",
                product.id,
                "StockAdjusted",
                {
                    "product_id": product.id,
                    "variant_id": variant.id,
                    "movement_id": movement,
                    "movement_type": kind,
                    "quantity": quantity,
                    "variant_stock": variant.stock,
                    "stock": product.stock,
                    "reference_id": reference,
                },
            )
        )

    def _pick_product(self) -> _Product:
        """A product by Zipf popularity: rank 1 is the hottest."""
        point = self.rng.random() * self.popularity[-1]
        return self.products[bisect.bisect_left(self.popularity, point)]

    def _update_product(self) -> None:
        product = self.rng.choice(self.products)
        suffix = self.rng.choice(["Pro", "Plus", "2", "Max", "Lite"])
        product.name = f"{product.name.split(' (')[0]} ({suffix})"
        product.slug = f"{product.slug}-{suffix.lower()}"
        description = f"{product.name}, improved."
        self._transaction(
            PRODUCTS,
            [
                update(
                    products,
                    "id",
                    {
                        "id": product.id,
                        "name": product.name,
                        "slug": product.slug,
                        "description": description,
                        "updated_at": self.now,
                    },
                )
            ],
            [
                (
                    "product",
                    product.id,
                    "ProductUpdated",
                    {
                        "product_id": product.id,
                        "name": product.name,
                        "slug": product.slug,
                        "description": description,
                    },
                )
            ],
        )

    def _reprice(self) -> None:
        product = self._pick_product()
        previous = product.price
        product.price = max(99, previous + self.rng.choice([-500, -200, -100, 100, 200, 500]))
        self._transaction(
            PRODUCTS,
            [
                update(
                    products,
                    "id",
                    {"id": product.id, "price_cents": product.price, "updated_at": self.now},
                )
            ],
            [
                (
                    "product",
                    product.id,
                    "PriceChanged",
                    {
                        "product_id": product.id,
                        "price_cents": product.price,
                        "previous_price_cents": previous,
                    },
                )
            ],
        )

    def _restock(self) -> None:
        product = self._pick_product()
        variant = self.rng.choice(product.variants)
        writes: list[Write] = []
        events: list[Event] = []
        kind = self.rng.choice(["restock", "restock", "adjustment"])
        quantity = (
            self.rng.randint(10, 100)
            if kind == "restock"
            else -min(variant.stock, self.rng.randint(1, 5))
        )
        self._move(product, variant, kind, quantity, None, writes, events)
        self._transaction(PRODUCTS, writes, events)

    def _review(self) -> None:
        product = self._pick_product()
        review = self._uuid()
        rating = self.rng.choices([1, 2, 3, 4, 5], [5, 5, 15, 35, 40])[0]
        user = self.rng.choice(self.users)
        self._transaction(
            PRODUCTS,
            [
                insert(
                    product_reviews,
                    {
                        "id": review,
                        "product_id": product.id,
                        "user_id": user.id,
                        "rating": rating,
                        "title": REVIEW_TITLES[rating],
                        "created_at": self.now,
                    },
                )
            ],
            [
                (
                    "product",
                    product.id,
                    "ReviewPosted",
                    {
                        "review_id": review,
                        "product_id": product.id,
                        "user_id": user.id,
                        "rating": rating,
                        "title": REVIEW_TITLES[rating],
                    },
                )
            ],
        )

    # -- orders ---------------------------------------------------------------------

    def _place_order(self) -> int:
        user = self.rng.choice(self.active_users)
        picked: dict[str, tuple[_Product, _Variant, int]] = {}
        for _ in range(self.rng.choices([1, 2, 3, 4], [50, 30, 15, 5])[0]):
            product = self._pick_product()
            if product.id not in picked:
                variant = self.rng.choice(product.variants)
                picked[product.id] = (product, variant, self.rng.choices([1, 2, 3], [75, 20, 5])[0])
        lines = list(picked.values())
        order = _Order(self._uuid(), user.id, 0, lines)
        number = f"ORD-{self._token(10).upper()}"
        line_rows = []
        line_events = []
        for position, (product, variant, quantity) in enumerate(lines):
            line_id = self._uuid()
            title = f"{product.name} - {variant.title}"
            line_rows.append(
                {
                    "id": line_id,
                    "order_id": order.id,
                    "product_id": product.id,
                    "variant_id": variant.id,
                    "quantity": quantity,
                    "price_cents": product.price,
                    "title": title,
                    "position": position,
                    "created_at": self.now,
                }
            )
            line_events.append(
                {
                    "line_id": line_id,
                    "product_id": product.id,
                    "variant_id": variant.id,
                    "title": title,
                    "unit_price_cents": product.price,
                    "quantity": quantity,
                }
            )
        subtotal = sum(p.price * q for p, _, q in lines)
        shipping = 0 if subtotal >= 5000 else 499
        order.total = subtotal + shipping
        self._transaction(
            ORDERS,
            [
                insert(
                    orders,
                    {
                        "id": order.id,
                        "order_number": number,
                        "user_id": user.id,
                        "status": "placed",
                        "financial_status": "pending",
                        "fulfillment_status": "unfulfilled",
                        "subtotal_cents": subtotal,
                        "total_cents": order.total,
                        "currency": "USD",
                        "created_at": self.now,
                        "updated_at": self.now,
                    },
                ),
                insert(order_line_items, line_rows),
            ],
            [
                (
                    "order",
                    order.id,
                    "OrderPlaced",
                    {
                        "order_id": order.id,
                        "order_number": number,
                        "user_id": user.id,
                        "currency": "USD",
                        "lines": line_events,
                        "subtotal_cents": subtotal,
                        "total_cents": order.total,
                    },
                )
            ],
        )
        self.placed.append(order)
        self._stock_for_order(order, "sale")
        return 2

    def _stock_for_order(self, order: _Order, kind: str) -> None:
        """Inventory reacts to an order: one transaction in the products database."""
        writes: list[Write] = []
        events: list[Event] = []
        for product, variant, quantity in order.lines:
            if kind == "sale" and variant.stock < quantity:
                self._move(product, variant, "restock", 50 + quantity, None, writes, events)
            change = -quantity if kind == "sale" else quantity
            self._move(product, variant, kind, change, order.id, writes, events)
        self._transaction(PRODUCTS, writes, events)
        name = "reserve_stock" if kind == "sale" else "return_stock"
        self.result.actions[name] = self.result.actions.get(name, 0) + 1

    def _order_update(
        self, order: _Order, event_type: str, payload: dict[str, Any], **changes: Any
    ) -> None:
        self._transaction(
            ORDERS,
            [
                update(
                    orders,
                    "id",
                    {"id": order.id, **changes, "updated_at": self.now},
                )
            ],
            [
                (
                    "order",
                    order.id,
                    event_type,
                    {"order_id": order.id, "user_id": order.user_id, **payload},
                )
            ],
        )

    def _pay(self) -> None:
        order = self.placed.pop(self.rng.randrange(len(self.placed)))
        order.status = "paid"
        self._order_update(
            order,
            "OrderPaid",
            {"total_cents": order.total},
            status="paid",
            financial_status="paid",
            paid_at=self.now,
        )
        self.paid.append(order)

    def _ship(self) -> None:
        order = self.paid.pop(self.rng.randrange(len(self.paid)))
        order.status = "shipped"
        tracking = f"1Z{self._token(12).upper()}"
        self._order_update(
            order,
            "OrderShipped",
            {"tracking_number": tracking},
            status="shipped",
            fulfillment_status="fulfilled",
            tracking_number=tracking,
            shipped_at=self.now,
        )
        if self.chat is not None:
            self.chat.order_shipped(self.now, order.id, order.user_id, tracking)

    def _cancel(self) -> int:
        pool = (
            self.placed
            if self.placed and (not self.paid or self.rng.random() < 0.6)
            else (self.paid)
        )
        order = pool.pop(self.rng.randrange(len(pool)))
        was_paid = order.status == "paid"
        order.status = "cancelled"
        reason = self.rng.choice(CANCEL_REASONS)
        self._order_update(
            order,
            "OrderCancelled",
            {"reason": reason},
            status="cancelled",
            financial_status="refunded" if was_paid else "voided",
            cancel_reason=reason,
            cancelled_at=self.now,
        )
        self._stock_for_order(order, "return")
        return 2
