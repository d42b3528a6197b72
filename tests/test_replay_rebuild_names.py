"""A projection may not be named like what another's rebuild derives (its checkpoints
``<name>__rebuild``, shadow and old tables, collection generations): the replay of the
other would delete its checkpoints, or build into, drop or swap away its tables. Such a
set of projections is refused when it is loaded, naming both."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from config import Settings
from config.errors import ConfigError
from projections.api import load_projections
from tests.replay_helpers import PROJECTIONS, Pipeline

FIXTURES = "tests.rebuild_name_fixtures"


def test_a_projection_named_like_anothers_rebuild_checkpoints_is_refused(
    make_settings: Callable[..., Settings], sqlite_database: Callable[[], str]
) -> None:
    """``last_deposit__rebuild`` is where a replay of ``last_deposit`` keeps its progress,
    and what its cleanup deletes: the worker refuses to start with both."""
    projections = [*PROJECTIONS, f"{FIXTURES}:RebuildCheckpoints"]
    with pytest.raises(ConfigError) as refused:
        Pipeline(make_settings, sqlite_database(), sqlite_database, projections).close()
    message = str(refused.value)
    assert "projection 'last_deposit__rebuild' is named like the rebuild checkpoints" in message
    assert "of projection 'last_deposit'" in message


@pytest.mark.parametrize(
    ("spec", "table", "kind"),
    [
        ("tests.replay_lookalike_fixtures", "last_deposit__rebuild", "shadow table"),
        (f"{FIXTURES}:OldTable", "last_deposit__old", "old table"),
    ],
)
def test_a_table_named_like_anothers_shadow_or_old_table_is_refused(
    spec: str, table: str, kind: str
) -> None:
    with pytest.raises(ValueError) as refused:
        load_projections(["tests.replay_fixtures", spec])
    message = str(refused.value)
    assert f"table {table} of projection " in message
    assert f"is named like the {kind} of table last_deposit" in message
    assert "a replay of projection 'last_deposit'" in message


def test_a_table_named_like_anothers_dry_run_copy_loads() -> None:
    """The dry run makes its copies temporary where a table of their name is, and none on
    SQLite (tests/test_replay_dry_run_names.py): no clash to refuse."""
    loaded = load_projections(["tests.replay_fixtures", f"{FIXTURES}:DryRunTable"])
    assert [p.name for p in loaded] == ["last_deposit", "deposit_trials"]


def test_a_collection_named_like_a_generation_of_anothers_is_refused() -> None:
    with pytest.raises(ValueError) as refused:
        load_projections([f"{FIXTURES}:Inbox", f"{FIXTURES}:InboxCopies"])
    message = str(refused.value)
    assert "collection 'inbox__g2' of projection 'inbox_copies'" in message
    assert "generation of collection 'inbox' that a replay of projection 'inbox'" in message


def test_the_same_names_in_another_store_are_no_clash() -> None:
    loaded = load_projections(["tests.replay_fixtures", f"{FIXTURES}:ArchivedElsewhere"])
    assert [p.name for p in loaded] == ["last_deposit", "deposit_archive"]
