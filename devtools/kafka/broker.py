"""The project's local Kafka: a real single-node KRaft broker run from Maven Central jars.

There is no Kafka service or Docker engine on the dev and CI machines, but Java 17 and Maven
are, so the broker is resolved as ordinary jars and run as one JVM (broker and controller in
one process). Everything a broker owns lives in one state directory:

    state.json         ports, cluster id and pid: a restart keeps the same ports and data
    server.properties  regenerated on every start from the options below
    log4j2.xml         copied from this package
    broker.log         broker stdout/stderr (log4j output and JVM errors)
    data/              log.dirs, including the KRaft metadata log
    tls/               generated CA and server certificate (``tls=True``)

The same class is one node of a multi-node cluster (:mod:`devtools.kafka.cluster`): a node id,
the controller ports of every voter and the shared cluster id are then given to it.

Dev only: the default credentials are public and the TLS keys are unencrypted.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import fcntl
import hashlib
import importlib
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devtools.kafka.tls import TlsFiles, ensure_tls_files

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USER",
    "KAFKA_VERSION",
    "BrokerError",
    "BrokerStartError",
    "LocalKafka",
    "default_cache_dir",
    "describe_topics",
    "find_java",
    "new_cluster_id",
    "registered_brokers",
    "resolve_classpath",
    "state_dir_lock",
]

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.2"
"""Pinned broker version; keep in step with pom.xml and the docker-compose image."""

DEFAULT_USER = "tradestats"
DEFAULT_PASSWORD = "tradestats-dev-password"
"""Dev-only SASL user (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN). Never use outside dev/CI."""

DEFAULT_TIMEOUT = 60.0
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_MECHANISMS = (*SCRAM_MECHANISMS, "PLAIN")
LOG_TAIL_LINES = 40
# Fully qualified: no plugin-prefix lookup, and the same plugin version everywhere.
_BUILD_CLASSPATH = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1:build-classpath"

PLAINTEXT, SASL_PLAINTEXT, SSL, SASL_SSL, CONTROLLER = (
    "PLAINTEXT",
    "SASL_PLAINTEXT",
    "SSL",
    "SASL_SSL",
    "CONTROLLER",
)

_PACKAGE_DIR = Path(__file__).resolve().parent
# Ports are picked from here up to the ephemeral range (Linux default start, if unreadable).
_PORT_FLOOR, _EPHEMERAL_LOW = 20000, 32768
# Characters that would break the JAAS string or the --add-scram syntax.
_CREDENTIAL_RE = re.compile(r'[^\s"\\,\[\]=;]+')

# Dev defaults for a single node. Each one is here for a reason:
_BROKER_DEFAULTS: dict[str, str] = {
    # One replica of everything: there is one broker.
    "num.partitions": "1",
    "default.replication.factor": "1",
    "offsets.topic.replication.factor": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    # Fewer offsets partitions make the first group join (topic creation) faster.
    "offsets.topic.num.partitions": "10",
    # No 3 s wait before the first rebalance completes.
    "group.initial.rebalance.delay.ms": "0",
    # The service must create its own topics; a typo should fail, not create a topic.
    "auto.create.topics.enable": "false",
    # Tests produce records with old timestamps: time retention would delete them at once.
    "log.retention.ms": "-1",
    # After a crash (kill()) the new incarnation cannot register until the old session expires
    # (default 9 s); a shorter session makes crash tests start faster, still well above pauses.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    # Cleaner wakes up often so compaction is observable in tests and benchmarks.
    "log.cleaner.backoff.ms": "2000",
}


class BrokerError(RuntimeError):
    """Misuse or state problem of the local broker (not running, listener not enabled...)."""


class BrokerStartError(BrokerError):
    """The broker could not be resolved, formatted or started; the message says why."""


@dataclass
class LocalKafka:
    """One local broker bound to a state directory.

    ``start()`` reuses a live broker of the same state directory (also one started by another
    process, e.g. ``python -m devtools.kafka start``), so fixtures, benchmarks and
    ``make demo`` can share it. Ports are chosen once and kept in ``state.json``.
    """

    state_dir: Path
    port: int | None = None
    """PLAINTEXT port; None or 0 picks a free one (kept for later starts)."""
    sasl: bool = False
    """Add a SASL_PLAINTEXT listener (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)."""
    tls: bool = False
    """Add SSL and SASL_SSL listeners with a generated CA (see ``ca_file``)."""
    heap: str = "512m"
    users: Mapping[str, str] = field(default_factory=lambda: {DEFAULT_USER: DEFAULT_PASSWORD})
    """SASL users (name -> password). SCRAM users are stored when the storage is formatted."""
    properties: Mapping[str, str] = field(default_factory=dict)
    """Extra broker properties; they override the dev defaults."""
    cache_dir: Path | None = None
    """Where the resolved classpath is cached; see ``default_cache_dir()``."""
    node_id: int = 1
    voters: Mapping[int, int] = field(default_factory=dict)
    """Controller port of every voter of the KRaft quorum, by node id; empty: this node alone.
    A node of a quorum keeps its ports for good (the other voters know them)."""
    cluster_id: str | None = None
    """The id its storage is formatted with; None: a new one on the first start."""

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _state: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _lock_depth: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir).absolute()
        for name, password in self.users.items():
            if not (_CREDENTIAL_RE.fullmatch(name) and _CREDENTIAL_RE.fullmatch(password)):
                raise ValueError(
                    f"user {name!r}: names and passwords may not contain whitespace or "
                    '"\\,[]=; (they are embedded in JAAS and --add-scram strings)'
                )

    # -- files -------------------------------------------------------------------------------

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def config_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def ca_file(self) -> Path:
        """CA certificate (PEM) that signs the broker's TLS certificate."""
        return TlsFiles.in_dir(self.state_dir / "tls").ca_cert

    # -- addresses ---------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return self._address(PLAINTEXT)

    @property
    def sasl_bootstrap_servers(self) -> str:
        return self._address(SASL_PLAINTEXT)

    @property
    def ssl_bootstrap_servers(self) -> str:
        return self._address(SSL)

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        return self._address(SASL_SSL)

    @property
    def listeners(self) -> list[str]:
        """Client listeners of the running (or last started) broker."""
        return list(self._current_state().get("listeners", []))

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._current_state().get("ports", {}))

    def _address(self, listener: str) -> str:
        state = self._current_state()
        if listener not in state.get("listeners", []):
            hint = "sasl=True / --sasl" if listener == SASL_PLAINTEXT else "tls=True / --tls"
            if listener == PLAINTEXT:
                hint = "start()"
            raise BrokerError(f"broker in {self.state_dir} has no {listener} listener ({hint})")
        return f"127.0.0.1:{state['ports'][listener]}"

    def client_env(self) -> dict[str, str]:
        """Environment variables for a client of this broker (e.g. ``make demo``)."""
        listeners = self.listeners
        env = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}
        if SASL_PLAINTEXT in listeners:
            env["KAFKA_SASL_BOOTSTRAP_SERVERS"] = self.sasl_bootstrap_servers
        if SSL in listeners:
            env["KAFKA_SSL_BOOTSTRAP_SERVERS"] = self.ssl_bootstrap_servers
            env["KAFKA_SASL_SSL_BOOTSTRAP_SERVERS"] = self.sasl_ssl_bootstrap_servers
            env["KAFKA_SSL_CAFILE"] = str(self.ca_file)
        if SASL_PLAINTEXT in listeners or SASL_SSL in listeners:
            user, password = next(iter(self.users.items()))
            env["KAFKA_SASL_MECHANISM"] = "SCRAM-SHA-512"
            env["KAFKA_SASL_USERNAME"] = user
            env["KAFKA_SASL_PASSWORD"] = password
        return env

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the live broker of this state directory, or None."""
        if self._proc is not None:
            if self._proc.poll() is None:
                return self._proc.pid
            self._proc = None  # ours died; another process may have started it again since
        pid = self._load_state().get("pid")
        if isinstance(pid, int) and _is_broker_process(pid, self.config_file):
            return pid
        return None

    def is_running(self) -> bool:
        """True if the broker process is alive and its PLAINTEXT port accepts connections."""
        if self.pid is None:
            return False
        port = self._current_state().get("ports", {}).get(PLAINTEXT)
        return isinstance(port, int) and _port_open(port)

    def start(self, *, wait: bool = True, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Start the broker, or adopt the one already running on this state directory.

        Storage is formatted (with the SCRAM users) only on the first start.
        """
        with self._locked():
            state = self._load_state()
            wanted = self._wanted_listeners()
            if self.pid is not None:
                self._adopt(state, wanted)
                if wait:
                    self.wait_ready(timeout)
                return self
            self._launch(state, wanted)
            if wait:
                try:
                    self.wait_ready(timeout)
                except BaseException:
                    self.stop(timeout=5.0)  # do not leave a half-started broker behind
                    raise
        return self

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise start/stop of one state directory across processes (e.g. xdist workers)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        with state_dir_lock(self.state_dir):
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0

    def _adopt(self, state: dict[str, Any], wanted: list[str]) -> None:
        missing = [name for name in wanted if name not in state.get("listeners", [])]
        if missing:
            raise BrokerError(
                f"the broker running in {self.state_dir} (pid {state.get('pid')}) has no "
                f"{', '.join(missing)} listener; restart it with the new options"
            )
        if self.port and state["ports"][PLAINTEXT] != self.port:
            raise BrokerError(
                f"the broker running in {self.state_dir} listens on "
                f"{state['ports'][PLAINTEXT]}, not {self.port}; restart it to change the port"
            )
        self._state = state
        log.info("reusing running broker (pid %s) in %s", state.get("pid"), self.state_dir)

    def reserve_ports(self) -> dict[str, int]:
        """Choose (or keep) this node's ports without starting it: a quorum's voters must all
        be known before its first node starts."""
        with self._locked():
            state = self._load_state()
            if self.pid is None:
                state["ports"] = self._assign_ports(
                    state.get("ports", {}), [*self._wanted_listeners(), CONTROLLER]
                )
                self._state = state
                self._save_state()
            return dict(state["ports"])

    def _launch(self, state: dict[str, Any], wanted: list[str]) -> None:
        state["ports"] = self._assign_ports(state.get("ports", {}), [*wanted, CONTROLLER])
        if self.voters and self.voters.get(self.node_id) != state["ports"][CONTROLLER]:
            raise BrokerStartError(
                f"node {self.node_id}: controller port {state['ports'][CONTROLLER]} is not the "
                f"one its quorum knows ({self.voters.get(self.node_id)})"
            )
        state["listeners"] = wanted
        if self.cluster_id and state.setdefault("cluster_id", self.cluster_id) != self.cluster_id:
            raise BrokerStartError(
                f"{self.state_dir} belongs to Kafka cluster {state['cluster_id']}, "
                f"not {self.cluster_id}: delete it to join this cluster"
            )
        state.setdefault("cluster_id", new_cluster_id())
        state["kafka_version"] = KAFKA_VERSION
        state["pid"] = None
        java = find_java()
        classpath = os.pathsep.join(resolve_classpath(self.cache_dir))
        if SSL in wanted:
            ensure_tls_files(self.state_dir / "tls")
        self.config_file.write_text(self._render_config(state))
        log4j = self.state_dir / "log4j2.xml"
        shutil.copyfile(_PACKAGE_DIR / "log4j2.xml", log4j)
        self._format_once(java, classpath, state)
        _rotate(self.log_file)

        cmd = [
            java,
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={self.state_dir}",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(self.config_file),
        ]
        log.info("starting Kafka %s in %s (log: %s)", KAFKA_VERSION, self.state_dir, self.log_file)
        with self.log_file.open("ab") as out:
            # Own session: Ctrl-C in the shell that ran `devtools.kafka start` must not kill it.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )
        state["pid"] = self._proc.pid
        self._state = state
        self._save_state()

    def wait_ready(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Block until every listener port is open and a metadata request lists this node
        (as a live broker: registered with the controller, and not fenced).

        The metadata request runs on a private event loop in a worker thread, so this is safe
        from sync code and from inside a running event loop.
        """
        deadline = time.monotonic() + timeout
        ports = [self.ports[name] for name in self.listeners]
        announced = False
        while True:
            if self.pid is None:
                raise BrokerStartError(self._with_log_tail("the broker process exited"))
            remaining = deadline - time.monotonic()
            if all(_port_open(p) for p in ports) and _registered(
                self.bootstrap_servers, self.node_id, max(1.0, min(5.0, remaining))
            ):
                return
            if remaining <= 0:
                raise BrokerStartError(
                    self._with_log_tail(f"the broker was not ready within {timeout:g} s")
                )
            if not announced:
                log.info("waiting for the broker on %s ...", self.bootstrap_servers)
                announced = True
            time.sleep(0.25)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (clean shutdown), then SIGKILL after ``timeout``. Idempotent."""
        self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; the next start recovers the logs."""
        self._terminate(signal.SIGKILL, 10.0)

    def restart(self, *, timeout: float = DEFAULT_TIMEOUT) -> Self:
        """Stop and start again on the same data and ports."""
        self.stop()
        return self.start(timeout=timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        with self._locked():
            self._terminate_locked(sig, timeout)

    def _terminate_locked(self, sig: signal.Signals, timeout: float) -> None:
        pid = self.pid
        if pid is not None:
            log.info("stopping broker pid %s (%s)", pid, sig.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            if not self._wait_exit(pid, timeout) and sig != signal.SIGKILL:
                log.warning("broker pid %s ignored SIGTERM for %g s; killing it", pid, timeout)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        self._proc = None
        state = self._load_state()
        if state.get("pid") is not None:
            state["pid"] = None
            self._state = state
            self._save_state()

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while not _has_exited(pid, self.config_file):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    # -- helpers -----------------------------------------------------------------------------

    def _wanted_listeners(self) -> list[str]:
        return [PLAINTEXT] + [SASL_PLAINTEXT] * self.sasl + [SSL, SASL_SSL] * self.tls

    def _assign_ports(self, saved: Mapping[str, int], names: Iterable[str]) -> dict[str, int]:
        """Keep saved ports; pick free ones for new listeners or saved ports now taken."""
        ports = dict(saved)  # also keep ports of listeners not used this time
        for name in names:
            if name == PLAINTEXT and self.port:
                if not _port_free(self.port):
                    raise BrokerStartError(
                        f"port {self.port} is already in use; pick another --port or stop "
                        "whatever listens there"
                    )
                ports[name] = self.port
                continue
            port = saved.get(name)
            if port is not None and not _port_free(port):
                if self.voters:
                    raise BrokerStartError(
                        f"node {self.node_id}: its {name} port {port} is taken by another "
                        "process; a node of a quorum cannot move (stop what listens there)"
                    )
                log.warning("saved %s port %s is taken; picking another one", name, port)
                port = None
            ports[name] = port or _free_port(avoid={*ports.values(), *saved.values()})
        return ports

    def _render_config(self, state: Mapping[str, Any]) -> str:
        ports: Mapping[str, int] = state["ports"]
        listeners: list[str] = state["listeners"]
        voters = self.voters or {self.node_id: ports[CONTROLLER]}
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(
                f"{node}@127.0.0.1:{port}" for node, port in sorted(voters.items())
            ),
            "controller.listener.names": CONTROLLER,
            "inter.broker.listener.name": PLAINTEXT,
            "listeners": ",".join(
                f"{name}://127.0.0.1:{ports[name]}" for name in [*listeners, CONTROLLER]
            ),
            "advertised.listeners": ",".join(
                f"{name}://127.0.0.1:{ports[name]}" for name in listeners
            ),
            "listener.security.protocol.map": ",".join(f"{name}:{name}" for name in listeners)
            + f",{CONTROLLER}:{PLAINTEXT}",
            "log.dirs": str(self.data_dir),
            **_BROKER_DEFAULTS,
        }
        sasl_listeners = [name for name in listeners if name.startswith("SASL_")]
        if sasl_listeners:
            props["sasl.enabled.mechanisms"] = ",".join(SASL_MECHANISMS)
            plain_users = " ".join(f'user_{u}="{p}"' for u, p in self.users.items())
            for name in sasl_listeners:
                prefix = f"listener.name.{name.lower()}"
                for mech in SCRAM_MECHANISMS:
                    props[f"{prefix}.{mech.lower()}.sasl.jaas.config"] = (
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    )
                props[f"{prefix}.plain.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    f"{plain_users};"
                )
        if SSL in listeners:
            tls = TlsFiles.in_dir(self.state_dir / "tls")
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(tls.server_keystore)
            props["ssl.client.auth"] = "none"
        props.update(self.properties)
        lines = ["# Generated by devtools.kafka on every start; edits are overwritten."]
        lines += [f"{key}={_escape_property(value)}" for key, value in props.items()]
        return "\n".join(lines) + "\n"

    def _format_once(self, java: str, classpath: str, state: dict[str, Any]) -> None:
        fingerprint = hashlib.sha256(json.dumps(sorted(self.users.items())).encode()).hexdigest()
        if (self.data_dir / "meta.properties").exists():
            if state.get("scram_users_sha256", fingerprint) != fingerprint:
                raise BrokerStartError(
                    f"SCRAM users differ from those {self.state_dir} was formatted with; "
                    "they are fixed at format time: delete the state directory to change them"
                )
            return
        cmd = [java, "-cp", classpath, "kafka.tools.StorageTool", "format"]
        cmd += ["-t", state["cluster_id"], "-c", str(self.config_file)]
        for user, password in self.users.items():
            for mech in SCRAM_MECHANISMS:
                cmd += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        log.info("formatting storage in %s", self.data_dir)
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            raise BrokerStartError(
                f"formatting the storage failed (exit {result.returncode}):\n"
                + _tail(result.stdout + result.stderr)
            )
        state["scram_users_sha256"] = fingerprint

    def _load_state(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise BrokerError(f"{self.state_file} is corrupt ({exc}); delete it") from exc
        return loaded if isinstance(loaded, dict) else {}

    def _current_state(self) -> dict[str, Any]:
        if not self._state:
            self._state = self._load_state()
        return self._state

    def _save_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_file)

    def _with_log_tail(self, message: str) -> str:
        try:
            with self.log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            text = ""
        return f"{message}; last lines of {self.log_file}:\n{_tail(text)}"


@contextlib.contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """An exclusive lock on a state directory (its ``.lock`` file), across processes."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


# -- classpath and java ----------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``$TRADESTATS_KAFKA_CACHE`` or ``~/.cache/tradestats/kafka-<version>``."""
    env = os.environ.get("TRADESTATS_KAFKA_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tradestats" / f"kafka-{KAFKA_VERSION}"


def resolve_classpath(cache_dir: Path | None = None) -> list[str]:
    """Jars of the broker, resolved by Maven once and cached.

    Re-resolves when a cached jar is gone (e.g. a cleaned ``~/.m2``) or ``pom.xml`` changed.
    """
    cache = cache_dir or default_cache_dir()
    cp_file = cache / "classpath.txt"
    pom = (_PACKAGE_DIR / "pom.xml").read_text()
    cached_pom = cache / "pom.xml"
    if cp_file.exists() and cached_pom.exists() and cached_pom.read_text() == pom:
        jars = [j for j in cp_file.read_text().strip().split(os.pathsep) if j]
        if jars and all(Path(j).is_file() for j in jars):
            return jars
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerStartError(
            "Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka "
            f"{KAFKA_VERSION} jars from Maven Central (install Maven 3.6+)"
        )
    cache.mkdir(parents=True, exist_ok=True)
    cached_pom.write_text(pom)
    tmp = cache / f"classpath.{os.getpid()}.tmp"
    log.info("resolving the Kafka %s jars with Maven (first run only) ...", KAFKA_VERSION)
    cmd = [mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(cached_pom), _BUILD_CLASSPATH]
    cmd.append(f"-Dmdep.outputFile={tmp}")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=900)
    except subprocess.TimeoutExpired as exc:
        raise BrokerStartError(f"Maven did not finish within {exc.timeout:g} s") from exc
    if result.returncode != 0 or not tmp.exists():
        raise BrokerStartError(
            f"resolving the Kafka jars failed ({' '.join(cmd)} exited {result.returncode}; "
            "the first run needs Maven Central or a filled ~/.m2):\n"
            + _tail(result.stdout + result.stderr)
        )
    os.replace(tmp, cp_file)
    return [j for j in cp_file.read_text().strip().split(os.pathsep) if j]


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH (Kafka 4 needs Java 17+)."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerStartError(
            f"Java not found: Kafka {KAFKA_VERSION} needs Java 17+; set JAVA_HOME or put "
            "'java' on PATH"
        )
    return java


