"""README examples run as written."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from outbox.db import create_engine

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands(marker: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(marker) :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    return [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]


def test_quickstart_projection_commands_run_as_written(tmp_path: Path) -> None:
    commands = _readme_commands("repository root after `make run`")
    assert len(commands) == 4
    bin_dir = Path(sys.executable).parent
    for command in commands:
        args = command.split()
        args[0] = str(bin_dir / Path(args[0]).name)
        args = [str(ROOT / a) if a.startswith("config/") else a for a in args]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert re.search(r"caught up: relayed 200, applied 200", done.stdout)
    with closing(sqlite3.connect(tmp_path / "readstore.db")) as db:
        row = db.execute("SELECT sum(orders), count(*) FROM customer_orders").fetchone()
    assert row == (200, 10)


def test_readme_starts_with_the_two_setup_commands() -> None:
    text = (ROOT / "README.md").read_text()
    first_block = text[text.index("```\n") + 4 :].split("```")[0]
    assert first_block.split() == ["make", "run", "make", "test"]


def test_database_per_tenant_commands_run_as_written(tmp_path: Path) -> None:
    commands = _readme_commands("Runnable, without servers (SQLite files for the shops")
    assert len(commands) == 4
    bin_dir = Path(sys.executable).parent
    outputs = []
    for command in commands:
        args = command.split()
        args[0] = str(bin_dir / Path(args[0]).name)
        args = [str(ROOT / a) if a.startswith("config/") else a for a in args]
        done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    assert "caught up: relayed 200, applied 200" in outputs[2]
    rows = json.loads(outputs[3])["rows"]
    assert [(r["day"], r["tenant"]) for r in rows] == [("2026-11-25", "acme")]
    with closing(sqlite3.connect(tmp_path / "tenants-readstore.db")) as db:
        totals = db.execute(
            "SELECT tenant, sum(sales) FROM sales_by_day GROUP BY tenant ORDER BY tenant"
        ).fetchall()
    assert totals == [("acme", 100), ("globex", 100)]


def _readme_block(marker: str, fence: str) -> str:
    """The first ```fence block after ``marker`` in README.md."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(marker) :]
    block = block[block.index(f"```{fence}\n") + len(fence) + 4 :]
    return block[: block.index("```")]


