"""message variants: a regenerated answer is a variant of its turn's first answer; untitled
conversations named by their first question

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 13:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column(
                "variant_of", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
            )
        )
        batch.add_column(
            sa.Column("active", sa.Boolean(), server_default=sa.true(), nullable=False)
        )
        batch.create_foreign_key(
            op.f("fk_messages_variant_of_messages"),
            "messages",
            ["variant_of"],
            ["id"],
            ondelete="CASCADE",
        )
    _group_earlier_regenerations()
    _name_untitled_conversations()


def _group_earlier_regenerations() -> None:
    """Before this revision a regenerated answer was stored right after the one it replaced:
    consecutive answers of a conversation become variants of the first, the last one active."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT id, conversation_id, role FROM messages "
            "ORDER BY conversation_id, created_at, id"
        )
    ).all()
    root: int | None = None
    previous: tuple[str, str] | None = None
    updates: list[dict[str, object]] = []
    for message_id, conversation_id, role in rows:
        if role == "assistant" and previous == (conversation_id, "assistant") and root is not None:
            updates.append({"id": message_id, "root": root})
        elif role == "assistant":
            root = message_id
        previous = (conversation_id, role)
    if not updates:
        return
    conn.execute(sa.text("UPDATE messages SET variant_of = :root WHERE id = :id"), updates)
    roots = sorted({u["root"] for u in updates}, key=str)
    latest = {u["root"]: u["id"] for u in updates}  # rows came in order: the last one wins
    conn.execute(
        sa.text("UPDATE messages SET active = false WHERE id = :id OR variant_of = :id"),
        [{"id": r} for r in roots],
    )
    conn.execute(
        sa.text("UPDATE messages SET active = true WHERE id = :id"),
        [{"id": latest[r]} for r in roots],
    )


def _name_untitled_conversations() -> None:
    """Conversations left untitled before (a stopped or failed first answer, or a slow title)
    get the first words of their first question, as new ones now do at once."""
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT c.id, m.content FROM conversations c JOIN messages m ON m.id = ("
            " SELECT m2.id FROM messages m2 WHERE m2.conversation_id = c.id AND m2.role = 'user'"
            " ORDER BY m2.created_at, m2.id LIMIT 1)"
            " WHERE c.title IS NULL"
        )
    ).all()
    titles = []
    for conversation_id, question in rows:
        title = " ".join(str(question).split()[:8])  # app.services.chat_store.fallback_title
        if len(title) > 80:
            title = title[:79] + "…"
        if title:
            titles.append({"id": conversation_id, "title": title})
    if titles:
        conn.execute(
            sa.text("UPDATE conversations SET title = :title WHERE id = :id AND title IS NULL"),
            titles,
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(op.f("fk_messages_variant_of_messages"), type_="foreignkey")
        batch.drop_column("active")
        batch.drop_column("variant_of")
