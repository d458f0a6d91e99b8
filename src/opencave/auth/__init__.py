"""Users, groups, tokens and who may do what."""

from .access import Access
from .service import ANONYMOUS, AuthService, Level, User

__all__ = ["ANONYMOUS", "Access", "AuthService", "Level", "User"]
