"""rm_invalidations: cache invalidations recorded inside the apply transaction.

Rows are written with a batch when the store has a cache, applied to the cache after
the commit and deleted; rows a crash left behind are redone at start and by the sweeper.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def tables(metadata: sa.MetaData) -> list[sa.Table]:
    """The tables of this revision, frozen."""
    return [
        sa.Table(
            "rm_invalidations",
            metadata,
            sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
            sa.Column("projection", sa.Text, nullable=False),
            sa.Column("tags", sa.Text, nullable=False),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                nullable=False,
                server_default=sa.func.current_timestamp(),
            ),
        )
    ]


def upgrade() -> None:
    bind = op.get_bind()
    existing = set() if context.is_offline_mode() else set(sa.inspect(bind).get_table_names())
    for table in tables(sa.MetaData()):
        if table.name not in existing:
            table.create(bind)


def downgrade() -> None:
    op.drop_table("rm_invalidations")
