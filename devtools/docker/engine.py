"""The project's local Docker engine: Debian's dockerd and containerd, on sockets of their own.

No Docker service runs on the development and CI machines, so the engine is started here, as
two processes, from one machine-wide state directory (``default_state_dir()``) that every
checkout and test session shares:

    engine.json        pids of dockerd and containerd, the host settings found before the start
    users.lock         held shared by every process using the engine (see ``stop``)
    docker.sock        the API socket; clients get ``DOCKER_HOST=unix://.../docker.sock``
    data/              dockerd's --data-root: images, containers, volumes, build cache
    containerd/        containerd's root; its state and socket live under exec/
    exec/              dockerd's --exec-root
    dockerd.log, containerd.log

dockerd gets a containerd of its own, not the one it would find at the default path: another
tool (the local Kubernetes) runs Debian's containerd too, and dockerd silently uses whichever
answers at ``/run/containerd/containerd.sock``. Published ports bind 127.0.0.1 unless a compose
file names an address (``--ip``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from devtools.debian import ensure_packages

__all__ = [
    "DOCKER_CLI",
    "DockerEngine",
    "EngineError",
    "default_state_dir",
]

log = logging.getLogger(__name__)

DOCKER_CLI = "/usr/bin/docker"
"""Debian's client, the same version as the engine (another client may be first on PATH)."""
DEBIAN_PACKAGES = ("docker.io", "containerd", "runc", "iptables")
_DOCKERD = "/usr/sbin/dockerd"
_CONTAINERD = "/usr/bin/containerd"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0  # dockerd gives each running container 15 s to stop
_IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


class EngineError(RuntimeError):
    """The engine could not be installed, started or reached; the message says why."""


def default_state_dir() -> Path:
    """``$TRADESTATS_DOCKER_STATE`` or ``~/.cache/tradestats/docker`` (shared machine-wide)."""
    env = os.environ.get("TRADESTATS_DOCKER_STATE")
    if env:
        return Path(env).expanduser().absolute()
    return Path.home() / ".cache" / "tradestats" / "docker"


