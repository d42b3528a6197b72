"""Operations against a running pipeline: status, health and metrics report a lag made on
purpose; SIGTERM finishes the batch in hand, loses nothing and releases the relay's lock."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from config import load_settings
from outbox.db import create_engine
from tests.broker_helpers import Processes, wait_until
from tests.cli_helpers import run_cli, write_config
from tests.metrics_helpers import free_port, scrape
from tests.ops_fixtures import slow_totals
from tests.outbox_helpers import init_outbox, insert_events

ROOT = Path(__file__).resolve().parents[1]


def _deposits(accounts: int, per_account: int) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        ("account", f"acct-{a}", "Deposited", {"amount": 1, "seq": seq})
        for seq in range(1, per_account + 1)
        for a in range(accounts)
    ]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``readmodel ARGS`` in a subprocess (metrics recording must not leak into pytest)."""
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _pipeline_config(
    tmp_path: Path, source_url: str, store_url: str, broker: dict[str, Any], **other: Any
) -> Path:
    data = {
        "projections": ["tests.projection_fixtures:Totals"],
        "store": {"url": store_url},
        "broker": broker,
        "engine": {"batch_size": 50, "sweep_every": "1s", "max_attempts": 1},
        "metrics": {"dir": str(tmp_path / "metrics")},
        "shutdown": {"grace": "5s"},
        "sources": {"bank": {"url": source_url}},
        **other,
    }
    config = write_config(tmp_path / "readmodel.toml", data)
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    return config


