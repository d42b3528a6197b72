"""What ``readmodel replay`` tells the operator when a rebuild does not end as planned: a
swap that gave up waiting for a lock failed (exit 1, not "unreachable"), and a Ctrl-C that
comes after the swap committed says the rebuilt model is live, not that it is untouched."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from projections import replay_rebuild
from projections.document_generations import generation_of
from projections.document_replay import DocumentReplayer
from tests.cli_helpers import docs_config, run_cli
from tests.document_replay_helpers import PROJECTIONS, Docs, deposits, docs
from tests.replay_helpers import EVENTS, Pipeline, pipeline_config, query
from workers import cli_replay

__all__ = ["docs"]  # the fixture


def test_a_swap_that_gives_up_on_a_held_lock_exits_1_naming_the_holder(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    pg.execute("UPDATE last_deposit SET amount = -1")
    live = query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1")
    monkeypatch.setattr(replay_rebuild, "_SWAP_LOCK_TIMEOUT_MS", 300)
    monkeypatch.setattr(replay_rebuild, "_SWAP_ATTEMPTS", 2)
    dsn = sa.make_url(pg.store_url).set(drivername="postgresql")
    holder = psycopg.connect(dsn.render_as_string(hide_password=False), application_name="report")
    before_swap = cli_replay._ProgressHooks.before_swap

    def held_before_swap(self: cli_replay._ProgressHooks) -> None:
        holder.execute("SELECT count(*) FROM last_deposit")  # and stays open
        before_swap(self)

    monkeypatch.setattr(cli_replay._ProgressHooks, "before_swap", held_before_swap)
    config = str(pipeline_config(tmp_path, pg))
    try:
        result = run_cli(["replay", "last_deposit", "--yes", "--config", config])
    finally:
        holder.rollback()
        holder.close()

    assert result.exit_code == 1, result.output
    assert "waiting for a lock on last_deposit" in result.stderr, result.stderr
    assert "application 'report'" in result.stderr, result.stderr
    assert query(pg, "SELECT account, amount FROM last_deposit ORDER BY 1") == live


def _interrupt(*args: object, **kwargs: object) -> None:
    raise KeyboardInterrupt  # Ctrl-C, where the replay is then


def test_ctrl_c_after_the_swap_says_the_rebuilt_model_is_live(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the old tables are dropped, after the swap committed."""
    pg.feed("bank", EVENTS)
    pg.execute("UPDATE last_deposit SET amount = -1")
    monkeypatch.setattr(replay_rebuild, "drop_old_tables", _interrupt)
    config = str(pipeline_config(tmp_path, pg))

    result = run_cli(["replay", "last_deposit", "--yes", "--config", config])

    assert result.exit_code == 130, result.output
    assert "untouched" not in result.stderr, result.stderr
    said = " ".join(result.stderr.split())
    assert "interrupted after the swap: the rebuilt model of 'last_deposit' is live" in said
    assert query(pg, "SELECT count(*) FROM last_deposit WHERE amount = -1") == [(0,)]
    monkeypatch.undo()
    cleanup = run_cli(["replay", "last_deposit", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0 and "last_deposit__old" in cleanup.stdout, cleanup.output


def test_ctrl_c_in_place_says_the_batches_so_far_stay_applied(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    monkeypatch.setattr(cli_replay._ProgressHooks, "progress", _interrupt)
    config = str(pipeline_config(tmp_path, pg))
    command = ["replay", "last_deposit", "--from-position", "0", "--batch-size", "50"]

    result = run_cli([*command, "--yes", "--config", config])

    assert result.exit_code == 130, result.output
    said = " ".join(result.stderr.split())
    assert "untouched" not in said and "shadow" not in said, said
    assert "the batches of 'last_deposit' replayed in place so far stay applied" in said


def test_ctrl_c_after_a_document_swap_says_the_rebuilt_model_is_live(
    docs: Docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the --retire-after wait, after the swap committed."""
    docs.feed(deposits(200, 7, seed=3))
    docs.store.database["doc_totals"].update_many({}, {"$set": {"total": 7}})
    monkeypatch.setattr(DocumentReplayer, "_retire", _interrupt)
    config = str(docs_config(tmp_path, docs.log, docs.url, PROJECTIONS))

    result = run_cli(["replay", "doc_totals", "--yes", "--config", config])

    assert result.exit_code == 130, result.output
    said = " ".join(result.stderr.split())
    assert "untouched" not in said, said
    assert "interrupted after the swap: the rebuilt model of 'doc_totals' is live" in said
    assert "drops the old collections left" in said
    assert generation_of(docs.store.database, "doc_totals") == 1
    assert all(d["total"] != 7 for d in docs.documents()["doc_totals"])


def test_a_position_past_every_log_head_is_refused_not_replayed_as_nothing(
    pg: Pipeline, tmp_path: Path
) -> None:
    pg.feed("bank", EVENTS)  # positions 1..300
    config = str(pipeline_config(tmp_path, pg))
    for args in (["--dry-run"], ["--yes"]):
        result = run_cli(
            ["replay", "last_deposit", "--from-position", "3000", *args, "--config", config]
        )
        assert result.exit_code == 2, result.output
        said = " ".join(result.stderr.split())
        assert "--from-position 3000 is past the log head of every source" in said, said
        assert "(bank 300)" in said, said

    at_head = run_cli(
        ["replay", "last_deposit", "--from-position", "300", "--yes", "--config", config]
    )
    assert at_head.exit_code == 0 and "replayed in place: 0 events" in at_head.stdout


def test_a_document_position_past_every_log_head_is_refused(docs: Docs, tmp_path: Path) -> None:
    docs.feed(deposits(40, 5, seed=4))
    config = str(docs_config(tmp_path, docs.log, docs.url, PROJECTIONS))
    command = ["replay", "doc_last_deposit", "--from-position", "41", "--yes"]
    result = run_cli([*command, "--config", config])
    assert result.exit_code == 2, result.output
    assert "--from-position 41 is past the log head" in " ".join(result.stderr.split())


def test_cleanup_with_dry_run_lists_what_it_would_drop_and_drops_nothing(
    pg: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.feed("bank", EVENTS)
    config = str(pipeline_config(tmp_path, pg))
    with monkeypatch.context() as patch:  # a rebuild interrupted half-way leaves its shadow
        patch.setattr(cli_replay._ProgressHooks, "progress", _interrupt)
        interrupted = run_cli(["replay", "last_deposit", "--yes", "--config", config])
    assert interrupted.exit_code == 130, interrupted.output
    assert "last_deposit__rebuild" in pg.tables()

    dry = run_cli(["replay", "last_deposit", "--cleanup", "--dry-run", "--config", config])

    assert dry.exit_code == 0, dry.output
    assert "--cleanup would drop last_deposit__rebuild" in dry.stdout.replace('"', "")
    assert "dry run: nothing was changed" in dry.stdout
    assert "last_deposit__rebuild" in pg.tables()
    cleanup = run_cli(["replay", "last_deposit", "--cleanup", "--config", config])
    assert cleanup.exit_code == 0 and "last_deposit__rebuild" in cleanup.stdout
    assert "last_deposit__rebuild" not in pg.tables()


def test_a_document_cleanup_with_dry_run_drops_nothing(
    docs: Docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs.feed(deposits(60, 5, seed=5))
    config = str(docs_config(tmp_path, docs.log, docs.url, PROJECTIONS))
    with monkeypatch.context() as patch:
        patch.setattr(cli_replay._ProgressHooks, "progress", _interrupt)
        interrupted = run_cli(["replay", "doc_totals", "--yes", "--config", config])
    assert interrupted.exit_code == 130, interrupted.output
    assert "doc_totals__g1" in docs.collection_names()

    dry = run_cli(["replay", "doc_totals", "--cleanup", "--dry-run", "--config", config])

    assert dry.exit_code == 0, dry.output
    assert "--cleanup would drop doc_totals__g1" in dry.stdout
    assert "doc_totals__g1" in docs.collection_names()
