"""A worker starting on a store that refuses its start-up work says why in one line, the
database's reason without the rows it refused (:func:`outbox.error_text.describe_error`).

Before: ``parking events stuck at every attempt failed`` and ``redoing cache invalidations
failed`` logged ``error=repr(exc)``: for a refused parking, PostgreSQL's ``DETAIL:  Failing
row contains (...)`` with the event's aggregate id and the attempt's error in it."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from config import load_settings
from projections.stuck_events import STUCK_ERROR
from tests.cache_helpers import REDIS_URL, append, redis_prefix
from tests.cli_helpers import write_config
from workers.broker import make_broker
from workers.runtime import build_runtime
from workers.worker import run_worker

VALUE = "secret-payload-value"  # an aggregate id: a customer's e-mail, say
PARKING, REDOING = (
    "parking events stuck at every attempt failed",
    "redoing cache invalidations failed",
)


@pytest.fixture
def config(pg_database: Callable[[], str], tmp_path: Path) -> Iterator[Path]:
    with redis_prefix() as prefix:
        yield write_config(
            tmp_path / "readmodel.toml",
            {
                "store": {"url": pg_database()},
                "projections": ["tests.projection_fixtures:Totals"],
                "engine": {"max_attempts": 2},
                "cache": {"url": REDIS_URL, "key_prefix": prefix},
            },
        )


def test_a_store_refusing_the_start_up_work_is_told_without_its_rows(config: Path) -> None:
    settings = load_settings(config)
    runtime = build_runtime(settings)
    try:
        append(runtime.log, "bank", [("account", VALUE, "Deposited", {"amount": 1, "seq": 1})])
        engine = runtime.engine
        event = engine.reader.at_positions("bank", [1])[0]
        lane = engine.lane_of(engine.projections["totals"], event)
        store = engine.store_of("totals")
        for _ in range(2):  # stuck at every attempt: parked as the worker starts
            store.record_failure(lane, event, f"{STUCK_ERROR} [attempt {uuid.uuid4().hex}]: x")
        with runtime.log.engine.begin() as conn:
            conn.exec_driver_sql(
                "ALTER TABLE rm_blocked_aggregates ADD CONSTRAINT refused CHECK (false) NOT VALID"
            )
            conn.exec_driver_sql("DROP TABLE rm_invalidations")

        restarted = build_runtime(settings, migrate=False)
        broker = make_broker(settings.broker)
        stop = threading.Event()
        stop.set()  # start, do what a start does, stop
        try:
            with capture_logs() as logs:
                run_worker(restarted, broker, stop, threads=1)
        finally:
            broker.close()
            restarted.close()
        assert [(p.position, p.attempts) for p in store.parked("totals")] == []
    finally:
        runtime.close()

    start_up = logs[: [e["event"] for e in logs].index("worker started")]  # the sweep's next
    [parking] = [e["error"] for e in start_up if e["event"] == PARKING]
    assert parking == (
        'CheckViolation: new row for relation "rm_blocked_aggregates" violates check '
        'constraint "refused" (SQLSTATE 23514; constraint refused; table '
        "rm_blocked_aggregates)"
    )
    [redoing] = [e["error"] for e in start_up if e["event"] == REDOING]
    assert redoing.startswith("StoreError: cannot read rm_invalidations: UndefinedTable: ")
    for error in (parking, redoing):
        assert len(error) <= 200
        for leak in ("[SQL:", "[parameters:", "SELECT", "DETAIL", "Failing row", VALUE):
            assert leak not in error


def test_the_refusal_quotes_the_row(pg_database: Callable[[], str]) -> None:
    """What the parking line leaves out: PostgreSQL quotes the row it refuses."""
    engine = sa.create_engine(pg_database().replace("postgresql://", "postgresql+psycopg://"))
    try:
        with pytest.raises(sa.exc.IntegrityError) as raised, engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (id text CHECK (false))")
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": VALUE})
    finally:
        engine.dispose()
    assert "Failing row contains" in repr(raised.value) and VALUE in repr(raised.value)
