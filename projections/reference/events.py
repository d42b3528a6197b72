"""The reference e-commerce system's events: one pydantic model per payload.

The simulator writes them into the services' outboxes and the reference projections read
them back, so both sides share these definitions. Money is in integer cents throughout.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

AUTH, PRODUCTS, ORDERS, CHAT = "auth", "products", "orders", "chat"


# -- auth (aggregate "user") ----------------------------------------------------------


class UserRegistered(BaseModel):
    user_id: str
    email: str
    first_name: str
    last_name: str


class UserEmailChanged(BaseModel):
    user_id: str
    email: str
    previous_email: str


class UserDeactivated(BaseModel):
    user_id: str


# -- products + inventory (aggregate "product") -------------------------------------


class VariantInfo(BaseModel):
    variant_id: str
    title: str
    sku: str


class ProductCreated(BaseModel):
    product_id: str
    name: str
    slug: str
    sku: str
    description: str
    price_cents: int
    variants: list[VariantInfo] = []


class ProductUpdated(BaseModel):
    product_id: str
    name: str
    slug: str
    description: str


class PriceChanged(BaseModel):
    product_id: str
    price_cents: int
    previous_price_cents: int


class StockAdjusted(BaseModel):
    product_id: str
    variant_id: str
    movement_id: str
    movement_type: str  # restock, adjustment, sale, return
    quantity: int  # signed change
    variant_stock: int  # the variant's quantity after the change
    stock: int  # the product's quantity (all variants) after the change
    reference_id: str | None = None


class ReviewPosted(BaseModel):
    review_id: str
    product_id: str
    user_id: str
    rating: int
    title: str


# -- orders (aggregate "order") -------------------------------------------------------


class LineItem(BaseModel):
    line_id: str
    product_id: str
    variant_id: str | None = None
    title: str
    unit_price_cents: int
    quantity: int


class OrderPlaced(BaseModel):
    order_id: str
    order_number: str
    user_id: str
    currency: str
    lines: list[LineItem]
    subtotal_cents: int
    total_cents: int


class OrderPaid(BaseModel):
    order_id: str
    user_id: str
    total_cents: int


class OrderShipped(BaseModel):
    order_id: str
    user_id: str
    tracking_number: str


class OrderCancelled(BaseModel):
    order_id: str
    user_id: str
    reason: str


# -- chat / notifications (aggregates "conversation" and "user") ---------------------


class MessagePosted(BaseModel):
    """A message in a conversation; every message carries the conversation's participants
    (users of the auth service), so the first one a reader sees is enough to show it."""

    message_id: str
    conversation_id: str
    number: int  # the message's place in its conversation, from 1
    sender_id: str
    participant_ids: list[str]
    subject: str
    body: str
    sent_at: datetime


class NotificationSent(BaseModel):
    """A notification to one user (aggregate ``user``: a user's notifications are ordered)."""

    notification_id: str
    user_id: str
    number: int  # the user's notifications so far, this one included
    kind: str  # order_shipped, new_message
    title: str
    body: str
    reference_id: str  # the order or the conversation it is about
    sent_at: datetime
