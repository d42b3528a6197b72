"""``config/examples/readmodel.toml`` documents every key, as the README says ("Every key
is documented in config/examples/readmodel.toml"): each setting is written there (set, or
commented out with its default) in its own table, and the file loads."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from config import Settings, load_settings
from config.source_settings import ColumnMap, TenantRegistrySettings

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "examples" / "readmodel.toml"
_HEADER = re.compile(r"^\[([^\]]+)\]")
_KEY = re.compile(r"^#?\s*([A-Za-z_]+)\s*=")
_INLINE = re.compile(r"([A-Za-z_]+)\s*=")


def _keys_by_table() -> dict[str, set[str]]:
    """``{table: keys}``, a table named as its kind (``sources.*``, ``sources.*.columns``,
    ``tenants.*.source``); keys set or commented out (``# key = value``)."""
    found: dict[str, set[str]] = {"": set()}
    table = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        header = _HEADER.match(line)
        if header:
            parts = re.findall(r'"[^"]*"|[^.]+', header.group(1))
            if parts[0] in ("sources", "stores", "tenants") and len(parts) > 1:
                parts[1] = "*"
            table = ".".join(parts)
            found.setdefault(table, set())
            continue
        key = _KEY.match(line)
        if key:
            found[table].add(key.group(1))
            inline = line.split("=", 1)[1].split("#", 1)[0]
            if "{" in inline:  # columns = { tenant = "" }
                found.setdefault(f"{table}.{key.group(1)}", set()).update(_INLINE.findall(inline))
    return found


def _fields(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_every_setting_is_written_in_its_table() -> None:
    found = _keys_by_table()
    expected: dict[str, set[str]] = {"": {"projections"}}
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            expected[name] = _fields(annotation)
    expected["stores.*"] = {"url"}
    expected["sources.*"] = _fields(Settings.model_fields["sources"].annotation.__args__[1])
    expected["sources.*.columns"] = _fields(ColumnMap)
    expected["tenants.*"] = _fields(TenantRegistrySettings) - {"source"}

    missing = {
        table: sorted(keys - found.get(table, set()))
        for table, keys in expected.items()
        if keys - found.get(table, set())
    }

    assert missing == {}


def test_the_example_loads() -> None:
    settings = load_settings(EXAMPLE)

    assert settings.broker.url == "redis://127.0.0.1:6379/0"
    assert settings.projections == ["projections.examples.quickstart"]
