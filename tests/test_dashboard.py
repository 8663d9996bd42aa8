"""A real headless Chromium opens the Dask dashboard during a run and finds tilecolor's
tasks by name in the task stream. The screenshot is kept in tests/artifacts/."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import smooth_image

from tilecolor.cluster.client import connect
from tilecolor.cluster.config import ClusterConfig
from tilecolor.engine.graph import submit_image
from tilecolor.engine.settings import Settings
from tilecolor.engine.store import WorkStore
from tilecolor.io.read import probe

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)")

# Every Bokeh document on the page; the task stream's data source has a "name" column
# holding each task's key prefix.
_TASK_NAMES_JS = """
const names = new Set();
for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
  for (const m of doc.all_models) {
    const data = m.data;
    if (data && data.name && data.start !== undefined) {
      for (const n of data.name) names.add(String(n));
    }
  }
}
return Array.from(names);
"""


def slow_affine(x):
    time.sleep(0.15)
    return np.concatenate([0.5 * x, -0.25 * x], axis=1)


def _offline_selenium(monkeypatch) -> None:
    """Selenium Manager downloads driver lists and sends usage statistics; with the
    system's chromedriver given it has no reason to run, and this makes sure it does not
    (a test must not reach outside this machine)."""
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def refuse(*args, **kwargs):
        raise AssertionError("Selenium Manager was invoked: it would reach the network")

    monkeypatch.setenv("SE_AVOID_STATS", "true")
    monkeypatch.setenv("SE_OFFLINE", "true")
    monkeypatch.setattr(SeleniumManager, "binary_paths", refuse)  # raises if renamed


def test_dashboard_task_stream_shows_tilecolor_tasks(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    _offline_selenium(monkeypatch)
    img = smooth_image(512, 512, seed=3)
    tifffile.imwrite(tmp_path / "in.tif", img, tile=(64, 64))
    info = probe(tmp_path / "in.tif")
    settings = Settings(tile=64, stride=32, block=64, blend="cosine", batch_size=4)
    store = WorkStore.create(tmp_path / "w.zarr", settings.plan(512, 512), "uint8",
                             output="ab")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(flag)
    with connect(ClusterConfig(workers=1, dashboard_address="127.0.0.1:0")) as client:
        link = client.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        graph = submit_image(client, info, store, settings, slow_affine)
        done = threading.Event()
        threading.Thread(target=lambda: (client.gather(graph.reduces), done.set()),
                         daemon=True).start()
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.get(link)  # .../status
            names: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                names = driver.execute_script(_TASK_NAMES_JS) or []
                if "colorize_block" in names:
                    break
                time.sleep(1)
            ARTIFACTS.mkdir(exist_ok=True)
            driver.save_screenshot(str(ARTIFACTS / "dashboard-status.png"))
        finally:
            driver.quit()
        assert "colorize_block" in names, f"task stream names seen: {names}"
        # Dask adds its own rows for the same tasks, named by action: "disk-read-<name>"
        # is any dependency lookup over 5 ms (a loaded machine), "transfer-" etc.
        ours = {n.split("-", 2)[-1] if n.startswith(("disk-", "transfer-", "deserialize-"))
                else n for n in names}
        assert ours <= {"ingest", "colorize_block", "blend_chunk", "write_output"}, names
        assert done.wait(120)
