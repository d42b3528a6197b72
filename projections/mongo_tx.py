"""The apply transaction of a MongoDB store, as a document projection's handlers see it.

Writes are kept in memory and sent with one ordered ``bulk_write`` per collection when the
batch commits (or before a ``find``, which the server must answer with them in place); reads
see the batch's own writes first, as BSON stores them (what a later batch reads back), so
batching never changes what a handler observes. How a document and a key are held, and what
the calls refuse, is :mod:`projections.document_values`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import bson
from bson.errors import InvalidDocument
from pymongo import DeleteOne, ReplaceOne
from pymongo.client_session import ClientSession
from pymongo.common import MAX_BSON_SIZE
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DocumentTooLarge, PyMongoError

from outbox.db_errors import hidden_traceback
from outbox.envelope import Envelope
from projections.api import Projection, TenantError, UnstorableValueError
from projections.document_refusals import unsent_reason, without_values
from projections.document_undo import DocumentUndo
from projections.document_values import (
    as_stored,
    refuse_unencodable,
    refuse_wide_integer,
    slot,
    wide_integer_field,
)
from projections.document_write_errors import (
    REFUSED_WRITES,
    RefusedDocument,
    TenantConflict,
    handler_error,
    the_stores,
    untenanted,
)
from projections.handler_timeout import HandlerTimeout, bounded
from projections.store import HandlerFailed, add_cache_tags, new_cache_tags

_DELETED = object()
_MISSING = object()
_ANY = object()  # the tenant of a batch prefetch's "absent for every tenant"


def _max_document_size(database: Database[Any]) -> int:
    """The bytes a document may take as BSON: the least the servers known to ``database``'s
    client say (their ``maxBsonObjectSize``), 16 MiB before one answered."""
    servers = database.client.topology_description.server_descriptions().values()
    sizes = [server.max_bson_size for server in servers if server.is_server_type_known]
    return min(sizes, default=MAX_BSON_SIZE)


class DocumentTx:
    """``get/upsert/delete/find/prefetch/invalidate`` over a projection's collections, by the
    names it declares (``collections`` maps them to the physical ones).

    ``written`` (a rebuild's, whose new collections start empty and are written by it
    alone) gathers the ``_id`` slots written to each physical collection: an ``_id`` not
    among them is known to be absent, without a round trip.

    Given a ``projection`` with a ``tenant_column``, every document upserted into one of its
    collections (not ``shared_collections``) belongs to the tenant of :attr:`event` (set by
    the store before each handler): the field is filled in when the document lacks it; a
    document naming another tenant, or an event without a tenant, raises
    :class:`TenantError` (the handler's failure). Its reads (``get``, ``find``,
    ``prefetch``) and writes are of that tenant's documents only: another tenant's document
    with the same ``_id`` is not seen, and an upsert of that ``_id`` fails the event with
    :class:`TenantError` (:class:`TenantConflict` from :meth:`flush`), never overwriting it.
    The batch's own writes are kept per tenant, so two tenants' ``_id`` never meet."""

    def __init__(
        self,
        database: Database[Any],
        session: ClientSession,
        collections: Mapping[str, str],
        written: dict[str, set[Any]] | None = None,
        *,
        projection: Projection | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        self.event: Envelope | None = None
        """The event whose handler is running: its tenant is the one documents are for."""
        self._tenant = None if projection is None else projection.tenant_column
        self._tenant_projection = "" if projection is None else projection.name
        self._shared = frozenset(() if projection is None else projection.shared_collections)
        self._database = database
        self._session = session
        self._collections = collections
        self._written = written
        self._declared = {physical: name for name, physical in collections.items()}
        # (name, tenant, slot) read or written: document or _DELETED; tenant None if unscoped
        self._known: dict[tuple[str, Any, Any], Any] = {}
        self._pending: dict[str, dict[Any, tuple[Any, Any, Any]]] = {}  # -> (tenant, slot):
        # (_id, tenant, document or _DELETED)
        self.invalidated: set[str] = set()
        self._undo: DocumentUndo | None = None  # see undoable()
        self._before_write = before_write
        """Called once, before the first write is sent (a live batch takes its lane's
        checkpoint there: see :meth:`projections.mongo_store.MongoStore._apply_batch`)."""
        self._options = database.codec_options
        self._max_size = _max_document_size(database)

    def _name(self, collection: str) -> str:
        try:
            return self._collections[collection]
        except KeyError:
            known = ", ".join(sorted(self._collections)) or "none"
            raise KeyError(
                f"collection {collection!r} is not one of this projection's ({known})"
            ) from None

    def get(self, collection: str, key: Any) -> dict[str, Any] | None:
        """The document with ``_id == key`` as this batch left it, or ``None``."""
        name = self._name(collection)
        refuse_wide_integer(collection, "a read's _id", key)
        tenant = self._scope(collection, "read")
        at = slot(key, collection, "a read's _id")
        here = (name, tenant, at)
        found = self._known.get(here, self._known.get((name, _ANY, at)))
        if found is None and self._never_written(name, at):
            found = self._known[here] = _DELETED
        if found is None:
            query = self._filter({"_id": key}, tenant)
            found = self._database[name].find_one(query, session=self._session)
            self._known[here] = _DELETED if found is None else found
        return None if found is _DELETED else copy.deepcopy(found)

    def upsert(self, collection: str, document: Mapping[str, Any]) -> None:
        """Insert or replace the document with ``document["_id"]`` (of the event's tenant, in
        a projection with a ``tenant_column``)."""
        if "_id" not in document:
            raise ValueError(f"a document for {collection!r} needs an _id")
        name = self._name(collection)
        key = document["_id"]
        refuse_wide_integer(collection, "a document's _id", key)
        field = None if collection in self._shared else self._tenant  # the tenant's
        added = self._tenant_size(field, document)
        stored = as_stored(collection, document, self._options, self._max_size, added)
        tenant = None
        if field is not None:
            stored = self._placed(collection, field, stored)
            tenant = stored[field]
        at = slot(key, collection, "a document's _id")
        if self._undo is not None:
            self._undo.keep(self._known, self._pending, name, (tenant, at))
        self._known[(name, tenant, at)] = stored
        self._pending.setdefault(name, {})[(tenant, at)] = (stored["_id"], tenant, stored)

    def _tenant_size(self, field: str | None, document: Mapping[str, Any]) -> int:
        """The bytes the tenant ``field`` takes as BSON in a document the upsert fills it in."""
        if field is None or field in document or self.event is None:
            return 0
        tenant = {field: self.event.tenant}
        return len(bson.encode(tenant, codec_options=self._options)) - 5  # its length, end

    def _scope(self, collection: str, doing: str) -> Any:
        """The tenant whose documents of ``collection`` the handler reads or deletes (``None``
        for a collection every tenant shares, or a projection without tenants)."""
        if self._tenant is None or collection in self._shared:
            return None
        event = self.event
        tenant = None if event is None else event.tenant
        if tenant is not None:
            return tenant
        what = (
            "code outside any event"
            if event is None
            else (f"{event.event_type} at {event.source}:{event.position}, which has no tenant,")
        )
        raise TenantError(
            f"{self._tenant_projection}: {what} cannot {doing} documents of {collection!r}: "
            f"they belong to tenants (tenant field {self._tenant!r})"
        )

    def _filter(self, query: dict[str, Any], tenant: Any) -> dict[str, Any]:
        """``query`` limited to ``tenant``'s documents (as is for ``None``)."""
        if tenant is None or self._tenant is None:
            return query
        field = self._tenant
        return {"$and": [query, {field: tenant}]} if field in query else {**query, field: tenant}

    def _placed(self, collection: str, field: str, document: dict[str, Any]) -> dict[str, Any]:
        """``document`` in the tenant of the event being handled (filled in when it lacks
        the field); :class:`TenantError` when it names another tenant or there is none."""
        event = self.event
        tenant = None if event is None else event.tenant
        given = document.get(field, _MISSING)
        if tenant is not None and given == tenant:
            return document
        projection = self._tenant_projection
        if event is None:
            raise TenantError(
                f"{projection}: a document of {collection!r} written outside any event cannot "
                f"be placed in a tenant (tenant field {field!r})"
            )
        what = f"{event.event_type} at {event.source}:{event.position}"
        if tenant is None:
            raise TenantError(
                f"{projection}: {what} has no tenant, so its document of {collection!r} cannot "
                f"be placed (tenant field {field!r})"
            )
        if given is _MISSING:
            document[field] = tenant
            return document
        raise TenantError(  # not the document's value: a hidden payload field's may be there
            f"{projection}: a document of {collection!r} names another tenant than the event's "
            f"({tenant!r}) in {field!r} ({what}; the value is not shown); a handler writes "
            "only its event's tenant's documents"
        )

    def delete(self, collection: str, key: Any) -> None:
        """Delete the document with ``_id == key`` (the event's tenant's, in a projection
        with a ``tenant_column``; another tenant's stays)."""
        name = self._name(collection)
        refuse_wide_integer(collection, "a delete's _id", key)
        tenant = self._scope(collection, "delete")
        at = slot(key, collection, "a delete's _id")
        if self._undo is not None:
            self._undo.keep(self._known, self._pending, name, (tenant, at))
        self._known[(name, tenant, at)] = _DELETED
        self._pending.setdefault(name, {})[(tenant, at)] = (key, tenant, _DELETED)

    def find(self, collection: str, **equals: Any) -> list[dict[str, Any]]:
        """Documents whose fields equal ``equals``, with this batch's writes in place."""
        name = self._name(collection)
        tenant = self._scope(collection, "read")
        for field, value in equals.items():
            refuse_wide_integer(collection, "a find's filter", value, field)
            refuse_unencodable(collection, "a find's filter", value, field)
        self.flush()
        query = self._filter(equals, tenant)
        found = list(self._database[name].find(query, session=self._session))
        for document in found:
            self._known[(name, tenant, slot(document["_id"]))] = document
        return [copy.deepcopy(document) for document in found]

    def prefetch(self, collection: str, keys: Iterable[Any]) -> None:
        """Read the documents of ``keys`` in one query (``get`` then needs no round trip).
        Called before the batch's handlers (no event), a tenant projection's prefetch reads
        every tenant's documents of ``keys``, each kept for its own tenant."""
        name = self._name(collection)
        every = self._tenant is not None and collection not in self._shared and self.event is None
        tenant = _ANY if every else self._scope(collection, "read")
        wanted = {}
        for key in keys:
            refuse_wide_integer(collection, "a read's _id", key)
            at = slot(key, collection, "a read's _id")
            if (name, tenant, at) in self._known:
                continue
            if self._never_written(name, at):
                self._known[(name, tenant, at)] = _DELETED
            else:
                wanted[at] = key
        if not wanted:
            return
        query = {"_id": {"$in": list(wanted.values())}}
        for document in self._database[name].find(
            query if every else self._filter(query, tenant), session=self._session
        ):
            owner = document.get(self._tenant) if every else tenant  # type: ignore[arg-type]
            at = slot(document["_id"])
            self._known.setdefault((name, owner, at), document)
            wanted.pop(at, None)
        for at in wanted:
            self._known[(name, tenant, at)] = _DELETED

    def _never_written(self, name: str, at: Any) -> bool:
        """Whether the ``_id`` of slot ``at`` is known absent from a rebuild's collection."""
        return self._written is not None and at not in self._written.get(name, ())

    def invalidate(self, *tags: str) -> None:
        added = new_cache_tags(self.invalidated, tags)
        if self._undo is not None:
            self._undo.tags.extend(added)
        self.invalidated.update(added)

    def undoable(self) -> None:
        """Keep from here what the writes replace, so that :meth:`undo` can take them back:
        see :mod:`projections.document_undo` (what a handler read stays known: it is what
        the database holds)."""
        self._undo = DocumentUndo()

    def settle(self) -> None:
        """Stop keeping what writes replace: the writes since :meth:`undoable` stay."""
        self._undo = None

    def undo(self) -> bool:
        """Take back every write and cache tag since :meth:`undoable`; ``False`` (nothing
        taken back) when there is none to take back from or a flush (a ``find``'s among
        them) has sent some of those writes already (a flush of the batch's earlier writes
        alone, a ``find`` before the handler's first write, leaves them all in memory)."""
        undo, self._undo = self._undo, None
        if undo is None or undo.sent:
            return False
        undo.restore(self._known, self._pending, self.invalidated)
        return True

    def flush(self) -> None:
        """Send the pending writes, in the order they were first made per collection."""
        if self._undo is not None and self._undo.pending:
            self._undo.sent = True
        pending, self._pending = self._pending, {}
        for name, documents in pending.items():
            writes = list(documents.values())
            requests: list[Any] = [
                DeleteOne(self._filter({"_id": key}, tenant))
                if document is _DELETED
                else ReplaceOne(self._filter({"_id": key}, tenant), document, upsert=True)
                for key, tenant, document in writes
            ]
            if not requests:
                continue
            if self._before_write is not None:
                before, self._before_write = self._before_write, None
                before()
            if self._written is not None:  # before the write: a superset is still right
                self._written.setdefault(name, set()).update(at for _, at in documents)
            try:
                self._database[name].bulk_write(requests, ordered=True, session=self._session)
            except BulkWriteError as exc:
                conflict = self._conflict(name, writes, exc)
                if conflict is None:  # its details hold the document and the key's value
                    raise without_values(exc) from None
                raise conflict from exc
            except OverflowError as exc:
                wide = self._wide_integer(name, writes)
                raise RefusedDocument(wide or f"{type(exc).__name__}: {exc}") from exc
            except (InvalidDocument, DocumentTooLarge, ValueError) as exc:
                # Not from exc: its message (kept in the traceback) may quote the value.
                why = f"{self._declared.get(name, name)!r}: {unsent_reason(exc)}"
                raise RefusedDocument(why) from None

    def _wide_integer(self, name: str, writes: list[tuple[Any, Any, Any]]) -> str | None:
        """Why the first integer past 64 bits in ``writes`` cannot be stored, naming its
        document and field; ``None`` when there is none.

        Not stored as a Decimal128 instead: it holds 34 digits, and the handler would read
        back (as every reader would) another type than the ``int`` it wrote."""
        for key, _, document in writes:
            if document is _DELETED:
                continue
            found = wide_integer_field(document, "")
            if found is not None:
                return (
                    f"{self._declared.get(name, name)!r} document with _id {key!r}: field "
                    f"{found[0]!r} holds an integer past the 64-bit integers BSON holds: "
                    "write it as text, or as a Decimal128"
                )
        return None

    def _conflict(
        self, name: str, writes: list[tuple[Any, Any, Any]], exc: BulkWriteError
    ) -> TenantConflict | None:
        """The :class:`TenantConflict` of a tenant's upsert that hit the ``_id`` of another
        tenant's document (its filter missed it, its insert found the ``_id`` taken)."""
        errors = exc.details.get("writeErrors") or [{}]
        error = errors[0]
        index = error.get("index")
        if error.get("code") != 11000 or not isinstance(index, int) or index >= len(writes):
            return None
        if error.get("keyPattern", {"_id": 1}) != {"_id": 1}:
            return None  # another unique index: the data's own refusal
        key, tenant, document = writes[index]
        if tenant is None or document is _DELETED:
            return None
        collection = self._declared.get(name, name)
        if self._untenanted(name, key):
            return untenanted(self._tenant_projection, tenant, collection, key, self._tenant)
        return TenantConflict(
            TenantError(
                f"{self._tenant_projection}: tenant {tenant!r} cannot write the document of "
                f"{collection!r} with _id {key!r}: another tenant's document holds that _id "
                f"(give documents _ids unique across tenants, e.g. with the tenant in them)",
                for_good=False,  # that tenant's document may go: retried, then parked
            )
        )

    def _untenanted(self, name: str, key: Any) -> bool:
        """Whether the committed document of ``key`` has no tenant (read outside the
        transaction, which the refused write ended; a document this batch wrote is a
        tenant's)."""
        field = self._tenant
        try:
            found = self._database[name].find_one({"_id": key}, {field: 1})
        except PyMongoError:
            return False
        return found is not None and found.get(field) is None


