"""The event log's store cannot be reached (refusing connections) or hangs (accepts them and
never answers): ``health`` still checks what it can, the sources' backlog against the bounds,
the sources' and the broker's reachability, names every problem it finds (the store by its
location only: no user, no password) and exits 3, the code of an unreachable read store. A
hung store costs ``health`` and ``status`` one ``--timeout``, not one for the schema check
(or for the question which sources the log knows) and one more for the report.

Before, ``health`` exited 3 on the schema check naming the store alone, and a hung store
cost ``status`` its ``--timeout`` twice."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config import load_settings
from outbox.db import create_engine
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events

SECRET = "S3cret-Log-4711"
USER = "logreader_u"
TIMEOUT = 1.5


@pytest.fixture
def pipeline(
    tmp_path: Path,
    sqlite_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
) -> Callable[..., Path]:
    """``pipeline(log_port, **other)``: ``totals`` in the log's store at 127.0.0.1:log_port
    (a user and password in its DSN); the source ``bank`` holds 3 undelivered rows; a Redis
    broker; ``other`` settings added (another source, another broker)."""

    def make(log_port: int, **other: Any) -> Path:
        settings: dict[str, Any] = {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": f"postgresql://{USER}:{SECRET}@127.0.0.1:{log_port}/readmodel"},
            "broker": broker_for("redis"),
            "sources": {"bank": {"url": sqlite_database()}},
        }
        for key, value in other.items():
            settings[key] = {**settings[key], **value} if key == "sources" else value
        path = write_config(tmp_path / "readmodel.toml", settings)
        bank_settings = load_settings(path).sources["bank"]
        init_outbox(bank_settings, "bank")
        bank = create_engine(bank_settings.url)
        try:
            insert_events(
                bank,
                [("account", f"acct-{i}", "Deposited", {"amount": 1, "seq": 1}) for i in range(3)],
            )
        finally:
            bank.dispose()
        return path

    return make


def _health(config: Path, *args: str, timeout: float = TIMEOUT) -> tuple[Any, float]:
    started = time.monotonic()
    result = run_cli(["health", "--timeout", str(timeout), "--config", str(config), *args])
    return result, time.monotonic() - started


def _unhealthy(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("unhealthy: ")]


def _no_secrets(result: Any) -> None:
    text = result.stdout + result.stderr
    assert SECRET not in text and USER not in text, text
    assert "Traceback" not in text, text


def test_health_still_checks_the_sources_bounds_when_the_log_store_refuses(
    pipeline: Callable[..., Path],
) -> None:
    config = pipeline(1)  # nothing listens on port 1

    result, _ = _health(config, "--max-lag-events", "1")

    assert result.exit_code == 3, result.output
    lines = _unhealthy(result.stderr)
    assert "unhealthy: source bank: 3 undelivered outbox rows (bound 1)" in lines, result.stderr
    (store,) = [line for line in lines if line.startswith("unhealthy: store default: ")]
    assert "unreachable" in store and "postgresql://127.0.0.1:1/readmodel" in store, store
    assert "Connection refused" in store
    _no_secrets(result)


def test_health_json_names_every_problem_when_the_log_store_refuses(
    pipeline: Callable[..., Path], silent_port: int
) -> None:
    """A source and the broker down as well: each is named beside the store."""
    config = pipeline(
        1,
        sources={"shop": {"url": "postgresql://postgres@127.0.0.1:1/shop"}},
        broker={"url": "redis://127.0.0.1:1/0"},
    )

    result, _ = _health(config, "--json", "--max-lag-events", "1")

    assert result.exit_code == 3, result.output
    document = json.loads(result.stdout)
    assert document["healthy"] is False
    subjects = [p["subject"] for p in document["problems"]]
    assert sorted(subjects) == ["broker", "source bank", "source shop", "store default"], subjects
    messages = {p["subject"]: p["message"] for p in document["problems"]}
    assert messages["source bank"] == "3 undelivered outbox rows (bound 1)"
    assert messages["source shop"].startswith("unreachable: ")
    assert "postgresql://127.0.0.1:1/readmodel" in messages["store default"]
    sources = {s["source"]: s for s in document["status"]["sources"]}
    assert (sources["bank"]["undelivered"], sources["bank"]["log_head"]) == (3, None)
    (store,) = document["status"]["stores"]
    assert (store["store"], store["url"]) == ("default", "postgresql://127.0.0.1:1/readmodel")
    _no_secrets(result)


def test_health_is_healthy_but_for_the_refusing_log_store(pipeline: Callable[..., Path]) -> None:
    """Sources and broker answer within bounds: the store is the one problem named."""
    config = pipeline(1)

    result, _ = _health(config)

    assert result.exit_code == 3, result.output
    lines = _unhealthy(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("unhealthy: store default: "), result.stderr
    assert "healthy:" not in result.stdout
    _no_secrets(result)


def test_a_hung_log_store_costs_health_one_timeout_and_the_rest_is_checked(
    pipeline: Callable[..., Path], silent_port: int
) -> None:
    config = pipeline(silent_port)

    result, elapsed = _health(config, "--max-lag-events", "1")

    assert result.exit_code == 3, result.output
    assert elapsed < 1.6 * TIMEOUT, elapsed
    lines = _unhealthy(result.stderr)
    assert "unhealthy: source bank: 3 undelivered outbox rows (bound 1)" in lines, result.stderr
    (store,) = [line for line in lines if line.startswith("unhealthy: store default: ")]
    assert f"postgresql://127.0.0.1:{silent_port}/readmodel" in store, store
    assert f"no answer within {TIMEOUT:g}s" in store, store
    _no_secrets(result)


def test_a_hung_log_store_and_a_hung_source_cost_health_one_timeout(
    pipeline: Callable[..., Path], silent_port: int
) -> None:
    """The probe answers within about its --timeout whatever hangs, as README promises."""
    config = pipeline(
        silent_port, sources={"shop": {"url": f"postgresql://postgres@127.0.0.1:{silent_port}/s"}}
    )

    result, elapsed = _health(config)

    assert result.exit_code == 3, result.output
    assert elapsed < 1.6 * TIMEOUT, elapsed
    subjects = sorted(line.split(":")[1].strip() for line in _unhealthy(result.stderr))
    assert subjects == ["source shop", "store default"], result.stderr
    assert f"source shop: unreachable: no answer within {TIMEOUT:g}s" in result.stderr
    _no_secrets(result)


def test_a_hung_log_store_costs_status_one_timeout(
    pipeline: Callable[..., Path], silent_port: int
) -> None:
    config = pipeline(silent_port)

    started = time.monotonic()
    result = run_cli(["status", "--json", "--timeout", str(TIMEOUT), "--config", str(config)])
    elapsed = time.monotonic() - started

    assert result.exit_code == 3, result.output
    assert elapsed < 1.6 * TIMEOUT, elapsed
    document = json.loads(result.stdout)
    (bank,) = document["sources"]
    assert (bank["undelivered"], bank["log_head"], bank["error"]) == (3, None, None)
    assert document["broker"]["error"] is None
    (store,) = document["stores"]
    assert f"no answer within {TIMEOUT:g}s" in store["error"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"127.0.0.1:{silent_port}/readmodel" in errors[0], result.stderr
    _no_secrets(result)


@pytest.mark.parametrize("command", ["health", "status"])
def test_a_hung_log_store_costs_one_timeout_with_a_source_only_the_log_may_know(
    tmp_path: Path, sqlite_database: Callable[[], str], silent_port: int, command: str
) -> None:
    """``totals`` reads ``bank``, which this config does not list (the log may have its
    events): the log is asked which sources it knows while the report is read, both within
    the one ``--timeout``, and refuses nothing; the store is named down, the sources
    checked. Before, the question took the whole ``--timeout``, then the report another."""
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": f"postgresql://{USER}:{SECRET}@127.0.0.1:{silent_port}/readmodel"},
            "sources": {"shop": {"url": sqlite_database()}},
        },
    )
    init_outbox(load_settings(config).sources["shop"], "shop")
    timeout = 4.0  # long enough for twice it to stand out of the bound below

    started = time.monotonic()
    result = run_cli([command, "--timeout", str(timeout), "--config", str(config)])
    elapsed = time.monotonic() - started

    assert result.exit_code == 3, result.output
    assert elapsed < 1.25 * timeout + 1.5, elapsed
    if command == "health":
        lines = _unhealthy(result.stderr)
        assert len(lines) == 1 and lines[0].startswith("unhealthy: store default: "), lines
        assert f"no answer within {timeout:g}s" in lines[0]
    else:
        assert "shop" in result.stdout and "invalid configuration" not in result.output
        assert f"no answer within {timeout:g}s" in result.stderr, result.stderr
    _no_secrets(result)


def test_a_store_not_read_for_the_log_is_not_called_unreachable() -> None:
    """With the log's store down, another store's projections are not read (their lag needs
    the log): ``health`` says so, without calling that store unreachable."""
    from workers.health import problems
    from workers.queues import QueueDepth
    from workers.status_report import Report, StoreStatus

    log_error = "read store at postgresql://db:5432/rm: no answer within 1.5s"
    docs_error = (
        "read store docs at mongodb://docs:27017/rm_docs: not read, its projections' lag "
        "needs the event log"
    )
    report = Report(
        [],
        [],
        QueueDepth("memory", "default", None, None, None),
        stores=[
            StoreStatus("default", "postgresql://db:5432/rm", ["totals"], log_error),
            StoreStatus("docs", "mongodb://docs:27017/rm_docs", ["inbox"], docs_error),
        ],
    )

    found = problems(report, max_lag_events=None, max_lag_seconds=None)

    assert [(p.subject, p.message) for p in found] == [
        ("store default", f"unreachable: {log_error}"),
        ("store docs", docs_error),
    ]
