"""Command line: thin click commands that parse, call the library and translate errors.

Exit codes: 0 every input done (or already up to date), 1 a runtime failure (some input
failed), 2 a usage error (bad option, no images found).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from tilecolor.blending import Blend
from tilecolor.errors import CheckpointError, ConfigError, TilecolorError
from tilecolor.io import FORMATS

log = logging.getLogger("tilecolor")


def _setup_logging(verbose: int, quiet: int) -> None:
    import distributed  # noqa: F401  (configures its loggers on import; adjusted below)

    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s", force=True)
    # distributed configures its own loggers at INFO; keep them to warnings unless -vv
    quiet_level = logging.DEBUG if verbose >= 2 else max(level, logging.WARNING)
    for name in ["distributed", *logging.root.manager.loggerDict]:
        if name.startswith("distributed"):
            logging.getLogger(name).setLevel(quiet_level)


@click.group()
@click.version_option(package_name="tilecolor")
def main() -> None:
    """Colorize grayscale images of any size with a tiled pix2pix generator."""


@main.command()
@click.option("--input", "input_path", required=True,
              type=click.Path(exists=True, path_type=Path),
              help="Folder of grayscale images (TIFF, PNG, JPEG), or one image.")
@click.option("--output", "output_dir", type=click.Path(path_type=Path),
              help="Output folder [default: <input>-colorized beside the input].")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Generator checkpoint directory [default: the bundled model].")
@click.option("--tile", default=256, show_default=True, help="Tile side in pixels.")
@click.option("--stride", default=128, show_default=True,
              help="Step between tiles, 0 < stride <= tile (the paper: 32 and 256).")
@click.option("--blend", type=click.Choice([b.value for b in Blend]), default="cosine",
              show_default=True, help="How overlaps are merged.")
@click.option("--block", default=2048, show_default=True,
              help="Pixels per side of a Dask block (memory per task scales with it).")
@click.option("--batch-size", default=16, show_default=True, help="Tiles per generator call.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format [default: the input's].")
@click.option("--workers", default=1, show_default=True,
              help="Worker processes of the embedded LocalCluster.")
@click.option("--threads", type=int, help="torch threads per worker [default: cores/workers].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: inference tasks ask for the GPU=1 resource.")
@click.option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--dashboard-address", default="127.0.0.1:8787", show_default=True,
              help="Dashboard of the embedded LocalCluster.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs, recompute all.")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", count=True)
def run(input_path: Path, output_dir: Path | None, checkpoint: Path | None, tile: int,
        stride: int, blend: str, block: int, batch_size: int, fmt: str | None, workers: int,
        threads: int | None, device: str, scheduler: str | None, dashboard_address: str,
        overwrite: bool, verbose: int, quiet: int) -> None:
    """Colorize every image in INPUT into OUTPUT."""
    from tilecolor.checkpoint import default_checkpoint
    from tilecolor.cluster import connect
    from tilecolor.engine import Settings
    from tilecolor.pipeline import find_inputs, run_batch
    from tilecolor.predict import default_threads, make_predictor

    _setup_logging(verbose, quiet)
    try:
        settings = Settings(tile=tile, stride=stride, blend=Blend(blend), block=block,
                            batch_size=batch_size,
                            resources={"GPU": 1} if device == "cuda" else None)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    if workers < 1:
        raise click.BadParameter(f"must be >= 1, got {workers}", param_hint="--workers")
    inputs = find_inputs(input_path)
    if not inputs:
        raise click.UsageError(f"no TIFF, PNG or JPEG images in {input_path}")
    out_dir = output_dir or input_path.parent / f"{input_path.stem}-colorized"
    try:
        predict = make_predictor(checkpoint or default_checkpoint(), device=device,
                                 threads=threads or (None if scheduler else
                                                     default_threads(workers)))
    except CheckpointError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    log.debug("checkpoint %s (sha256 %s)", predict.checkpoint, predict.digest[:12])
    try:
        with connect(scheduler, workers=workers, dashboard_address=dashboard_address,
                     gpus=1 if device == "cuda" else 0) as client:
            click.echo(f"dashboard: {client.dashboard_link}", err=True)
            results = run_batch(client, inputs, out_dir, settings, predict, predict.digest,
                                fmt=fmt, overwrite=overwrite, progress=quiet == 0)
    except TilecolorError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:  # unreachable scheduler, port in use, disk full...
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    failed = [r for r in results if r.status == "failed"]
    done = sum(r.status == "done" for r in results)
    skipped = sum(r.status == "skipped" for r in results)
    click.echo(f"{done} colorized, {skipped} up to date, {len(failed)} failed -> {out_dir}",
               err=True)
    for r in failed:
        click.echo(f"  failed: {r.error}", err=True)
    sys.exit(1 if failed else 0)
