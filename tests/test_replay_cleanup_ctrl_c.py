"""Ctrl-C during ``readmodel replay --cleanup`` (a drop the store is slow to answer) exits 130
saying what it left: the live model untouched, what is still there for the next cleanup.
Left to typer it ended with exit 130 and not a word. Keys typed on a real pseudo-terminal;
the store stalled by a proxy at the drop."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import run_cli, write_config
from tests.replay_helpers import EVENTS, Pipeline, pipeline_config, query
from tests.stall_proxy_helpers import stall_proxy
from tests.terminal_helpers import CTRL_C, at_a_terminal
from workers import cli_replay


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt  # Ctrl-C, half-way through the rebuild


def test_ctrl_c_during_a_cleanup_exits_130_saying_the_live_model_is_untouched(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")
    config = str(pipeline_config(tmp_path, pg))
    with monkeypatch.context() as patch:  # a rebuild interrupted half-way leaves its shadow
        patch.setattr(cli_replay._ProgressHooks, "progress", _interrupt)
        interrupted = run_cli(["replay", "last_deposit", "--yes", "--config", config])
    assert interrupted.exit_code == 130, interrupted.output
    assert "last_deposit__rebuild" in pg.tables()
    with stall_proxy(pg.store_url, b"DROP TABLE") as proxy:
        proxied = write_config(
            tmp_path / "proxied.toml",
            {
                "projections": pg.projections,
                "store": {"url": proxy.url(pg.store_url)},
                "sources": {name: {"url": url} for name, url in pg.sources.items()},
            },
        )

        stopped = at_a_terminal(
            CTRL_C,
            *["replay", "last_deposit", "--cleanup", "-c", str(proxied)],
            when=lambda: proxy.stalled() > 0,
            timeout=60,
        )

    assert stopped.returncode == 130, stopped
    said = " ".join(stopped.stderr.split())
    assert (
        "error: interrupted (Ctrl-C) during the cleanup of 'last_deposit': the live model is "
        "untouched; a leftover already dropped stays dropped, the others are left: "
        "'readmodel replay last_deposit --cleanup' drops them"
    ) in said, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert "last_deposit__rebuild" in pg.tables()  # the stalled drop never reached the server
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live
    again = run_cli(["replay", "last_deposit", "--cleanup", "--config", config])
    assert again.exit_code == 0 and "last_deposit__rebuild" in again.stdout, again.output
    assert "last_deposit__rebuild" not in pg.tables()
