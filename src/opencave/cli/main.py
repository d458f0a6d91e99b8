"""``opencave serve / demo / synth / materialize``."""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from ..errors import OpenCaveError
from ..materialize.schedule import parse_daily_time
from ..settings import Settings, parse_size
from ..storage.files import DataDir

if TYPE_CHECKING:
    from ..instance import OpenCave
    from ..materialize.versions import Version

app = typer.Typer(help="opencave: a self-hostable Connectome Annotation Versioning Engine.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)

DataOption = Annotated[Path, typer.Option("--data", help="The data directory.")]
HostOption = Annotated[str, typer.Option(help="Interface to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.")]
DEMO_SYNAPSES = 1_000_000


def main() -> None:
    try:
        app()
    except OpenCaveError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise SystemExit(2) from None


@app.command()
def serve(data: DataOption, host: HostOption = "127.0.0.1", port: PortOption = 8000,
          row_cap: Annotated[int | None, typer.Option(
              help="Cap rows per query like the original (default: no cap).")] = None,
          materialize_at: Annotated[str | None, typer.Option(
              help="Make a version of every datastack daily at this UTC time, e.g. 08:10."
          )] = None,
          version_lifetime_days: Annotated[int | None, typer.Option(
              help="Days new versions stay listed (default: forever).")] = None,
          result_cache: Annotated[str | None, typer.Option(
              help="Disk for results kept for repeated queries, e.g. 10GiB; 0 for none "
                   "(default 2GiB).")] = None) -> None:
    """Serve a data directory over the CAVE-compatible HTTP API."""
    overrides = {"row_cap": row_cap, "materialize_at": materialize_at,
                 "version_lifetime_days": version_lifetime_days,
                 "result_cache_bytes": None if result_cache is None
                 else parse_size(result_cache, "--result-cache")}
    settings = replace(Settings(data_dir=data),
                       **{k: v for k, v in overrides.items() if v is not None})
    if settings.materialize_at:
        parse_daily_time(settings.materialize_at)
    _serve(settings, host, port)


DatastackOption = Annotated[str, typer.Option(help="The datastack.")]


@app.command()
def materialize(data: DataOption, datastack: DatastackOption = "minnie65_public",
                at: Annotated[str | None, typer.Option(
                    help="Timestamp of the version (ISO 8601 or POSIX seconds; default now)."
                )] = None,
                version: Annotated[int | None, typer.Option(
                    help="Its number (default: the next one).")] = None) -> None:
    """Create a version of a datastack from the live state. Works while `opencave serve`
    runs on the same data directory; the server lists the version as soon as it exists."""
    from ..timestamps import parse_timestamp

    with _instance(data) as cave, console.status(f"materializing {datastack} …"):
        report = cave.new_version(datastack, parse_timestamp(at) if at else None, version)
    changed = sum(report.rows_rewritten.values())
    typer.echo(f"version {report.version.version} at {report.version.time_stamp.isoformat()}: "
               f"{changed:,} rows rewritten, {report.bytes_written / 1e6:,.1f} MB written")


@app.command()
def compact(data: DataOption, datastack: DatastackOption = "minnie65_public") -> None:
    """Compact the versions of a datastack made before compaction existed: each table's
    delta segments merged into fewer parts (same rows, shared between versions). Safe
    beside a running server, which reads the compacted parts after a restart; then
    ``opencave gc`` removes the replaced files."""
    from ..progress import steps

    with _instance(data) as cave, steps() as bar:
        task = bar.task(f"compacting {datastack}", len(cave.versions.available(
            datastack, include_expired=True)))

        def report(version: Version, before: int, after: int) -> None:
            bar.advance(task)
            console.print(f"version {version.version}: {before} parts → {after}")

        written = cave.compact(datastack, on_version=report)
    typer.echo(f"compacted {datastack}: {written / 1e6:,.1f} MB written")


@app.command("rewrite-copies")
def rewrite_copies(data: DataOption) -> None:
    """Write anew the serving copies an older opencave wrote with another layout (DuckDB's
    256 KiB blocks, before 64 KiB), from their Parquet records: the same rows, read faster.
    Safe beside a running server, which reads the new copies after a restart; needs free
    disk for the largest copy."""
    from ..progress import steps

    with _instance(data) as cave, steps() as bar:
        task = None

        def report(path: str, rewritten: bool, files: int) -> None:
            nonlocal task
            if task is None:
                task = bar.task("rewriting serving copies", files)
            bar.advance(task)
            if rewritten:
                console.print(f"rewrote the copy of {path}")

        count = cave.rewrite_serving_copies(on_file=report)
    typer.echo(f"rewrote {count:,} serving copies")


@app.command()
def gc(data: DataOption,
       dry_run: Annotated[bool, typer.Option("--dry-run", help="List, remove nothing.")] = False
       ) -> None:
    """Remove the files no version uses: segments and masks compaction replaced, files of
    failed or killed runs, temporaries of killed writers. Every version keeps its rows.
    Refused while another opencave process (a server, a build, a materialization) uses the
    directory: a running server may still read replaced files."""
    with _instance(data) as cave:
        garbage = cave.collect_garbage(dry_run=dry_run)
    for path in garbage.paths if dry_run else ():
        console.print(cave.data.relative(path))
    done = "removed" if garbage.removed else "would remove (dry run)"
    typer.echo(f"{done} {len(garbage.paths):,} files no version uses: "
               f"{garbage.bytes / 1e6:,.1f} MB")


@app.command()
def diff(data: DataOption, table: Annotated[str, typer.Option(help="The table.")],
         before: Annotated[str, typer.Option("--from", help="Version number or timestamp.")],
         after: Annotated[str, typer.Option("--to", help="Version number or timestamp.")],
         datastack: DatastackOption = "minnie65_public",
         out: Annotated[Path | None, typer.Option(help="Write all rows to this Parquet file."
                                                  )] = None) -> None:
    """What changed in a table between two versions or timestamps."""
    import pyarrow.parquet as pq

    from ..auth import SYSTEM
    from ..timestamps import parse_timestamp

    def instant(text: str) -> int | datetime:
        return int(text) if text.isdigit() and len(text) < 9 else parse_timestamp(text)

    with _instance(data) as cave:
        rows = cave.materialization().diff(datastack, table, instant(before), instant(after),
                                           user=SYSTEM)
    counts = rows.group_by("change").aggregate([("id", "count")]).to_pylist()
    summary = ", ".join(f"{c['id_count']:,} {c['change']}" for c in counts) or "no changes"
    typer.echo(f"{table} {before} → {after}: {summary}")
    if out is not None:
        pq.write_table(rows, out)
        typer.echo(f"wrote {rows.num_rows:,} rows to {out}")


versions_app = typer.Typer(help="Version policy: expiry and versions kept forever.",
                           no_args_is_help=True)
app.add_typer(versions_app, name="versions")


@versions_app.command("expire")
def versions_expire(data: DataOption, datastack: DatastackOption = "minnie65_public") -> None:
    """Expire versions whose expires_on has passed (their data stays on disk)."""
    from ..timestamps import now

    with _instance(data) as cave:
        done = cave.versions.expire(datastack, now())
    typer.echo(f"expired: {', '.join(map(str, done)) or 'none'}")


@versions_app.command("keep")
def versions_keep(data: DataOption, version: Annotated[int, typer.Argument()],
                  datastack: DatastackOption = "minnie65_public") -> None:
    """Keep a version forever (no expiry), listing it again if it had expired."""
    with _instance(data) as cave:
        cave.versions.keep(datastack, version)
    typer.echo(f"version {version} of {datastack} is kept forever")


@app.command()
def demo(data: DataOption = Path("data/demo"), host: HostOption = "127.0.0.1",
         port: PortOption = 8000,
         synapses: Annotated[int, typer.Option(help="Synapses in the demo datastack.")] =
         DEMO_SYNAPSES,
         seed: Annotated[int, typer.Option(help="Random seed.")] = 0) -> None:
    """Build the demo datastack (if the data directory has none) and serve it."""
    from ..synth import build, is_complete

    if not is_complete(data):
        console.print(f"Building the synthetic minnie65_public ({synapses:,} synapses) "
                      f"in {data} …")
        build(data, synapses_total=synapses, seed=seed)
    url = f"http://{host}:{port}"
    typer.echo("\nConnect caveclient to it with:\n")
    typer.echo("    from caveclient import CAVEclient")
    typer.echo(f'    client = CAVEclient("minnie65_public", server_address="{url}")')
    typer.echo("    client.materialize.get_versions()\n")
    _serve(Settings(data_dir=data), host, port)


@app.command()
def synth(out: Annotated[Path, typer.Option("--out", help="Directory to create.")],
          synapses: Annotated[int, typer.Option(help="Number of synapses.")] = DEMO_SYNAPSES,
          seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
          memory_limit: Annotated[str, typer.Option(
              help="Memory DuckDB may use before spilling to disk.")] = "4GB") -> None:
    """Generate the deterministic synthetic minnie65_public datastack. Interrupted (Ctrl-C,
    a crash), the same command resumes after the last step that finished."""
    from ..synth import build

    if synapses < 10_000:
        raise typer.BadParameter("use at least 10,000 synapses", param_hint="--synapses")
    report = build(out, synapses_total=synapses, seed=seed, memory_limit=memory_limit)
    typer.echo(f"{out}: {report.synapses:,} synapses, {report.cells:,} nuclei, "
               f"{report.supervoxels:,} supervoxels, {report.edits:,} edits, "
               f"versions {', '.join(map(str, report.versions))}")


token_app = typer.Typer(help="Bearer tokens for users (created if new).", no_args_is_help=True)
group_app = typer.Typer(help="Groups of users and what they may do.", no_args_is_help=True)
datastack_app = typer.Typer(help="Datastacks: create, make private or public.",
                            no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(group_app, name="group")
app.add_typer(datastack_app, name="datastack")
UserOption = Annotated[str, typer.Option("--user", help="User name.")]


@token_app.command("create")
def token_create(data: DataOption, user: UserOption,
                 admin: Annotated[bool, typer.Option(help="Make the user an admin.")] = False,
                 description: Annotated[str, typer.Option(help="What it is for.")] = "") -> None:
    """Create a token; it is printed alone on the last line (only its hash is stored)."""
    with _instance(data) as cave:
        account = cave.auth.ensure_user(user, admin=admin)
        token = cave.auth.create_token(account, description)
    typer.echo(f"token for {account.name} (user id {account.id}{', admin' if admin else ''}):")
    typer.echo(token)


@token_app.command("revoke")
def token_revoke(data: DataOption, token: Annotated[str, typer.Argument()]) -> None:
    """Revoke a token at once (the running server rejects it from its next request)."""
    with _instance(data) as cave:
        cave.auth.revoke_token(token)
    typer.echo("revoked")


@group_app.command("add-user")
def group_add_user(data: DataOption, group: Annotated[str, typer.Argument()],
                   user: UserOption) -> None:
    """Put a user (created if new) in a group (created if new)."""
    with _instance(data) as cave:
        cave.auth.add_to_group(cave.auth.ensure_user(user), group)
    typer.echo(f"{user} is in {group}")


@group_app.command("grant")
def group_grant(data: DataOption, group: Annotated[str, typer.Argument()],
                datastack: Annotated[str, typer.Argument()],
                level: Annotated[str, typer.Option(
                    help="view, edit, admin or none")] = "edit") -> None:
    """Let a group read (view) or also write and edit (edit) a datastack."""
    from ..auth import Level

    try:
        chosen = Level[level.upper()]
    except KeyError:
        raise typer.BadParameter("use view, edit, admin or none", param_hint="--level") from None
    with _instance(data) as cave:
        cave.info.datastack(datastack)
        cave.auth.grant(datastack, group, chosen)
    typer.echo(f"{group}: {chosen.name.lower()} on {datastack}")


@datastack_app.command("create")
def datastack_create(data: DataOption, name: Annotated[str, typer.Argument()],
                     like: Annotated[str, typer.Option(
                         help="Copy volume, segmentation and tables of this datastack.")],
                     private: Annotated[bool, typer.Option(help="Only granted groups.")] = True,
                     description: Annotated[str, typer.Option()] = "") -> None:
    """A new datastack on the same aligned volume and segmentation as another one."""
    from dataclasses import replace as copy_with

    with _instance(data) as cave:
        model = cave.info.datastack(like)
        cave.info.add_datastack(copy_with(model, name=name, public=not private,
                                          description=description or model.description))
    typer.echo(f"datastack {name} ({'private' if private else 'public'})")


@datastack_app.command("visibility")
def datastack_visibility(data: DataOption, name: Annotated[str, typer.Argument()],
                         public: Annotated[bool, typer.Option("--public/--private")]) -> None:
    """Make a datastack public (anyone may read) or private (granted groups only)."""
    with _instance(data) as cave:
        cave.info.set_public(name, public)
    typer.echo(f"{name} is {'public' if public else 'private'}")


view_app = typer.Typer(help="Views: named read-only queries served like tables.",
                       no_args_is_help=True)
app.add_typer(view_app, name="view")


@view_app.command("add")
def view_add(data: DataOption, name: Annotated[str, typer.Argument()],
             spec: Annotated[str, typer.Option(
                 help='JSON: {"tables": [[table, column], [table, column]], "left_join": '
                      'bool, "select_column_map": {...}, "suffix_map": {...}, '
                      '"filters": {...}}, or @file.json')],
             datastack: Annotated[str, typer.Option()] = "minnie65_public",
             description: Annotated[str, typer.Option()] = "") -> None:
    """Register a view; it is checked against the latest version's tables."""
    import json

    text = Path(spec[1:]).read_text() if spec.startswith("@") else spec
    try:
        definition = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not JSON: {exc}", param_hint="--spec") from None
    from ..materialize.views import View

    with _instance(data) as cave:
        cave.info.datastack(datastack)
        view = View.from_spec(datastack, name, definition, description=description)
        latest = cave.versions.latest(datastack)
        if latest is not None:
            cave.materialization().check_view(view, latest.version)
        cave.views.add(view)
    typer.echo(f"view {view.name} on {datastack}")


@contextmanager
def _instance(data: Path) -> Iterator[OpenCave]:
    from ..instance import OpenCave

    if not DataDir(data).exists():
        raise typer.BadParameter(f"{data} holds no opencave data", param_hint="--data")
    cave = OpenCave(Settings(data_dir=data))
    try:
        yield cave
    finally:
        cave.close()


#: glibc's malloc arenas for the server process. By default it makes up to 8 per core as
#: threads contend, and each keeps what its threads freed: after Q5's 16 clients at 3.4e8
#: the server held 1.8–1.9 GiB at rest and streamed the whole table at 2.1 GiB; with two
#: arenas 1.7 and 1.94 GiB, and no slower. ``MALLOC_ARENA_MAX`` in the environment wins.
SERVER_MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def _limit_malloc_arenas(count: int) -> None:
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: left as it is
        ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, count)


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ..api import create_app
    from ..instance import OpenCave

    _limit_malloc_arenas(SERVER_MALLOC_ARENAS)  # before any thread starts
    cave = OpenCave(settings)
    uvicorn.run(create_app(cave), host=host, port=port, log_level="info")