# -- small utilities -------------------------------------------------------------------------


def new_cluster_id() -> str:
    """A Kafka Uuid in its base64 form, as ``StorageTool random-uuid`` prints (no JVM)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):  # Kafka avoids ids that look like CLI flags
            return text


def _is_broker_process(pid: int, config_file: Path) -> bool:
    """Is ``pid`` alive and our broker (not a recycled pid)? Zombies count as dead."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return False
    except PermissionError:
        cmdline = b""
    else:
        return str(config_file).encode() in cmdline.split(b"\0")
    try:  # no procfs (macOS): trust the pid
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _has_exited(pid: int, config_file: Path) -> bool:
    """Has our broker ``pid`` finished exiting (all its threads gone, or the pid reused)?

    Not the same as "no longer our live broker": a process's command line reads empty from the
    start of its exit, and its main thread is a zombie while the JVM's other threads are still
    exiting; its sockets stay open (and its parent cannot reap it) until the last thread is
    gone. A restart must not find its ports still taken.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:  # gone, or no procfs (macOS): then ask the pid
        return Path("/proc/self").exists() or not _is_broker_process(pid, config_file)
    state = stat.rpartition(")")[2].split()[0]
    reused = bool(cmdline) and str(config_file).encode() not in cmdline.split(b"\0")
    return (state in ("Z", "X") and threads <= 1) or reused


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port(avoid: set[int]) -> int:
    """A free port below the kernel's ephemeral range.

    A port the kernel hands out for outgoing connections can be taken while its broker is down:
    by any client's connection, or by a client reconnecting to the dead port itself, which on
    loopback can connect to itself (TCP simultaneous open). The restart would then fail.
    """
    low = _EPHEMERAL_LOW
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    candidates = list(range(_PORT_FLOOR, max(_PORT_FLOOR + 1000, low)))
    random.shuffle(candidates)
    for port in candidates:
        if port not in avoid and _port_free(port):
            return port
    raise BrokerStartError(f"no free port between {_PORT_FLOOR} and {low}")


def _registered(bootstrap: str, node_id: int, timeout: float) -> bool:
    """Does the cluster's metadata list ``node_id`` among its live brokers?"""
    try:
        return node_id in registered_brokers(bootstrap, timeout)
    except Exception:  # not ready yet: any failure means "try again"
        return False


