"""``shared_tables`` of a tenant projection are checked when its class is defined: a shared
table holding the tenant column (every tenant would read every tenant's rows) and a table
that is not one of the projection's were accepted without a word."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from projections.api import Projection

metadata = sa.MetaData()
notes = sa.Table(
    "shared_check_notes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("tenant", sa.Text, nullable=False),
)
rates = sa.Table(  # reference data: no tenant column
    "shared_check_rates",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
)
elsewhere = sa.Table(
    "shared_check_elsewhere",
    metadata,
    sa.Column("code", sa.Text, primary_key=True),
)


def test_a_shared_table_holding_the_tenant_column_is_refused() -> None:
    expected = (
        "SharedNotes (projection 'shared_check'): shared table 'shared_check_notes' has the "
        "tenant column 'tenant'; shared_tables are for reference data without that column"
    )
    with pytest.raises(TypeError, match=re.escape(expected)) as refused:

        class SharedNotes(Projection):
            name = "shared_check"
            tables = (notes, rates)
            tenant_column = "tenant"
            shared_tables = (notes, rates)

    assert "every tenant would read every tenant's rows" in str(refused.value)


def test_a_shared_table_that_is_not_one_of_the_projections_is_refused() -> None:
    expected = (
        "Elsewhere (projection 'shared_check'): shared_tables names 'shared_check_elsewhere', "
        "which is not one of its tables ('shared_check_notes', 'shared_check_rates')"
    )
    with pytest.raises(TypeError, match=re.escape(expected)):

        class Elsewhere(Projection):
            name = "shared_check"
            tables = (notes, rates)
            tenant_column = "tenant"
            shared_tables = (rates, elsewhere)


def test_a_shared_table_named_by_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="shared_tables names 'shared_check_rates', which is not"):

        class ByName(Projection):
            name = "shared_check"
            tables = (notes, rates)
            tenant_column = "tenant"
            shared_tables = ("shared_check_rates",)  # type: ignore[assignment]


def test_reference_data_without_the_column_is_still_shared() -> None:
    class Shared(Projection):
        name = "shared_check"
        tables = (notes, rates)
        tenant_column = "tenant"
        shared_tables = (rates,)

    assert Shared.shared_tables == (rates,)
