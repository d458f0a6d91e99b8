"""Aligned volumes (an imaged volume of tissue) and datastacks (a volume + a segmentation + a
set of annotation tables), as the info service publishes them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from ..errors import AlignedVolumeNotFound, Conflict, DatastackNotFound, describe_choices
from ..storage import LIVE_METADATA, LiveStore

aligned_volumes = sa.Table(
    "aligned_volumes",
    LIVE_METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, unique=True, nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("display_name", sa.String, nullable=False, default=""),
    sa.Column("image_source", sa.String, nullable=False, default=""),
)

datastacks = sa.Table(
    "datastacks",
    LIVE_METADATA,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("aligned_volume_id", sa.ForeignKey("aligned_volumes.id"), nullable=False),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("segmentation_table", sa.String, nullable=False),
    sa.Column("synapse_table", sa.String),
    sa.Column("soma_table", sa.String),
    sa.Column("viewer_site", sa.String),
    sa.Column("viewer_resolution_x", sa.Float, nullable=False, default=4.0),
    sa.Column("viewer_resolution_y", sa.Float, nullable=False, default=4.0),
    sa.Column("viewer_resolution_z", sa.Float, nullable=False, default=40.0),
    sa.Column("skeleton_source", sa.String),
    sa.Column("public", sa.Boolean, nullable=False, default=True),
    sa.Column("extra", sa.JSON, nullable=False, default=dict),
)

#: A datastack with its aligned volume in one query (every request resolves its datastack
#: first), the volume's columns labelled ``av_<column>``; built once, the name bound.
_DATASTACK_WITH_VOLUME = sa.select(
    datastacks, *(c.label(f"av_{c.name}") for c in aligned_volumes.columns)
).join(
    aligned_volumes, aligned_volumes.c.id == datastacks.c.aligned_volume_id
).where(datastacks.c.name == sa.bindparam("name"))


@dataclass(frozen=True)
class AlignedVolume:
    name: str
    id: int = 0
    description: str = ""
    display_name: str = ""
    image_source: str = ""


@dataclass(frozen=True)
class Datastack:
    name: str
    aligned_volume: AlignedVolume
    segmentation_table: str
    description: str = ""
    synapse_table: str | None = None
    soma_table: str | None = None
    viewer_site: str | None = None
    viewer_resolution: tuple[float, float, float] = (4.0, 4.0, 40.0)
    skeleton_source: str | None = None
    public: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def info(self, local_server: str) -> dict[str, Any]:
        """The datastack info JSON caveclient reads (``/info/api/v2/datastack/full/{ds}``).

        ``local_server`` is where this server is reached; caveclient sends materialize,
        annotation and chunkedgraph requests there."""
        vx, vy, vz = self.viewer_resolution
        return {
            "aligned_volume": asdict(self.aligned_volume),
            "description": self.description,
            "local_server": local_server,
            "segmentation_source": (
                f"graphene://{local_server}/segmentation/table/{self.segmentation_table}"
            ),
            "synapse_table": self.synapse_table,
            "soma_table": self.soma_table,
            "viewer_site": self.viewer_site,
            "viewer_resolution_x": vx,
            "viewer_resolution_y": vy,
            "viewer_resolution_z": vz,
            "analysis_database": None,
            "skeleton_source": self.skeleton_source,
            "datastack": self.name,
            **self.extra,
        }


class InfoService:
    """Reads and writes aligned volumes and datastacks in the live store."""

    def __init__(self, live: LiveStore) -> None:
        self.live = live

    def add_aligned_volume(self, volume: AlignedVolume) -> AlignedVolume:
        with self.live.begin() as conn:
            if conn.execute(
                sa.select(aligned_volumes.c.id).where(aligned_volumes.c.name == volume.name)
            ).first():
                raise Conflict(f"aligned volume {volume.name!r} already exists")
            values = asdict(volume)
            if not values["id"]:
                values.pop("id")
            new_id = conn.execute(aligned_volumes.insert().values(**values)).inserted_primary_key
        return AlignedVolume(**{**asdict(volume), "id": int(new_id[0])})

    def add_datastack(self, datastack: Datastack) -> Datastack:
        volume = self.aligned_volume(datastack.aligned_volume.name)
        vx, vy, vz = datastack.viewer_resolution
        with self.live.begin() as conn:
            if conn.execute(
                sa.select(datastacks.c.name).where(datastacks.c.name == datastack.name)
            ).first():
                raise Conflict(f"datastack {datastack.name!r} already exists")
            conn.execute(
                datastacks.insert().values(
                    name=datastack.name,
                    aligned_volume_id=volume.id,
                    description=datastack.description,
                    segmentation_table=datastack.segmentation_table,
                    synapse_table=datastack.synapse_table,
                    soma_table=datastack.soma_table,
                    viewer_site=datastack.viewer_site,
                    viewer_resolution_x=vx,
                    viewer_resolution_y=vy,
                    viewer_resolution_z=vz,
                    skeleton_source=datastack.skeleton_source,
                    public=datastack.public,
                    extra=datastack.extra,
                )
            )
        return self.datastack(datastack.name)

    def aligned_volume(self, name: str) -> AlignedVolume:
        with self.live.connect() as conn:
            row = conn.execute(
                sa.select(aligned_volumes).where(aligned_volumes.c.name == name)
            ).mappings().first()
        if row is None:
            raise AlignedVolumeNotFound(
                f"unknown aligned volume {name!r}; known: "
                f"{describe_choices(self.aligned_volume_names())}"
            )
        return AlignedVolume(**row)

    def aligned_volume_names(self) -> list[str]:
        with self.live.connect() as conn:
            return list(conn.execute(sa.select(aligned_volumes.c.name)).scalars())

    def datastack_names(self) -> list[str]:
        with self.live.connect() as conn:
            return sorted(conn.execute(sa.select(datastacks.c.name)).scalars())

    def datastack(self, name: str) -> Datastack:
        with self.live.connect() as conn:
            row = conn.execute(_DATASTACK_WITH_VOLUME, {"name": name}).mappings().first()
        if row is None:
            raise DatastackNotFound(
                f"unknown datastack {name!r}; known datastacks: "
                f"{describe_choices(self.datastack_names())}",
                datastack=name,
            )
        return Datastack(
            name=row["name"],
            aligned_volume=AlignedVolume(**{c.name: row[f"av_{c.name}"]
                                             for c in aligned_volumes.columns}),
            segmentation_table=row["segmentation_table"],
            description=row["description"],
            synapse_table=row["synapse_table"],
            soma_table=row["soma_table"],
            viewer_site=row["viewer_site"],
            viewer_resolution=(
                row["viewer_resolution_x"],
                row["viewer_resolution_y"],
                row["viewer_resolution_z"],
            ),
            skeleton_source=row["skeleton_source"],
            public=row["public"],
            extra=dict(row["extra"] or {}),
        )

    def set_public(self, name: str, public: bool) -> None:
        self.datastack(name)
        with self.live.begin() as conn:
            conn.execute(datastacks.update().where(datastacks.c.name == name)
                         .values(public=public))

    def datastacks_of_volume(self, aligned_volume: str) -> list[Datastack]:
        return [
            ds for ds in map(self.datastack, self.datastack_names())
            if ds.aligned_volume.name == aligned_volume
        ]