def handle(projection: Projection, event: Envelope, tx: DocumentTx, tags: set[str] | None) -> None:
    """Run ``projection``'s handler of ``event`` in ``tx``, adding its cache tags to ``tags``;
    a handler's own error becomes :class:`HandlerFailed` (``refused`` for an
    :class:`UnstorableValueError`, :class:`WideIntegerError` among them, which only the Tx
    raises), a MongoDB error too unless it is the store's trouble
    (:func:`projections.document_write_errors.the_stores`: a write conflict, a lost
    connection, retried as the store's) or a refused write (the store finds its event)."""
    tx.event = event
    try:
        with bounded(projection.name, event):
            if projection.handle(event, tx) and tags is not None:  # type: ignore[arg-type]
                add_cache_tags(projection, event, tags)
    except HandlerTimeout as exc:  # past engine.handler_timeout: the event's own failure
        raise HandlerFailed(event, exc, hidden_traceback(exc)) from exc
    except REFUSED_WRITES:  # the store finds the event whose write it was
        raise
    except PyMongoError as exc:
        if the_stores(exc):
            raise
        raise HandlerFailed(event, handler_error(exc), hidden_traceback(exc)) from exc
    except Exception as exc:
        refused = isinstance(exc, UnstorableValueError)
        error = handler_error(exc)  # a BSON error of its own code: without the value
        raise HandlerFailed(event, error, hidden_traceback(exc), refused=refused) from exc
