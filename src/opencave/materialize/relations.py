"""Relations: the things a query reads — a table at a version (its snapshot) today, views
and live deltas later — described by their columns and how to scan them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from ..errors import InvalidRequest, describe_choices
from ..schemas import Column, Role
from ..storage.segments import serving_keys
from .snapshots import TableSnapshot

if TYPE_CHECKING:
    from ..annotation import AnnotationTable
    from .changes import Changes

_SIMPLE_HIDDEN = frozenset({"deleted"})
_JOIN_HIDDEN = frozenset({"deleted", "superceded_id"})


@dataclass(frozen=True)
class Relation:
    """A named set of rows with typed columns, positions in ``voxel_resolution`` units."""

    name: str
    columns: tuple[Column, ...]
    voxel_resolution: tuple[float, float, float]
    snapshot: TableSnapshot | None = None
    cluster_key: str = "id"
    #: Changes on top of the snapshot, in memory (live queries at a timestamp).
    live: Changes | None = None
    #: The table owner's notice, returned with every answer that reads it.
    notice: str | None = None
    extra: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    @cached_property
    def by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    @classmethod
    def of_table(cls, table: AnnotationTable, snapshot: TableSnapshot | None, *,
                 live: Changes | None = None) -> Relation:
        return cls(table.table_name, table.schema.columns(), table.voxel_resolution, snapshot,
                   table.cluster_key, live=live, notice=table.notice_text)

    @cached_property
    def serving_keys(self) -> tuple[str, ...]:
        return serving_keys(self.columns, self.cluster_key)

    @cached_property
    def point_columns(self) -> dict[str, tuple[Column, Column, Column]]:
        """``{"pt_position": (x, y, z columns)}`` for every point."""
        groups: dict[str, list[Column]] = {}
        for c in self.columns:
            if c.role is Role.POSITION:
                groups.setdefault(c.name[:-2], []).append(c)
        return {k: (v[0], v[1], v[2]) for k, v in groups.items()}

    def public_names(self) -> list[str]:
        """Column names as clients use them in filters and selections (points by their
        position name, e.g. ``pt_position``)."""
        names: list[str] = []
        for c in self.columns:
            if c.role is Role.POSITION:
                base = c.name[:-2]
                if base not in names:
                    names.append(base)
            elif c.name != "deleted":
                names.append(c.name)
        return names

    def column(self, name: str, *, purpose: str) -> Column:
        try:
            return self.by_name[name]
        except KeyError:
            raise InvalidRequest(
                f"{purpose}: table {self.name!r} has no column {name!r}; its columns are "
                f"{describe_choices(self.public_names(), 60)}",
                table=self.name, column=name,
            ) from None

    def points(self, name: str, *, purpose: str) -> tuple[Column, Column, Column]:
        try:
            return self.point_columns[name]
        except KeyError:
            raise InvalidRequest(
                f"{purpose}: table {self.name!r} has no point column {name!r}; its points "
                f"are {describe_choices(self.point_columns)}",
                table=self.name, column=name,
            ) from None

    def output_columns(self, *, join: bool) -> list[Column]:
        """Columns returned when the client selects nothing: CRUD columns as the original
        serves them (``superceded_id`` only in simple queries, never ``deleted``)."""
        hidden = _JOIN_HIDDEN if join else _SIMPLE_HIDDEN
        return [c for c in self.columns if c.name not in hidden]

    def select(self, names: Sequence[object], *, join: bool) -> list[Column]:
        """Resolve client column names (``pt_position``, ``pt_root_id``, …) to stored columns,
        in the table's column order. Selecting a root id also returns its supervoxel id, so
        that root ids can be refreshed to another timestamp later."""
        wanted: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise InvalidRequest(f"select_columns entries must be column names, got {name!r}")
            if name in self.point_columns:
                wanted.update(c.name for c in self.point_columns[name])
                continue
            column = self.column(name, purpose="select_columns")
            wanted.add(column.name)
            if column.role is Role.ROOT:
                wanted.add(column.name.removesuffix("root_id") + "supervoxel_id")
        return [c for c in self.output_columns(join=join) if c.name in wanted]
