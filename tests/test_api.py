"""tilecolor.colorize, the Python API: the same options, defaults and outputs as `tilecolor run`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from conftest import smooth_image
from PIL import Image

import tilecolor
from tilecolor.cli import main
from tilecolor.config import RunConfig
from tilecolor.core.errors import ConfigError

FAST = {"tile": 64, "stride": 32, "block": 128, "dashboard_address": "127.0.0.1:0",
        "threads": 1, "workers": 1}


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(smooth_image(100, 150, seed=1)).save(d / "a.png")
    tifffile.imwrite(d / "b.tif", smooth_image(130, 90, seed=2, dtype=np.uint16),
                     tile=(32, 32), compression="zlib")
    return d


def test_colorize_returns_the_run_report_and_writes_it(photos, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    report = tilecolor.colorize(photos, out, checkpoint=tiny_checkpoint, **FAST)
    assert report["totals"]["done"] == 2 and report["totals"]["failed"] == 0
    assert report["output"] == str(out)
    assert [i["status"] for i in report["images"]] == ["done", "done"]
    assert json.loads(open(report["report"]).read()) == report
    assert report["settings"]["stride"] == 32 and report["settings"]["blend"] == "cosine"
    with Image.open(out / "a.png") as a:
        assert a.size == (150, 100) and a.mode == "RGB"
    # a second call finds everything up to date and writes no report
    again = tilecolor.colorize(photos, out, checkpoint=tiny_checkpoint, **FAST)
    assert again["totals"]["skipped"] == 2 and again["report"] is None


def test_colorize_has_the_defaults_of_run():
    from tilecolor.config import run_spec

    assert run_spec("x") == RunConfig(input=("x",))
    assert RunConfig().stride == 128 and RunConfig().blend == "cosine"


@pytest.mark.parametrize(("options", "named"), [
    ({"blend": "median"}, "'median'"),
    ({"format": "webp"}, "'webp'"),
    ({"precision": "fp8"}, "'fp8'"),
    ({"strid": 32}, "'strid'"),
    ({"stride": 300}, "300"),
    ({"render_scale": 0.3}, "0.3"),
])
def test_an_invalid_option_raises_config_error_naming_it(photos, tmp_path, tiny_checkpoint,
                                                         options, named):
    with pytest.raises(ConfigError, match=named):
        tilecolor.colorize(photos, tmp_path / "out", checkpoint=tiny_checkpoint,
                           **{**FAST, **options})
    assert not (tmp_path / "out").exists()  # raised before any work


def test_api_and_cli_give_byte_identical_outputs(photos, tmp_path, tiny_checkpoint):
    options = {**FAST, "blend": "uniform", "render_scale": 0.5, "precision": "fp32"}
    api = tilecolor.colorize(photos, tmp_path / "api", checkpoint=tiny_checkpoint,
                             format="tiff", **options)
    args = ["run", "--input", str(photos), "--output", str(tmp_path / "cli"),
            "--checkpoint", str(tiny_checkpoint), "--format", "tiff"]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    r = CliRunner().invoke(main, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert api["totals"]["done"] == 2
    for name in ("a.tif", "b.tif"):
        assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
