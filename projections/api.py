"""What a projection author writes: a :class:`Projection` subclass with ``@on`` handlers.

Example::

    import sqlalchemy as sa
    from pydantic import BaseModel
    from projections import Event, Projection, Tx, on

    metadata = sa.MetaData()
    totals = sa.Table(
        "order_totals", metadata,
        sa.Column("customer_id", sa.Text, primary_key=True),
        sa.Column("orders", sa.Integer, nullable=False),
    )

    class OrderPlaced(BaseModel):
        order_id: str
        customer_id: str

    class OrderTotals(Projection):
        name = "order_totals"
        tables = (totals,)

        @on("orders", "OrderPlaced")
        def placed(self, event: Event[OrderPlaced], tx: Tx) -> None:
            row = tx.get(totals, event.payload.customer_id)
            tx.upsert(totals, {"customer_id": event.payload.customer_id,
                               "orders": (row["orders"] if row else 0) + 1})

Handlers run inside the apply transaction of their store: ``tx.get`` sees the
writes of earlier events of the same batch, so batching never changes what a
handler observes. Events of one aggregate arrive in the order their source
committed them; events of different sources have no order between them, so a
handler may meet an event whose related aggregate it has not seen yet.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Generic, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, RootModel, ValidationError

from outbox.envelope import Envelope
from outbox.source_groups import group_of
from projections.declaration_checks import check_key_tags, check_tenant_tables
from projections.hidden_fields import without_values
from projections.long_names import check_name_lengths
from projections.owned_names import check_owners
from projections.payload_errors import PayloadError as PayloadError  # re-exported
from projections.payload_errors import hides_cause, payload_error
from projections.payload_types import PayloadAdapter, payload_type
from projections.rebuild_names import check_rebuild_names
from projections.store_identifiers import store_kinds
from projections.table_names import check_table_names

P = TypeVar("P")

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Event(Generic[P]):
    """An event as a handler sees it: the envelope's fields and a typed payload."""

    payload: P
    envelope: Envelope

    @property
    def event_id(self) -> str:
        return self.envelope.event_id

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def tenant(self) -> str | None:
        return self.envelope.tenant

    @property
    def aggregate_type(self) -> str:
        return self.envelope.aggregate_type

    @property
    def aggregate_id(self) -> str:
        return self.envelope.aggregate_id

    @property
    def event_type(self) -> str:
        return self.envelope.event_type

    @property
    def position(self) -> int:
        return self.envelope.position or 0

    @property
    def occurred_at(self) -> datetime | None:
        return self.envelope.occurred_at

    @property
    def headers(self) -> dict[str, Any]:
        return self.envelope.headers


class Tx(typing.Protocol):
    """The store transaction a handler writes through (see ``projections/store.py``)."""

    def get(self, table: sa.Table, key: Any) -> dict[str, Any] | None: ...

    def upsert(self, table: sa.Table, row: Mapping[str, Any]) -> None: ...

    def delete(self, table: sa.Table, key: Any) -> None: ...

    def find(self, table: sa.Table, **equals: Any) -> list[dict[str, Any]]: ...

    def prefetch(self, table: sa.Table, keys: list[Any]) -> None: ...

    def invalidate(self, *tags: str) -> None:
        """Also invalidate these cache tags (e.g. ``"customer:7"``) when the batch commits."""


@dataclass(frozen=True, slots=True)
class Handler:
    source: str
    event_type: str
    function: Callable[..., None]
    model: type[BaseModel] | PayloadAdapter | None


