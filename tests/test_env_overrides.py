"""Environment variables override sources by name; a variable cannot spell ':', so names
are compared as variables spell them."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import ConfigError, load_settings
from tests.cli_helpers import write_config
from tests.tenant_fixtures import tenant_source

ROTATED = "postgresql://acme:rotated-s3cret@db-acme/pos_acme"


def _registry_config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "c.toml",
        {
            "sources": {"pos_static:acme": tenant_source("sqlite:///acme.db", "acme")},
            "tenants": {"pos": {"url": "sqlite:///registry.db"}},
        },
    )


def test_a_variable_for_a_registry_member_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMODEL_SOURCES__POS_ACME__URL", ROTATED)
    with pytest.raises(ConfigError) as error:
        load_settings(_registry_config(tmp_path))
    message = str(error.value)
    assert "environment variable READMODEL_SOURCES__POS_ACME__URL" in message
    assert "'pos:acme' would be a member of tenant registry 'pos'" in message
    assert "rotated-s3cret" not in message


def test_a_variable_for_a_static_member_the_file_lacks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMODEL_SOURCES__POS_STATIC_GLOBEX__URL", ROTATED)
    with pytest.raises(ConfigError) as error:
        load_settings(_registry_config(tmp_path))
    assert "READMODEL_SOURCES__POS_STATIC_GLOBEX__URL" in str(error.value)
    assert "the file has no source 'pos_static:globex'" in str(error.value)


def test_variables_still_override_members_and_add_other_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("READMODEL_SOURCES__POS_STATIC_ACME__URL", ROTATED)
    monkeypatch.setenv("READMODEL_SOURCES__ORDERS__URL", "sqlite:///orders.db")
    settings = load_settings(_registry_config(tmp_path))
    assert sorted(settings.sources) == ["orders", "pos_static:acme"]
    assert settings.sources["pos_static:acme"].url == ROTATED


@pytest.mark.parametrize(
    ("first", "second", "variable"),
    [
        ("pos:a_b", "pos_a:b", "READMODEL_SOURCES__POS_A_B__"),
        ("shop:x", "shop_x", "READMODEL_SOURCES__SHOP_X__"),
        ("Orders", "orders", "READMODEL_SOURCES__ORDERS__"),
    ],
)
def test_source_names_one_variable_would_spell_are_refused_naming_both(
    tmp_path: Path, first: str, second: str, variable: str
) -> None:
    path = write_config(
        tmp_path / "c.toml",
        {
            "sources": {
                first: tenant_source(f"sqlite:///{tmp_path / 'one.db'}", "b"),
                second: tenant_source(f"sqlite:///{tmp_path / 'two.db'}", "b"),
            }
        },
    )
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    message = str(error.value)
    assert f"sources {first!r} and {second!r} are both spelled {variable}" in message


@pytest.mark.parametrize(
    ("section", "value"),
    [
        ("sources", {"orders\n": {"url": "sqlite:///o.db"}}),
        ("sources", {"pos:acme\n": {"url": "sqlite:///o.db"}}),
        ("sources", {"orders": {"url": "sqlite:///o.db", "table": "outbox\n"}}),
        ("tenants", {"pos\n": {"url": "sqlite:///r.db"}}),
        ("broker", {"queue": "readmodel\n"}),
    ],
)
def test_a_name_with_a_trailing_newline_is_refused(section: str, value: object) -> None:
    with pytest.raises(ConfigError):
        load_settings(None, **{section: value})
