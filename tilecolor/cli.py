"""Command line: thin click commands that parse, call the library and translate errors.

Exit codes: 0 every input done (or already up to date), 1 a runtime failure (some input
failed), 2 a usage error (bad option or job spec, no images found).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import click
from click.core import ParameterSource

from tilecolor.core.blending import Blend
from tilecolor.core.errors import ConfigError, TilecolorError, one_line
from tilecolor.io.formats import FORMATS
from tilecolor.io.validate import DEFAULT_MAX_PIXELS

log = logging.getLogger("tilecolor")

# CLI parameter -> job-spec key
_SPEC_KEYS = {"input_path": "input", "output_dir": "output", "checkpoint": "checkpoint",
              "tile": "tile", "stride": "stride", "blend": "blend", "block": "block",
              "batch_size": "batch_size", "render_scale": "render_scale", "fmt": "format",
              "context": "context", "hint": "hint",
              "overwrite": "overwrite", "device": "device", "precision": "precision",
              "report": "report", "workers": "cluster.workers",
              "threads": "cluster.threads", "scheduler": "cluster.address",
              "dashboard_address": "cluster.dashboard_address", "max_pixels": "max_pixels",
              "page": "page", "allow_output_in_input": "allow_output_in_input",
              "tls_ca_file": "cluster.tls_ca_file", "tls_cert": "cluster.tls_cert",
              "tls_key": "cluster.tls_key"}


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
@click.option("--tile", default=256, show_default=True, help="Tile side in pixels.")
@click.option("--stride", default=128, show_default=True,
              help="Step between tiles, 0 < stride <= tile (the paper: 32 and 256).")
@click.option("--blend", type=click.Choice([b.value for b in Blend]), default="cosine",
              show_default=True, help="How overlaps are merged.")
@click.option("--block", default=2048, show_default=True,
              help="Pixels per side of a Dask block (memory per task scales with it).")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per generator call [default: 8 on CPU, 32 on CUDA].")
@click.option("--render-scale", default=1.0, show_default=True,
              help="Predict chroma at this scale (1/k: 0.5 costs a quarter) and upsample it "
                   "under the full-resolution L.")
@click.option("--context", type=click.IntRange(min=0), default=256, show_default=True,
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
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="cuda: inference tasks ask for the GPU=1 resource.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
              help="Generator arithmetic on CUDA (autocast); auto: bf16 on CUDA, fp32 on CPU "
                   "(the only one it runs).")
@click.option("--scheduler", help="Address of an existing Dask scheduler (tcp://host:8786).")
@click.option("--dashboard-address", default="127.0.0.1:8787", show_default=True,
              help="Dashboard of the embedded LocalCluster.")
@click.option("--report", type=click.Path(path_type=Path),
              help="Folder for the run report (JSON) and the Dask performance report (HTML, "
                   "only written when this is given: rendering it takes a second or more) "
                   "[default: JSON only, in <output>/.tilecolor/reports].")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs, recompute all.")
@click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Reject inputs with more pixels (PNG/JPEG also stop at Pillow's "
                   "decompression-bomb limit).")
@click.option("--page", type=int, default=0, show_default=True,
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
    """Colorize every image in INPUT into OUTPUT."""
    from tilecolor.config import build, load_spec

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
    if cfg.cluster.kind == "local":  # the workers' imports overlap everything up to the cluster
        from tilecolor.cluster.forkserver import start_worker_server

        start_worker_server()
    _setup_logging(verbose, quiet)
    from tilecolor.io.validate import InputPolicy

    try:
        policy = InputPolicy(max_pixels=cfg.max_pixels, page=cfg.page)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    tls = [Path(p) if p else None for p in (cfg.cluster.tls_ca_file, cfg.cluster.tls_cert,
                                            cfg.cluster.tls_key)]
    sys.exit(_run(cfg, progress=quiet == 0, policy=policy, security=_security(cfg, *tls),
                  allow_output_in_input=cfg.allow_output_in_input))


def _security(cfg, ca_file: Path | None, cert: Path | None, key: Path | None):
    """A ``distributed.security.Security`` for a tls:// scheduler, or None."""
    from distributed.security import Security

    address = (cfg.cluster.address or "") if cfg.cluster.kind == "address" else ""
    if ca_file or cert or key:
        if not address.startswith("tls://"):
            raise click.UsageError("--tls-ca-file/--tls-cert/--tls-key need a tls:// "
                                   f"--scheduler address, got {address or 'none'!r}")
        if not (ca_file and cert):
            raise click.UsageError("TLS needs --tls-ca-file and --tls-cert (and --tls-key "
                                   "unless the certificate file holds the key)")
        return Security(tls_ca_file=str(ca_file), tls_client_cert=str(cert),
                        tls_client_key=str(key) if key else None, require_encryption=True)
    if address.startswith("tls://"):
        security = Security()  # from the Dask config: distributed.comm.tls.*
        if not security.tls_ca_file:
            raise click.UsageError(f"scheduler {address} uses TLS: give --tls-ca-file and "
                                   f"--tls-cert (or set distributed.comm.tls in the Dask "
                                   f"config)")
        return security
    return None


