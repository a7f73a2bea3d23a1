"""User data: profiles, the social graph, preferences and engagement history (pure, no Ray)."""

from xserve.users.history import EngagementSequence
from xserve.users.store import UserStore, event_user_ids

__all__ = ["EngagementSequence", "UserStore", "event_user_ids"]
