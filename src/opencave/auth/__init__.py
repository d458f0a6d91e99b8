"""Users, groups, tokens and who may do what."""

from .access import Access
from .service import ANONYMOUS, SYSTEM, AuthService, Level, User

__all__ = ["ANONYMOUS", "SYSTEM", "Access", "AuthService", "Level", "User"]
