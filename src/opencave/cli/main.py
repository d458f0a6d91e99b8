"""``opencave serve / demo / synth / materialize``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..errors import OpenCaveError
from ..settings import Settings

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
              help="Cap rows per query like the original (default: no cap).")] = None) -> None:
    """Serve a data directory over the CAVE-compatible HTTP API."""
    settings = Settings(data_dir=data)
    if row_cap is not None:
        settings = replace(settings, row_cap=row_cap)
    _serve(settings, host, port)


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
    """Generate the deterministic synthetic minnie65_public datastack."""
    from ..synth import build

    if synapses < 10_000:
        raise typer.BadParameter("use at least 10,000 synapses", param_hint="--synapses")
    report = build(out, synapses_total=synapses, seed=seed, memory_limit=memory_limit)
    typer.echo(f"{out}: {report.synapses:,} synapses, {report.cells:,} nuclei, "
               f"{report.supervoxels:,} supervoxels, {report.edits:,} edits, "
               f"versions {', '.join(map(str, report.versions))}")


def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from ..api import create_app
    from ..instance import OpenCave

    cave = OpenCave(settings)
    uvicorn.run(create_app(cave), host=host, port=port, log_level="info")
