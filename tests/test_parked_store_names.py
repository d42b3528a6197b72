"""With several read stores configured, a worker's ``event parked`` record names the store
the event was parked in (``store='read store NAME at LOCATION'``, no password), as its
``apply failed; will retry`` and ``batch writes refused`` records do
(tests/test_run_time_store_names.py); with a lone ``[store]`` it has no ``store`` field.

Before: ``event parked`` gave projection, source, position and error only: which store of
several holds the parked event, an operator had to look up in the configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from config import load_settings
from projections.stuck_events import STUCK_ERROR, park_stuck
from tests.cli_helpers import write_config
from tests.projection_fixtures import log_events
from workers.runtime import build_runtime

SECRET = "S3cret-Parked-4417"
FIXTURES = "tests.parked_store_fixtures"
EVENTS: list[tuple[str, str, dict[str, Any]]] = [
    ("a1", "Put", {"n": 1}),
    ("a2", "Put", {"n": 2, "fail": True}),  # both handlers raise
    ("a3", "Put", {"n": 3, "email": "same"}),
    ("a4", "Put", {"n": 4, "email": "same"}),  # a duplicate: the documents' batch refused
]


def _records(tmp_path: Path, data: dict[str, Any], *, stuck: bool = False) -> list[dict[str, Any]]:
    """The structlog records of a run of every configured projection over :data:`EVENTS`,
    each failing event parked at its first failure; ``doc_parking``'s ``email`` unique. With
    ``stuck``, instead: each projection's first event recorded as stuck once, then parked by
    :func:`park_stuck` as a worker starting does."""
    data = {**data, "engine": {"max_attempts": 1, "retry_backoff": "0s"}}
    config = write_config(tmp_path / "readmodel.toml", data)
    runtime = build_runtime(load_settings(config))
    try:
        if "docs" in runtime.engine.stores:
            documents = runtime.engine.stores["docs"].database["doc_parking"]  # type: ignore[attr-defined]
            documents.create_index("email", unique=True, name="email_unique")
        log_events(runtime.log, EVENTS, source="bank", aggregate_type="account")
        with capture_logs() as logs:
            if stuck:
                _stuck_once(runtime.engine)
                park_stuck(runtime.engine)
            else:
                runtime.engine.catch_up()
    finally:
        runtime.close()
    return logs


def _stuck_once(engine: Any) -> None:
    (event,) = engine.reader.at_positions("bank", [1])
    for projection in engine.projections.values():
        lane = engine.lane_of(projection, event)
        engine.store_of(projection).record_failure(lane, event, f"{STUCK_ERROR}: past 1s")


def _parked(logs: list[dict[str, Any]], projection: str) -> list[dict[str, Any]]:
    return [r for r in logs if r["event"] == "event parked" and r["projection"] == projection]


def _with_secret(url: str) -> tuple[str, str]:
    """``url`` with :data:`SECRET` as its password (the server trusts local users), and
    where it is as readmodel names it."""
    user, _, rest = url.partition("@")
    return f"{user}:{SECRET}@{rest}", f"postgresql://{rest.partition('?')[0]}"


def test_each_event_parked_record_names_its_own_store(
    tmp_path: Path,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> None:
    """``sql_parking`` in the PostgreSQL ``[store]`` and ``doc_parking`` in MongoDB ``docs``:
    each parked event's record says ``read store default at ...`` or ``read store docs at
    ...``; the documents' ``batch writes refused`` too."""
    store, default_at = _with_secret(pg_database())
    docs = mongo_database()
    docs_at = docs.partition("?")[0]
    logs = _records(
        tmp_path,
        {
            "projections": [f"{FIXTURES}:SqlParking", f"{FIXTURES}:DocParking"],
            "store": {"url": store},
            "stores": {"docs": {"url": docs}},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )

    (sql,) = _parked(logs, "sql_parking")
    assert (sql["position"], sql["store"]) == (2, f"read store default at {default_at}"), sql
    assert "the sql handler refuses it" in sql["error"], sql
    documents = _parked(logs, "doc_parking")
    assert [r["position"] for r in documents] == [2, 4], documents
    for record in documents:
        assert record["store"] == f"read store docs at {docs_at}", record
    assert "the document handler refuses it" in documents[0]["error"], documents[0]
    assert "email_unique" in documents[1]["error"], documents[1]
    (refused,) = [r for r in logs if r["event"].startswith("batch writes refused")]
    assert refused["projection"] == "doc_parking", refused
    assert refused["error"].startswith(f"read store docs at {docs_at}: "), refused
    assert SECRET not in repr(logs)


def test_with_one_store_the_event_parked_record_has_no_store(
    tmp_path: Path, pg_database: Callable[[], str], sqlite_database: Callable[[], str]
) -> None:
    store, _ = _with_secret(pg_database())
    logs = _records(
        tmp_path,
        {
            "projections": [f"{FIXTURES}:SqlParking"],
            "store": {"url": store},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )

    (sql,) = _parked(logs, "sql_parking")
    assert sql["position"] == 2, sql
    assert "store" not in sql, sql
    assert "read store" not in repr(logs)
    assert SECRET not in repr(logs)


def test_an_event_parked_as_stuck_names_its_store(
    tmp_path: Path,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
    sqlite_database: Callable[[], str],
) -> None:
    """An event whose handler got stuck ``max_attempts`` times, parked when a worker starts:
    its ``event parked`` record names its store as a failed handler's does."""
    store, default_at = _with_secret(pg_database())
    docs = mongo_database()
    logs = _records(
        tmp_path,
        {
            "projections": [f"{FIXTURES}:SqlParking", f"{FIXTURES}:DocParking"],
            "store": {"url": store},
            "stores": {"docs": {"url": docs}},
            "sources": {"bank": {"url": sqlite_database()}},
        },
        stuck=True,
    )

    (sql,) = _parked(logs, "sql_parking")
    assert sql["store"] == f"read store default at {default_at}", sql
    (document,) = _parked(logs, "doc_parking")
    assert document["store"] == f"read store docs at {docs.partition('?')[0]}", document
    assert "handler stuck 1 times" in document["error"], document
    assert SECRET not in repr(logs)
