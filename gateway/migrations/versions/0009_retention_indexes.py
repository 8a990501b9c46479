"""retention: indexes the RETENTION_DAYS purge needs so that none of its deletes scans a table

- conversations(updated_at): the purge picks conversations by last activity (the sidebar index
  starts with user_id, so it cannot serve that);
- messages(variant_of): deleting a message checks the variants that name it (ON DELETE CASCADE);
- requests(conversation_id): deleting a conversation sets its usage rows' link to NULL.

Revision ID: 0009
Revises: 0007
Create Date: 2026-11-26 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_conversations_updated_at", "conversations", ["updated_at"])
    op.create_index("ix_messages_variant_of", "messages", ["variant_of"])
    op.create_index("ix_requests_conversation_id", "requests", ["conversation_id"])


def downgrade() -> None:
    op.drop_index("ix_requests_conversation_id", table_name="requests")
    op.drop_index("ix_messages_variant_of", table_name="messages")
    op.drop_index("ix_conversations_updated_at", table_name="conversations")
