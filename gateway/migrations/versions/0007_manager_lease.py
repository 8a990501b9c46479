"""manager lease: the model manager's lease, shared state, forwarded switches and live
processes, for several gateway processes without Redis (issue 15)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    lease = op.create_table(
        "manager_lease",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=200), nullable=True),
        sa.Column("fence", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manager_lease")),
    )
    op.bulk_insert(lease, [{"id": 1, "holder": None, "fence": 0, "expires_at": 0.0, "seq": 0}])
    op.create_table(
        "manager_commands",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("op", sa.String(length=20), nullable=False),
        sa.Column("profile_id", sa.String(length=100), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manager_commands")),
    )
    op.create_table(
        "manager_nodes",
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("in_flight", sa.Integer(), nullable=False),
        sa.Column("closed_for", sa.String(length=64), nullable=True),
        sa.Column("seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_manager_nodes")),
    )


def downgrade() -> None:
    op.drop_table("manager_nodes")
    op.drop_table("manager_commands")
    op.drop_table("manager_lease")
