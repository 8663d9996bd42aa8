"""Network defaults: the embedded cluster listens on 127.0.0.1 only; tls:// schedulers work
with --tls-ca-file/--tls-cert/--tls-key (a real TLS scheduler and worker, certificates made
here with the openssl command)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import dask
import psutil
import pytest
import tifffile
from click.testing import CliRunner
from conftest import free_port, smooth_image, wait_for_cluster

from tilecolor.cli import main
from tilecolor.cluster.client import LOCAL_HEARTBEAT, LOCAL_HOUSEKEEPING, connect
from tilecolor.cluster.config import ClusterConfig

FAST = ["--tile", "64", "--stride", "32", "--block", "128", "--threads", "1"]


def _listening(proc: psutil.Process) -> list[str]:
    return [c.laddr.ip for c in proc.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN]


def test_embedded_cluster_and_dashboard_listen_on_loopback_only():
    assert ClusterConfig().host == "127.0.0.1"
    assert ClusterConfig().dashboard_address.startswith("127.0.0.1:")
    with connect(ClusterConfig(dashboard_address="127.0.0.1:0")) as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert client.dashboard_link.startswith("http://127.0.0.1:")
        assert all(a.startswith("tcp://127.0.0.1:")
                   for a in client.scheduler_info()["workers"])
        dashboard = client.run_on_scheduler(
            lambda dask_scheduler: [s.getsockname()[0] for s in
                                    dask_scheduler.http_server._sockets.values()])
        assert dashboard and set(dashboard) == {"127.0.0.1"}
        me = psutil.Process()
        ips = _listening(me) + [ip for p in me.children(recursive=True) for ip in _listening(p)]
        assert ips and set(ips) == {"127.0.0.1"}, ips
        # the lighter event-loop housekeeping reaches the forked worker processes
        seen = client.run(lambda: {k: dask.config.get(k) for k in LOCAL_HOUSEKEEPING})
        assert seen and all(v == LOCAL_HOUSEKEEPING for v in seen.values()), seen
        # and the workers send their heartbeats at LOCAL_HEARTBEAT, not Dask's 0.5 s (a
        # worker starts at 1 s and takes the scheduler's pace from its first heartbeat)
        deadline = time.monotonic() + 10
        while True:
            period = client.run(lambda dask_worker:
                                dask_worker.periodic_callbacks["heartbeat"].callback_time)
            if set(period.values()) == {LOCAL_HEARTBEAT * 1000} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert set(period.values()) == {LOCAL_HEARTBEAT * 1000}, period


@pytest.mark.parametrize("args,message", [
    (["--tls-ca-file", "{ca}"], "need a tls:// --scheduler"),
    (["--scheduler", "tcp://127.0.0.1:1", "--tls-ca-file", "{ca}", "--tls-cert", "{ca}"],
     "need a tls:// --scheduler"),
    (["--scheduler", "tls://127.0.0.1:1", "--tls-ca-file", "{ca}"], "needs --tls-ca-file and"),
    (["--scheduler", "tls://127.0.0.1:1"], "uses TLS: give --tls-ca-file"),
])
def test_tls_usage_errors(tmp_path, args, message):
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", smooth_image(20, 20))
    args = [a.format(ca=tmp_path / "ca.pem") for a in args]
    r = CliRunner().invoke(main, ["run", "--input", str(tmp_path / "in"), *args])
    assert r.exit_code == 2 and message in r.output, r.output



@pytest.fixture
def tls_cluster(tmp_path):
    """A `dask scheduler` and `dask worker` speaking TLS only, with a self-signed cert."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make certificates")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    tls = ["--tls-ca-file", str(cert), "--tls-cert", str(cert), "--tls-key", str(key)]
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    sched = subprocess.Popen([dask, "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                              "--port", str(port), "--dashboard-address", "127.0.0.1:0", *tls],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1",
                               "--host", "127.0.0.1", "--local-directory",
                               str(tmp_path / "w"), *tls],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        from distributed.security import Security

        security = Security(tls_ca_file=str(cert), tls_client_cert=str(cert),
                            tls_client_key=str(key), require_encryption=True)
        wait_for_cluster(address, security)
        yield address, tls
    finally:
        for p in (worker, sched):
            p.terminate()
        for p in (worker, sched):
            p.wait(timeout=30)


def test_tls_scheduler(tmp_path, tiny_checkpoint, tls_cluster):
    address, tls = tls_cluster
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", smooth_image(70, 90))
    r = CliRunner().invoke(main, ["run", "--input", str(d), "--output", str(tmp_path / "out"),
                                  "--checkpoint", str(tiny_checkpoint), "--scheduler", address,
                                  *tls, *FAST], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert tifffile.imread(tmp_path / "out" / "a.tif").shape == (70, 90, 3)
    # plain TCP to a TLS-only scheduler fails with one line, not a traceback
    r2 = CliRunner().invoke(main, ["run", "--input", str(d), "--output", str(tmp_path / "o2"),
                                   "--checkpoint", str(tiny_checkpoint), "--scheduler",
                                   address.replace("tls://", "tcp://"), *FAST])
    assert r2.exit_code == 1 and "error:" in r2.output and "Traceback" not in r2.output
