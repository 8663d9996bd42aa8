"""Job specs: a table of good and bad specs, CLI overrides, and every example in pipelines/."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from tilecolor.cli import main
from tilecolor.config import build, load_spec
from tilecolor.core.errors import ConfigError

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"

GOOD = [
    ('input = "scans"\n', {"input": ("SPEC/scans",)}),
    ('input = ["/a/*.tif", "b"]\nstride = 64\nblend = "uniform"\n',
     {"input": ("/a/*.tif", "SPEC/b"), "stride": 64, "blend": "uniform"}),
    ('input = "x"\n[cluster]\nkind = "address"\naddress = "tcp://h:8786"\n',
     {"cluster.kind": "address", "cluster.address": "tcp://h:8786"}),
    ('input = "x"\n[cluster]\nkind = "slurm"\ngpus = 1\njobs = 3\nwalltime = "02:00:00"\n',
     {"cluster.kind": "slurm", "cluster.gpus": 1, "cluster.jobs": 3}),
    ('input = "x"\noutput = "out"\nformat = "png"\noverwrite = true\n',
     {"output": "SPEC/out", "format": "png", "overwrite": True}),
]

BAD = [
    ('input = "x"\nstrde = 32\n', "unknown key 'strde'"),
    ('input = "x"\n[cluster]\nworkrs = 2\n', "unknown key cluster.'workrs'"),
    ('input = "x"\nstride = "32"\n', "stride must be an integer"),
    ('input = "x"\noverwrite = "yes"\n', "overwrite must be true or false"),
    ('input = "x"\nblend = "median"\n', "invalid value for 'blend'"),
    ('input = "x"\nformat = "bmp"\n', "invalid value for 'format'"),
    ('input = "x"\n[cluster]\nkind = "k8s"\n', "cluster.kind must be one of"),
    ('input = "x"\n[cluster]\nkind = "address"\n', "needs cluster.address"),
    ('input = "x"\n[cluster]\nworkers = 0\n', "cluster.workers must be >= 1"),
    ('input = 3\n', "input must be a path or glob"),
    ('input = "x"\ncluster = 3\n', "[cluster] must be a table"),
    ('input = "x\n', "not valid TOML"),
]


def _get(cfg, dotted):
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("text,expected", GOOD)
def test_good_specs(tmp_path, text, expected):
    spec = tmp_path / "job.toml"
    spec.write_text(text)
    cfg = build(load_spec(spec), {})
    for key, value in expected.items():
        if isinstance(value, str):
            value = value.replace("SPEC", str(tmp_path))
        elif isinstance(value, tuple):
            value = tuple(v.replace("SPEC", str(tmp_path)) for v in value)
        assert _get(cfg, key) == value


@pytest.mark.parametrize("text,message", BAD)
def test_bad_specs_name_the_problem(tmp_path, text, message):
    spec = tmp_path / "job.toml"
    spec.write_text(text)
    with pytest.raises(ConfigError) as e:
        build(load_spec(spec), {})
    assert message in str(e.value)


def test_bad_spec_is_a_usage_error_on_the_cli(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('input = "x"\nstrde = 32\n')
    r = CliRunner().invoke(main, ["run", "--config", str(spec)])
    assert r.exit_code == 2 and "unknown key 'strde'" in r.output


def test_cli_flags_override_the_spec(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('input = "x"\nstride = 64\nblend = "uniform"\n[cluster]\nworkers = 3\n')
    cfg = build(load_spec(spec), {"stride": 32, "cluster.workers": 2})
    assert (cfg.stride, cfg.blend, cfg.cluster.workers) == (32, "uniform", 2)
    cfg = build(load_spec(spec), {"cluster.address": "tcp://127.0.0.1:1"})
    assert cfg.cluster.kind == "address"


def test_missing_spec_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read job spec"):
        load_spec(tmp_path / "nope.toml")


@pytest.mark.parametrize("name", ["nightly-archive.toml", "slurm/gpu.toml"])
def test_example_specs_are_valid(name):
    cfg = build(load_spec(PIPELINES / name), {})
    assert cfg.input and cfg.output


def test_slurm_gpu_spec_renders_gres_and_gpu_resource():
    pytest.importorskip("dask_jobqueue")
    from tilecolor.cluster.client import jobqueue_cluster

    cfg = build(load_spec(PIPELINES / "slurm/gpu.toml"),
                {"cluster.dashboard_address": "127.0.0.1:0", "cluster.host": "127.0.0.1"})
    assert cfg.device == "cuda" and cfg.cluster.kind == "slurm"
    with jobqueue_cluster(cfg.cluster) as cluster:
        script = cluster.job_script()
    assert "#SBATCH --gres=gpu:1" in script
    assert "--resources GPU=1" in script
    assert "#SBATCH -t 04:00:00" in script and "#SBATCH -p gpu" in script
    # the workers keep freed memory like the embedded cluster's (forkserver.WORKER_MALLOC)
    from tilecolor.cluster.forkserver import WORKER_MALLOC
    lines = script.splitlines()
    worker = next(i for i, line in enumerate(lines) if "--resources GPU=1" in line)
    assert all(lines.index(f"export {k}={v}") < worker for k, v in WORKER_MALLOC.items())


def test_sbatch_driver_runs_the_gpu_spec():
    text = (PIPELINES / "slurm/colorize.sbatch").read_text()
    assert text.startswith("#!/usr/bin/env bash") and "#SBATCH --time=" in text
    assert "tilecolor run --config pipelines/slurm/gpu.toml" in text


def test_cron_line_is_well_formed():
    lines = [ln for ln in (PIPELINES / "cron.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    minute, hour = int(fields[0]), int(fields[1])
    assert 0 <= minute < 60 and 0 <= hour < 24 and fields[2:5] == ["*", "*", "*"]
    command = shlex.split(fields[5].split(">>")[0].split("&&")[-1])
    assert command[1:4] == ["run", "--config", "pipelines/nightly-archive.toml"]


def test_systemd_units_parse():
    service = configparser.ConfigParser()
    service.read(PIPELINES / "systemd/tilecolor-nightly.service")
    assert service["Service"]["Type"] == "oneshot"
    assert "run --config pipelines/nightly-archive.toml" in service["Service"]["ExecStart"]
    timer = configparser.ConfigParser()
    timer.read(PIPELINES / "systemd/tilecolor-nightly.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00"


def test_hostile_input_and_tls_options_in_a_spec(tmp_path):
    spec = tmp_path / "job.toml"
    spec.write_text('input = "x"\nmax_pixels = 1000\npage = 2\nallow_output_in_input = true\n'
                    '[cluster]\nkind = "address"\naddress = "tls://h:8786"\n'
                    'tls_ca_file = "ca.pem"\ntls_cert = "/etc/c.pem"\n')
    cfg = build(load_spec(spec), {})
    assert (cfg.max_pixels, cfg.page, cfg.allow_output_in_input) == (1000, 2, True)
    assert cfg.cluster.tls_ca_file == str(tmp_path / "ca.pem")
    assert cfg.cluster.tls_cert == "/etc/c.pem"
    assert build(load_spec(spec), {"page": 0}).page == 0


def test_default_max_pixels_matches_the_input_checks():
    from tilecolor.config import RunConfig
    from tilecolor.io.validate import DEFAULT_MAX_PIXELS

    assert RunConfig().max_pixels == DEFAULT_MAX_PIXELS


def test_precision_resolves_per_device():
    from tilecolor.model.hardware import cpu_has_native_bf16
    from tilecolor.model.predict import resolve_precision

    assert build({"precision": "fp16"}, {}).precision == "fp16"
    with pytest.raises(ConfigError, match="precision"):
        build({"precision": "fp64"}, {})
    native = cpu_has_native_bf16()
    assert resolve_precision("cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("cuda") == "bf16" and resolve_precision("cpu", "fp32") == "fp32"
    assert resolve_precision("cuda:1", "fp16") == "fp16"
    assert resolve_precision("cpu", "bf16") == "bf16"  # asked for: runs, emulated or not
    with pytest.raises(ConfigError, match="needs device cuda"):
        resolve_precision("cpu", "fp16")


@pytest.mark.parametrize("cores,free_gib,cpu,cuda", [(2, 24, 2, 1), (16, 126, 16, 8),
                                                     (64, 500, 64, 8), (16, 4, 2, 2),
                                                     (1, 24, 1, 1)])
def test_default_workers_per_device(monkeypatch, cores, free_gib, cpu, cuda):
    """One per core on CPU; on CUDA one per two cores, at most CUDA_WORKERS; always at most
    one per WORKER_MEMORY of available memory."""
    import types

    import psutil

    from tilecolor.cluster import workers
    from tilecolor.model import predict

    monkeypatch.setattr(predict, "available_cores", lambda: cores)
    monkeypatch.setattr(psutil, "virtual_memory",
                        lambda: types.SimpleNamespace(available=free_gib << 30))
    assert (workers.default_workers("cpu"), workers.default_workers("cuda")) == (cpu, cuda)
