"""usage rows say whose token count they hold

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-26 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # "upstream": the model server's usage chunk; "gateway": a stream cut before that chunk,
    # counted by the gateway (the content events it relayed). Rows before this: NULL.
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("tokens_source", sa.String(length=8), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("tokens_source")
