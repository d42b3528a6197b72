"""``conversation_inbox``: what a chat UI reads, as MongoDB documents (store ``docs``).

One document per conversation in ``conversation_inbox``: its subject, its participants with
their names and e-mails (from the auth service's events, so nobody joins the chat and auth
services at read time) and each one's unread count (posting in a conversation marks it
read), the message count and the last message. A user's inbox is the list of documents
whose ``participant_ids`` hold them: ``queries.list("conversation_inbox", {"participant_ids":
user_id})``. One document per user in ``conversation_inbox_notifications``: how many
notifications they got, and the latest five.

The chat and auth sources have no order between them: a message may arrive before its
participants' registrations and an e-mail change after messages that must then show it. The
auxiliary ``conversation_inbox_users`` keeps each user's current name and e-mail; a
registration or an e-mail change writes it into every conversation of that user. Lanes apply
in parallel, each in its own MongoDB transaction: a lane that creates a conversation from the
users' documents also writes those documents (``writes``), so it conflicts with a lane that
changes one of those users at the same time, and one of the two is retried and sees the
other's work (a read alone would not conflict, and the new conversation could keep the old
e-mail).

Re-applying an event changes nothing: messages and notifications carry their number and a
number already counted is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from outbox.envelope import Envelope
from projections.api import Event, Projection, on
from projections.mongo_tx import DocumentTx
from projections.reference.events import (
    AUTH,
    CHAT,
    MessagePosted,
    NotificationSent,
    UserEmailChanged,
    UserRegistered,
)

INBOX = "conversation_inbox"
NOTIFICATIONS = "conversation_inbox_notifications"
USERS = "conversation_inbox_users"  # auxiliary: each user's current name and e-mail
LATEST = 5  # notifications kept per user


class ConversationInbox(Projection):
    """Cached by conversation id (tag ``conversation:<id>``) and by user for notifications
    (``user:<id>``)."""

    name = "conversation_inbox"
    store = "docs"
    collections = (INBOX, NOTIFICATIONS, USERS)
    collection_indexes = {INBOX: ["participant_ids"]}  # a user's inbox; their e-mail changes
    key_tags = {INBOX: "conversation:{_id}", NOTIFICATIONS: "user:{_id}"}
    replay_safe = True

    def prefetch(self, events: Sequence[Envelope], tx: DocumentTx) -> None:  # type: ignore[override]
        conversations = [e.aggregate_id for e in events if e.event_type == "MessagePosted"]
        if conversations:
            tx.prefetch(INBOX, conversations)
        users = [e.aggregate_id for e in events if e.source == AUTH]
        users += [e.aggregate_id for e in events if e.event_type == "NotificationSent"]
        if users:
            tx.prefetch(USERS, users)
            tx.prefetch(NOTIFICATIONS, users)

    # -- chat -----------------------------------------------------------------------

    @on(CHAT, "MessagePosted")
    def posted(self, event: Event[MessagePosted], tx: DocumentTx) -> None:
        p = event.payload
        inbox = tx.get(INBOX, p.conversation_id) or self._new_conversation(tx, p)
        if p.number <= inbox["message_count"]:
            return  # applied already
        for participant in inbox["participants"]:
            if participant["user_id"] == p.sender_id:
                participant["unread"] = 0
            else:
                participant["unread"] += 1
        inbox["message_count"] = p.number
        inbox["last_message"] = {
            "message_id": p.message_id,
            "sender_id": p.sender_id,
            "body": p.body,
            "sent_at": p.sent_at,
        }
        tx.upsert(INBOX, inbox)

    @staticmethod
    def _new_conversation(tx: DocumentTx, p: MessagePosted) -> dict[str, Any]:
        participants = []
        for user_id in p.participant_ids:
            user = tx.get(USERS, user_id) or {"_id": user_id, "name": None, "email": None}
            tx.upsert(USERS, {**user, "writes": user.get("writes", 0) + 1})
            participants.append(
                {"user_id": user_id, "name": user["name"], "email": user["email"], "unread": 0}
            )
        return {
            "_id": p.conversation_id,
            "subject": p.subject,
            "participant_ids": list(p.participant_ids),
            "participants": participants,
            "message_count": 0,
            "last_message": None,
        }

    @on(CHAT, "NotificationSent")
    def notified(self, event: Event[NotificationSent], tx: DocumentTx) -> None:
        p = event.payload
        feed = tx.get(NOTIFICATIONS, p.user_id) or {"_id": p.user_id, "count": 0, "latest": []}
        if p.number <= feed["count"]:
            return  # applied already
        feed["count"] = p.number
        entry = {
            "notification_id": p.notification_id,
            "kind": p.kind,
            "title": p.title,
            "body": p.body,
            "reference_id": p.reference_id,
            "sent_at": p.sent_at,
        }
        feed["latest"] = [entry, *feed["latest"]][:LATEST]
        tx.upsert(NOTIFICATIONS, feed)

    # -- auth -----------------------------------------------------------------------

    @on(AUTH, "UserRegistered")
    def registered(self, event: Event[UserRegistered], tx: DocumentTx) -> None:
        p = event.payload
        self._user(tx, p.user_id, name=f"{p.first_name} {p.last_name}", email=p.email)

    @on(AUTH, "UserEmailChanged")
    def email_changed(self, event: Event[UserEmailChanged], tx: DocumentTx) -> None:
        self._user(tx, event.payload.user_id, email=event.payload.email)

    @staticmethod
    def _user(tx: DocumentTx, user_id: str, **changes: Any) -> None:
        """Remember the user's name and e-mail and write them into their conversations."""
        user = tx.get(USERS, user_id) or {"_id": user_id, "name": None, "email": None}
        user = {**user, **changes, "writes": user.get("writes", 0) + 1}
        tx.upsert(USERS, user)
        for found in tx.find(INBOX, participant_ids=user_id):
            inbox = tx.get(INBOX, found["_id"]) or found
            changed = False
            for participant in inbox["participants"]:
                if participant["user_id"] == user_id and (
                    participant["name"] != user["name"] or participant["email"] != user["email"]
                ):
                    participant.update(name=user["name"], email=user["email"])
                    changed = True
            if changed:
                tx.upsert(INBOX, inbox)
                tx.invalidate(f"conversation:{inbox['_id']}")