def test_mysql_binary_ids_example_runs_as_written(
    tmp_path: Path, mysql_database: Callable[[], str]
) -> None:
    marker = "Runnable against a local MariaDB"
    url = mysql_database()  # stands for the README's database `auth`
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in _readme_block(marker, "sql").split(";"):
                if statement.strip():
                    conn.exec_driver_sql(statement)
    finally:
        engine.dispose()
    config = _readme_block(marker, "toml")
    assert 'url = "mysql://root@127.0.0.1:3306/auth"' in config
    (tmp_path / "auth.toml").write_text(
        config.replace("mysql://root@127.0.0.1:3306/auth", url), encoding="utf-8"
    )

    done = subprocess.run(
        [sys.executable, "-c", _readme_block(marker, "python")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )

    assert done.returncode == 0, done.stderr
    text = (ROOT / "README.md").read_text()
    printed = re.search(r"prints `([^`]*)`", text[text.index(marker) :])
    assert printed is not None
    lines = done.stdout.strip().splitlines()  # structlog's lines come first
    assert (
        lines[-1]
        == printed.group(1)
        == ("user 0b9a5e2c-7f3d-4f6e-9c1a-2d4b6e8f0a1c UserRegistered")
    )

    # A relay on a config without the key is refused; status shows the recorded rule.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    refusal = _readme_block(marker, "sh").splitlines()
    assert [line.split("#")[0].split()[:2] for line in refusal] == [
        ["grep", "-v"],
        ["readmodel", "relay"],
        ["readmodel", "status"],
    ]
    runs = [_shell(line, tmp_path, env) for line in refusal]
    assert [run.returncode for run in runs] == [0, 2, 0], [run.stderr for run in runs]
    said = re.search(r"The refusal reads `([^`]*)`", text)
    assert said is not None
    refused = " ".join(runs[1].stderr.split())
    assert " ".join(said.group(1).split()).removesuffix(" ...") in refused
    assert "auth: relayed 0, duplicates 0, parked 0" in runs[1].stdout
    assert re.search(r"auth .*│ uuid", runs[2].stdout), runs[2].stdout

    # The switch, run as written on a log that records "text" (an old config relayed first).
    back = _shell("readmodel outbox binary-ids auth text --config old.toml --yes", tmp_path, env)
    assert back.returncode == 0, back.stderr
    switch_marker = "stop every relay of the source, set the new key"
    [switch] = _readme_block(switch_marker, "sh").splitlines()
    switched = _shell(switch, tmp_path, env)
    assert switched.returncode == 0, switched.stderr
    printed = re.search(r"which prints `([^`]*)`", text[text.index(switch_marker) :])
    assert printed is not None
    assert " ".join(switched.stdout.split()) == " ".join(printed.group(1).split())
    again = _shell("readmodel relay --once --config auth.toml", tmp_path, env)
    assert again.returncode == 0, again.stderr


def _shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_tenant_document_projection_example_runs_as_written(
    tmp_path: Path,
    monkeypatch: Any,
    pg_database: Callable[[], str],
    mongo_database: Callable[[], str],
) -> None:
    """The ``Accounts`` example of "Document projections (MongoDB)" applied to events of two
    tenants, then read with its three ``readmodel query`` commands (``readmodel.toml`` being
    a config naming it and its ``docs`` store)."""
    from outbox.log import EventLog
    from projections.engine import ProjectionEngine
    from projections.log_reader import LogReader
    from projections.mongo_store import MongoStore
    from tests.cli_helpers import run_cli, write_config
    from tests.document_bank_helpers import Bank

    text = (ROOT / "README.md").read_text()
    section = text[text.index("Declared `@query` functions work as on tables") :]
    code = section[section.index("```python\n") + 10 :]
    code, commands = code.split("```\n", 1)
    commands = commands[commands.index("```\n") + 4 :].split("```")[0]
    (tmp_path / "readme_accounts.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    from readme_accounts import Accounts  # type: ignore[import-not-found]

    log = EventLog(pg_database())
    log.create_tables()
    url = mongo_database()
    store = MongoStore(url)
    store.create_tables([Accounts()])
    engine = ProjectionEngine(LogReader(log), [Accounts()], {"docs": store})
    try:
        Bank(log, store, url, engine, None).append(  # type: ignore[arg-type]
            [
                ("acme", "a1", "Opened", {"owner": "ann"}),
                ("globex", "a1", "Opened", {"owner": "ann"}),  # the same id, another tenant
            ]
        )
        assert engine.parked("accounts") == []
    finally:
        engine.close()
        log.close()
    write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["readme_accounts:Accounts"],
            "store": {"url": log.engine.url.render_as_string(hide_password=False)},
            "stores": {"docs": {"url": url}},
        },
    )
    monkeypatch.chdir(tmp_path)
    outputs = []
    for command in commands.strip().splitlines():
        done = run_cli(command.split()[1:])
        assert done.exit_code == 0, (command, done.output)
        outputs.append(json.loads(done.stdout))
    listed, typed, named = outputs
    assert [(d["_id"], d["tenant"]) for d in listed["rows"]] == [("acme:a1", "acme")]
    assert typed["rows"] == listed["rows"]
    assert named["result"] == listed["rows"]


