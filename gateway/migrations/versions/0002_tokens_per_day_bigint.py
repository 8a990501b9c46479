"""users.tokens_per_day: a 64-bit integer (RATE_LIMIT_TOKENS_PER_DAY allows up to 2**53 - 1)

Revision ID: 0002
Revises: 0003
Create Date: 2026-11-26 13:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _sqlite() -> bool:
    # SQLite's INTEGER already holds 64 bits, and the model keeps INTEGER there (BigInt): nothing
    # to change. Not even a batch: rebuilding `users` would fire the ON DELETE CASCADEs of every
    # table that points at it.
    return op.get_bind().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        return
    op.alter_column(
        "users",
        "tokens_per_day",
        existing_type=sa.Integer(),
        type_=sa.BigInteger(),
        existing_nullable=True,
    )


def downgrade() -> None:
    if _sqlite():
        return
    # values above 2**31 - 1 would not fit: refuse rather than lose them
    too_big = (
        op.get_bind()
        .execute(sa.text("SELECT count(*) FROM users WHERE tokens_per_day > 2147483647"))
        .scalar_one()
    )
    if too_big:
        raise RuntimeError(f"{too_big} users have tokens_per_day above the 32-bit range")
    op.alter_column(
        "users",
        "tokens_per_day",
        existing_type=sa.BigInteger(),
        type_=sa.Integer(),
        existing_nullable=True,
    )
