"""What the simulated shop remembers of what it wrote, the words its actions draw from, and
the building blocks of its actions (:mod:`projections.reference.shop_actions`).

Nothing is read back from the service databases: users, products with their variants and
stock, and orders waiting for payment or shipping live here, and every id comes from the
run's seeded generator, so a run is reproducible to the UUID.
"""

from __future__ import annotations

import bisect
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from projections.reference.chat import ChatSimulation
from projections.reference.services import inventory_movements, product_variants
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
class User:
    id: str
    first: str
    last: str
    email: str
    active: bool = True


@dataclass
class Variant:
    id: str
    title: str
    stock: int


@dataclass
class Product:
    id: str
    name: str
    slug: str
    sku: str
    price: int
    variants: list[Variant]

    @property
    def stock(self) -> int:
        return sum(v.stock for v in self.variants)


@dataclass
class Order:
    id: str
    user_id: str
    total: int
    lines: list[tuple[Product, Variant, int]]
    status: str = "placed"


class ShopState:
    """The shop of one run: a seeded generator, a simulated clock, what each service holds,
    and the parts actions are made of (a transaction, a stock movement, a popular product)."""

    def __init__(self, *, seed: int, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.now = start
        self.services: dict[str, ServiceWriter] = {}
        self.result = SimulationResult()
        self.users: list[User] = []
        self.active_users: list[User] = []
        self.products: list[Product] = []
        self.popularity: list[float] = []  # cumulative Zipf weights by product rank
        self.placed: list[Order] = []  # waiting for payment
        self.paid: list[Order] = []  # waiting for shipping
        self.chat: ChatSimulation | None = None  # with a [sources.chat] (chat.py)

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _token(self, length: int = 8) -> str:
        return f"{self.rng.getrandbits(4 * length):0{length}x}"

    def _transaction(self, service: str, writes: list[Write], events: list[Event]) -> None:
        """One business action: its state changes, then its outbox rows, in one commit."""
        event_ids = [self._uuid() for _ in events]
        self.services[service].submit(writes, events, event_ids)
        self.result.events[service] = self.result.events.get(service, 0) + len(events)

    def _move(
        self,
        product: Product,
        variant: Variant,
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

    def _pick_product(self) -> Product:
        """A product by Zipf popularity: rank 1 is the hottest."""
        point = self.rng.random() * self.popularity[-1]
        return self.products[bisect.bisect_left(self.popularity, point)]
