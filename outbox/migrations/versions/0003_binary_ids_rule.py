"""rm_log_heads.binary_ids: the ``binary_ids`` rule each source's aggregate ids are made by.

A column on the head row rather than a table of its own: every append already locks that
row, so checking the rule there costs nothing and is atomic with the append (a relay
whose setting differs cannot slip one batch in after the rule changed). Existing rows get
NULL, "not recorded yet": a migration cannot know which rule made a source's events, so the
first relay of the source records its setting (see :func:`outbox.log_rules.adopt_rule`).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """This revision creates no table (it adds a column)."""
    return []


def upgrade() -> None:
    op.add_column("rm_log_heads", sa.Column("binary_ids", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rm_log_heads") as batch:
        batch.drop_column("binary_ids")
