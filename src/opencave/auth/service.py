"""Users, groups, bearer tokens (stored hashed) and permissions.

Rules (see docs/auth.md):

- A datastack is public (anyone may read it) or private (members of groups granted ``view``
  on it may read; ``edit`` also lets them write annotations, edit the segmentation and
  request versions). Admins may do everything.
- A table's ``read_permission`` / ``write_permission``: ``PUBLIC`` — anyone who may read
  (write: anyone who may edit) the datastack; ``GROUP`` — the owner and users sharing a group
  with the owner; ``PRIVATE`` — the owner only.
- Anonymous users read public datastacks' public tables and nothing else.

A missing token where one is needed is a 401; a valid token without the right is a 403.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

import sqlalchemy as sa

from ..errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from ..storage import LIVE_METADATA, LiveStore, UTCDateTime
from ..timestamps import now

users = sa.Table(
    "users", LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, unique=True, nullable=False),
    sa.Column("email", sa.String),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    sa.Column("created", UTCDateTime, nullable=False),
)
groups = sa.Table(
    "groups", LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, unique=True, nullable=False),
)
group_members = sa.Table(
    "group_members", LIVE_METADATA,
    sa.Column("group_id", sa.ForeignKey("groups.id"), primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), primary_key=True),
)
tokens = sa.Table(
    "tokens", LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.ForeignKey("users.id"), nullable=False),
    sa.Column("token_hash", sa.String, unique=True, nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("revoked", UTCDateTime),
    sa.Column("description", sa.String, nullable=False, default=""),
)
datastack_grants = sa.Table(
    "datastack_grants", LIVE_METADATA,
    sa.Column("datastack", sa.String, primary_key=True),
    sa.Column("group_id", sa.ForeignKey("groups.id"), primary_key=True),
    sa.Column("level", sa.Integer, nullable=False),
)


class Level(IntEnum):
    NONE = 0
    VIEW = 1
    EDIT = 2
    ADMIN = 3


@dataclass(frozen=True)
class User:
    id: int
    name: str
    admin: bool = False
    groups: frozenset[int] = field(default_factory=frozenset)

    @property
    def anonymous(self) -> bool:
        return self.id == 0

    @property
    def user_id(self) -> str:
        """The id written into annotations and edit logs (CAVE stores it as text)."""
        return str(self.id)


ANONYMOUS = User(0, "anonymous")
#: opencave itself, for administrative work from the command line (never from a request).
SYSTEM = User(-1, "system", admin=True)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AuthService:
    def __init__(self, live: LiveStore) -> None:
        self.live = live

    # --- users, groups, tokens ---------------------------------------------------------

    def ensure_user(self, name: str, *, admin: bool = False, email: str | None = None) -> User:
        """The user called ``name``, created if new; ``admin=True`` also promotes."""
        if not name or not name.strip():
            raise InvalidRequest("a user needs a name")
        with self.live.begin() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
            if row is None:
                conn.execute(users.insert().values(name=name, email=email, admin=admin,
                                                   created=now()))
            elif admin and not row["admin"]:
                conn.execute(users.update().where(users.c.id == row["id"]).values(admin=True))
        return self.user(name)

    def user(self, name: str) -> User:
        with self.live.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.name == name)).mappings().first()
            if row is None:
                raise NotFound(f"no user {name!r}")
            return self._load(conn, row)

    def create_token(self, user: User, description: str = "") -> str:
        """A new bearer token for ``user``; only its hash is stored."""
        token = secrets.token_hex(32)
        with self.live.begin() as conn:
            conn.execute(tokens.insert().values(user_id=user.id, token_hash=hash_token(token),
                                                created=now(), description=description))
        return token

    def revoke_token(self, token: str) -> None:
        with self.live.begin() as conn:
            done = conn.execute(
                tokens.update().where(tokens.c.token_hash == hash_token(token),
                                      tokens.c.revoked.is_(None)).values(revoked=now())
            ).rowcount
        if not done:
            raise NotFound("no such active token")

    def authenticate(self, token: str | None) -> User:
        """The user a token belongs to; no token means anonymous; a bad one is a 401."""
        if not token:
            return ANONYMOUS
        with self.live.connect() as conn:
            row = conn.execute(
                sa.select(users).join(tokens, tokens.c.user_id == users.c.id).where(
                    tokens.c.token_hash == hash_token(token), tokens.c.revoked.is_(None))
            ).mappings().first()
            if row is None:
                raise Unauthorized("the token is not valid (unknown or revoked); create one "
                                   "with `opencave token create --user NAME`")
            return self._load(conn, row)

    def ensure_group(self, name: str) -> int:
        with self.live.begin() as conn:
            row = conn.execute(sa.select(groups.c.id).where(groups.c.name == name)).first()
            if row is not None:
                return int(row[0])
            return int(conn.execute(groups.insert().values(name=name)).inserted_primary_key[0])

    def add_to_group(self, user: User, group: str) -> None:
        group_id = self.ensure_group(group)
        with self.live.begin() as conn:
            exists = conn.execute(sa.select(group_members).where(
                group_members.c.group_id == group_id, group_members.c.user_id == user.id)).first()
            if exists is None:
                conn.execute(group_members.insert().values(group_id=group_id, user_id=user.id))

    def grant(self, datastack: str, group: str, level: Level) -> None:
        group_id = self.ensure_group(group)
        with self.live.begin() as conn:
            conn.execute(datastack_grants.delete().where(
                datastack_grants.c.datastack == datastack,
                datastack_grants.c.group_id == group_id))
            if level > Level.NONE:
                conn.execute(datastack_grants.insert().values(
                    datastack=datastack, group_id=group_id, level=int(level)))

    # --- decisions ---------------------------------------------------------------------

    def datastack_level(self, user: User, datastack: str, public: bool) -> Level:
        if user.admin:
            return Level.ADMIN
        granted = Level.NONE
        if user.groups:
            with self.live.connect() as conn:
                levels = conn.execute(sa.select(datastack_grants.c.level).where(
                    datastack_grants.c.datastack == datastack,
                    datastack_grants.c.group_id.in_(sorted(user.groups)))).scalars().all()
            granted = Level(max(levels, default=0))
        if public:
            granted = max(granted, Level.VIEW)
        return granted

    def require_datastack(self, user: User, datastack: str, public: bool,
                          level: Level = Level.VIEW) -> None:
        if self.datastack_level(user, datastack, public) >= level:
            return
        what = "read" if level == Level.VIEW else "edit"
        self.deny(user, f"you may not {what} datastack {datastack!r}")

    def may_use_table(self, user: User, permission: str, owner: str,
                      datastack_level: Level, needed: Level) -> bool:
        """Whether ``user`` may read (needed=VIEW) or write (needed=EDIT) a table whose
        permission for that action is ``permission`` and whose owner's user id is ``owner``."""
        if user.admin:
            return True
        if datastack_level < needed:
            return False
        if permission == "PUBLIC":
            return True
        if user.user_id == owner:
            return True
        return permission == "GROUP" and bool(user.groups & self.groups_of(owner))

    def require_table(self, user: User, table_name: str, permission: str, owner: str,
                      datastack_level: Level, needed: Level) -> None:
        if not self.may_use_table(user, permission, owner, datastack_level, needed):
            what = "read" if needed == Level.VIEW else "write to"
            self.deny(user, f"you may not {what} table {table_name!r} ({permission})")

    def groups_of(self, user_id: str) -> frozenset[int]:
        if not user_id.isdigit():
            return frozenset()
        with self.live.connect() as conn:
            return frozenset(conn.execute(sa.select(group_members.c.group_id).where(
                group_members.c.user_id == int(user_id))).scalars())

    def names(self, user_ids: Iterable[str]) -> dict[str, str]:
        ids = [int(u) for u in user_ids if str(u).isdigit()]
        with self.live.connect() as conn:
            rows = conn.execute(sa.select(users.c.id, users.c.name).where(users.c.id.in_(ids)))
            return {str(r.id): r.name for r in rows}

    @staticmethod
    def deny(user: User, message: str) -> None:
        """401 for anonymous users (a token might help), 403 otherwise."""
        if user.anonymous:
            raise Unauthorized(f"{message} without a token; send one (Authorization: Bearer …)")
        raise Forbidden(f"{message} as user {user.name!r}")

    @staticmethod
    def _load(conn: sa.Connection, row: object) -> User:
        values = dict(row)  # type: ignore[call-overload]
        member_of = frozenset(conn.execute(sa.select(group_members.c.group_id).where(
            group_members.c.user_id == values["id"])).scalars())
        return User(values["id"], values["name"], bool(values["admin"]), member_of)
