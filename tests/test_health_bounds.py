"""``health`` bounds parked events (``health.max_parked``, ``--max-parked``): a projection
holding parked events, or a source whose malformed outbox rows are parked, fails the probe
naming it and the count once past the bound; unset, parked events are not checked, as before.
``health.max_lag_seconds = "off"`` turns the lag bound off from a TOML file (which has no
null). ``status --json`` gives ``taken_at`` and ``last_error_at`` both as ISO-8601 UTC."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from config import ConfigError, load_settings
from tests.cli_helpers import run_cli, write_config
from tests.outbox_helpers import init_outbox, insert_events


def _config(tmp_path: Path, sqlite_database: Callable[[], str], **health: Any) -> Path:
    return write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["tests.projection_fixtures:Totals"],
            "store": {"url": sqlite_database()},
            "engine": {"max_attempts": 1, "retry_backoff": "1ms"},
            "sources": {"bank": {"url": sqlite_database()}},
            **({"health": health} if health else {}),
        },
    )


@pytest.fixture
def parked(
    tmp_path: Path, sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Path]:
    """A config (with ``[health]`` as given) whose projection ``totals`` parked one event
    (acct-1's) and whose source ``bank`` parked one malformed outbox row; nothing lags."""

    def make(**health: Any) -> Path:
        config = _config(tmp_path, sqlite_database, **health)
        settings = load_settings(config)
        init_outbox(settings.sources["bank"], "bank")
        assert run_cli(["migrate", "--config", str(config)]).exit_code == 0
        source = sa.create_engine(settings.sources["bank"].url)
        try:
            insert_events(
                source,
                [("account", f"acct-{a}", "Deposited", {"amount": 1, "seq": 1}) for a in range(3)],
            )
            with source.begin() as conn:  # a JSON array where an object is expected
                conn.exec_driver_sql(
                    "INSERT INTO outbox (aggregatetype, aggregateid, type, payload) "
                    "VALUES ('account', 'acct-9', 'Deposited', '[1, 2]')"
                )
        finally:
            source.dispose()
        monkeypatch.setenv("READMODEL_TEST_FAIL_ON", "acct-1")
        ran = run_cli(["run", "--until-caught-up", "--config", str(config)])
        assert ran.exit_code == 0, ran.output
        monkeypatch.delenv("READMODEL_TEST_FAIL_ON")
        return config

    return make


def test_parked_events_past_max_parked_fail_the_probe_naming_each(
    parked: Callable[..., Path],
) -> None:
    config = parked(max_parked=0)

    result = run_cli(["health", "--config", str(config)])

    assert result.exit_code == 1, result.output
    assert "unhealthy: projection totals: 1 event parked (bound 0)" in result.stderr
    assert "unhealthy: source bank: 1 malformed outbox row parked (bound 0)" in result.stderr


def test_the_option_overrides_the_bound_and_json_gives_it(parked: Callable[..., Path]) -> None:
    config = parked(max_parked=0)

    within = run_cli(["health", "--config", str(config), "--max-parked", "1", "--json"])

    assert within.exit_code == 0, within.output
    document = json.loads(within.stdout)
    assert (document["healthy"], document["max_parked"]) == (True, 1)


def test_parked_events_are_not_checked_unless_bounded(parked: Callable[..., Path]) -> None:
    config = parked()

    result = run_cli(["health", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "healthy: 1 source, 1 projection within bounds" in result.stdout


def test_status_json_gives_its_times_in_iso_8601_utc(parked: Callable[..., Path]) -> None:
    document = json.loads(run_cli(["status", "--json", "--config", str(parked())]).stdout)

    (totals,) = document["projections"]
    for stamp in (document["taken_at"], totals["last_error_at"]):
        assert isinstance(stamp, str) and stamp.endswith("+00:00"), stamp
        assert datetime.fromisoformat(stamp).utcoffset() == UTC.utcoffset(None)
    taken = datetime.fromisoformat(document["taken_at"])
    assert abs((datetime.now(UTC) - taken).total_seconds()) < 3600


@pytest.mark.parametrize("off", ['"off"', '"OFF"'])
def test_max_lag_seconds_off_in_a_toml_file_turns_the_bound_off(tmp_path: Path, off: str) -> None:
    path = tmp_path / "rm.toml"
    path.write_text(f"[health]\nmax_lag_seconds = {off}\n", encoding="utf-8")  # TOML as written

    assert load_settings(path).health.max_lag_seconds is None


def test_max_lag_seconds_off_from_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("READMODEL_HEALTH__MAX_LAG_SECONDS", "off")

    assert load_settings().health.max_lag_seconds is None


def test_health_json_says_the_lag_bound_is_off(
    tmp_path: Path, sqlite_database: Callable[[], str]
) -> None:
    config = _config(tmp_path, sqlite_database, max_lag_seconds="off")
    init_outbox(load_settings(config).sources["bank"], "bank")
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = run_cli(["health", "--json", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["max_lag_seconds"] is None


@pytest.mark.parametrize("value", ['"of"', '"never"', "true"])
def test_a_bound_neither_a_duration_nor_off_names_file_and_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "rm.toml"
    path.write_text(f"[health]\nmax_lag_seconds = {value}\n", encoding="utf-8")

    with pytest.raises(ConfigError) as caught:
        load_settings(path)

    assert f"{path}: health.max_lag_seconds: " in str(caught.value)
    assert '"off"' in str(caught.value)
