"""The image recipe, exercised without Docker: the Dockerfile's own steps, replayed here.

The builder stage's COPY and RUN steps run in a scratch directory standing for /src (the
.dockerignore applied), then the runtime stage's install step (the RUN that mounts the builder)
installs the wheels into a fresh virtualenv standing for $VIRTUAL_ENV. The worker is started the
way the image starts it (ENTRYPOINT + CMD from that venv, the image's ENV, a clean environment)
against the session broker; it must become ready, pass the image's HEALTHCHECK command, and exit
0 within 30 s of SIGTERM — and write nothing outside DATA_DIR and /tmp (the read-only root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Broker
from tests.deploy.dockerfile import Stage, parse
from tests.deploy.tools import REPO, SHUTDOWN_SECONDS
from tests.integration.harness import Topics, free_port, worker_env

pytestmark = pytest.mark.broker

PARTITIONS = 2


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _sh(command: str, *, cwd: Path, env: dict[str, str], timeout: float = 300) -> None:
    """A RUN step: /bin/sh -c, as Docker runs the shell form."""
    result = subprocess.run(
        ["/bin/sh", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"{command}\nexited {result.returncode}:\n{result.stderr}"


def _build(builder: Stage, src: Path) -> None:
    """The builder stage: COPY the context's files, run each RUN in WORKDIR."""
    ignore = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*-data")
    for copy in builder.all("COPY"):
        *sources, destination = copy.value.split()
        target = src / destination
        for source in sources:
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, target, ignore=ignore, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
    env = {**os.environ, **builder.env()}
    # `python` is the project's interpreter (the image's is the same minor version)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    for step in builder.all("RUN"):
        _, command = step.run_parts()
        _sh(command, cwd=src, env=env)


def _install(runtime: Stage, src: Path, venv: Path) -> dict[str, str]:
    """The runtime stage's install step, with /src and $VIRTUAL_ENV mapped to scratch dirs."""
    (step,) = [
        run
        for run in runtime.all("RUN")
        if any(mount.get("from") == "builder" for mount in run.run_parts()[0])
    ]
    mounts, command = step.run_parts()
    (mount,) = mounts
    image_env = runtime.env(until=step)
    assert image_env["VIRTUAL_ENV"] not in command, "use $VIRTUAL_ENV, so it can be mapped"
    command = command.replace(mount["target"] + "/", f"{src}/")
    env = {**os.environ, **image_env, "VIRTUAL_ENV": str(venv)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    _sh(command, cwd=src, env=env)
    return image_env


@pytest.mark.timeout(240)
def test_image_recipe_runs_the_worker(kafka: Broker, tmp_path: Path) -> None:
    builder, runtime = parse(REPO / "Dockerfile")
    src, venv = tmp_path / "src", tmp_path / "venv"
    started = time.monotonic()
    _build(builder, src)
    wheels = sorted(path.name for path in (src / "dist").glob("*.whl"))
    assert any(name.startswith("tradestats-") for name in wheels), wheels
    _install(runtime, src, venv)
    build_seconds = time.monotonic() - started

    # The container: the image's ENV (its VIRTUAL_ENV, DATA_DIR and PATH mapped to scratch
    # dirs), nothing inherited from this process, an empty HOME and working directory.
    image_env = runtime.env()
    image_venv = image_env["VIRTUAL_ENV"]
    data_dir, tmp, home, workdir = (tmp_path / n for n in ("data", "tmp", "home", "workdir"))
    for directory in (data_dir, tmp, home, workdir):
        directory.mkdir()
    port = free_port()
    env = {key: value.replace(image_venv, str(venv)) for key, value in image_env.items()} | {
        "PATH": image_env["PATH"].replace(image_venv, str(venv)).replace("${PATH}", os.defpath),
        "DATA_DIR": str(data_dir),
        "TMPDIR": str(tmp),
        "HOME": str(home),
        **worker_env(kafka.bootstrap_servers, Topics.unique("image"), PARTITIONS),
        "POD_NAME": "image-0",
        "WEB_HOST": "127.0.0.1",
        "WEB_BIND": "127.0.0.1",
        "WEB_PORT": str(port),
    }
    entrypoint = runtime.last("ENTRYPOINT").exec_form()
    executable = shutil.which(entrypoint[0], path=env["PATH"])
    assert executable == str(venv / "bin" / entrypoint[0]), "the entry point is the venv's"
    argv = [executable, *entrypoint[1:], *runtime.last("CMD").exec_form()]
    before = _files(venv)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        ready_seconds = _wait_ready(process, port, log_path, timeout=90)
        _healthcheck(runtime, env, port)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert b"tradestats_trades_processed_total" in response.read()
        rss_mib = _rss_mib(process.pid)
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(SHUTDOWN_SECONDS)
        stop_seconds = time.monotonic() - stopping
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    tail = log_path.read_text(errors="replace")[-3000:]
    assert code == 0, f"exit {code} after SIGTERM:\n{tail}"
    # read-only root: the venv (the image's filesystem), HOME and the working dir are untouched
    assert _files(venv) == before, "the worker wrote into its installation"
    assert not _files(home), "the worker wrote into HOME"
    assert not _files(workdir), "the worker wrote into its working directory"
    assert list(data_dir.glob("v*/tables/*")), "no RocksDB state under DATA_DIR"
    print(
        f"build+install {build_seconds:.1f} s, ready {ready_seconds:.1f} s, "
        f"SIGTERM to exit {stop_seconds:.1f} s, idle RSS {rss_mib:.0f} MiB"
    )


def _rss_mib(pid: int) -> float:
    """Resident memory (for the resource sizing in k8s/base/statefulset.yaml); 0 if unknown."""
    status = Path(f"/proc/{pid}/status")
    for line in status.read_text().splitlines() if status.exists() else []:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            pytest.fail(f"worker exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as response:
                if response.status == 200:
                    assert json.loads(response.read())["ready"] is True
                    return time.monotonic() - started
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"worker not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def _healthcheck(runtime: Stage, env: dict[str, str], port: int) -> None:
    """The image's HEALTHCHECK command, run as Docker would (in the container's environment)."""
    healthcheck = runtime.last("HEALTHCHECK").value
    argv = json.loads(healthcheck[healthcheck.index("CMD") + 3 :])
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 0, f"HEALTHCHECK failed on port {port}:\n{result.stderr}"