def _run(cfg, *, progress: bool, policy=None, security=None,
         allow_output_in_input: bool = False) -> int:
    """Execute a RunConfig; returns the exit code."""
    from tilecolor.batch.plan import find_inputs, plan_batch
    from tilecolor.batch.preingest import Preingest
    from tilecolor.batch.report import write_report
    from tilecolor.batch.run import run_jobs
    from tilecolor.batch.safety import check_output_dir, input_folders
    from tilecolor.cluster.client import connect
    from tilecolor.cluster.workers import (
        check_generator,
        default_workers,
        inference_resources,
        preloaded,
        quiet_expected_errors,
        require_resource,
    )
    from tilecolor.engine.settings import Settings
    from tilecolor.model.checkpoint import default_checkpoint
    from tilecolor.model.predict import (
        default_batch_size,
        default_threads,
        make_predictor,
        resolve_precision,
    )

    try:
        precision = resolve_precision(cfg.device, cfg.precision)
        settings = Settings(tile=cfg.tile, stride=cfg.stride, blend=Blend(cfg.blend),
                            block=cfg.block,
                            batch_size=default_batch_size(cfg.device, cfg.batch_size),
                            render_scale=cfg.render_scale, context=cfg.context,
                            resources=inference_resources(cfg.device, cfg.cluster.kind))
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    inputs = find_inputs(list(cfg.input))
    if not inputs:
        raise click.UsageError(f"no TIFF, PNG or JPEG images in {', '.join(cfg.input)}")
    first = Path(cfg.input[0])
    base = first if first.is_dir() else first.parent
    out_dir = Path(cfg.output) if cfg.output else base.with_name(f"{base.name}-colorized")
    try:
        check_output_dir(out_dir, input_folders(inputs, [Path(p) for p in cfg.input]),
                         allow_inside=allow_output_in_input)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    cluster = cfg.cluster
    if cluster.kind == "local" and cluster.workers is None:
        cluster = replace(cluster, workers=default_workers(cfg.device))
    threads = cluster.threads or (default_threads(cluster.workers)
                                  if cluster.kind == "local" else None)
    t0 = time.perf_counter()
    try:
        # torch-free checks here; the workers load (and fully check) the model in parallel
        predict = make_predictor(cfg.checkpoint or default_checkpoint(), device=cfg.device,
                                 precision=precision, threads=threads, validate=False)
        if settings.tile % predict.multiple:
            raise click.UsageError(f"--tile must be a multiple of {predict.multiple} for this "
                                   f"checkpoint (2**depth), got tile={settings.tile}")
        settings = replace(settings, planes=predict.planes)
        reference = _check_hint(cfg, predict, inputs)
        jobs, results = plan_batch(inputs, out_dir, settings, predict.digest,
                                   fmt=cfg.format, overwrite=cfg.overwrite, policy=policy,
                                   precision=precision, reference=reference)
        if jobs:
            _check_disk(jobs, settings, out_dir)
            if cfg.device == "cuda" and cluster.kind == "local" and not cluster.gpus:
                cluster = replace(cluster, gpus=1)
            report_dir = Path(cfg.report) if cfg.report else out_dir / ".tilecolor" / "reports"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            # the driver ingests the first blocks while the embedded cluster starts
            with (Preingest(jobs, settings, enabled=cluster.kind == "local") as ahead,
                  connect(cluster, security=security) as client,
                  preloaded(client, predict)):
                quiet_expected_errors(client)  # corrupt inputs: one line, no traceback
                click.echo(f"dashboard: {client.dashboard_link}", err=True)
                for resource in settings.resources or {}:
                    require_resource(client, resource, timeout=cluster.resource_timeout)
                check_generator(client, predict, settings.resources)
                log.debug("%d blocks ingested while the cluster started", ahead.stop())
                report_dir.mkdir(parents=True, exist_ok=True)
                from distributed import performance_report

                html = report_dir / f"run-{stamp}.html"
                with (performance_report(filename=str(html)) if cfg.report
                      else contextlib.nullcontext()):
                    # the embedded cluster's workers: one generator slot each, and the
                    # cores they were given (CPU); other clusters get every task at once
                    local = cluster.kind == "local"
                    results.update(run_jobs(
                        client, jobs, settings, predict, progress=progress,
                        slots=cluster.workers if local else None,
                        cores=cluster.workers * threads if local and threads
                        and cfg.device == "cpu" else None))
            ordered = [results[p] for p in inputs]
            json_path = write_report(report_dir / f"run-{stamp}.json", ordered,
                                     time.perf_counter() - t0, settings, predict.digest,
                                     device=cfg.device, precision=precision)
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
        click.echo(f"  failed: {one_line(r.error)}", err=True)
    return 1 if failed else 0


