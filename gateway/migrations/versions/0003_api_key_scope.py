"""API key scope

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-26 13:00:00

A key is `chat` (the chat routes, /v1/*, the model list) or `full` (what its owner's role
allows). Keys made before this revision become `chat`: a key could mint keys and act as an
admin, so an old key may be one a thief minted; owners who need more make a `full` key with a
password login.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("scope", sa.String(length=8), server_default="chat", nullable=False)
        )
        batch.create_check_constraint(op.f("ck_api_keys_scope_valid"), "scope IN ('chat', 'full')")


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint(op.f("ck_api_keys_scope_valid"), type_="check")
        batch.drop_column("scope")
