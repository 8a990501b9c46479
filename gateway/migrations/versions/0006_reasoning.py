"""reasoning: the chain of thought stored apart from the answer, and the answer's own TTFT

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-26 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("reasoning", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reasoning_ms", sa.Integer(), nullable=True))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("answer_ttft_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("answer_ttft_ms")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("reasoning_ms")
        batch.drop_column("reasoning")
