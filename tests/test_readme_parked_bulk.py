"""README's "Many at once" commands run as written, on the quickstart's shop with parked
events (a payload the model rejects, an event held behind it) and a malformed row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = "config/examples/quickstart.toml"


def _commands(marker: str) -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index(marker) :]
    block = block[block.index("```\n") + 4 :]
    block = block[: block.index("```")]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    bin_dir = Path(sys.executable).parent
    commands = []
    for line in lines:
        args = line.split()
        args[0] = str(bin_dir / Path(args[0]).name)
        commands.append([str(ROOT / a) if a.startswith("config/") else a for a in args])
    return commands


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def _outbox(shop: sa.Engine, order: str, payload: str) -> None:
    with shop.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                "VALUES ('order', :id, 'OrderPlaced', :payload)"
            ),
            {"id": order, "payload": payload},
        )


def test_the_bulk_parked_commands_run_as_written(tmp_path: Path) -> None:
    readmodel = str(Path(sys.executable).parent / "readmodel")
    config = str(ROOT / QUICKSTART)
    for setup in (["outbox", "init", "--source", "shop"], ["migrate"]):
        assert _run([readmodel, *setup, "--config", config], tmp_path).returncode == 0
    shop = sa.create_engine(f"sqlite:///{tmp_path / 'shop.db'}")
    _outbox(shop, "o-1", json.dumps({"customer_id": "c1", "total_cents": "many"}))
    _outbox(shop, "o-1", json.dumps({"customer_id": "c1", "total_cents": 250}))
    _outbox(shop, "o-2", json.dumps({"customer_id": "c2", "total_cents": 100}))
    _outbox(shop, "o-3", "not json")
    shop.dispose()
    ran = _run([readmodel, "run", "--until-caught-up", "--config", config], tmp_path)
    assert ran.returncode == 0, ran.stderr

    dry, retried, skipped, malformed, listed, purged = (
        _run(args, tmp_path) for args in _commands("#### Many at once")
    )

    assert dry.returncode == 0, dry.stderr
    assert "would retry 2 parked event(s) in 1 aggregate(s)" in dry.stdout
    assert retried.returncode == 1, retried.stderr  # the model still rejects the payload
    assert "done: 0 applied, 2 still parked, 0 skipped" in retried.stdout
    assert "e1 (shop order:o-1) failed again and stays parked" in retried.stderr
    assert "total_cents: Input should be a valid integer" in retried.stderr
    assert skipped.returncode == 0, skipped.stderr
    assert "done: 0 applied, 0 still parked, 2 skipped" in skipped.stdout
    assert malformed.returncode == 0, malformed.stderr
    assert "1 skipped (malformed rows of source 'shop'" in malformed.stdout
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count("skipped") == 3
    assert purged.returncode == 0, purged.stderr
    assert "done: 2 skipped entries deleted (projection 'customer_orders')" in purged.stdout
    left = _run([*_commands("#### Many at once")[4][:-2], "--json", "--config", config], tmp_path)
    assert [e["kind"] for e in json.loads(left.stdout)] == ["outbox_row"]
    with sa.create_engine(f"sqlite:///{tmp_path / 'readstore.db'}").connect() as conn:
        rows = conn.execute(sa.text("SELECT customer_id, orders FROM customer_orders")).all()
    assert sorted(rows) == [("c2", 1)]