@dataclass
class DockerEngine:
    """The engine of one state directory: started here, or adopted when already running.

    ``start()`` adopts a live engine of the same state directory (started by another test
    session, checkout or ``python -m devtools.docker engine start``). ``stop()`` stops the
    engine only if this object started it and no other process is using it.
    """

    state_dir: Path = field(default_factory=default_state_dir)
    started_here: bool = field(default=False, init=False)
    _users: IO[str] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()

    # -- paths and client environment ---------------------------------------------------

    @property
    def socket(self) -> Path:
        return self.state_dir / "docker.sock"

    @property
    def host(self) -> str:
        """The ``DOCKER_HOST`` value of this engine."""
        return f"unix://{self.socket}"

    @property
    def dockerd_log(self) -> Path:
        return self.state_dir / "dockerd.log"

    @property
    def _state_file(self) -> Path:
        return self.state_dir / "engine.json"

    @property
    def _exec_root(self) -> Path:
        return self.state_dir / "exec"

    @property
    def _containerd_socket(self) -> Path:
        return self._exec_root / "containerd" / "containerd.sock"

    def env(self) -> dict[str, str]:
        """Variables a Docker client or Compose needs for this engine (BuildKit on)."""
        return {"DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "1", "COMPOSE_BAKE": "false"}

    # -- running the client ---------------------------------------------------------------

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 600,
        stdin: IO[bytes] | None = None,
        capture: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``docker ARGS`` against this engine; raises ``EngineError`` on failure."""
        return run_client([DOCKER_CLI, *args], self.env(), check, timeout, stdin, capture)

    # -- lifecycle ------------------------------------------------------------------------

    def pids(self) -> dict[str, int]:
        """Pids of the live dockerd and containerd of this state directory."""
        state = self._load_state()
        alive = {}
        for name in ("dockerd", "containerd"):
            pid = state.get(name)
            if isinstance(pid, int) and _runs(pid, str(self.state_dir)):
                alive[name] = pid
        return alive

    def is_running(self) -> bool:
        """True when this state directory's dockerd answers on its socket."""
        if "dockerd" not in self.pids():
            return False
        return (
            self.docker("version", "--format", "{{.Server.Version}}", check=False).returncode == 0
        )

    def start(self, timeout: float = _START_TIMEOUT_S) -> Self:
        """Install the packages if needed, then adopt the running engine or start one."""
        ensure_packages(*DEBIAN_PACKAGES)
        with self._locked():
            self._join()
            if self.is_running():
                log.info("using the running Docker engine (%s)", self.host)
                return self
            self._launch(timeout)
        return self

    def stop(self, *, even_adopted: bool = False, timeout: float = _STOP_TIMEOUT_S) -> bool:
        """Stop the engine if this object started it and nobody else uses it (idempotent).

        ``even_adopted``: stop it whoever started it, as ``python -m devtools.docker engine
        stop`` does. dockerd stops its running containers first (SIGTERM, then SIGKILL).
        Returns whether the engine is stopped now.
        """
        with self._locked():
            self._leave()
            if not (self.started_here or even_adopted):
                return not self.pids()
            if not self._nobody_else():
                log.info("the Docker engine is still used by another process; left running")
                return False
            self._terminate(timeout)
            return True

    def _terminate(self, timeout: float) -> None:
        """Stop dockerd, then its containerd, by their recorded pids (the lock is held)."""
        pids = self.pids()
        for name in ("dockerd", "containerd"):
            if name in pids:
                _terminate(name, pids[name], timeout)
        state = self._load_state()
        self._restore_host(state)
        for name in ("dockerd", "containerd"):
            state.pop(name, None)
        self._save_state(state)
        self.started_here = False

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------

    def _launch(self, timeout: float) -> None:
        for name, pid in self.pids().items():  # a dockerd that does not answer, a lone containerd
            _terminate(name, pid, timeout=15)
        for directory in (self._exec_root, self.state_dir / "data", self.state_dir / "containerd"):
            directory.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        state = self._load_state()
        state["host_before"] = _host_settings()
        config = self.state_dir / "containerd.toml"
        config.write_text(self._containerd_config())
        state["containerd"] = _spawn(
            [_CONTAINERD, "--config", str(config)], self.state_dir / "containerd.log"
        )
        self._save_state(state)
        _wait_for(lambda: self._containerd_socket.exists(), 20, "containerd's socket")
        daemon_json = self.state_dir / "daemon.json"
        daemon_json.write_text("{}\n")  # never the machine's /etc/docker/daemon.json
        cmd = [
            _DOCKERD,
            f"--config-file={daemon_json}",
            f"--containerd={self._containerd_socket}",
            f"--data-root={self.state_dir / 'data'}",
            f"--exec-root={self._exec_root}",
            f"--pidfile={self.state_dir / 'dockerd.pid'}",
            f"--host={self.host}",
            "--ip=127.0.0.1",
            f"--mtu={_uplink_mtu()}",
        ]
        log.info("starting the Docker engine (%s; log %s)", self.host, self.dockerd_log)
        state["dockerd"] = _spawn(cmd, self.dockerd_log)
        self._save_state(state)
        self.started_here = True
        try:
            _wait_for(self.is_running, timeout, "the Docker engine", self.dockerd_log)
        except BaseException:
            self._leave()
            self._terminate(timeout=15)  # do not leave a half-started engine behind
            raise

    def _containerd_config(self) -> str:
        root = self.state_dir / "containerd"
        state = self._exec_root / "containerd"
        return (
            "# Generated by devtools.docker on every start.\n"
            "version = 2\n"
            f'root = "{root}"\n'
            f'state = "{state}"\n'
            # dockerd needs none of Kubernetes' CRI; without it containerd starts faster.
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{self._containerd_socket}"\n'
            "[ttrpc]\n"
            f'  address = "{self._containerd_socket}.ttrpc"\n'
        )

    def _restore_host(self, state: dict[str, Any]) -> None:
        """Put back what dockerd changed on the host: IP forwarding and the FORWARD policy."""
        before = state.pop("host_before", None)
        if not isinstance(before, dict):
            return
        if before.get("ip_forward") is not None:
            with contextlib.suppress(OSError):
                _IP_FORWARD.write_text(str(before["ip_forward"]))
        if before.get("forward_policy") in ("ACCEPT", "DROP"):
            subprocess.run(
                ["iptables", "-P", "FORWARD", before["forward_policy"]], check=False, timeout=30
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start and stop across processes."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _join(self) -> None:
        """Hold ``users.lock`` shared while this object uses the engine."""
        if self._users is None:
            self._users = (self.state_dir / "users.lock").open("a")
            fcntl.flock(self._users, fcntl.LOCK_SH)

    def _leave(self) -> None:
        if self._users is not None:
            self._users.close()
            self._users = None

    def _nobody_else(self) -> bool:
        with (self.state_dir / "users.lock").open("a") as users:
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(users, fcntl.LOCK_UN)
            return True

    def _load_state(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self._state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self._state_file)


def run_client(
    cmd: Sequence[str],
    env: dict[str, str],
    check: bool,
    timeout: float | None,
    stdin: IO[bytes] | None = None,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a client command with ``env`` added; ``EngineError`` with its output on failure."""
    try:
        result = subprocess.run(
            list(cmd),
            env={**os.environ, **env},
            stdin=stdin,
            capture_output=capture,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"{' '.join(cmd)} did not finish within {timeout} s") from exc
    if check and result.returncode != 0:
        output = "\n".join(((result.stdout or "") + (result.stderr or "")).splitlines()[-40:])
        raise EngineError(f"{' '.join(cmd)} exited {result.returncode}:\n{output}")
    return result


def _spawn(cmd: list[str], log_file: Path) -> int:
    """Start a daemon in its own session (a Ctrl-C of the caller must not reach it)."""
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return process.pid


def _runs(pid: int, marker: str) -> bool:
    """Is ``pid`` alive (not a zombie) with ``marker`` in its command line?"""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    if status.rsplit(")", 1)[-1].split()[0] == "Z":
        return False
    return marker.encode() in cmdline


def _terminate(name: str, pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; the process is one this state dir recorded."""
    log.info("stopping %s (pid %s)", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            log.warning("%s (pid %s) ignored SIGTERM for %g s; killing it", name, pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # our own child: reap it, or it stays a zombie
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _wait_for(condition: Any, timeout: float, what: str, log_file: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tail = ""
            if log_file is not None and log_file.exists():
                tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
            raise EngineError(f"{what} did not come up within {timeout:g} s\n{tail}")
        time.sleep(0.2)


def _host_settings() -> dict[str, Any]:
    """What dockerd changes at start: IP forwarding (on) and the FORWARD policy (DROP)."""
    settings: dict[str, Any] = {"ip_forward": None, "forward_policy": None}
    with contextlib.suppress(OSError):
        settings["ip_forward"] = _IP_FORWARD.read_text().strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rules = subprocess.run(
            ["iptables", "-S", "FORWARD"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
        for line in rules.splitlines():
            if line.startswith("-P FORWARD "):
                settings["forward_policy"] = line.split()[-1]
    return settings


def _uplink_mtu() -> int:
    """The MTU of the default route's interface: containers must not send larger packets."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":  # the default route
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    return 1500
