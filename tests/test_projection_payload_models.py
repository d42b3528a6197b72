"""A handler's payload model is looked up where the handler is written: a subclass of a
projection in another module (here, of ``tests.projection_fixtures.Totals``, whose
``Deposited`` model this module does not import) and a model written in the projection's
class body both get validated payloads, not the raw dict (``event.payload.seq`` failed with
an AttributeError on every event)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from projections.api import Event, Projection, Tx, on
from tests.projection_fixtures import Totals, account_totals, engine_on, log_events

metadata = sa.MetaData()
seen = sa.Table(
    "payload_models_seen",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, nullable=False),
)
DEPOSITS = [
    ("a", "Deposited", {"amount": "5", "seq": 1}),  # "5": the model's int takes it
    ("a", "Deposited", {"amount": 7, "seq": 2}),
]


class RenamedTotals(Totals):
    name = "renamed_totals"


class InnerModel(Projection):
    name = "payload_models_seen"
    tables = (seen,)

    class Seen(BaseModel):
        seq: int

    @on("bank", "Deposited")
    def deposited(self, event: Event[Seen], tx: Tx) -> None:
        tx.upsert(seen, {"id": event.aggregate_id, "seq": event.payload.seq})


def _applied(url: str, projection: Projection, table: sa.Table) -> list[tuple[Any, ...]]:
    with engine_on(url, [projection]) as (log, store, engine):
        metadata.create_all(log.engine)
        log_events(log, DEPOSITS, source="bank", aggregate_type="account")
        engine.catch_up(deadline=30)
        assert store.parked(projection.name) == []
        with log.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.select(table))]


def test_a_subclass_in_another_module_validates_its_payloads(
    database_for: Callable[[str], str],
) -> None:
    rows = _applied(database_for("sqlite"), RenamedTotals(), account_totals)
    assert rows == [("a", 2, 12, 2, 0)]


def test_a_model_written_in_the_class_body_validates_its_payloads(
    database_for: Callable[[str], str],
) -> None:
    assert _applied(database_for("sqlite"), InnerModel(), seen) == [("a", 2)]


def test_a_payload_model_not_there_at_run_time_is_refused_naming_the_handler() -> None:
    with pytest.raises(TypeError) as refused:

        class Unreadable(Projection):
            name = "payload_models_unreadable"
            tables = (seen,)

            @on("bank", "Deposited")
            def deposited(self, event: Event[OnlyWhileTypeChecking], tx: Tx) -> None:  # type: ignore[name-defined]  # noqa: F821
                pass

    message = str(refused.value)
    assert message.startswith("Unreadable.deposited: the annotation of 'event' "), message
    assert "OnlyWhileTypeChecking" in message and "TYPE_CHECKING" in message


def test_only_the_events_annotation_is_read(database_for: Callable[[str], str]) -> None:
    """A ``tx`` annotated with a name there only for type checkers is not looked up."""

    class LooseTx(Projection):
        name = "payload_models_seen"
        tables = (seen,)

        @on("bank", "Deposited")
        def deposited(self, event: Event[InnerModel.Seen], tx: TypeCheckersTx) -> None:  # type: ignore[name-defined]  # noqa: F821
            tx.upsert(seen, {"id": event.aggregate_id, "seq": event.payload.seq})

    assert _applied(database_for("sqlite"), LooseTx(), seen) == [("a", 2)]


_EVENT_FOR_TYPE_CHECKERS_ONLY = """
from __future__ import annotations

from typing import TYPE_CHECKING

from projections.api import Projection, on

if TYPE_CHECKING:  # what ruff's TC rules make of imports used only in annotations
    from projections.api import Event, Tx


class Untyped(Projection):
    name = "payload_models_seen"

    @on("bank", "Deposited")
    def deposited(self, event: Event, tx: Tx) -> None:
        tx.upsert(self.tables[0], {"id": event.aggregate_id, "seq": event.payload["seq"]})
"""


def test_an_event_annotation_without_a_model_needs_no_event_at_run_time(
    database_for: Callable[[str], str], tmp_path: Path
) -> None:
    """``event: Event`` names no model (the payload is a dict) whether or not ``Event`` is
    imported at run time: the module is not refused."""
    path = tmp_path / "untyped_projection.py"
    path.write_text(_EVENT_FOR_TYPE_CHECKERS_ONLY)
    spec = importlib.util.spec_from_file_location("untyped_projection", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    class Untyped(module.Untyped):  # type: ignore[name-defined,misc]
        tables = (seen,)

    assert _applied(database_for("sqlite"), Untyped(), seen) == [("a", 2)]