def test_status_health_and_metrics_report_the_lag_made_on_purpose(
    pg_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    source_url, store_url = pg_database(), pg_database()
    config = _pipeline_config(tmp_path, source_url, store_url, broker_for("redis"))
    source = create_engine(source_url)
    try:
        insert_events(source, _deposits(accounts=6, per_account=5))  # 30 events
    finally:
        source.dispose()
    relayed = _cli("relay", "--once", "--config", str(config))
    assert relayed.returncode == 0, relayed.stderr
    assert "bank: relayed 30" in relayed.stdout

    # No worker runs: every event waits in the log, messages wait in Redis.
    status = run_cli(["status", "--config", str(config), "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert report["version"] == 2
    assert [(s["source"], s["undelivered"], s["log_head"]) for s in report["sources"]] == [
        ("bank", 0, 30)
    ]
    (totals,) = report["projections"]
    assert (totals["projection"], totals["lag_events"], totals["parked"]) == ("totals", 30, 0)
    assert totals["lag_seconds"] is not None and totals["lag_seconds"] >= 0
    assert {(lane["partition"], lane["checkpoint"], lane["head"]) for lane in totals["lanes"]} == {
        (p, 0, 30) for p in range(4)
    }
    assert report["broker"]["broker"] == "redis" and report["broker"]["error"] is None
    assert report["broker"]["ready"] >= 1  # the relay published the new ranges
    table = run_cli(["status", "--config", str(config)])
    assert table.exit_code == 0, table.output
    assert re.search(r"totals\s*│\s*bank\s*│\s*0\s*│\s*30\s*│\s*30\b", table.stdout), table.stdout

    lagging = run_cli(["health", "--config", str(config), "--max-lag-events", "10"])
    assert lagging.exit_code == 1, lagging.output
    assert "projection totals (source bank): lag 30 events (bound 10)" in lagging.stderr
    assert run_cli(["health", "--config", str(config), "--max-lag-events", "30"]).exit_code == 0

    port = free_port()
    processes.start("metrics", "metrics", "--config", str(config), "--port", str(port))
    assert wait_until(lambda: bool(scrape(port)), 30), processes.log_tail()
    samples = scrape(port)
    assert samples['readmodel_projection_lag_events{projection="totals",source="bank"}'] == 30
    assert samples['readmodel_projection_lag_seconds{projection="totals",source="bank"}'] >= 0
    assert samples['readmodel_events_relayed_total{source="bank"}'] == 30
    assert samples['readmodel_log_head{source="bank"}'] == 30
    assert samples['readmodel_outbox_undelivered{source="bank"}'] == 0
    assert samples['readmodel_store_up{store="default"}'] == 1
    queue = report["broker"]["queue"]
    assert samples[f'readmodel_broker_queue_messages{{queue="{queue}",state="ready"}}'] >= 1

    # A worker catches up; events of acct-1 fail and are parked (max_attempts = 1).
    worker = processes.start(
        "worker",
        "work",
        "--config",
        str(config),
        "-t",
        "2",
        env={"READMODEL_TEST_FAIL_ON": "acct-1"},
    )

    def caught_up() -> bool:
        return _cli("health", "--config", str(config), "--max-lag-events", "0").returncode == 0

    assert wait_until(caught_up, 60, interval=0.5), processes.log_tail()
    after = json.loads(run_cli(["status", "--config", str(config), "--json"]).stdout)
    (totals,) = after["projections"]
    assert (totals["lag_events"], totals["lag_seconds"], totals["parked"]) == (0, None, 5)
    assert "refusing acct-1" in totals["last_error"]
    assert (totals["parked_by_source"], totals["last_error_source"]) == ({"bank": 5}, "bank")
    samples = scrape(port)
    assert samples['readmodel_projection_lag_events{projection="totals",source="bank"}'] == 0
    assert samples['readmodel_events_applied_total{projection="totals",source="bank"}'] == 25
    assert samples['readmodel_events_held_total{projection="totals",source="bank"}'] == 5
    assert samples['readmodel_projection_parked_events{projection="totals"}'] == 5
    assert samples['readmodel_apply_seconds_count{projection="totals"}'] >= 1
    assert any(k.startswith("dramatiq_messages_total{") and v >= 1 for k, v in samples.items())
    codes = processes.stop_all()
    assert worker in codes and set(codes.values()) == {0}, processes.log_tail()


def test_health_exits_3_when_the_read_store_is_unreachable(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "down.toml", {"store": {"url": "postgresql://postgres@127.0.0.1:1/nothing"}}
    )
    result = run_cli(["health", "--config", str(config)])
    assert result.exit_code == 3, result.output
    assert "read store" in result.stderr


def test_status_watch_shows_why_a_source_is_unreachable(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """``--watch`` has only the screen: the error goes under the tables, refreshed."""
    config = write_config(
        tmp_path / "watch.toml",
        {
            "store": {"url": sqlite_database()},
            "sources": {"shop": {"url": "postgresql://postgres@127.0.0.1:1/nothing"}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    command = [sys.executable, "-m", "workers.cli", "status", "--watch", "--every", "0.2"]
    chunks: list[str] = []
    with subprocess.Popen(
        [*command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # rich draws refreshed frames only on a terminal (else just the last one, at exit)
        env={
            **os.environ,
            "TTY_COMPATIBLE": "1",
            "TERM": "xterm",
            "NO_COLOR": "1",
            "COLUMNS": "120",
        },
    ) as watch:
        assert watch.stdout is not None
        reader = threading.Thread(target=lambda: chunks.extend(iter(watch.stdout.readline, "")))
        reader.start()
        try:
            deadline = time.monotonic() + 30
            while "Connection refused" not in "".join(chunks) and time.monotonic() < deadline:
                time.sleep(0.1)
            watch.send_signal(signal.SIGINT)
            watch.wait(timeout=20)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
            reader.join()
    seen = "".join(chunks)
    assert "│ shop" in seen and "shop: source 'shop'" in seen, seen
    assert "Connection refused" in seen
    assert watch.returncode == 0, seen


def test_health_answers_within_its_timeout_when_the_store_never_answers(
    tmp_path: Path,
) -> None:
    """A store that accepts connections and says nothing (a hung server) costs the probe
    ``--timeout``, not a TCP timeout."""
    with _silent_server() as port:
        config = write_config(
            tmp_path / "hung.toml", {"store": {"url": f"postgresql://postgres@127.0.0.1:{port}/x"}}
        )
        result, elapsed = _timed_cli("health", "--timeout", "1", "--config", str(config))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "no answer within 1s" in result.stderr
    assert elapsed < 1 + 10  # the interpreter's start included


@contextlib.contextmanager
def _silent_server() -> Iterator[int]:
    """A port whose connections complete in the kernel and are never answered (a hung
    server)."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        yield silent.getsockname()[1]


def _timed_cli(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = _cli(*args)
    return result, time.monotonic() - started


def _slow_pipeline(
    pg_database: Callable[[], str],
    broker: dict[str, Any],
    tmp_path: Path,
    events: list[tuple[str, str, str, dict[str, Any]]],
    **other: Any,
) -> tuple[Path, str]:
    """A pipeline of the ``Slow`` projection (batches of 10) with ``events`` in its log;
    returns the config and the store's URL."""
    source_url, store_url = pg_database(), pg_database()
    config = _pipeline_config(
        tmp_path,
        source_url,
        store_url,
        broker,
        projections=["tests.ops_fixtures:Slow"],
        engine={"batch_size": 10, "sweep_every": "1s"},
        **other,
    )
    source = create_engine(source_url)
    try:
        insert_events(source, events)
    finally:
        source.dispose()
    assert _cli("relay", "--once", "--config", str(config)).returncode == 0
    return config, store_url


def test_sigterm_during_a_batch_finishes_it_and_loses_nothing(
    pg_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    events = _deposits(accounts=3, per_account=20)  # 60 events: 6 batches of 10
    config, store_url = _slow_pipeline(pg_database, broker_for("redis"), tmp_path, events)
    trace = tmp_path / "trace.txt"
    env = {"READMODEL_TEST_TRACE": str(trace), "READMODEL_TEST_SLEEP": "0.1"}
    key = processes.start("worker", "work", "--config", str(config), "-t", "2", env=env)
    worker = processes.running[key]
    assert wait_until(lambda: trace.exists() and trace.read_text().count("\n") >= 3, 60), (
        processes.log_tail()
    )

    os.killpg(worker.pid, signal.SIGTERM)
    started = [int(line) for line in trace.read_text().split()]  # read right after the signal
    assert worker.wait(timeout=5 + 10) == 0, processes.log_tail()
    processes.running.pop(key)

    store = create_engine(store_url)
    try:

        def applied() -> tuple[int, int, int]:
            with store.connect() as conn:
                checkpoint = conn.execute(
                    sa.text("SELECT position FROM rm_checkpoints WHERE projection = 'slow'")
                ).scalar_one()
                events_sum, violations = conn.execute(
                    sa.select(
                        sa.func.coalesce(sa.func.sum(slow_totals.c.events), 0),
                        sa.func.coalesce(sa.func.sum(slow_totals.c.violations), 0),
                    )
                ).one()
            return int(checkpoint), int(events_sum), int(violations)

        checkpoint, applied_events, violations = applied()
        # The batch in hand was committed, not rolled back, and nothing after it started.
        assert checkpoint >= max(started), (checkpoint, started)
        assert checkpoint < len(events)
        assert (applied_events, violations) == (checkpoint, 0)

        processes.start("worker", "work", "--config", str(config), "-t", "2")
        assert wait_until(lambda: applied()[0] == len(events), 60), processes.log_tail()
        assert applied() == (len(events), len(events), 0)
        with store.connect() as conn:
            rows = conn.execute(sa.select(slow_totals.c.account, slow_totals.c.events))
            counts = {account: n for account, n in rows}
        assert counts == {f"acct-{a}": 20 for a in range(3)}
        codes = processes.stop_all()
        assert set(codes.values()) == {0}, processes.log_tail()
    finally:
        store.dispose()


def test_a_batch_longer_than_the_grace_is_abandoned_and_done_again(
    pg_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """``shutdown.grace`` bounds the exit: a batch still running then is rolled back (exit 1)
    and applied again, once, by the next worker; a second signal exits at once (128 + 15)."""
    events = _deposits(accounts=2, per_account=10)
    config, store_url = _slow_pipeline(
        pg_database, broker_for("redis"), tmp_path, events, shutdown={"grace": "1s"}
    )
    store = create_engine(store_url)

    def checkpoint() -> int:
        with store.connect() as conn:
            value = conn.execute(
                sa.text("SELECT max(position) FROM rm_checkpoints WHERE projection = 'slow'")
            ).scalar()
        return int(value or 0)

    def start(sleep: str, trace: Path) -> tuple[str, subprocess.Popen[bytes]]:
        env = {"READMODEL_TEST_TRACE": str(trace), "READMODEL_TEST_SLEEP": sleep}
        key = processes.start("worker", "work", "--config", str(config), "-t", "1", env=env)
        assert wait_until(lambda: trace.exists() and trace.read_text().strip() != "", 60), (
            processes.log_tail()
        )
        return key, processes.running[key]

    try:
        key, worker = start("30", tmp_path / "trace-1.txt")  # one event takes 30 s
        signalled = time.monotonic()
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=15) == 1, processes.log_tail()
        assert time.monotonic() - signalled < 1 + 5
        processes.running.pop(key)
        assert "exiting" in (tmp_path / f"{key}.log").read_text()
        assert checkpoint() == 0  # the batch in hand was rolled back

        key, worker = start("30", tmp_path / "trace-2.txt")
        os.killpg(worker.pid, signal.SIGTERM)
        time.sleep(0.2)
        os.killpg(worker.pid, signal.SIGTERM)
        assert worker.wait(timeout=5) == 128 + signal.SIGTERM, processes.log_tail()
        processes.running.pop(key)
        assert "SIGTERM again: exiting now" in (tmp_path / f"{key}.log").read_text()
        assert checkpoint() == 0

        start("0", tmp_path / "trace-3.txt")
        assert wait_until(lambda: checkpoint() == len(events), 60), processes.log_tail()
        with store.connect() as conn:
            rows = conn.execute(sa.select(slow_totals)).all()
        assert {(r.account, r.events, r.violations) for r in rows} == {
            ("acct-0", 10, 0),
            ("acct-1", 10, 0),
        }
        assert set(processes.stop_all().values()) == {0}, processes.log_tail()
    finally:
        store.dispose()


def test_metrics_drop_the_messages_in_progress_of_a_killed_worker(
    pg_database: Callable[[], str],
    broker_for: Callable[[str], dict[str, Any]],
    processes: Processes,
    tmp_path: Path,
) -> None:
    """A worker SIGKILLed mid-message leaves its in-progress gauge in ``metrics.dir``
    (prometheus_client drops it only at a normal exit); the next scrape must not count it."""
    events = _deposits(accounts=1, per_account=10)
    config, _ = _slow_pipeline(pg_database, broker_for("redis"), tmp_path, events)
    trace = tmp_path / "trace.txt"
    env = {"READMODEL_TEST_TRACE": str(trace), "READMODEL_TEST_SLEEP": "30"}
    port = free_port()
    processes.start("metrics", "metrics", "--config", str(config), "--port", str(port))
    key = processes.start("worker", "work", "--config", str(config), "-t", "1", env=env)

    def in_progress() -> float:
        samples = scrape(port)
        return sum(v for k, v in samples.items() if k.startswith("dramatiq_messages_inprogress"))

    assert wait_until(lambda: trace.exists() and in_progress() == 1, 60), processes.log_tail()
    processes.kill(key)  # SIGKILL, mid-handler

    assert in_progress() == 0
    assert scrape(port)['readmodel_events_relayed_total{source="bank"}'] == 10  # kept
    assert set(processes.stop_all().values()) == {0}, processes.log_tail()


def test_relay_sigterm_hands_the_source_to_the_standby(
    pg_database: Callable[[], str], processes: Processes, tmp_path: Path
) -> None:
    source_url, store_url = pg_database(), pg_database()
    config = write_config(
        tmp_path / "relay.toml",
        {
            "store": {"url": store_url},
            "relay": {"standby_retry": "200ms"},
            "shutdown": {"grace": "5s"},
            "sources": {"bank": {"url": source_url}},
        },
    )
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
    leader = processes.start("relay", "relay", "--config", str(config))
    logs = tmp_path / f"{leader}.log"
    assert wait_until(lambda: "leading source" in logs.read_text(), 30), processes.log_tail()
    standby = processes.start("relay", "relay", "--config", str(config))
    source, store = create_engine(source_url), create_engine(store_url)
    try:
        insert_events(source, _deposits(accounts=2, per_account=10))

        def head() -> int:
            with store.connect() as conn:
                value = conn.execute(
                    sa.text("SELECT head FROM rm_log_heads WHERE source = 'bank'")
                ).scalar()
            return int(value or 0)

        assert wait_until(lambda: head() == 20, 30), processes.log_tail()
        process = processes.running.pop(leader)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=5 + 10) == 0, processes.log_tail()
        assert "released source" in logs.read_text()

        insert_events(source, _deposits(accounts=2, per_account=10)[:10])
        assert wait_until(lambda: head() == 30, 30), processes.log_tail()
        assert "leading source" in (tmp_path / f"{standby}.log").read_text()
        with store.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM rm_event_log")).scalar() == 30
    finally:
        source.dispose()
        store.dispose()
    assert processes.stop_all() == {standby: 0}, processes.log_tail()


def _readme_block(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(marker) :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_honcho_runs_the_procfile_as_the_readme_shows(
    broker_for: Callable[[str], dict[str, Any]], tmp_path: Path
) -> None:
    commands = _readme_block("### Running it all with honcho")
    assert commands[0] == ". .venv/bin/activate" and commands[-1] == "honcho start"
    bin_dir = Path(sys.executable).parent
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",  # what activate does
        "READMODEL_CONFIG": str(ROOT / "config/examples/local.toml"),
        "READMODEL_BROKER__QUEUE": (queue := broker_for("redis")["queue"]),
        "READMODEL_BROKER__NAMESPACE": queue,
        "READMODEL_METRICS__PORT": str(port),
    }
    for command in commands[1:-1]:
        args = [str(ROOT / a) if a.startswith("config/") else a for a in command.split()]
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    log = open(tmp_path / "honcho.log", "wb")  # noqa: SIM115 - closed below
    honcho = subprocess.Popen(
        ["honcho", "start", "-f", str(ROOT / "Procfile"), "-d", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    try:
        applied = 'readmodel_events_applied_total{projection="customer_orders",source="shop"}'
        lag = 'readmodel_projection_lag_events{projection="customer_orders",source="shop"}'

        def caught_up() -> bool:
            samples = scrape(port)
            return samples.get(applied) == 200 and samples.get(lag) == 0

        assert wait_until(caught_up, 90, interval=0.5), (tmp_path / "honcho.log").read_text()
        honcho.send_signal(signal.SIGTERM)
        honcho.wait(timeout=30)
    finally:
        if honcho.poll() is None:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    output = (tmp_path / "honcho.log").read_text()
    for name in ("relay", "worker", "sweeper", "metrics"):
        assert f"{name}.1 stopped (rc=0)" in output, output


def test_the_status_table_gives_parked_events_and_the_last_error_by_source() -> None:
    """Against the source they belong to, not against each of the projection's sources."""
    from rich.console import Console

    from projections.status import LaneStatus, ProjectionStatus
    from workers.cli_ops import status_tables
    from workers.queues import QueueDepth
    from workers.status_report import Report

    lanes = [
        LaneStatus("auth", 0, 40, 40, 0, None),
        LaneStatus("orders", 0, 90, 100, 10, 2.0),
    ]
    report = Report(
        sources=[],
        projections=[
            ProjectionStatus(
                "spend",
                "default",
                lag_events=10,
                lag_seconds=2.0,
                parked=2,
                last_error="boom in orders",
                last_error_at=None,
                lanes=lanes,
                parked_by_source={"orders": 2},
                last_error_source="orders",
            )
        ],
        broker=QueueDepth("memory", "default", None, None, None),
    )
    console = Console(width=160, record=True)
    console.print(status_tables(report))
    rows = [line for line in console.export_text().splitlines() if "spend" in line]

    assert len(rows) == 2, rows
    auth, orders = rows
    assert re.search(r"auth\s*│\s*40\s*│\s*40\s*│\s*0\s*│\s*-\s*│\s*0\s*│\s*│", auth), auth
    assert re.search(r"orders\s*│\s*90\s*│\s*100\s*│\s*10\s*│\s*2\.0s\s*│\s*2\s*│\s*boom", orders)


def test_status_reports_a_source_that_never_answers_within_its_timeout(
    sqlite_database: Callable[[], str], tmp_path: Path
) -> None:
    """A source that accepts connections and says nothing is reported, not waited on forever."""
    with _silent_server() as port:
        config = write_config(
            tmp_path / "hung.toml",
            {
                "store": {"url": sqlite_database()},
                "sources": {"shop": {"url": f"postgresql://postgres@127.0.0.1:{port}/x"}},
            },
        )
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        result, elapsed = _timed_cli("status", "--timeout", "1", "--config", str(config))
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert "shop: no answer within 1s" in result.stderr
    assert elapsed < 1 + 10  # the interpreter's start included
