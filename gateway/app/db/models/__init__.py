"""Every table, imported here so `Base.metadata` is complete for Alembic and the tests."""

from app.db.models.api_key import ApiKey, KeyScope
from app.db.models.conversation import Conversation
from app.db.models.manager import ManagerCommand, ManagerLease, ManagerNode
from app.db.models.message import Message
from app.db.models.request_log import RequestLog
from app.db.models.user import Role, User
from app.db.models.user_settings import UserSettings

__all__ = [
    "ApiKey",
    "Conversation",
    "KeyScope",
    "ManagerCommand",
    "ManagerLease",
    "ManagerNode",
    "Message",
    "RequestLog",
    "Role",
    "User",
    "UserSettings",
]
