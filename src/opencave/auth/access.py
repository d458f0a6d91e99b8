"""Access decisions that combine users with datastacks and tables."""

from __future__ import annotations

from ..annotation.tables import AnnotationTable
from ..info import Datastack, InfoService
from .service import AuthService, Level, User


class Access:
    """Checks a user's right to a datastack, an aligned volume's tables, or one table."""

    def __init__(self, auth: AuthService, info: InfoService) -> None:
        self.auth = auth
        self.info = info

    def datastack(self, user: User, name: str, level: Level = Level.VIEW) -> Datastack:
        datastack = self.info.datastack(name)
        self.auth.require_datastack(user, name, datastack.public, level)
        return datastack

    def datastack_level(self, user: User, datastack: Datastack) -> Level:
        return self.auth.datastack_level(user, datastack.name, datastack.public)

    def volume_level(self, user: User, aligned_volume: str) -> Level:
        """A user's strongest right over the datastacks built on an aligned volume."""
        self.info.aligned_volume(aligned_volume)
        levels = [self.datastack_level(user, d)
                  for d in self.info.datastacks_of_volume(aligned_volume)]
        return max(levels, default=Level.ADMIN if user.admin else Level.NONE)

    def require_volume(self, user: User, aligned_volume: str, level: Level) -> None:
        if self.volume_level(user, aligned_volume) < level:
            what = "read" if level == Level.VIEW else "write to"
            self.auth.deny(user, f"you may not {what} aligned volume {aligned_volume!r}")

    def require_segmentation(self, user: User, table_id: str, level: Level) -> None:
        """Reading (VIEW) or editing (EDIT) a segmentation is allowed through any datastack
        built on it that grants the user that much."""
        stacks = [self.info.datastack(n) for n in self.info.datastack_names()]
        best = max((self.datastack_level(user, d) for d in stacks
                    if d.segmentation_table == table_id), default=Level.NONE)
        if max(best, Level.ADMIN if user.admin else Level.NONE) < level:
            what = "read" if level == Level.VIEW else "edit"
            self.auth.deny(user, f"you may not {what} segmentation {table_id!r}")

    def may_read(self, user: User, table: AnnotationTable, level: Level) -> bool:
        return self.auth.may_use_table(user, table.read_permission, table.user_id, level,
                                       Level.VIEW)

    def require_table(self, user: User, table: AnnotationTable, level: Level,
                      needed: Level) -> None:
        permission = table.read_permission if needed == Level.VIEW else table.write_permission
        self.auth.require_table(user, table.table_name, permission, table.user_id, level,
                                needed)

    def require_owner(self, user: User, table: AnnotationTable) -> None:
        if not (user.admin or user.user_id == table.user_id):
            self.auth.deny(user, f"only the owner of {table.table_name!r} or an admin may "
                                  "change or delete it")