def registered_brokers(bootstrap: str, timeout: float = 10.0) -> list[int]:
    """Node ids of the brokers the cluster's metadata lists: registered and not fenced."""
    cluster = _admin_call(bootstrap, "describe_cluster", timeout)
    return sorted(int(broker["node_id"]) for broker in cluster.get("brokers", []))


def describe_topics(bootstrap: str, topics: list[str] | None, timeout: float = 10.0) -> list[Any]:
    """aiokafka's metadata of ``topics`` (None: all of them): per partition its ``leader``,
    ``replicas`` and ``isr``."""
    described: list[Any] = _admin_call(bootstrap, "describe_topics", timeout, topics)
    return described


def _admin_call(bootstrap: str, method: str, timeout: float, *args: Any) -> Any:
    """One aiokafka admin request, on a private event loop in a worker thread: safe from sync
    code and from inside a running event loop.

    The admin client sends to a random broker of its metadata, which can name a node that has
    just died: retriable errors are retried (on another random pick) until ``timeout``.
    """

    async def call() -> Any:
        # aiokafka ships no type information; import it dynamically to keep mypy strict clean.
        admin_module: Any = importlib.import_module("aiokafka.admin")
        admin = admin_module.AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        deadline = time.monotonic() + timeout
        try:
            await asyncio.wait_for(admin.start(), timeout)
            while True:
                remaining = max(0.1, deadline - time.monotonic())
                try:
                    return await asyncio.wait_for(getattr(admin, method)(*args), remaining)
                except Exception as exc:
                    if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.1)
        finally:
            with contextlib.suppress(Exception):
                await admin.close()

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="devtools-kafka") as pool:
        return pool.submit(lambda: asyncio.run(call())).result()


def _escape_property(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _rotate(path: Path, max_bytes: int = 20 * 1024 * 1024) -> None:
    if path.exists() and path.stat().st_size > max_bytes:
        os.replace(path, path.with_suffix(path.suffix + ".1"))


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Maven's colour codes
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty)"
