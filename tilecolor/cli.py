"""Command line: thin click commands that parse, call the library and translate errors.

Exit codes: 0 every input done (or already up to date), 1 a runtime failure (some input
failed), 2 a usage error (bad option or job spec, no images found).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
from click.core import ParameterSource

from tilecolor.config import RunConfig
from tilecolor.core.blending import Blend
from tilecolor.core.errors import ConfigError, TilecolorError, UsageError, one_line
from tilecolor.io.formats import FORMATS
from tilecolor.model.predict import PRECISIONS, Device

log = logging.getLogger("tilecolor")

_D = RunConfig()  # the defaults of `run`'s options are the run spec's


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


def entry() -> None:
    """The ``tilecolor`` command (console script, ``python -m tilecolor``): :func:`main`,
    then a quick exit. Tests invoke :func:`main` in-process instead."""
    try:
        main()
    finally:
        _quick_exit()


def _quick_exit() -> None:
    """Skip two slow ends of a finished run (1.3 s and 1 s of a 256x256 run's 6.6 s on
    the 2-core machine): the interpreter's last garbage collections over Dask's and
    bokeh's objects (frozen instead: the process is leaving), and the idle forkserver
    finalizing torch on its way out after it sees the driver gone (stopped now)."""
    import gc

    from tilecolor.cluster.forkserver import stop_worker_server

    gc.freeze()
    stop_worker_server()


@main.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              help="TOML job spec holding any of these options; flags override it.")
@click.option("--input", "input_path", type=click.Path(exists=True, path_type=Path),
              help="Folder of grayscale images (TIFF, PNG, JPEG), or one image.")
@click.option("--output", "output_dir", type=click.Path(path_type=Path),
              help="Output folder [default: <input>-colorized beside the input].")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Generator checkpoint directory [default: the bundled model].")
@click.option("--tile", default=_D.tile, show_default=True, help="Tile side in pixels.")
@click.option("--stride", default=_D.stride, show_default=True,
              help="Step between tiles, 0 < stride <= tile (the paper: 32 and 256).")
@click.option("--blend", type=click.Choice([b.value for b in Blend]), default=str(_D.blend),
              show_default=True, help="How overlaps are merged.")
@click.option("--block", default=_D.block, show_default=True,
              help="Pixels per side of a Dask block (memory per task scales with it).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per generator call [default: 8 on CPU, 32 on CUDA].")
@click.option("--render-scale", default=_D.render_scale, show_default=True,
              help="Predict chroma at this scale (1/k: 0.5 costs a quarter) and upsample it "
                   "under the full-resolution L.")
@click.option("--context", type=click.IntRange(min=0), default=_D.context, show_default=True,
              help="Global context pass (checkpoints with hint planes): colorize a copy of "
                   "the image downscaled to at most this longer side first; its colors are "
                   "every tile's hint. 0 turns it off.")
@click.option("--hint", type=click.Path(exists=True, path_type=Path),
              help="Guided mode (checkpoints with hint planes): a color image of the same "
                   "scene, any size and format, whose colors replace the context pass's; a "
                   "folder of them for a folder of inputs, matched by file name stem.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="Output format [default: the input's].")
@click.option("--workers", type=int,
              help="Worker processes of the embedded LocalCluster [default: one per core on "
                   "CPU, one per two cores (at most 8, sharing the GPU) on CUDA; at most "
                   "one per 1.5 GiB of available memory].")
@click.option("--threads", type=int, help="torch threads per worker [default: cores/workers].")
@click.option("--device", type=click.Choice([d.value for d in Device]), default=str(_D.device),
              show_default=True, help="cuda: inference tasks ask for the GPU=1 resource.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              default=str(_D.precision), show_default=True,
              help="Generator arithmetic on CUDA (autocast); auto: bf16 on CUDA, fp32 on CPU "
                   "(the only one it runs).")
@click.option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--dashboard-address", default=_D.cluster.dashboard_address, show_default=True,
              help="Dashboard of the embedded LocalCluster.")
@click.option("--report", type=click.Path(path_type=Path),
              help="Folder for the run report (JSON) and the Dask performance report (HTML, "
                   "only written when this is given: rendering it takes a second or more) "
                   "[default: JSON only, in <output>/.tilecolor/reports].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs, recompute all.")
@click.option("--max-pixels", type=int, default=_D.max_pixels, show_default=True,
              help="Reject inputs with more pixels (PNG/JPEG also stop at Pillow's "
                   "decompression-bomb limit).")
@click.option("--page", type=int, default=_D.page, show_default=True,
              help="Page of multi-page TIFFs to colorize.")
@click.option("--allow-output-in-input", is_flag=True,
              help="Allow --output to be an input folder or inside one.")
@click.option("--tls-ca-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate for a tls:// --scheduler.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Client certificate for a tls:// --scheduler.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Client private key [default: inside --tls-cert].")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", count=True)
@click.pass_context
def run(ctx: click.Context, config_path: Path | None, verbose: int, quiet: int,
        **options) -> None:
    """Colorize every image in INPUT into OUTPUT (the Python API: tilecolor.colorize)."""
    from tilecolor.api import colorize
    from tilecolor.config import run_spec

    given = {_OPTION.get(name, name): value for name, value in options.items()
             if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    try:
        spec = run_spec(given.pop("input", None), given.pop("output", None),
                        config=config_path, **given)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    if spec.cluster.kind == "local":  # the workers' imports overlap everything up to the cluster
        from tilecolor.cluster.forkserver import start_worker_server

        start_worker_server()
    _setup_logging(verbose, quiet)
    try:
        report = colorize(spec=spec, progress=quiet == 0,
                          echo=lambda line: click.echo(line, err=True))
    except UsageError as e:
        raise click.UsageError(str(e)) from e
    except (TilecolorError, OSError) as e:  # unreachable scheduler, port in use, disk full...
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    if report["report"]:
        click.echo(f"report: {report['report']}", err=True)
    totals = report["totals"]
    click.echo(f"{totals['done']} colorized, {totals['skipped']} up to date, "
               f"{totals['failed']} failed -> {report['output']}", err=True)
    for image in report["images"]:
        if image["status"] == "failed":
            click.echo(f"  failed: {one_line(image['error'])}", err=True)
    sys.exit(1 if totals["failed"] else 0)


#: `run`'s parameter names that differ from the API's option names
_OPTION = {"input_path": "input", "output_dir": "output", "fmt": "format"}


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.pass_context
def train(ctx: click.Context) -> None:
    """Train a generator (all options of `python -m tilecolor.train --help`)."""
    from tilecolor.train import main as train_main

    sys.exit(train_main(list(ctx.args)))


@main.command("eval")
@click.option("--checkpoint", type=click.Path(path_type=Path),
              help="Generator checkpoint directory [default: the bundled model].")
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of color photos (the truth).")
@click.option("--split", type=click.Choice(["all", "val"]), default="all", show_default=True,
              help="val: only the photos training held out (same rule as tilecolor train).")
@click.option("--val-count", default=4, show_default=True,
              help="Size of the validation split, as given to training.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("tilecolor-eval"),
              show_default=True, help="Folder for eval.json and sheet.png.")
@click.option("--tile", default=_D.tile, show_default=True, help="Tile side in pixels.")
@click.option("--stride", default=_D.stride, show_default=True, help="Step between tiles.")
@click.option("--blend", type=click.Choice([b.value for b in Blend]), default=str(_D.blend),
              show_default=True, help="How overlaps are merged.")
@click.option("--block", default=_D.block, show_default=True, help="Pixels per side of a block.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per generator call [default: 8 on CPU, 32 on CUDA].")
@click.option("--threads", type=int, help="torch threads of the worker [default: all cores].")
@click.option("--device", type=click.Choice([d.value for d in Device]), default=str(_D.device),
              show_default=True)
@click.option("--context", type=click.IntRange(min=0), default=_D.context, show_default=True,
              help="Longer side of the global context pass (checkpoints with hint planes); "
                   "0 turns it off.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              default=str(_D.precision), show_default=True,
              help="Generator arithmetic, as for `run` (auto: bf16 on CUDA and on CPUs with "
                   "native bf16).")
@click.option("--max-side", type=click.IntRange(min=16),
              help="Downsize each photo (Lanczos) to this longer side first [default: native].")
@click.option("--guided", type=click.IntRange(min=0), default=0, show_default=True,
              help="Also run guided mode with the truth downscaled this many times as the "
                   "--hint reference, beside its bilinear upsampling (hinted checkpoints); "
                   "photos are cropped to a multiple of it. 0: off.")
@click.option("--save-images", is_flag=True, help="Also keep the colorized PNGs in OUT/images.")
@click.option("-v", "--verbose", count=True)
@click.option("-q", "--quiet", count=True)
def evaluate_command(checkpoint: Path | None, data_dir: Path, split: str, val_count: int,
                     out_dir: Path, tile: int, stride: int, blend: str, block: int,
                     batch_size: int | None, threads: int | None, device: str,
                     context: int, precision: str, max_side: int | None, guided: int,
                     save_images: bool, verbose: int, quiet: int) -> None:
    """Measure a checkpoint on color photos (PSNR, SSIM, CIEDE2000, ab RMSE, colorfulness)
    against the gray baseline, colorizing through the same tiled engine as `run`. For a
    checkpoint with hint planes it also reports the context pass off and, with --guided,
    guided mode beside the bilinear-hint baseline."""
    from tilecolor.evaluate import evaluate, format_table, select_photos
    from tilecolor.model.predict import default_threads

    _setup_logging(verbose, quiet)
    try:
        photos = select_photos(data_dir, split, val_count)
        result = evaluate(photos, checkpoint, out_dir, guided=guided, max_side=max_side,
                          progress=quiet == 0, save_images=save_images, tile=tile,
                          stride=stride, blend=blend, block=block, batch_size=batch_size,
                          threads=threads or default_threads(1), device=device,
                          context=context, precision=precision)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    except (TilecolorError, OSError) as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        sys.exit(1)
    click.echo(format_table(result))
    click.echo(f"wrote {out_dir / 'eval.json'} and {out_dir / 'sheet.png'}", err=True)
