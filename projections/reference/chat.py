"""The chat / notifications part of the reference workload (``readmodel simulate``).

Users of the auth service start conversations with each other and reply; the recipient of
a message gets a notification when it is the first one they have not read (posting in a
conversation marks it read), and a customer gets one when their order ships. Every action
is one MongoDB transaction writing the chat service's documents and its outbox documents.

The chat part draws from a random generator of its own (seeded from the run's seed) and
runs after the shop's actions at a fixed ratio, so a run with chat leaves the SQL services
exactly as a run without it, and the same seed gives the same chat documents.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from config import SourceSettings
from projections.reference.chat_service import CONVERSATIONS, MESSAGES, NOTIFICATIONS
from projections.reference.chat_writer import ChatWriter, Operation, insert_doc, update_doc
from projections.reference.writer import Event

SUBJECTS = [
    "Order question",
    "Delivery",
    "Returns",
    "Product advice",
    "Sizing",
    "Gift ideas",
    "Hello!",
]
OPENERS = [
    "Hi, do you have a minute?",
    "Hello! Quick question about my order.",
    "Hey, did you try the new one?",
    "Good morning, can you help me?",
]
REPLIES = [
    "Sure, what do you need?",
    "Thanks, that helps a lot.",
    "I will check and get back to you.",
    "It arrived yesterday, works great.",
    "Could you send me the tracking number?",
    "No worries, talk soon.",
    "Which size did you take?",
    "Sounds good to me!",
]


@dataclass
class _Conversation:
    id: str
    subject: str
    participants: list[str]
    messages: int = 0
    unread: dict[str, int] = field(default_factory=dict)
    last_sender: str | None = None


def planned_chat(users_count: int, orders_count: int) -> dict[str, int]:
    """Chat actions a run performs besides the notifications of shipped orders."""
    return {"start_conversation": max(1, users_count // 4), "reply": orders_count // 2}


class ChatSimulation:
    """Plans the chat actions of one run and hands them to a :class:`ChatWriter`."""

    def __init__(
        self, settings: SourceSettings, *, seed: int, users: int, orders: int, shop_actions: int
    ) -> None:
        self.rng = random.Random(f"chat:{seed}")
        self.remaining = planned_chat(users, orders)
        self.ratio = sum(self.remaining.values()) / max(1, shop_actions)
        self.credit = 0.0
        self.conversations: list[_Conversation] = []
        self.notified: dict[str, int] = {}  # user -> notifications sent
        self.actions: dict[str, int] = {}
        self.events = 0
        self.done = 0  # actions performed since the last step() reported them
        self.writer = ChatWriter(settings)

    @property
    def planned(self) -> int:
        return sum(self.remaining.values())

    def step(self, now: datetime, active_users: Sequence[Any]) -> int:
        """After one shop action: the chat actions due by now; returns how many ran
        (notifications of shipped orders included)."""
        self.credit += self.ratio
        offset = 0
        while self.credit >= 1 and offset < 5:
            kind = self._next(active_users)
            if kind is None:
                break
            offset += 1
            self.credit -= 1
            self._perform(kind, now + timedelta(seconds=offset), active_users)
        done, self.done = self.done, 0
        return done

    def finish(self, now: datetime, active_users: Sequence[Any]) -> int:
        """Perform whatever the run's end left undone; returns how many."""
        while (kind := self._next(active_users)) is not None:
            now += timedelta(seconds=3)
            self._perform(kind, now, active_users)
        done, self.done = self.done, 0
        return done

    def close(self) -> None:
        self.writer.close()

    def order_shipped(self, now: datetime, order_id: str, user_id: str, tracking: str) -> None:
        """The shop shipped an order: its customer is told."""
        operations: list[Operation] = []
        events: list[Event] = []
        self._notify(
            now,
            user_id,
            "order_shipped",
            "Your order is on its way",
            f"Tracking number {tracking}",
            order_id,
            operations,
            events,
        )
        self._submit("notify_shipped", operations, events)

    # -- actions --------------------------------------------------------------------

    def _next(self, active_users: Sequence[Any]) -> str | None:
        kinds = [
            kind
            for kind, left in self.remaining.items()
            if left > 0
            and (len(active_users) > 1 if kind == "start_conversation" else self.conversations)
        ]
        if not kinds:
            return None
        return self.rng.choices(kinds, [self.remaining[k] for k in kinds])[0]

    def _perform(self, kind: str, now: datetime, active_users: Sequence[Any]) -> None:
        self.remaining[kind] -= 1
        if kind == "start_conversation":
            first, second = self.rng.sample(list(active_users), 2)
            conversation = _Conversation(
                self._uuid(),
                self.rng.choice(SUBJECTS),
                [first.id, second.id],
                unread={first.id: 0, second.id: 0},
            )
            operations = [
                insert_doc(
                    CONVERSATIONS,
                    {
                        "_id": conversation.id,
                        "subject": conversation.subject,
                        "participant_ids": conversation.participants,
                        "message_count": 0,
                        "created_at": now,
                        "last_message_at": None,
                    },
                )
            ]
            self.conversations.append(conversation)
            self._post(now, conversation, first.id, self.rng.choice(OPENERS), operations, kind)
        else:
            recent = self.conversations[-50:]
            conversation = self.rng.choice(recent)
            a, b = conversation.participants
            waiting = b if conversation.last_sender == a else a
            sender = waiting if self.rng.random() < 0.8 else conversation.last_sender or waiting
            self._post(now, conversation, sender, self.rng.choice(REPLIES), [], kind)

    def _post(
        self,
        now: datetime,
        conversation: _Conversation,
        sender: str,
        body: str,
        operations: list[Operation],
        kind: str,
    ) -> None:
        conversation.messages += 1
        conversation.last_sender = sender
        message = self._uuid()
        operations.append(
            insert_doc(
                MESSAGES,
                {
                    "_id": message,
                    "conversation_id": conversation.id,
                    "number": conversation.messages,
                    "sender_id": sender,
                    "body": body,
                    "sent_at": now,
                },
            )
        )
        operations.append(
            update_doc(
                CONVERSATIONS,
                {"_id": conversation.id},
                {"$set": {"message_count": conversation.messages, "last_message_at": now}},
            )
        )
        events: list[Event] = [
            (
                "conversation",
                conversation.id,
                "MessagePosted",
                {
                    "message_id": message,
                    "conversation_id": conversation.id,
                    "number": conversation.messages,
                    "sender_id": sender,
                    "participant_ids": list(conversation.participants),
                    "subject": conversation.subject,
                    "body": body,
                    "sent_at": now,
                },
            )
        ]
        conversation.unread[sender] = 0
        for user in conversation.participants:
            if user == sender:
                continue
            conversation.unread[user] += 1
            if conversation.unread[user] == 1:  # the first message they have not read
                self._notify(
                    now,
                    user,
                    "new_message",
                    f"New message: {conversation.subject}",
                    body,
                    conversation.id,
                    operations,
                    events,
                )
        self._submit(kind, operations, events)

    def _notify(
        self,
        now: datetime,
        user_id: str,
        kind: str,
        title: str,
        body: str,
        reference_id: str,
        operations: list[Operation],
        events: list[Event],
    ) -> None:
        number = self.notified[user_id] = self.notified.get(user_id, 0) + 1
        notification = {
            "notification_id": self._uuid(),
            "user_id": user_id,
            "number": number,
            "kind": kind,
            "title": title,
            "body": body,
            "reference_id": reference_id,
            "sent_at": now,
        }
        document = {"_id": notification["notification_id"], **notification}
        del document["notification_id"]
        operations.append(insert_doc(NOTIFICATIONS, document))
        events.append(("user", user_id, "NotificationSent", notification))

    def _submit(self, kind: str, operations: list[Operation], events: list[Event]) -> None:
        self.writer.submit(operations, events, [self._uuid() for _ in events])
        self.actions[kind] = self.actions.get(kind, 0) + 1
        self.events += len(events)
        self.done += 1

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
