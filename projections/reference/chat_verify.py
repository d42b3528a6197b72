"""``verify`` of ``conversation_inbox``: its documents recomputed from the chat service's
database (conversations, messages, notifications) and the auth service's users.

Two checks, by collection: ``conversation_inbox`` (a document per conversation) and
``conversation_inbox_notifications`` (a document per user who got a notification). Keys
are read in ``_id`` order in bounded chunks, like the SQL checks. Documents are compared
field by field, nested fields by path (``participants.1.unread``, and ``participants.length``
for an array), so a mismatch names the very field that differs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from pymongo.errors import PyMongoError

from outbox.mongo_connection import describe_mongo_error
from projections.document_generations import generation_of, physical_name
from projections.reference.chat_service import CONVERSATIONS, MESSAGES, NOTIFICATIONS
from projections.reference.conversation_inbox import INBOX, LATEST, ConversationInbox
from projections.reference.conversation_inbox import NOTIFICATIONS as FEEDS
from projections.reference.services import users
from projections.reference.verify import Row, VerifyError, _rows

Database = Any  # a pymongo Database


class _DocumentCheck:
    """Keys and documents of one read-model collection; subclasses recompute them."""

    name: str

    def __init__(self, chat: Database, auth: sa.Engine, store: Database) -> None:
        self.chat = chat
        self.auth = auth
        self.store = store

    def model_keys(self, after: str | None, limit: int) -> list[str]:
        return _ids(self._collection(), after, limit)

    def actual(self, keys: Sequence[str]) -> dict[str, Row]:
        found = _find(self._collection(), {"_id": {"$in": list(keys)}})
        return {str(d["_id"]): flat(d) for d in found}

    def _collection(self) -> Any:
        """The collection of the generation in use: a rebuild (``readmodel replay``) fills
        ``<name>__g<N>`` and drops the one it replaced, so ``<name>`` may be gone."""
        try:
            generation = generation_of(self.store, ConversationInbox.name)
        except PyMongoError as exc:
            raise VerifyError(f"{self.name}: {describe_mongo_error(exc)}") from exc
        return self.store[physical_name(self.name, generation)]


class ConversationInboxCheck(_DocumentCheck):
    """Each conversation: subject, participants with their current name and e-mail and
    their unread count (messages of the others since their own last one), message count
    and last message."""

    name = INBOX

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        return _ids(self.chat[CONVERSATIONS], after, limit)

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        conversations = _find(self.chat[CONVERSATIONS], {"_id": {"$in": list(keys)}})
        messages: dict[str, list[dict[str, Any]]] = {}
        found = _find(self.chat[MESSAGES], {"conversation_id": {"$in": list(keys)}})
        for message in sorted(found, key=lambda m: (m["conversation_id"], m["number"])):
            messages.setdefault(message["conversation_id"], []).append(message)
        people = _people(self.auth, {u for c in conversations for u in c["participant_ids"]})
        out: dict[str, Row] = {}
        for conversation in conversations:
            posted = messages.get(conversation["_id"], [])
            unread = dict.fromkeys(conversation["participant_ids"], 0)
            for message in posted:
                for user in unread:
                    unread[user] = 0 if user == message["sender_id"] else unread[user] + 1
            last = posted[-1] if posted else None
            out[str(conversation["_id"])] = flat(
                {
                    "subject": conversation["subject"],
                    "participant_ids": conversation["participant_ids"],
                    "participants": [
                        {
                            "user_id": user,
                            "name": people.get(user, {}).get("name"),
                            "email": people.get(user, {}).get("email"),
                            "unread": unread[user],
                        }
                        for user in conversation["participant_ids"]
                    ],
                    "message_count": len(posted),
                    "last_message": None
                    if last is None
                    else {
                        "message_id": last["_id"],
                        "sender_id": last["sender_id"],
                        "body": last["body"],
                        "sent_at": last["sent_at"],
                    },
                }
            )
        return out


class NotificationFeedCheck(_DocumentCheck):
    """Each user's notifications: how many, and the latest five (newest first)."""

    name = FEEDS

    def source_keys(self, after: str | None, limit: int) -> list[str]:
        where = {} if after is None else {"user_id": {"$gt": after}}
        try:
            cursor = self.chat[NOTIFICATIONS].aggregate(
                [
                    {"$match": where},
                    {"$group": {"_id": "$user_id"}},
                    {"$sort": {"_id": 1}},
                    {"$limit": limit},
                ]
            )
            return [str(d["_id"]) for d in cursor]
        except PyMongoError as exc:
            raise VerifyError(f"{NOTIFICATIONS}: {describe_mongo_error(exc)}") from exc

    def expected(self, keys: Sequence[str]) -> dict[str, Row]:
        by_user: dict[str, list[dict[str, Any]]] = {}
        found = _find(self.chat[NOTIFICATIONS], {"user_id": {"$in": list(keys)}})
        for notification in sorted(found, key=lambda n: (n["user_id"], n["number"])):
            by_user.setdefault(notification["user_id"], []).append(notification)
        return {
            user: flat(
                {
                    "count": len(sent),
                    "latest": [
                        {
                            "notification_id": n["_id"],
                            "kind": n["kind"],
                            "title": n["title"],
                            "body": n["body"],
                            "reference_id": n["reference_id"],
                            "sent_at": n["sent_at"],
                        }
                        for n in reversed(sent[-LATEST:])
                    ],
                }
            )
            for user, sent in by_user.items()
        }


def chat_checks(chat: Database, auth: sa.Engine, store: Database) -> list[_DocumentCheck]:
    """The checks of ``conversation_inbox``'s collections."""
    return [ConversationInboxCheck(chat, auth, store), NotificationFeedCheck(chat, auth, store)]


def flat(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A document's fields by path: ``{"a": {"b": 1}, "c": [x]}`` ->
    ``{"a.b": 1, "c.length": 1, "c.0": x}`` (arrays of documents flattened further)."""
    out: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat(value, f"{path}."))
        elif isinstance(value, list):
            out[f"{path}.length"] = len(value)
            out.update(flat({str(i): item for i, item in enumerate(value)}, f"{path}."))
        else:
            out[path] = value
    return out


def _people(auth: sa.Engine, ids: Iterable[str]) -> dict[str, dict[str, str]]:
    wanted = sorted(ids)
    if not wanted:
        return {}
    query = sa.select(users.c.id, users.c.first_name, users.c.last_name, users.c.email).where(
        users.c.id.in_(wanted)
    )
    return {
        str(u["id"]): {"name": f"{u['first_name']} {u['last_name']}", "email": u["email"]}
        for u in _rows(auth, query)
    }


def _ids(collection: Any, after: str | None, limit: int) -> list[str]:
    query = {} if after is None else {"_id": {"$gt": after}}
    found = _guarded(
        collection, lambda: collection.find(query, {"_id": 1}).sort("_id", 1).limit(limit)
    )
    return [str(d["_id"]) for d in found]


def _find(collection: Any, query: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_guarded(collection, lambda: collection.find(query)))


def _guarded(collection: Any, read: Callable[[], Any]) -> list[Any]:
    try:
        return list(read())
    except PyMongoError as exc:
        raise VerifyError(f"{collection.name}: {describe_mongo_error(exc)}") from exc
