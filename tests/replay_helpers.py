"""The replay tests' pipeline (sources on SQLite files, the log and read models in the store
under test), their events, and the PostgreSQL roles and catalog queries of the rebuild
catalog and security tests (``make_pipeline``, ``pg`` and ``make_role`` are fixtures)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from config import Settings
from outbox.relay import Relay
from projections.replay import Replayer, ReplayHooks, ReplayOptions
from tests.cli_helpers import write_config
from tests.conftest import PG_ADMIN
from tests.outbox_helpers import init_outbox, insert_events
from workers.runtime import Runtime, build_runtime

PROJECTIONS = ["tests.projection_fixtures", "tests.replay_fixtures"]
Events = list[tuple[str, str, str, dict[str, Any]]]


class Pipeline:
    """Sources on SQLite files; the log and read models in the store under test."""

    def __init__(
        self,
        make_settings: Callable[..., Settings],
        store_url: str,
        sqlite: Any,
        projections: list[str] = PROJECTIONS,
    ):
        self.store_url = store_url
        self.projections = projections
        self.sources = {name: sqlite() for name in ("bank", "orders", "auth")}
        self.settings = make_settings(
            store_url,
            {name: {"url": url} for name, url in self.sources.items()},
            projections=projections,
        )
        self.engines = {}
        for name in self.sources:
            init_outbox(self.settings.sources[name], name)
            self.engines[name] = sa.create_engine(self.sources[name])
        self.runtime: Runtime = build_runtime(self.settings)
        self.runtime.engine.retry_backoff = 0.001

    def feed(self, source: str, events: Events, apply: bool = True) -> None:
        insert_events(self.engines[source], events)
        Relay(self.settings, log=self.runtime.log).drain()
        if apply:
            self.runtime.engine.catch_up()

    def rows(self, table: sa.Table) -> dict[str, dict[str, Any]]:
        with self.runtime.log.engine.connect() as conn:
            return {row[0]: dict(row._mapping) for row in conn.execute(sa.select(table))}

    def execute(self, sql: str) -> None:
        with self.runtime.log.engine.begin() as conn:
            conn.exec_driver_sql(sql)

    def replayer(self, name: str, hooks: ReplayHooks | None = None, batch: int = 500) -> Replayer:
        engine = self.runtime.engine
        projection = engine.projection(name)
        return Replayer(
            engine.reader, projection, engine.store_of(projection), hooks=hooks, batch_size=batch
        )

    def tables(self) -> set[str]:
        return set(sa.inspect(self.runtime.log.engine).get_table_names())

    def close(self) -> None:
        self.runtime.close()
        for engine in self.engines.values():
            engine.dispose()


def deposits(n: int, accounts: int, seed: int, start: dict[str, int] | None = None) -> Events:
    rng = random.Random(seed)
    seqs = dict(start or {})
    events = []
    for _ in range(n):
        account = f"acct-{rng.randrange(accounts)}"
        seqs[account] = seqs.get(account, 0) + 1
        amount = rng.randint(1, 1000)
        events.append(("account", account, "Deposited", {"amount": amount, "seq": seqs[account]}))
    return events


def last_seqs(events: Events) -> dict[str, int]:
    return {account: payload["seq"] for _, account, _, payload in events}


def orders(n: int, seed: int) -> tuple[Events, Events]:
    rng = random.Random(seed)
    placed = [
        (
            "order",
            f"o{i}",
            "OrderPlaced",
            {
                "customer": f"c{rng.randrange(7)}",
                "amount": rng.randint(1, 500),
                "schema_version": 2,
            },
        )
        for i in range(n)
    ]
    cancelled = [("order", f"o{i}", "OrderCancelled", {}) for i in range(0, n, 9)]
    users = [("user", f"c{i}", "UserRegistered", {"email": f"c{i}@example.com"}) for i in range(7)]
    return placed + cancelled, users


EVENTS = deposits(300, 7, seed=11)  # accounts acct-0 .. acct-6


@pytest.fixture
def make_pipeline(
    make_settings: Callable[..., Settings],
    pg_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> Iterator[Callable[[str], Pipeline]]:
    made: list[Pipeline] = []

    def make(engine_name: str) -> Pipeline:
        url = pg_database() if engine_name == "postgresql" else sqlite_database()
        made.append(Pipeline(make_settings, url, sqlite_database))
        return made[-1]

    yield make
    for pipeline in made:
        pipeline.close()


@pytest.fixture
def pg(make_pipeline: Callable[[str], Pipeline]) -> Pipeline:
    """Row-level security, grants and comments are PostgreSQL's."""
    return make_pipeline("postgresql")


