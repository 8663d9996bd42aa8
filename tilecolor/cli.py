"""Command line: thin click commands that parse, call the library and translate errors.

Exit codes: 0 every input done (or already up to date), 1 a runtime failure (some input
failed), 2 a usage error (bad option or job spec, no images found).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from tilecolor.blending import Blend
from tilecolor.errors import ConfigError, TilecolorError
from tilecolor.io import FORMATS

log = logging.getLogger("tilecolor")

# CLI parameter -> job-spec key
_SPEC_KEYS = {"input_path": "input", "output_dir": "output", "checkpoint": "checkpoint",
              "tile": "tile", "stride": "stride", "blend": "blend", "block": "block",
              "batch_size": "batch_size", "fmt": "format", "overwrite": "overwrite",
              "device": "device", "report": "report", "workers": "cluster.workers",
              "threads": "cluster.threads", "scheduler": "cluster.address",
              "dashboard_address": "cluster.dashboard_address"}


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
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML job spec holding any of these options; flags override it.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
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
@click.option("--report", type=click.Path(path_type=Path),
              help="Folder for the run report (JSON) and Dask performance report (HTML) "
                   "[default: <output>/.tilecolor/reports].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs, recompute all.")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", count=True)
@click.pass_context
def run(ctx: click.Context, config_path: Path | None, verbose: int, quiet: int,
        **options) -> None:
    """Colorize every image in INPUT into OUTPUT."""
    from tilecolor.config import build, load_spec

    _setup_logging(verbose, quiet)
    overrides = {}
    for name, key in _SPEC_KEYS.items():
        if config_path is None or ctx.get_parameter_source(name) != ParameterSource.DEFAULT:
            value = options[name]
            if name == "input_path":
                value = [str(value)] if value is not None else []
            elif isinstance(value, Path):
                value = str(value)
            if value is not None or config_path is None:
                overrides[key] = value
    try:
        cfg = build(load_spec(config_path) if config_path else {}, overrides)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    if not cfg.input:
        raise click.UsageError("no input: give --input or `input` in the job spec")
    sys.exit(_run(cfg, progress=quiet == 0))


def _run(cfg, *, progress: bool) -> int:
    """Execute a RunConfig; returns the exit code."""
    from tilecolor.checkpoint import default_checkpoint
    from tilecolor.cluster import connect, require_resource
    from tilecolor.engine import Settings
    from tilecolor.pipeline import find_inputs, plan_batch, run_jobs, write_report
    from tilecolor.predict import default_threads, make_predictor

    try:
        settings = Settings(tile=cfg.tile, stride=cfg.stride, blend=Blend(cfg.blend),
                            block=cfg.block, batch_size=cfg.batch_size,
                            resources={"GPU": 1} if cfg.device == "cuda" else None)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    inputs = find_inputs(list(cfg.input))
    if not inputs:
        raise click.UsageError(f"no TIFF, PNG or JPEG images in {', '.join(cfg.input)}")
    first = Path(cfg.input[0])
    base = first if first.is_dir() else first.parent
    out_dir = Path(cfg.output) if cfg.output else base.with_name(f"{base.name}-colorized")
    cluster = cfg.cluster
    threads = cluster.threads or (default_threads(cluster.workers)
                                  if cluster.kind == "local" else None)
    t0 = time.perf_counter()
    try:
        predict = make_predictor(cfg.checkpoint or default_checkpoint(), device=cfg.device,
                                 threads=threads)
        jobs, results = plan_batch(inputs, out_dir, settings, predict.digest,
                                   fmt=cfg.format, overwrite=cfg.overwrite)
        if jobs:
            if cfg.device == "cuda" and cluster.kind == "local" and not cluster.gpus:
                cluster = replace(cluster, gpus=1)
            report_dir = Path(cfg.report) if cfg.report else out_dir / ".tilecolor" / "reports"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            with connect(cluster) as client:
                click.echo(f"dashboard: {client.dashboard_link}", err=True)
                if settings.resources:
                    require_resource(client, "GPU")
                report_dir.mkdir(parents=True, exist_ok=True)
                from distributed import performance_report

                html = report_dir / f"run-{stamp}.html"
                with performance_report(filename=str(html)):
                    results.update(run_jobs(client, jobs, settings, predict,
                                            progress=progress))
            ordered = [results[p] for p in inputs]
            json_path = write_report(report_dir / f"run-{stamp}.json", ordered,
                                     time.perf_counter() - t0, settings, predict.digest)
            click.echo(f"report: {json_path}", err=True)
        else:
            ordered = [results[p] for p in inputs]
    except TilecolorError as e:
        click.echo(f"error: {e}", err=True)
        return 1
    except OSError as e:  # unreachable scheduler, port in use, disk full...
        click.echo(f"error: {e}", err=True)
        return 1
    failed = [r for r in ordered if r.status == "failed"]
    done = sum(r.status == "done" for r in ordered)
    skipped = sum(r.status == "skipped" for r in ordered)
    click.echo(f"{done} colorized, {skipped} up to date, {len(failed)} failed -> {out_dir}",
               err=True)
    for r in failed:
        click.echo(f"  failed: {r.error}", err=True)
    return 1 if failed else 0
