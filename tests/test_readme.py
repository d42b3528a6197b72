"""README examples run as written."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

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
