"""Logging: a logged exception never shows a password, whatever its frames held."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from workers.logs import configure_logging

SECRET = "Hunter2Secret"


def _open(dsn: str) -> None:
    raise ModuleNotFoundError("No module named 'psycopg2'")


def _fail_with_a_dsn_in_a_frame() -> None:
    dsn = f"postgresql+psycopg2://bob:{SECRET}@127.0.0.1:5432/pos_bob"
    settings = {"url": dsn, "tenant": "bob"}
    _open(settings["url"])


@pytest.mark.parametrize("json_output", [False, True], ids=["console", "json"])
def test_a_logged_exception_does_not_print_the_dsn_its_frames_held(
    capsys: pytest.CaptureFixture[str], json_output: bool
) -> None:
    configure_logging("info", json_output=json_output)
    try:
        try:
            _fail_with_a_dsn_in_a_frame()
        except ModuleNotFoundError:
            structlog.get_logger("test").exception("refresh failed", registry="pos")
        try:
            raise ValueError(f"cannot open postgresql://bob:{SECRET}@db/pos")
        except ValueError:
            structlog.get_logger("test").exception("open failed")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "refresh failed" in err and "ModuleNotFoundError" in err and "open failed" in err
    assert "_fail_with_a_dsn_in_a_frame" in err  # the traceback is there, its locals are not
    assert SECRET not in err


@pytest.fixture
def restored_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_standard_library_records_are_json_lines_and_masked_in_production(
    capsys: pytest.CaptureFixture[str], restored_root_logger: None
) -> None:
    """Dramatiq, pika and the drivers log through the standard library: in JSON mode their
    records must be JSON lines too (a log shipper reads every line), masked like ours."""
    configure_logging("info", json_output=True)
    logging.getLogger("dramatiq.worker.ConsumerThread(q)").critical(
        "Consumer encountered a connection error: redis://bob:%s@cache:6379/0", SECRET
    )
    try:
        raise ConnectionError(f"cannot reach amqp://guest:{SECRET}@mq:5672/")
    except ConnectionError:
        logging.getLogger("pymongo.pool").error("connection failed", exc_info=True)
    logging.getLogger("sqlalchemy.engine").info("below the threshold: not shown")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [(r["level"], r["logger"]) for r in lines] == [
        ("critical", "dramatiq.worker.ConsumerThread(q)"),
        ("error", "pymongo.pool"),
    ]
    assert lines[0]["event"].startswith("Consumer encountered a connection error: redis://")
    assert "ConnectionError" in lines[1]["exception"] and "timestamp" in lines[1]
    assert SECRET not in json.dumps(lines)


def test_standard_library_records_read_like_ours_on_the_console(
    capsys: pytest.CaptureFixture[str], restored_root_logger: None
) -> None:
    configure_logging("warning", json_output=False)
    logging.getLogger("dramatiq.worker").warning("worker is slow: postgresql://a:%s@h/db", SECRET)
    structlog.get_logger("readmodel").warning("ours")
    err = capsys.readouterr().err
    theirs, ours = err.splitlines()
    assert "[warning" in theirs and "worker is slow" in theirs and "dramatiq.worker" in theirs
    assert "[warning" in ours and "ours" in ours
    assert SECRET not in err and not theirs.startswith("WARNING:")


def test_a_dsns_location_has_no_user_password_or_query() -> None:
    from outbox.db import redact_dsn

    cases = {
        "postgresql://pos:p@ss/w@rd@db-1:5433/pos?sslmode=require&password=x": (
            "postgresql://db-1:5433/pos"
        ),
        "mysql+pymysql://root@127.0.0.1:3306/auth?charset=utf8mb4": (
            "mysql+pymysql://127.0.0.1:3306/auth"
        ),
        "mongodb://u:pw@h1:27017,h2:27017/chat?replicaSet=rs0": "mongodb://h1:27017,h2:27017/chat",
        "sqlite:////var/lib/readmodel/registry.db": "sqlite:////var/lib/readmodel/registry.db",
        "postgresql://db-1/pos": "postgresql://db-1/pos",
        "postgresql://u:pw@127.0.0.1:5432/?dbname=shop&user=u&options=-csearch_path%3Da": (
            "postgresql://127.0.0.1:5432/?dbname=shop"
        ),
        "postgresql://u@/pos?host=/var/run/postgresql&port=5433&sslpassword=k": (
            "postgresql:///pos?host=/var/run/postgresql&port=5433"
        ),
        "mysql+pymysql://u:pw@/?database=auth&unix_socket=/run/mysqld.sock&passwd=x": (
            "mysql+pymysql:///?database=auth&unix_socket=/run/mysqld.sock"
        ),
        "postgresql:///?dbname=host%3Dh%20user%3Du%20password%3Dp": "postgresql:///",
    }
    assert {dsn: redact_dsn(dsn, location=True) for dsn in cases} == cases


def test_the_read_store_migrated_line_logs_where_the_store_is_only(
    pg_database: Callable[[], str],
) -> None:
    """``read store migrated`` names the store by its location: no user, no DSN query."""
    import sqlalchemy as sa
    from structlog.testing import capture_logs

    from outbox.db import create_engine
    from outbox.migrate import upgrade

    url = pg_database()
    where = sa.make_url(url)
    engine = create_engine(f"{url}?application_name=rm_migrate_q")
    try:
        with capture_logs() as logs:
            upgrade(engine)
    finally:
        engine.dispose()
    (migrated,) = [e for e in logs if e["event"] == "read store migrated"]
    assert migrated["url"] == f"postgresql://{where.host}:{where.port}/{where.database}"
    assert "@" not in migrated["url"]  # no user
    assert "rm_migrate_q" not in repr(migrated)
