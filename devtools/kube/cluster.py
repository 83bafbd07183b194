"""A real single-node Kubernetes cluster on this machine: :class:`LocalCluster`.

``up`` starts, in order and each only if it is not already running: etcd, containerd (with
the cluster's own images imported), the API server and the forwarder that lets pods reach it,
the controller manager, the scheduler, the kubelet, kube-proxy and the local-path provisioner;
then it applies CoreDNS and the default StorageClass and waits until the node is Ready and DNS
answers. Each process is recorded in the state file by PID and start time.

``down`` deletes every pod first (with the controllers stopped, so none is recreated), so the
kubelet unmounts volumes and the CNI plugin releases addresses; then it stops the rest by their
recorded PIDs, removes kube-proxy's iptables rules and the bridge, and restores the host's
kernel settings. The cluster's data (etcd, volumes, images) stays for the next ``up`` unless
``purge`` is asked for.

The host's kernel settings are saved once, before anything starts, and written back right
after the kubelet has started (it rewrites some of them at every start) and again on ``down``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import ssl
import string
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from devtools.kube import host
from devtools.kube.build import KUBERNETES_VERSION, Toolchain, ensure_built
from devtools.kube.config import (
    BRIDGE,
    CLUSTER_DOMAIN,
    COREDNS_IMAGE,
    DNS_IP,
    GATEWAY,
    HELPER_IMAGE,
    KUBERNETES_SERVICE_IP,
    PAUSE_IMAGE,
    PROMETHEUS_IMAGE,
    SERVICE_CIDR,
    Layout,
    Ports,
    cni_config,
    containerd_config,
    kubeconfig,
    kubelet_config,
    node_name,
    proxy_config,
    write_if_changed,
)
from devtools.kube.images import ImageFile, write_image_archive
from devtools.kube.pki import ClientIdentity, Pki, ensure_pki
from devtools.kube.processes import Daemon, spawn

__all__ = ["ClusterError", "LocalCluster", "default_state_dir"]

log = logging.getLogger(__name__)

_ADDONS = Path(__file__).resolve().parent / "addons"
_BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
_HELPER_COMMANDS = ("sh", "mkdir", "rm", "chmod", "ls", "cat", "sleep")
_CLIENTS = (
    ClientIdentity("admin", "tradestats:admin", ("system:masters",)),
    ClientIdentity(
        "apiserver-kubelet-client", "kube-apiserver-kubelet-client", ("system:masters",)
    ),
    ClientIdentity("controller-manager", "system:kube-controller-manager"),
    ClientIdentity("scheduler", "system:kube-scheduler"),
    ClientIdentity("kube-proxy", "system:kube-proxy"),
    ClientIdentity("local-path-provisioner", "tradestats:local-path-provisioner"),
)
# (the client certificate of node_name() is added at runtime: system:node:<name>)
#: In start order; ``down`` stops them in reverse.
COMPONENTS = (
    "etcd",
    "containerd",
    "kube-apiserver",
    "apiserver-forwarder",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "local-path-provisioner",
)


class ClusterError(RuntimeError):
    """The cluster could not start or stop; the message says which part, with its log."""


def default_state_dir() -> Path:
    """``$TRADESTATS_KUBE_STATE`` or ``~/.local/state/tradestats/kube``: one per machine,
    since the bridge, the iptables rules and the kernel settings are machine-wide."""
    env = os.environ.get("TRADESTATS_KUBE_STATE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".local" / "state" / "tradestats" / "kube"


class LocalCluster:
    """The cluster of one state directory (see the module docstring)."""

    def __init__(self, state_dir: Path | None = None, cache_dir: Path | None = None) -> None:
        self.layout = Layout((state_dir or default_state_dir()).resolve())
        self.cache_dir = cache_dir
        self.node = node_name()
        self._toolchain: Toolchain | None = None
        self._lock_depth = 0

    # --- public -----------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (``KUBECONFIG=...`` for kubectl and clients)."""
        return self.layout.kubeconfig("admin")

    @property
    def kubectl_path(self) -> Path:
        return self._program("kubectl")

    @property
    def toolchain(self) -> Toolchain:
        if self._toolchain is None:
            self._toolchain = ensure_built(self.cache_dir)
        return self._toolchain

    def running(self) -> dict[str, bool]:
        """Every component: is its recorded process alive?"""
        daemons = self._daemons()
        return {name: name in daemons and daemons[name].alive() for name in COMPONENTS}

    def is_up(self) -> bool:
        return all(self.running().values()) and self._node_ready()

    def up(self, timeout: float = 600.0) -> None:
        """Start whatever is not running and wait until the node and DNS are ready."""
        with self._locked():
            deadline = time.monotonic() + timeout
            tools = self.toolchain
            self._update_state(programs={name: str(path) for name, path in tools.programs.items()})
            self._save_host_settings()
            host.write_settings(host.NEEDED_BY_CLUSTER)
            state = self._state()
            ports = Ports.pick(state.get("ports", {}))
            self._update_state(ports=dict(ports.numbers))
            pki = self._pki()
            self._write_configs(ports, pki)
            self._write_images(tools)
            host.create_bridge(BRIDGE, f"{GATEWAY}/24")
            for name in COMPONENTS:
                if not self.running()[name]:
                    self._start(name, tools, ports, pki, deadline)
                if name == "containerd":  # unchanged images import as no-ops
                    for archive in sorted(self.layout.images.glob("*.tar")):
                        self.import_images(archive)
            self._apply_addons()
            self._wait("the node to be Ready", self._node_ready, deadline, "kubelet")
            self._restore_host_settings(keep_saved=True)
            self._wait("CoreDNS to be ready", self._dns_ready, deadline, "kubelet")
            log.info("cluster up: KUBECONFIG=%s", self.kubeconfig)

    def down(self, *, purge: bool = False, timeout: float = 180.0) -> None:
        """Delete every pod, stop every component, restore the host (see the module doc)."""
        with self._locked():
            daemons = self._daemons()
            for name in ("kube-controller-manager", "kube-scheduler"):
                if name in daemons:
                    daemons[name].stop()
            if self.running()["kube-apiserver"]:
                self._delete_all_pods(timeout, kubelet=self.running()["kubelet"])
            for name in reversed(COMPONENTS):
                if name == "containerd" and name in daemons:
                    self._kill_leftover_tasks()
                if name in daemons:
                    daemons[name].stop()
            if "kube-proxy" in daemons:
                self._run(str(self._program("kube-proxy")), "--cleanup", check=False)
            host.remove_chains(host.LEFTOVER_CHAINS)
            self._update_state(daemons={})
            host.unmount_under(self.layout.root)
            host.delete_bridge(BRIDGE)
            self._restore_host_settings(keep_saved=False)
            if purge:
                shutil.rmtree(self.layout.root)
            log.info("cluster down%s", " (state removed)" if purge else "")

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        """Run the cluster's kubectl with the admin kubeconfig; returns its output."""
        return self._run(
            str(self.kubectl_path),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            input=input,
            check=check,
        )

    def import_images(self, archive: Path) -> None:
        """Import a ``docker save`` archive into the cluster's containerd (namespace k8s.io):
        images reach the cluster this way only, nothing is pulled."""
        self._ctr("images", "import", str(archive))

    def tag_image(self, source: str, target: str) -> None:
        """Give an imported image another name (e.g. the upstream name of a local stand-in)."""
        self._ctr("images", "tag", "--force", _reference(source), _reference(target))

    def log_tail(self, component: str, lines: int = 40) -> str:
        path = self.layout.log(component)
        text = path.read_text(errors="replace") if path.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _program(self, name: str) -> Path:
        """The program the running cluster was started with (so that ``down`` and kubectl
        never wait for a build), else the toolchain's."""
        recorded = self._state().get("programs", {}).get(name)
        if recorded and Path(recorded).is_file():
            return Path(recorded)
        return self.toolchain[name]

    # --- starting ---------------------------------------------------------------------------

    def _start(self, name: str, tools: Toolchain, ports: Ports, pki: Pki, deadline: float) -> None:
        if name == "local-path-provisioner":
            self._apply("local-path.yaml")  # it reads its ConfigMap when it starts
        log.info("starting %s", name)
        daemon = spawn(name, self._command(name, tools, ports, pki), self.layout.log(name))
        self._record(daemon)
        self._wait(
            f"{name} to answer",
            lambda: daemon.alive() and self._answers(name, ports),
            deadline,
            name,
        )

    def _command(self, name: str, tools: Toolchain, ports: Ports, pki: Pki) -> list[str]:
        layout = self.layout
        command: list[str]
        if name == "etcd":
            peer = f"http://127.0.0.1:{ports.etcd_peer}"
            command = [
                str(tools["etcd"]),
                "--name=tradestats",
                f"--data-dir={layout.etcd}",
                f"--listen-client-urls=http://127.0.0.1:{ports.etcd}",
                f"--advertise-client-urls=http://127.0.0.1:{ports.etcd}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=tradestats={peer}",
                # A throw-away cluster on a shared disk: fsync latency would slow every write.
                "--unsafe-no-fsync",
                "--log-level=warn",
            ]
        elif name == "containerd":
            command = ["containerd", f"--config={layout.containerd_config}"]
        elif name == "kube-apiserver":
            command = [
                str(tools["kube-apiserver"]),
                f"--etcd-servers=http://127.0.0.1:{ports.etcd}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.apiserver}",
                # Pods reach the API server through the forwarder on the pods' gateway.
                f"--advertise-address={GATEWAY}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                f"--client-ca-file={pki.ca_cert}",
                f"--tls-cert-file={pki.cert('apiserver')}",
                f"--tls-private-key-file={pki.key('apiserver')}",
                f"--kubelet-client-certificate={pki.cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.key('apiserver-kubelet-client')}",
                # The kubelet serves on 127.0.0.1, and the node's name resolves there.
                "--kubelet-preferred-address-types=Hostname,InternalIP",
                f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
                f"--service-account-key-file={pki.service_account_public}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                "--authorization-mode=Node,RBAC",
                "--profiling=false",
            ]
        elif name == "apiserver-forwarder":
            command = [
                "socat",
                f"TCP-LISTEN:{ports.apiserver},bind={GATEWAY},reuseaddr,fork",
                f"TCP:127.0.0.1:{ports.apiserver}",
            ]
        elif name == "kube-controller-manager":
            config = layout.kubeconfig("controller-manager")
            command = [
                str(tools["kube-controller-manager"]),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.controller_manager}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                "--allocate-node-cidrs=false",
                "--cluster-name=tradestats",
                "--profiling=false",
            ]
        elif name == "kube-scheduler":
            config = layout.kubeconfig("scheduler")
            command = [
                str(tools["kube-scheduler"]),
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1",
                f"--secure-port={ports.scheduler}",
                "--leader-elect=false",
                "--profiling=false",
            ]
        elif name == "kubelet":
            command = [
                str(tools["kubelet"]),
                f"--config={layout.kubelet_config}",
                f"--kubeconfig={layout.kubeconfig('kubelet')}",
                f"--root-dir={layout.kubelet}",
                "--v=1",
            ]
        elif name == "kube-proxy":
            command = [str(tools["kube-proxy"]), f"--config={layout.proxy_config}"]
        elif name == "local-path-provisioner":
            command = [
                str(tools["local-path-provisioner"]),
                "start",
                f"--kubeconfig={layout.kubeconfig('local-path-provisioner')}",
                "--namespace=local-path-storage",
                "--configmap-name=local-path-config",
                "--service-account-name=local-path-helper",
                f"--helper-image={HELPER_IMAGE}",
                "--provisioner-name=rancher.io/local-path",
            ]
        else:
            raise ValueError(name)
        return command

    def _answers(self, name: str, ports: Ports) -> bool:
        """Does the freshly started component serve yet?"""
        if name == "etcd":
            return _http_ok(f"http://127.0.0.1:{ports.etcd}/health")
        if name == "containerd":
            return self._containerd_ready()
        if name == "kube-apiserver":
            return self._api_ok(ports, "/readyz")
        if name == "apiserver-forwarder":
            return _port_open(GATEWAY, ports.apiserver)
        if name == "kube-controller-manager":
            return _port_open("127.0.0.1", ports.controller_manager)
        if name == "kube-scheduler":
            return _port_open("127.0.0.1", ports.scheduler)
        if name == "kubelet":
            return _http_ok(f"http://127.0.0.1:{ports.kubelet_healthz}/healthz")
        if name == "kube-proxy":
            return _http_ok(f"http://127.0.0.1:{ports.proxy_healthz}/healthz")
        return True  # the local-path provisioner serves nothing; its volumes show it works

    def _write_configs(self, ports: Ports, pki: Pki) -> None:
        layout = self.layout
        server = f"https://127.0.0.1:{ports.apiserver}"
        users = {client.file_name: client.user for client in _CLIENTS}
        users["kubelet"] = f"system:node:{self.node}"
        for file_name, user in users.items():
            write_if_changed(
                layout.kubeconfig(file_name),
                kubeconfig(server, pki.ca_cert, pki.cert(file_name), pki.key(file_name), user),
            )
        write_if_changed(layout.kubelet_config, kubelet_config(layout, ports, pki.ca_cert))
        write_if_changed(layout.proxy_config, proxy_config(layout, ports))
        write_if_changed(layout.containerd_config, containerd_config(layout))
        write_if_changed(layout.cni_conf / "10-tradestats.conflist", cni_config(layout))
        layout.volumes.mkdir(parents=True, exist_ok=True)

    def _pki(self) -> Pki:
        clients = (
            *_CLIENTS,
            ClientIdentity("kubelet", f"system:node:{self.node}", ("system:nodes",)),
        )
        return ensure_pki(
            self.layout.pki,
            server_name="kube-apiserver",
            server_ips=("127.0.0.1", GATEWAY, KUBERNETES_SERVICE_IP),
            server_dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{CLUSTER_DOMAIN}",
            ),
            clients=clients,
        )

    def _write_images(self, tools: Toolchain) -> None:
        """The pod sandbox, CoreDNS, the volume helper and Prometheus: one static binary
        each. (Prometheus: the Docker stand-in is Debian's, which has no Kubernetes service
        discovery.)"""
        images = self.layout.images
        write_image_archive(
            images / "pause.tar",
            PAUSE_IMAGE,
            {"/pause": ImageFile(tools["pause"])},
            entrypoint=["/pause"],
            user="65535",
        )
        write_image_archive(
            images / "coredns.tar",
            COREDNS_IMAGE,
            {"/coredns": ImageFile(tools["coredns"])},
            entrypoint=["/coredns"],
        )
        write_image_archive(
            images / "busybox.tar",
            HELPER_IMAGE,
            {
                "/bin/busybox": ImageFile(
                    _BUSYBOX, links=tuple(f"/bin/{c}" for c in _HELPER_COMMANDS)
                )
            },
            entrypoint=["/bin/sh"],
        )
        write_image_archive(
            images / "prometheus.tar",
            PROMETHEUS_IMAGE,
            {"/bin/prometheus": ImageFile(tools["prometheus"])},
            entrypoint=["/bin/prometheus"],
            user="65534",
        )

    def _apply_addons(self) -> None:
        self._apply("coredns.yaml")
        self._apply("local-path.yaml")

    def _apply(self, addon: str) -> None:
        template = string.Template((_ADDONS / addon).read_text())
        manifest = template.substitute(
            CLUSTER_DOMAIN=CLUSTER_DOMAIN,
            COREDNS_IMAGE=COREDNS_IMAGE,
            DNS_IP=DNS_IP,
            HELPER_IMAGE=HELPER_IMAGE,
            VOLUMES_DIR=str(self.layout.volumes),
        )
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)

    # --- stopping ---------------------------------------------------------------------------

    def _delete_all_pods(self, timeout: float, *, kubelet: bool) -> None:
        """Every pod, gracefully through the kubelet (which unmounts and releases the
        network); without a kubelet only their API objects can go."""
        args = ["delete", "pods", "--all", "--all-namespaces", f"--timeout={timeout:.0f}s"]
        if not kubelet:
            args += ["--force", "--grace-period=0"]
        log.info("deleting every pod")
        self.kubectl(*args, "--wait=true", check=False)

    def _kill_leftover_tasks(self) -> None:
        """Containers still running once the kubelet is gone (their shims outlive containerd)."""
        leftover = self._ctr("tasks", "list", "--quiet", check=False).split()
        for task in leftover:
            log.warning("killing leftover container %s", task)
            self._ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        if leftover:
            self._wait(
                "leftover containers to exit",
                lambda: not self._ctr("tasks", "list", "--quiet", check=False).split(),
                time.monotonic() + 30,
                "containerd",
            )
        for task in leftover:
            self._ctr("tasks", "delete", task, check=False)

    # --- host settings ----------------------------------------------------------------------

    def _save_host_settings(self) -> None:
        """Once: a later ``up`` after a crash must not save the kubelet's values as the host's."""
        if "host_settings" not in self._state():
            names = (*host.CHANGED_BY_KUBELET, *host.NEEDED_BY_CLUSTER)
            self._update_state(host_settings=host.read_settings(names))

    def host_settings_drift(self) -> dict[str, tuple[str, str]]:
        """Kernel settings that differ from the host's saved values: name -> (saved, now).
        The cluster's own needs (forwarding, bridged iptables) do not count."""
        saved = {
            k: v
            for k, v in self._state().get("host_settings", {}).items()
            if k not in host.NEEDED_BY_CLUSTER
        }
        now = host.read_settings(saved)
        return {k: (v, now[k]) for k, v in saved.items() if k in now and now[k] != v}

    def _restore_host_settings(self, *, keep_saved: bool) -> None:
        saved = self._state().get("host_settings")
        if saved is None:
            return
        needed = set(host.NEEDED_BY_CLUSTER) if keep_saved else set()
        changed = host.write_settings({k: v for k, v in saved.items() if k not in needed})
        if changed:
            log.info("restored the host's kernel settings: %s", ", ".join(sorted(changed)))
        if not keep_saved:
            state = self._state()
            state.pop("host_settings", None)
            self._write_state(state)

    # --- probes -----------------------------------------------------------------------------

    def _api_ok(self, ports: Ports, path: str) -> bool:
        pki = Pki(self.layout.pki)
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        context.load_cert_chain(pki.cert("admin"), pki.key("admin"))
        return _http_ok(f"https://127.0.0.1:{ports.apiserver}{path}", context)

    def _containerd_ready(self) -> bool:
        try:
            self._ctr("version")
        except ClusterError:
            return False
        return True

    def _node_ready(self) -> bool:
        status = self.kubectl(
            "get",
            "node",
            self.node,
            "--ignore-not-found",
            "-o",
            'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
            check=False,
        )
        return status.strip() == "True"

    def _dns_ready(self) -> bool:
        ready = self.kubectl(
            "-n",
            "kube-system",
            "get",
            "deployment",
            "coredns",
            "--ignore-not-found",
            "-o",
            "jsonpath={.status.readyReplicas}",
            check=False,
        )
        return ready.strip() == "1"

    def _wait(self, what: str, check: Callable[[], bool], deadline: float, component: str) -> None:
        while not check():
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"timed out waiting for {what}; {component} log "
                    f"({self.layout.log(component)}):\n{self.log_tail(component)}"
                )
            daemon = self._daemons().get(component)
            if daemon is not None and not daemon.alive():
                raise ClusterError(
                    f"{component} exited while waiting for {what}:\n{self.log_tail(component)}"
                )
            time.sleep(0.5)

    # --- helpers ----------------------------------------------------------------------------

    def _ctr_command(self, *args: str) -> list[str]:
        return ["ctr", f"--address={self.layout.containerd_socket}", "--namespace=k8s.io", *args]

    def _ctr(self, *args: str, check: bool = True) -> str:
        return self._run(*self._ctr_command(*args), check=check)

    def _run(self, *command: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            list(command), input=input, capture_output=True, text=True, check=False, timeout=600
        )
        if check and result.returncode != 0:
            raise ClusterError(
                f"{' '.join(command[:4])} ... exited {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def _state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.layout.state_file.read_text())
        except FileNotFoundError:
            return {}
        return state

    def _write_state(self, state: dict[str, Any]) -> None:
        self.layout.root.mkdir(parents=True, exist_ok=True)
        partial = self.layout.state_file.with_suffix(".partial")
        partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        partial.replace(self.layout.state_file)

    def _update_state(self, **changes: Any) -> None:
        self._write_state({**self._state(), **changes})

    def _daemons(self) -> dict[str, Daemon]:
        recorded = self._state().get("daemons", {})
        return {name: Daemon.from_json(name, data) for name, data in recorded.items()}

    def _record(self, daemon: Daemon) -> None:
        daemons = self._state().get("daemons", {})
        daemons[daemon.name] = daemon.to_json()
        self._update_state(daemons=daemons, kubernetes=KUBERNETES_VERSION)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One ``up``/``down`` at a time per state directory, across processes."""
        if self._lock_depth:
            yield
            return
        self.layout.root.mkdir(parents=True, exist_ok=True)
        with self.layout.lock_file.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._lock_depth = 1
            try:
                yield
            finally:
                self._lock_depth = 0
                fcntl.flock(lock, fcntl.LOCK_UN)


def _reference(name: str) -> str:
    """A Docker-style image name as containerd stores it: ``busybox`` is
    ``docker.io/library/busybox``, ``apache/kafka`` is ``docker.io/apache/kafka``."""
    first, _, rest = name.partition("/")
    if not rest:
        return f"docker.io/library/{name}"
    if "." in first or ":" in first or first == "localhost":
        return name
    return f"docker.io/{name}"


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3, context=context) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _port_open(address: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((address, port)) == 0
