"""The Python API: :func:`colorize`, the code path of ``tilecolor run`` and ``tilecolor eval``.

One call plans a batch (probe, safety, fingerprints, resume), runs it on a cluster and
returns the run report. Usage errors (a bad option, options that do not fit the inputs or
the checkpoint) raise :class:`~tilecolor.core.errors.UsageError` before any work; a failure
of the whole run (checkpoint, cluster, disk) raises another TilecolorError or OSError; a
failed image is reported in the result and the others go on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from tilecolor.config import RunConfig, run_spec
from tilecolor.core.errors import ConfigError, UsageError

log = logging.getLogger("tilecolor")


def colorize(input: str | Path | list[str | Path] | None = None,  # noqa: A002 - `run --input`
             output: str | Path | None = None, *, spec: RunConfig | None = None,
             progress: bool = False, echo: Callable[[str], None] | None = None,
             client=None, **options: Any) -> dict:
    """Colorize an image, a folder of images or a list of paths/globs into ``output``.

    Parameters
    ----------
    input, output
        As ``tilecolor run --input/--output`` (output defaults to ``<input>-colorized``
        beside the input).
    spec
        A ready :class:`~tilecolor.config.RunConfig` instead of input/output/options.
    progress
        Show a progress bar on stderr.
    echo
        Where the run's status lines go (dashboard link, disk estimate); default: the log.
    client
        A ``distributed.Client`` to run on instead of the cluster the options describe.
    **options
        Every option of ``tilecolor run`` under its long name with ``_`` for ``-``
        (``stride=32``, ``blend="uniform"``, ``format="tiff"``, ``workers=2``,
        ``scheduler="tcp://host:8786"``...), with the same defaults; ``config`` a TOML job
        spec they override; ``cluster`` a ClusterConfig or a ``[cluster]`` table.

    Returns
    -------
    dict
        The run report (the content of the JSON report, which is written when any image
        was colorized): ``settings``, ``model_sha256``, ``images`` (one entry per input,
        ``status`` done, skipped or failed), ``totals``, ``output`` (the folder) and
        ``report`` (the JSON file's path, or None).

    Raises
    ------
    UsageError
        A bad option (it names the value), no images found, an unsafe output folder.
    TilecolorError, OSError
        The whole run failed (checkpoint, cluster, disk).
    """
    if spec is None:
        spec = run_spec(input, output, **options)
    elif input is not None or output is not None or options:
        raise UsageError("give either spec or input/output/options, not both")
    if not spec.input:
        raise UsageError("no input: give --input or `input` in the job spec")
    if spec.cluster.kind == "local" and client is None:
        # the workers' forkserver imports torch while the driver plans
        from tilecolor.cluster.forkserver import start_worker_server

        start_worker_server()
    return _Run(spec, progress=progress, echo=echo or log.info, client=client).execute()


@contextlib.contextmanager
def _usage() -> Iterator[None]:
    """ConfigErrors of this block are usage errors (the CLI's exit 2)."""
    try:
        yield
    except UsageError:
        raise
    except ConfigError as e:
        raise UsageError(str(e)) from e


class _Run:
    """One colorize call: checked options, then the batch on a cluster."""

    def __init__(self, spec: RunConfig, *, progress: bool, echo: Callable[[str], None],
                 client) -> None:
        from tilecolor.batch.plan import find_inputs
        from tilecolor.batch.safety import check_output_dir, input_folders
        from tilecolor.cluster.client import security_for
        from tilecolor.cluster.workers import default_workers, inference_resources
        from tilecolor.io.validate import InputPolicy
        from tilecolor.model.predict import default_threads, resolve_precision

        self.spec, self.progress, self.echo, self.client = spec, progress, echo, client
        with _usage():
            self.policy = InputPolicy(max_pixels=spec.max_pixels, page=spec.page)
            self.security = security_for(spec.cluster) if client is None else None
            self.precision = resolve_precision(spec.device, spec.precision)
            kind = spec.cluster.kind if client is None else "address"  # its own workers
            self.settings = spec.settings(inference_resources(spec.device, kind))
            self.inputs = find_inputs(list(spec.input))
            if not self.inputs:
                raise UsageError(f"no TIFF, PNG or JPEG images in {', '.join(spec.input)}")
            first = Path(spec.input[0])
            base = first if first.is_dir() else first.parent
            self.out_dir = (Path(spec.output) if spec.output
                            else base.with_name(f"{base.name}-colorized"))
            check_output_dir(self.out_dir,
                             input_folders(self.inputs, [Path(p) for p in spec.input]),
                             allow_inside=spec.allow_output_in_input)
        #: the embedded LocalCluster this call starts (not a given client's, nor another)
        self.local = cluster_local = client is None and spec.cluster.kind == "local"
        cluster = spec.cluster
        if cluster_local and cluster.workers is None:
            cluster = replace(cluster, workers=default_workers(spec.device))
        if spec.device == "cuda" and cluster_local and not cluster.gpus:
            cluster = replace(cluster, gpus=1)
        self.cluster = cluster
        self.threads = cluster.threads or (default_threads(cluster.workers)
                                           if cluster_local else None)

    def execute(self) -> dict:
        from tilecolor.batch.plan import plan_batch
        from tilecolor.batch.report import run_report, write_report
        from tilecolor.model.checkpoint import default_checkpoint
        from tilecolor.model.predict import make_predictor

        spec, settings = self.spec, self.settings
        t0 = time.perf_counter()
        # torch-free checks here; the workers load (and fully check) the model in parallel
        predict = make_predictor(spec.checkpoint or default_checkpoint(), device=spec.device,
                                 precision=self.precision, threads=self.threads,
                                 validate=False)
        if settings.tile % predict.multiple:
            raise UsageError(f"--tile must be a multiple of {predict.multiple} for this "
                             f"checkpoint (2**depth), got tile={settings.tile}")
        settings = self.settings = replace(settings, planes=predict.planes)
        reference = self._reference(predict)
        jobs, results = plan_batch(self.inputs, self.out_dir, settings, predict.digest,
                                   fmt=spec.format, overwrite=spec.overwrite,
                                   policy=self.policy, precision=self.precision,
                                   reference=reference)
        report_dir = (Path(spec.report) if spec.report
                      else self.out_dir / ".tilecolor" / "reports")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        if jobs:
            self._check_disk(jobs)
            results.update(self._run_jobs(jobs, predict, report_dir / f"run-{stamp}.html"))
        report = run_report([results[p] for p in self.inputs], time.perf_counter() - t0,
                            settings, predict.digest, device=spec.device,
                            precision=self.precision, output=self.out_dir)
        if jobs:
            report["report"] = str(report_dir / f"run-{stamp}.json")
            write_report(Path(report["report"]), report)
        return report

    def _run_jobs(self, jobs, predict, html: Path) -> dict:
        """The planned jobs on the cluster; their results."""
        from tilecolor.batch.preingest import Preingest
        from tilecolor.batch.run import run_jobs
        from tilecolor.cluster.client import connect
        from tilecolor.cluster.workers import (
            check_generator,
            preloaded,
            quiet_expected_errors,
            require_resource,
        )

        settings, cluster, local = self.settings, self.cluster, self.local
        given = contextlib.nullcontext(self.client) if self.client is not None else None
        # the driver ingests the first blocks while the embedded cluster starts
        with (Preingest(jobs, settings, enabled=local) as ahead,
              given or connect(cluster, security=self.security) as client,
              preloaded(client, predict)):
            quiet_expected_errors(client)  # corrupt inputs: one line, no traceback
            self.echo(f"dashboard: {client.dashboard_link}")
            for resource in settings.resources or {}:
                require_resource(client, resource, timeout=cluster.resource_timeout)
            check_generator(client, predict, settings.resources)
            log.debug("%d blocks ingested while the cluster started", ahead.stop())
            html.parent.mkdir(parents=True, exist_ok=True)
            from distributed import performance_report

            with (performance_report(filename=str(html)) if self.spec.report
                  else contextlib.nullcontext()):
                # the embedded cluster's workers: one generator slot each, and the cores
                # they were given (CPU); other clusters get every task at once
                cores = (cluster.workers * self.threads if local and self.threads
                         and self.spec.device == "cpu" else None)
                return run_jobs(client, jobs, settings, predict, progress=self.progress,
                                slots=cluster.workers if local else None, cores=cores)

    def _reference(self, predict) -> Path | None:
        """``hint`` as a path, or None; a usage error when the checkpoint takes no hint, or
        a single reference file is given for several inputs."""
        from tilecolor.core.planes import takes_hint

        if not self.spec.hint:
            return None
        hint = Path(self.spec.hint)
        if not takes_hint(predict.planes):
            raise UsageError(f"--hint needs a checkpoint with hint planes; "
                             f"{predict.checkpoint} takes {list(predict.planes)}")
        if not hint.exists():
            raise UsageError(f"--hint {hint} does not exist")
        if not hint.is_dir() and len(self.inputs) > 1:
            raise UsageError(f"--hint {hint} is one image for {len(self.inputs)} inputs: "
                             f"give a folder of references named like the inputs")
        return hint

    def _check_disk(self, jobs) -> None:
        """Report the disk estimate; OutputError before any work if it is not free."""
        import numpy as np

        from tilecolor.batch.run import MAX_INFLIGHT
        from tilecolor.batch.safety import check_disk, estimate_batch, estimate_image, human

        s = self.settings
        need = estimate_batch([estimate_image(j.info.height, j.info.width,
                                              np.dtype(j.info.dtype).itemsize, s.tile,
                                              s.stride, s.block, j.fmt)
                               for j in jobs], inflight=MAX_INFLIGHT)
        free = check_disk(self.out_dir, need)
        self.echo(f"disk: about {human(need.total)} needed (working stores "
                  f"{human(need.work)}, outputs {human(need.output)}); {human(free)} free")
