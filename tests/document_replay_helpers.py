"""The event log and MongoDB store the document replay tests share (the ``docs`` fixture),
and their deposits."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from outbox.log import EventLog
from projections import document_replay
from projections.api import Projection
from projections.document_generations import collections_at, generation_of
from projections.document_replay import DocumentReplayer
from projections.engine import ProjectionEngine
from projections.log_reader import LogReader
from projections.mongo_store import MongoStore
from projections.replay_types import ReplayHooks
from tests.document_fixtures import DocLastDeposit, DocTotals, refuse_taken_codes
from tests.projection_fixtures import append_events

Deposits = list[tuple[str, str, dict[str, Any]]]
PROJECTIONS = ["tests.document_fixtures:DocTotals", "tests.document_fixtures:DocLastDeposit"]


def deposits(n: int, accounts: int, seed: int, seqs: dict[str, int] | None = None) -> Deposits:
    """``n`` deposits; ``seqs`` (each account's last seq so far) is carried on in place."""
    rng = random.Random(seed)
    seqs = {} if seqs is None else seqs
    events = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts)}"
        seqs[account] = seqs.get(account, 0) + 1
        events.append((account, "Deposited", {"amount": rng.randint(1, 100), "seq": seqs[account]}))
    return events


def totals(events: Deposits) -> dict[str, tuple[int, int, int]]:
    found: dict[str, tuple[int, int, int]] = {}
    for account, _, payload in events:
        count, total, _ = found.get(account, (0, 0, 0))
        found[account] = (count + 1, total + payload["amount"], payload["seq"])
    return found


class Docs:
    """The event log (PostgreSQL) and a MongoDB store holding both document projections."""

    def __init__(self, log_url: str, url: str) -> None:
        self.log = EventLog(log_url)
        self.log.create_tables()
        self.url = url
        self.store = MongoStore(url)
        self.projections = {p.name: p for p in (DocTotals(), DocLastDeposit())}
        self.store.create_tables(list(self.projections.values()))
        self.engine = self.engine_on(self.store)
        self.head = 0

    def engine_on(self, store: MongoStore) -> ProjectionEngine:
        engine = ProjectionEngine(
            LogReader(self.log), list(self.projections.values()), {"docs": store}, batch_size=300
        )
        engine.retry_backoff = 0.001
        return engine

    def feed(self, events: Deposits, apply: bool = True) -> None:
        self.head = append_events(
            self.log, events, source="bank", aggregate_type="account", after=self.head
        )
        if apply:
            self.engine.catch_up()

    def replayer(
        self,
        name: str = "doc_totals",
        hooks: ReplayHooks | None = None,
        batch: int = 500,
        **kw: Any,
    ) -> DocumentReplayer:
        """The old generation is dropped at once, unless ``retire_after`` says otherwise."""
        kw.setdefault("retire_after", 0.0)
        return DocumentReplayer(
            LogReader(self.log),
            self.projections[name],
            self.store,
            hooks=hooks,
            batch_size=batch,
            **kw,
        )

    def documents(
        self, name: str = "doc_totals", store: MongoStore | None = None
    ) -> dict[str, Any]:
        """Every document of the projection's current generation, by declared collection."""
        database = (store or self.store).database
        physical = collections_at(self.projections[name], generation_of(database, name))
        return {c: list(database[p].find().sort("_id", 1)) for c, p in physical.items()}

    def totals(self) -> dict[str, tuple[int, int, int]]:
        found = self.documents()["doc_totals"]
        assert all(d["violations"] == 0 for d in found)
        return {d["_id"]: (d["events"], d["total"], d["last_seq"]) for d in found}

    def collection_names(self) -> set[str]:
        return set(self.store.database.list_collection_names())

    def checkpoints(self, name: str = "doc_totals") -> dict[tuple[str, int], int]:
        return self.store.checkpoints(name)

    def close(self) -> None:
        self.engine.close()
        self.store.close()
        self.log.close()


@pytest.fixture
def docs(pg_database: Callable[[], str], mongo_database: Callable[[], str]) -> Iterator[Docs]:
    made = Docs(pg_database(), mongo_database())
    yield made
    made.close()


def kill_in_swap(docs: Docs, lease: float | None = None) -> None:
    """Run a rebuild of ``doc_totals`` in a subprocess (tests/document_swap_kill_child.py)
    and SIGKILL it inside its swap's transaction, which the server keeps open for 60 s;
    ``lease``: the seconds its replay lease lasts (30 otherwise)."""
    log_url = docs.log.engine.url.render_as_string(hide_password=False)
    extra = [] if lease is None else [str(lease)]
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.document_swap_kill_child", log_url, docs.url, *extra],
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode()
        assert line.strip() == "swapping", line + child.stdout.read().decode()
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL


def rebuilds_refusing_taken_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each new generation of ``doc_totals`` a rebuild makes :func:`refuse_taken_codes`."""
    made = document_replay.create_collection_indexes

    def made_refusing(
        database: Database[Any], projection: Projection, physical: dict[str, str]
    ) -> None:
        made(database, projection, physical)
        if "doc_totals" in physical:
            refuse_taken_codes(database, physical["doc_totals"])

    monkeypatch.setattr(document_replay, "create_collection_indexes", made_refusing)
