"""A projection's ``key_tags`` are checked when its class is defined: a format field that is
not a column of its table's primary key (a collection's ``_id``) failed every cached get
with a bare ``KeyError``; now the class is refused, naming the projection, the table and
the column."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from projections.api import Projection
from tests.cli_helpers import run_cli, write_config

metadata = sa.MetaData()
lines = sa.Table(
    "kt_lines",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("line", sa.Integer, primary_key=True),
    sa.Column("sku", sa.Text, nullable=False),
)


def _define(key_tags: dict, **attrs: object) -> type[Projection]:
    namespace = {"name": "kt_lines", "tables": (lines,), "key_tags": key_tags, **attrs}
    return type("OrderLines", (Projection,), namespace)


@pytest.mark.parametrize(
    ("tag", "column"),
    [("line:{sku}", "sku"), ("order:{order_id}:{customer}", "customer"), ("x:{sku.upper}", "sku")],
)
def test_a_column_outside_the_primary_key_is_refused(tag: str, column: str) -> None:
    with pytest.raises(TypeError) as refused:
        _define({"kt_lines": tag})

    message = str(refused.value)
    assert "OrderLines (projection 'kt_lines')" in message
    assert "table 'kt_lines'" in message
    assert f"{{{column}}}" in message
    assert "(order_id, line)" in message


def test_a_positional_field_is_refused() -> None:
    with pytest.raises(TypeError, match=r"formats \{\}, which is not a column"):
        _define({"kt_lines": "line:{}"})


def test_a_table_the_projection_lacks_is_refused() -> None:
    with pytest.raises(TypeError, match=r"'kt_line' is none of its tables or collections"):
        _define({"kt_line": "line:{order_id}"})


def test_a_broken_format_is_refused() -> None:
    with pytest.raises(TypeError, match="is not a format string"):
        _define({"kt_lines": "line:{order_id"})


def test_a_collection_tag_formats_only_the_id() -> None:
    with pytest.raises(TypeError, match=r"\{owner\}, which is not a column of the key of"):
        type(
            "Inbox",
            (Projection,),
            {
                "name": "kt_inbox",
                "collections": ("kt_inbox",),
                "key_tags": {"kt_inbox": "u:{owner}"},
            },
        )
    type(
        "Inbox",
        (Projection,),
        {"name": "kt_inbox", "collections": ("kt_inbox",), "key_tags": {"kt_inbox": "u:{_id}"}},
    )


def test_key_columns_tables_as_objects_and_functions_are_accepted() -> None:
    _define({"kt_lines": "line:{order_id}/{line:03d}"})
    _define({lines: "order:{order_id}"})
    _define({"kt_lines": lambda key: [f"sku-of:{key['order_id']}"]})


def test_the_cli_refuses_such_a_projection_naming_it(
    tmp_path: Path, sqlite_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kt_bad_tags.py").write_text(
        "import sqlalchemy as sa\n"
        "from projections.api import Projection\n"
        "t = sa.Table('kt_rows', sa.MetaData(), sa.Column('id', sa.Text, primary_key=True),\n"
        "             sa.Column('owner', sa.Text))\n"
        "class Rows(Projection):\n"
        "    name = 'kt_rows'\n"
        "    tables = (t,)\n"
        "    key_tags = {'kt_rows': 'owner:{owner}'}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kt_bad_tags", raising=False)
    config = write_config(
        tmp_path / "readmodel.toml",
        {
            "projections": ["kt_bad_tags"],
            "store": {"url": sqlite_database()},
            "sources": {"bank": {"url": sqlite_database()}},
        },
    )
    assert run_cli(["migrate", "--config", str(config)]).exit_code == 0

    result = run_cli(["query", "kt_rows", "r1", "--config", str(config)])

    assert result.exit_code == 2, result.output
    assert "Rows (projection 'kt_rows'): key_tags['kt_rows']" in result.stderr
    assert "{owner}, which is not a column of the primary key of table 'kt_rows'" in result.stderr
    assert "KeyError" not in result.stderr