def _check_hint(cfg, predict, inputs: list[Path]) -> Path | None:
    """``--hint`` as a path, or None; a usage error when the checkpoint takes no hint, or
    a single reference file is given for several inputs."""
    from tilecolor.core.planes import takes_hint

    if not cfg.hint:
        return None
    hint = Path(cfg.hint)
    if not takes_hint(predict.planes):
        raise click.UsageError(f"--hint needs a checkpoint with hint planes; "
                               f"{predict.checkpoint} takes {list(predict.planes)}")
    if not hint.exists():
        raise click.UsageError(f"--hint {hint} does not exist")
    if not hint.is_dir() and len(inputs) > 1:
        raise click.UsageError(f"--hint {hint} is one image for {len(inputs)} inputs: give "
                               f"a folder of references named like the inputs")
    return hint


def _check_disk(jobs, settings, out_dir: Path) -> None:
    """Print the disk estimate; OutputError (exit 1) before any work if it is not free."""
    import numpy as np

    from tilecolor.batch.run import MAX_INFLIGHT
    from tilecolor.batch.safety import check_disk, estimate_batch, estimate_image, human

    need = estimate_batch([estimate_image(j.info.height, j.info.width,
                                          np.dtype(j.info.dtype).itemsize, settings.tile,
                                          settings.stride, settings.block, j.fmt)
                           for j in jobs], inflight=MAX_INFLIGHT)
    free = check_disk(out_dir, need)
    click.echo(f"disk: about {human(need.total)} needed (working stores {human(need.work)}, "
               f"outputs {human(need.output)}); {human(free)} free", err=True)


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
@click.option("--tile", default=256, show_default=True, help="Tile side in pixels.")
@click.option("--stride", default=128, show_default=True, help="Step between tiles.")
@click.option("--blend", type=click.Choice([b.value for b in Blend]), default="cosine",
              show_default=True, help="How overlaps are merged.")
@click.option("--block", default=2048, show_default=True, help="Pixels per side of a block.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Tiles per generator call [default: 8 on CPU, 32 on CUDA].")
@click.option("--threads", type=int, help="torch threads of the worker [default: all cores].")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--context", type=click.IntRange(min=0), default=256, show_default=True,
              help="Longer side of the global context pass (checkpoints with hint planes); "
                   "0 turns it off.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
              default="auto", show_default=True,
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
    from tilecolor.cluster.workers import inference_resources
    from tilecolor.engine.settings import Settings
    from tilecolor.evaluate import evaluate, format_table, select_photos
    from tilecolor.model.checkpoint import default_checkpoint
    from tilecolor.model.predict import default_batch_size, default_threads

    _setup_logging(verbose, quiet)
    try:
        settings = Settings(tile=tile, stride=stride, blend=Blend(blend), block=block,
                            batch_size=default_batch_size(device, batch_size),
                            context=context, resources=inference_resources(device, "local"))
        photos = select_photos(data_dir, split, val_count)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    try:
        result = evaluate(photos, checkpoint or default_checkpoint(), out_dir,
                          settings=settings, threads=threads or default_threads(1),
                          device=device, precision=precision, max_side=max_side,
                          guided=guided, progress=quiet == 0, save_images=save_images)
    except ConfigError as e:
        raise click.UsageError(str(e)) from e
    except (TilecolorError, OSError) as e:
        click.echo(f"error: {one_line(str(e))}", err=True)
        sys.exit(1)
    click.echo(format_table(result))
    click.echo(f"wrote {out_dir / 'eval.json'} and {out_dir / 'sheet.png'}", err=True)
