"""The shop's business actions (``readmodel simulate``): users register, change e-mail and
sometimes leave; products are created, renamed, repriced, restocked and reviewed; orders
are placed (lines drawn by product popularity), stock is reserved for them, and they are
paid, shipped or cancelled (stock returned). Each action is one transaction in its own
service database, writing the state change and its outbox rows together.
"""

from __future__ import annotations

from typing import Any

from projections.reference.events import AUTH, ORDERS, PRODUCTS
from projections.reference.services import (
    order_line_items,
    orders,
    product_reviews,
    product_variants,
    products,
    users,
)
from projections.reference.shop_state import (
    ADJECTIVES,
    CANCEL_REASONS,
    FIRST,
    LAST,
    NOUNS,
    REVIEW_TITLES,
    VARIANTS,
    ZIPF_EXPONENT,
    Order,
    Product,
    ShopState,
    User,
    Variant,
)
from projections.reference.writer import Event, Write, insert, update


class ShopActions(ShopState):
    """One method ``_<kind>`` per kind of action that ``simulate.planned_actions`` counts;
    one that writes more than one transaction returns how many."""

    # -- auth -----------------------------------------------------------------------

    def _register(self) -> None:
        first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
        user = User(self._uuid(), first, last, f"{first}.{last}.{self._token(6)}@example.com")
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
        product = Product(
            id=self._uuid(),
            name=name,
            slug=f"{name.lower().replace(' ', '-')}-{token}",
            sku=f"SKU-{token.upper()}",
            price=self.rng.choice([499, 999, 1499, 1999, 2499, 4999, 7999, 12999, 19999]),
            variants=[],
        )
        titles = self.rng.sample(VARIANTS, self.rng.randint(1, 3))
        for title in titles:
            product.variants.append(Variant(self._uuid(), title, 0))
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
        picked: dict[str, tuple[Product, Variant, int]] = {}
        for _ in range(self.rng.choices([1, 2, 3, 4], [50, 30, 15, 5])[0]):
            product = self._pick_product()
            if product.id not in picked:
                variant = self.rng.choice(product.variants)
                picked[product.id] = (product, variant, self.rng.choices([1, 2, 3], [75, 20, 5])[0])
        lines = list(picked.values())
        order = Order(self._uuid(), user.id, 0, lines)
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

    def _stock_for_order(self, order: Order, kind: str) -> None:
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
        self, order: Order, event_type: str, payload: dict[str, Any], **changes: Any
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