@pytest.fixture
def make_role(pg: Pipeline) -> Iterator[Callable[[str], str]]:
    """``make_role("reader")`` -> a new role ``rm_test_reader_<hex>``; every role made is
    dropped after the test (with what it owns and was granted in the test database)."""
    made: list[str] = []

    def make(purpose: str) -> str:
        role = f"rm_test_{purpose}_{uuid.uuid4().hex[:8]}"
        pg.execute(f'CREATE ROLE "{role}"')
        made.append(role)
        return role

    yield make
    for role in made:
        pg.execute(f'DROP OWNED BY "{role}"')
        pg.execute(f'DROP ROLE "{role}"')
    with psycopg.connect(PG_ADMIN) as admin:
        left = admin.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (made,)
        ).fetchall()
    assert left == []


def read_only_role(
    pipeline: Pipeline, make_role: Callable[[str], str], schemas: Sequence[str] = ("public",)
) -> str:
    """A new login role that may only read the tables of ``schemas`` (USAGE and SELECT; no
    one may create in ``public``): what a dry run as an operator without DDL rights sees."""
    reader = make_role("reader")
    pipeline.execute(f'ALTER ROLE "{reader}" LOGIN')
    pipeline.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    for schema in schemas:
        pipeline.execute(f'GRANT USAGE ON SCHEMA {schema} TO "{reader}"')
        pipeline.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO "{reader}"')
    return reader


def as_role(pipeline: Pipeline, role: str, sql: str) -> list[Any]:
    with pipeline.runtime.log.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
        return list(conn.exec_driver_sql(sql).all())


def query(pipeline: Pipeline, sql: str) -> list[Any]:
    with pipeline.runtime.log.engine.connect() as conn:
        return list(conn.exec_driver_sql(sql).all())


def replay_twice(pipeline: Pipeline, hooks: ReplayHooks | None = None) -> None:
    """Two rebuilds: the second proves the first left the names the next one expects."""
    for _ in range(2):
        pipeline.replayer("last_deposit", hooks=hooks).run(ReplayOptions())
    assert not any(t.endswith(("__rebuild", "__old")) for t in pipeline.tables())


def pipeline_config(tmp_path: Path, p: Pipeline) -> Path:
    """A config file for the CLI: ``p``'s projections, store and sources."""
    return write_config(
        tmp_path / "replay.toml",
        {
            "projections": p.projections,
            "store": {"url": p.store_url},
            "sources": {name: {"url": url} for name, url in p.sources.items()},
        },
    )


def reader_config(tmp_path: Path, p: Pipeline, role: str) -> Path:
    """:func:`pipeline_config` with the store reached as ``role`` (trust authentication)."""
    url = sa.make_url(p.store_url).set(username=role).render_as_string(hide_password=False)
    path = tmp_path / f"{role}.toml"
    path.write_text(pipeline_config(tmp_path, p).read_text().replace(p.store_url, url))
    return path


def plan_lines(stdout: str) -> list[str]:
    """The CLI's lines, each with its spaces made one (as rich wraps them at the width)."""
    return [" ".join(line.split()) for line in stdout.splitlines()]


def plan_text(stdout: str) -> str:
    """A ``--dry-run``'s plan as one line (as wrapped), without its warnings."""
    done = " dry run: nothing was changed"
    text = " ".join(plan_lines(stdout)).split(" warning: ", 1)[0].removesuffix(done)
    return text + done