def _block_after(marker: str) -> str:
    """The first plain ``` block after ``marker`` in README.md."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(marker) :]
    block = block[block.index("```\n") + 4 :]
    return block[: block.index("```")]


def _venv_env() -> dict[str, str]:
    path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("READMODEL_")}
    return {**env, "PATH": path, "PYTHONPATH": str(ROOT)}


def _bash(flags: str, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` run by bash (``flags``: ``-c``, ``-ec``) in ``cwd``, with the venv's
    commands first on the PATH and no READMODEL_ variable of the test session."""
    return subprocess.run(
        ["bash", flags, script],
        cwd=cwd,
        env=_venv_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_invalid_configuration_example_prints_what_readme_shows(tmp_path: Path) -> None:
    block = _block_after("Unknown keys and bad values are errors").splitlines()
    command, expected = block[0].removeprefix("$ "), block[1:]
    (tmp_path / "config").symlink_to(ROOT / "config")
    done = _bash("-c", command, tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == expected


def test_the_secret_commands_print_a_token_the_key_decrypts(
    tmp_path: Path, monkeypatch: Any
) -> None:
    from config.secrets import reveal

    block = _block_after("encrypts, any decrypts):")
    script = block + 'echo "key=$READMODEL_SECRET_KEY"\n'
    done = _bash("-ec", script, tmp_path)
    assert done.returncode == 0, done.stderr
    token, key = done.stdout.split()
    assert token.startswith("fernet:gAAAAA")
    monkeypatch.setenv("READMODEL_SECRET_KEY", key.removeprefix("key="))
    assert reveal(token) == "postgresql://acme:pw@db-acme/shop"


def test_outbox_init_print_needs_no_server(tmp_path: Path) -> None:
    """ "The outbox table": the command prints the table, its indexes and the trigger."""
    [command] = _readme_commands("trigger that NOTIFYs the relay:")
    (tmp_path / "config").symlink_to(ROOT / "config")
    done = _bash("-c", command, tmp_path)
    assert done.returncode == 0, done.stderr
    assert 'CREATE TABLE IF NOT EXISTS "outbox"' in done.stdout
    assert '"seq" BIGSERIAL PRIMARY KEY' in done.stdout
    assert "CREATE TRIGGER" in done.stdout and "pg_notify('readmodel_outbox'" in done.stdout


def test_the_memory_cache_example_runs_as_written() -> None:
    code = _readme_block("The cache is usable on its own", "python")
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["row"] == {"price": 990}
    cache = namespace["cache"]  # invalidated: the next read loads again
    assert cache.get_or_load("product_catalog", "42", ["product:42"], lambda: {"price": 1}) == {
        "price": 1
    }


def test_the_conversation_inbox_document_example_runs_as_written(
    tmp_path: Path, monkeypatch: Any, mongo_database: Callable[[], str]
) -> None:
    """ "Document projections (MongoDB)": ``ConversationInbox`` as written, fed by a MongoDB
    chat outbox (``seq`` from a counter, as "A MongoDB outbox" says), read back with
    ``readmodel query conversation_inbox r1``."""
    from pymongo import MongoClient

    from outbox.mongo_connection import mongo_database as database_name
    from tests.cli_helpers import run_cli, write_config

    code = _readme_block("### Document projections (MongoDB)", "python")
    (tmp_path / "readme_inbox.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    chat, docs = mongo_database(), mongo_database()
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["readme_inbox"],
            "store": {"url": f"sqlite:///{tmp_path / 'readstore.db'}"},
            "stores": {"docs": {"url": docs}},
            "sources": {"chat": {"url": chat}},
        },
    )
    monkeypatch.chdir(tmp_path)
    for command in (["outbox", "init", "--source", "chat"], ["migrate"]):
        done = run_cli([*command, "--config", str(config)])
        assert done.exit_code == 0, done.output
    client: MongoClient[dict[str, Any]] = MongoClient(chat)
    try:
        database = client[database_name(chat)]
        for text in ("hi", "how are you?"):
            with client.start_session() as session, session.start_transaction():
                seq = database.counters.find_one_and_update(
                    {"_id": "outbox"},
                    {"$inc": {"seq": 1}},
                    upsert=True,
                    session=session,
                    return_document=True,
                )["seq"]
                database.outbox.insert_one(
                    {
                        "seq": seq,
                        "id": f"m{seq}",
                        "aggregatetype": "room",
                        "aggregateid": "r1",
                        "type": "MessagePosted",
                        "payload": {"text": text},
                    },
                    session=session,
                )
    finally:
        client.close()
    done = run_cli(["run", "--until-caught-up", "--config", str(config)])
    assert done.exit_code == 0, done.output
    assert "caught up: relayed 2, applied 2" in done.stdout
    read = run_cli(["query", "conversation_inbox", "r1", "--config", str(config)])
    assert read.exit_code == 0, read.output
    assert json.loads(read.stdout) == {
        "row": {"_id": "r1", "messages": 2, "last": "how are you?"},
        "stale": False,
    }


def test_the_sales_by_day_sketch_counts_as_the_tenants_example(tmp_path: Path) -> None:
    """ "A database per tenant": the ``SalesByDay`` shown, on the example's table and payload
    model (``projections/examples/tenants.py``), applies every sale of two shops."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A database per tenant") :]
    sketch = section[section.index("```python\n") + 10 :].split("```")[0]
    (tmp_path / "readme_sales.py").write_text(
        "from projections import Event, Projection, Tx, on\n"
        "from projections.examples.tenants import SaleRecorded, sales_by_day\n\n" + sketch
    )
    example = (ROOT / "config" / "examples" / "tenants.toml").read_text()
    config = example.replace('["projections.examples.tenants"]', '["readme_sales"]')
    assert config != example
    config += "\n[engine]\nmax_attempts = 1  # a failing handler parks its event at once\n"
    (tmp_path / "tenants.toml").write_text(config)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"}
    bin_dir = Path(sys.executable).parent
    for args in (
        [bin_dir / "readmodel", "migrate", "--config", "tenants.toml"],
        [sys.executable, "-m", "projections.examples.tenants", "acme", "globex"],
        [bin_dir / "readmodel", "run", "--until-caught-up", "--config", "tenants.toml"],
        [bin_dir / "readmodel", "parked", "list", "--json", "--config", "tenants.toml"],
    ):
        done = subprocess.run(
            [str(a) for a in args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert json.loads(done.stdout) == []
    with closing(sqlite3.connect(tmp_path / "tenants-readstore.db")) as db:
        totals = db.execute(
            "SELECT tenant, sum(sales), sum(cents) > 0 FROM sales_by_day GROUP BY tenant "
            "ORDER BY tenant"
        ).fetchall()
    assert totals == [("acme", 100, 1), ("globex", 100, 1)]