def on(source: str, event_type: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Mark a method as the handler of ``event_type`` events from ``source``, or from every
    member source of the group ``source`` (``"pos"`` receives ``pos:acme``, ``pos:globex``).

    The payload model comes from the ``event`` parameter's annotation
    (``Event[MyModel]``, ``Event[Paid | Shipped]``: :mod:`projections.payload_types`);
    without one, the payload is a plain ``dict``.
    """

    def mark(function: Callable[..., None]) -> Callable[..., None]:
        marks = list(getattr(function, "__readmodel_on__", []))
        marks.append((source, event_type))
        function.__readmodel_on__ = marks  # type: ignore[attr-defined]
        return function

    return mark


class TenantError(Exception):
    """A handler of a projection with a ``tenant_column`` wrote a row of a tenant table that
    is not its event's tenant's, or handled an event without a tenant (whose rows cannot be
    placed). The same on every attempt (``for_good``): the engine parks its event at the
    first failure (``tenant refused, not retried``), for ``readmodel parked retry`` once the
    handler is fixed. Not ``for_good``: another tenant's document holds the ``_id`` a
    tenant wrote (:class:`projections.document_write_errors.TenantConflict`), which a later
    event may free: retried, then parked. ``remedy`` says what to do when a fixed handler
    and a retry would not (a row without a tenant, left by an older readmodel, needs a
    rebuild); the parked reason ends with it."""

    def __init__(self, message: str, *, for_good: bool = True, remedy: str | None = None) -> None:
        super().__init__(message)
        self.for_good = for_good
        self.remedy = remedy


class UnstorableValueError(ValueError):
    """A handler wrote a value a column cannot keep as written, naming ``table.column``, the
    value's type and why, never the value (a secret written to the wrong column would be
    logged and kept as its parked event's reason): NaN into an integer column (or any SQLite
    column, which stores it as NULL), a text that names no fixed time (``'now'``), a time
    PostgreSQL stores but psycopg cannot read back (``'infinity'``), a tuple into a
    PostgreSQL text column... Raised by the write itself, before the batch holds it, like
    :class:`WideIntegerError`."""


class WideIntegerError(UnstorableValueError):
    """A handler wrote an integer its store would not keep: into a column too narrow for it
    (naming ``table.column``), or a MongoDB document or key (naming the collection and the
    field; BSON holds 64-bit integers). Raised by the write (or read) itself, before the
    batch holds it: a handler may catch it and write the value another way (as text)."""


class Projection:
    """Base class of projections. Subclasses set ``name``, ``tables`` and ``@on`` handlers.

    ``tables`` lists every table the projection owns: the read models it serves
    and any auxiliary tables it only needs for itself. ``partitions`` is how many
    ordered lanes each source's events are split into (by aggregate).
    ``upcasters`` maps ``(event_type, schema_version)`` to a function that turns
    a payload of that version into the next version. An upcaster's own exception is its
    handler's failure (retried, then parked); a payload its upcasters bring to a shape the
    handler's model rejects is a :class:`PayloadError` (parked at once).
    """

    name: ClassVar[str]
    tables: ClassVar[tuple[sa.Table, ...]] = ()
    collections: ClassVar[tuple[str, ...]] = ()
    """The collections of a projection kept in a MongoDB store (instead of ``tables``):
    handlers then get a :class:`projections.mongo_tx.DocumentTx`."""
    collection_indexes: ClassVar[Mapping[str, Sequence[str | tuple[str, ...]]]] = {}
    """Indexes the MongoDB store creates on the collections, beside ``_id`` (and, with a
    ``tenant_column``, ``(tenant_column, _id)`` on each collection not shared): collection ->
    fields (a tuple for a compound index), e.g. ``{"inbox": ["participant_ids"]}``."""
    partitions: ClassVar[int] = 4
    upcasters: ClassVar[Mapping[tuple[str, int], Upcaster]] = {}
    store: ClassVar[str] = "default"
    key_tags: ClassVar[Mapping[str, Any]] = {}
    """Table name -> cache tag format over its primary key (``"product:{product_id}"``):
    get-by-key reads of those tables are cached under that tag (``projections/queries.py``)."""
    replay_safe: ClassVar[bool] = False
    """True when applying any event again leaves the same state (idempotent handlers, e.g.
    upserts of the event's own fields): only such a projection may be replayed in place
    (``readmodel replay --from-position``)."""
    tenant_column: ClassVar[str | None] = None
    """The column (a document's field, for ``collections``) holding each row's tenant: every
    read is then filtered by the caller's tenant, which queries must give
    (``Queries.get(..., tenant=...)``, ``readmodel query --tenant``). Every table must have
    the column, but those listed in ``shared_tables`` (``shared_collections``). The store
    fills the event's tenant into a row written without the column; a row that names
    another tenant, or any row written for an event without a tenant, fails the handler
    (:class:`TenantError`)."""
    shared_tables: ClassVar[tuple[sa.Table, ...]] = ()
    """Tables of a projection with a ``tenant_column`` that every tenant reads (reference
    data without the column)."""
    shared_collections: ClassVar[tuple[str, ...]] = ()
    """``shared_tables`` of a document projection: collections every tenant reads."""

    _handlers: ClassVar[dict[tuple[str, str], Handler]]
    _subscribed: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[tuple[str, str], Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr, function in vars(klass).items():
                marks = getattr(function, "__readmodel_on__", [])
                model = payload_type(function, attr, cls, klass, Event) if marks else None
                for source, event_type in marks:
                    handlers[(source, event_type)] = Handler(source, event_type, function, model)
        cls._handlers = handlers
        cls._subscribed = frozenset(source for source, _ in handlers)
        check_table_names(cls.__name__, cls.tables)
        check_tenant_tables(cls)
        check_key_tags(cls)

    @property
    def sources(self) -> list[str]:
        """The names it subscribes to: sources, and groups of member sources."""
        return sorted({source for source, _ in self._handlers})

    def subscription(self, source: str) -> str | None:
        """The name ``source``'s events are handled under: the source itself, else its
        group; ``None`` when this projection reads neither."""
        subscribed = self._subscribed
        if source in subscribed:
            return source
        group = group_of(source)
        return group if group is not None and group in subscribed else None

    def reads(self, source: str) -> bool:
        return self.subscription(source) is not None

    def subscribes(self, source: str, event_type: str) -> bool:
        return (self.subscription(source), event_type) in self._handlers

    def event_types(self, source: str) -> list[str]:
        name = self.subscription(source)
        return sorted(t for s, t in self._handlers if s == name)

    def lane_sources(self, logged: Iterable[str], groups: Iterable[str] = ()) -> list[str]:
        """The sources whose lanes this projection has: each subscribed source, and the
        member sources (among ``logged``, the sources in the log) of each subscribed group.
        A subscribed name in ``groups``, or with members in the log, is a group and has
        lanes of its own only if it is in the log itself."""
        logged = set(logged)
        groups = set(groups)
        members = {s for s in logged if group_of(s) in self._subscribed}
        grouped = {group_of(s) for s in members} | groups
        own = {s for s in self._subscribed if s not in grouped or s in logged}
        return sorted(own | members)

    def handle(self, envelope: Envelope, tx: Tx) -> bool:
        """Apply one event; ``False`` when this projection does not subscribe to it. A
        ``ValidationError`` of a handler's or an upcaster's own model goes on without the
        values given (:class:`projections.hidden_fields.HiddenValidationError`)."""
        try:
            return self._handle(envelope, tx)
        except ValidationError as exc:  # the traceback kept: it shows no value
            raise without_values(exc).with_traceback(exc.__traceback__) from None

    def _handle(self, envelope: Envelope, tx: Tx) -> bool:
        handler = self._handlers.get((envelope.source, envelope.event_type))
        if handler is None:
            handler = self._handlers.get((self.subscription(envelope.source), envelope.event_type))
            if handler is None:
                return False
        payload: Any = envelope.payload
        model = handler.model
        if self.upcasters or type(self).upcast is not Projection.upcast:
            # An upcaster's own exception is the handler's failure (retried, then parked).
            payload = self.upcast(envelope.event_type, _own_copy(payload))
        elif model is None or not _validates_fast(model):
            payload = _own_copy(payload)
        if model is not None:
            try:
                if _validates_fast(model):
                    # model_validate's own validator; the payload is never held by the model.
                    payload = model.__pydantic_validator__.validate_python(payload)
                else:
                    payload = model.model_validate(payload)
            except ValidationError as exc:
                upcast = payload != envelope.payload
                error = payload_error(envelope.event_type, model, exc, upcast=upcast)
                if hides_cause(model, exc):  # its text shows them
                    raise error from None
                raise error from exc
        handler.function(self, Event(payload, envelope), tx)
        return True

    def prefetch(self, events: Sequence[Envelope], tx: Tx) -> None:
        """Optional: load the rows a batch will read in a few queries (``tx.prefetch``).

        Called once per batch before the handlers; correctness never depends on it.
        """

    def cache_tags(self, event: Envelope) -> Iterable[str]:
        """The cache tags applying ``event`` invalidates (``"<aggregate_type>:<id>"``); a
        handler adds more with ``tx.invalidate(...)``. Tags are namespaced by projection; the
        cache also invalidates each with the canonical spelling of its id (``"product:45"``
        for id ``"45.00"``, see :mod:`projections.tag_spelling`)."""
        return (f"{event.aggregate_type}:{event.aggregate_id}",)

    def upcast(self, event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Bring ``payload`` to the newest schema version through ``upcasters``."""
        if not self.upcasters:
            return payload
        version = int(payload.get("schema_version", 1))
        while (step := self.upcasters.get((event_type, version))) is not None:
            payload = step(payload)
            version_after = int(payload.get("schema_version", version + 1))
            version = version_after if version_after > version else version + 1
        return payload


_fast: dict[type[BaseModel] | PayloadAdapter, bool] = {}


def _own_copy(payload: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a decoded JSON payload for an upcaster or a handler to change at will:
    envelopes are shared (a batch applied again, other projections of the same events)."""
    return {key: _copied(value) for key, value in payload.items()}


def _copied(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    return value


def _validates_fast(model: type[BaseModel] | PayloadAdapter) -> bool:
    """Whether ``model.model_validate`` is pydantic's own, on a model that keeps no reference
    to the input dict (not a ``RootModel``): then the validator is called directly."""
    fast = _fast.get(model)
    if fast is None:
        own = getattr(model.model_validate, "__func__", None) is BaseModel.model_validate.__func__
        fast = _fast[model] = own and isinstance(model, type) and not issubclass(model, RootModel)
    return fast


def load_projections(
    modules: Iterable[str], stores: Mapping[str, str] | None = None
) -> list[Projection]:
    """Import each module (or ``module:ClassName``) and instantiate its projections; refused
    when a name is another's, when two declare one table or collection of a store
    (:mod:`projections.owned_names`), when PostgreSQL would cut a table's name short
    (:mod:`projections.long_names`), or a name is one another's rebuild derives
    (:mod:`projections.rebuild_names`). ``stores`` (``{store name: URL}``, ``default`` the
    ``[store]``) lets table names be compared as each store resolves them; without it they
    are compared without case, schemas as written."""
    found: dict[str, Projection] = {}
    for spec in modules:
        module_name, _, class_name = spec.partition(":")
        module = importlib.import_module(module_name)
        if class_name:
            candidates = [getattr(module, class_name)]
        else:
            candidates = [
                obj
                for obj in vars(module).values()
                if isinstance(obj, type)
                and issubclass(obj, Projection)
                and obj is not Projection
                and obj.__module__ == module.__name__
                and "name" in vars(obj)
            ]
        for cls in candidates:
            projection = cls()
            if projection.name in found:
                raise ValueError(f"two projections are named {projection.name!r}")
            found[projection.name] = projection
    kinds = store_kinds(stores or {})
    check_owners(list(found.values()), kinds)
    check_name_lengths(list(found.values()), kinds)
    check_rebuild_names(list(found.values()), kinds)
    return list(found.values())
