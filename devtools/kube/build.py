"""The cluster's programs, built once per machine from the Go module proxy and cached.

Nothing here is downloaded as a binary: Kubernetes, etcd, CoreDNS, Prometheus and the
local-path provisioner are compiled from their Go modules in a wrapper module
(``k8s.io/kubernetes`` cannot be ``go install``-ed: its ``go.mod`` points the staging modules at
``./staging``, which the module zip lacks, so the wrapper replaces each with its published
``v0.x`` twin). All programs but one come out of a single ``go build``, so the packages they
share (client-go, gRPC, the etcd client) compile once. Each component lands in
``<cache>/<name>-<stamp>/``; the stamp is a hash of the component's recipe, so a version bump
rebuilds that component, and a complete directory is never rebuilt. The Go build cache makes
even a rebuild of a changed recipe quick. Compiles run at ``nice 19``: the machine is shared.

``ensure_built()`` serialises builders across processes with a file lock: CI starts
``python -m devtools.kube build`` in the background early, and the cluster (``up``) waits for
that same build instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devtools.debian import ensure_packages

__all__ = [
    "COMPONENTS",
    "DEBIAN_PACKAGES",
    "KUBERNETES_VERSION",
    "BuildError",
    "Toolchain",
    "default_cache_dir",
    "ensure_built",
]

log = logging.getLogger(__name__)

KUBERNETES_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.4"
COREDNS_VERSION = "v1.12.4"
LOCAL_PATH_PROVISIONER_VERSION = "v0.0.30"
#: Prometheus 3.10.0 (its Go module is versioned v0.<major><minor>.<patch>).
PROMETHEUS_VERSION = "v0.310.0"
#: Kubernetes 1.34 is the last line whose kubelet still runs on cgroup v1 (these machines).
_MINIMUM_GO = (1, 24)

#: containerd (CRI v1) and runc run the pods; the CNI plugins wire them to a bridge; socat
#: forwards the pod network's gateway to the loopback API server; conntrack and iptables serve
#: kube-proxy; busybox-static is the shell of the local-path provisioner's helper pods.
DEBIAN_PACKAGES = (
    "containerd",
    "runc",
    "containernetworking-plugins",
    "iptables",
    "conntrack",
    "socat",
    "busybox-static",
)

# Every module of k8s.io/kubernetes/staging, published as k8s.io/<name> v0.<minor>.<patch>.
_STAGING_MODULES = [
    "api",
    "apiextensions-apiserver",
    "apimachinery",
    "apiserver",
    "cli-runtime",
    "client-go",
    "cloud-provider",
    "cluster-bootstrap",
    "code-generator",
    "component-base",
    "component-helpers",
    "controller-manager",
    "cri-api",
    "cri-client",
    "csi-translation-lib",
    "dynamic-resource-allocation",
    "endpointslice",
    "externaljwt",
    "kms",
    "kube-aggregator",
    "kube-controller-manager",
    "kube-proxy",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "metrics",
    "mount-utils",
    "pod-security-admission",
    "sample-apiserver",
    "sample-cli-plugin",
    "sample-controller",
]
KUBERNETES_PROGRAMS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "kubectl",
)
# CoreDNS with only the plugins the cluster's Corefile uses (its own main package would pull
# in every cloud provider's SDK).
_COREDNS_PLUGINS = ("cache", "errors", "health", "kubernetes", "loadbalance", "log", "ready")


class BuildError(RuntimeError):
    """A component did not build; the message carries the end of the compiler's output."""


@dataclass(frozen=True)
class GoComponent:
    """A wrapper module and the programs built from it (binary name -> package)."""

    name: str
    requires: Mapping[str, str]
    programs: Mapping[str, str]
    replaces: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    ldflags: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def files(self) -> dict[str, str]:
        """The wrapper module: go.mod, an import of every program (so ``go mod tidy`` keeps
        their dependencies), and the component's own sources."""
        lines = [f"module tradestats.local/kube/{self.name}", "", "go 1.24", ""]
        lines += [f"require {module} {version}" for module, version in self.requires.items()]
        lines += [f"replace {module} => {target}" for module, target in self.replaces.items()]
        imports = "\n".join(
            f'\t_ "{package}"' for package in self.programs.values() if not package.startswith("./")
        )
        files = {"go.mod": "\n".join(lines) + "\n", **self.sources}
        if imports:
            files["tools.go"] = f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n"
        return files

    @property
    def stamp(self) -> str:
        recipe = json.dumps([self.files(), self.programs, self.ldflags, self.tags], sort_keys=True)
        return hashlib.sha256(recipe.encode()).hexdigest()[:12]


def _version_ldflags(version: str) -> tuple[str, ...]:
    """What Kubernetes' own build stamps in (else every program reports v0.0.0)."""
    major, minor = version.lstrip("v").split(".")[:2]
    fields = {
        "gitVersion": version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",  # reproducible: the Go cache stays valid
    }
    return tuple(
        f"-X {package}.{name}={value}"
        for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
        for name, value in fields.items()
    )


_PAUSE_MAIN = """\
// pause: the first process of every pod sandbox. It holds the pod's namespaces, reaps the
// orphans it inherits as PID 1, and exits on SIGTERM or SIGINT.
package main

import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 8)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor received := range signals {
\t\tif received != syscall.SIGCHLD {
\t\t\tos.Exit(0)
\t\t}
\t\tfor {
\t\t\tpid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
\t\t\tif pid <= 0 || err != nil {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


def _coredns_main() -> str:
    plugins = "\n".join(f'\t_ "github.com/coredns/coredns/plugin/{p}"' for p in _COREDNS_PLUGINS)
    return (
        "// CoreDNS with the plugins of the cluster's Corefile only.\npackage main\n\n"
        f'import (\n\t"github.com/coredns/coredns/coremain"\n{plugins}\n)\n\n'
        "func main() { coremain.Run() }\n"
    )


COMPONENTS = (
    # Everything that links client-go, gRPC and the etcd client in one `go build`: those
    # packages (k8s.io/api alone takes minutes) compile once, at the versions Kubernetes pins.
    GoComponent(
        name="cluster",
        requires={
            "k8s.io/kubernetes": KUBERNETES_VERSION,
            "go.etcd.io/etcd/server/v3": ETCD_VERSION,
            "github.com/coredns/coredns": COREDNS_VERSION,
            "github.com/prometheus/prometheus": PROMETHEUS_VERSION,
        },
        replaces={
            **{
                f"k8s.io/{module}": f"k8s.io/{module} v0{KUBERNETES_VERSION[2:]}"
                for module in _STAGING_MODULES
            },
            # the pin Prometheus' own go.mod makes (a dependency's replace directives are ignored)
            "cloud.google.com/go": "cloud.google.com/go v0.123.0",
        },
        programs={
            **{name: f"k8s.io/kubernetes/cmd/{name}" for name in KUBERNETES_PROGRAMS},
            "etcd": "go.etcd.io/etcd/server/v3",
            "coredns": "./cmd/coredns",
            # Debian's prometheus package has no Kubernetes service discovery, which the
            # in-cluster Prometheus needs to find pods by their annotations.
            "prometheus": "github.com/prometheus/prometheus/cmd/prometheus",
            "pause": "./cmd/pause",
        },
        sources={"cmd/coredns/main.go": _coredns_main(), "cmd/pause/main.go": _PAUSE_MAIN},
        # Prometheus' build tags: of all its service discoveries, only Kubernetes'.
        tags=("remove_all_sd", "enable_kubernetes_sd"),
        ldflags=(
            *_version_ldflags(KUBERNETES_VERSION),
            "-X github.com/prometheus/common/version.Version=3.10.0",
        ),
    ),
    # Apart: it imports logrus by its old capitalised path, which collides with the others'.
    GoComponent(
        name="local-path-provisioner",
        requires={"github.com/rancher/local-path-provisioner": LOCAL_PATH_PROVISIONER_VERSION},
        programs={"local-path-provisioner": "github.com/rancher/local-path-provisioner"},
    ),
)


def default_cache_dir() -> Path:
    """``$TRADESTATS_KUBE_CACHE`` or ``~/.cache/tradestats/kube`` (one per machine)."""
    env = os.environ.get("TRADESTATS_KUBE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tradestats" / "kube"


@dataclass(frozen=True)
class Toolchain:
    """Where the built programs are."""

    programs: Mapping[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.programs[name]


def ensure_built(cache_dir: Path | None = None) -> Toolchain:
    """Every program of the cluster, compiled unless cached; installs the Debian packages."""
    cache = cache_dir or default_cache_dir()
    ensure_packages(*DEBIAN_PACKAGES)
    programs: dict[str, Path] = {}
    with _build_lock(cache):
        for component in COMPONENTS:
            out = cache / f"{component.name}-{component.stamp}"
            if not (out / ".complete").exists():
                _build(component, cache / "src" / component.name, out)
            programs.update({name: out / "bin" / name for name in component.programs})
    return Toolchain(programs)


def _build(component: GoComponent, src: Path, out: Path) -> None:
    go = _find_go()
    started = time.monotonic()
    log.info("building %s (%s) ...", component.name, ", ".join(component.programs))
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    for relative, text in component.files().items():
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text(text)
    (out / "bin").mkdir(parents=True)
    _go(go, src, out, "mod", "tidy")
    args = ["build", "-trimpath", "-ldflags", " ".join(("-s", "-w", *component.ldflags))]
    if component.tags:
        args += ["-tags", ",".join(component.tags)]
    # One invocation for all programs: the packages they share compile once.
    _go(go, src, out, *args, "-o", str(out / "bin") + "/", *component.programs.values())
    for name, package in component.programs.items():
        built = out / "bin" / _binary_name(package)
        if built.name != name and built.exists():
            built.rename(out / "bin" / name)
    missing = [name for name in component.programs if not (out / "bin" / name).is_file()]
    if missing:
        raise BuildError(f"{component.name}: go build made no {', '.join(missing)}")
    (out / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    log.info("built %s in %.0f s", component.name, time.monotonic() - started)


def _binary_name(package: str) -> str:
    """What ``go build -o DIR/`` names a package's program: its last path element, or the one
    before a major-version suffix (``go.etcd.io/etcd/server/v3`` -> ``server``)."""
    parts = package.rstrip("/").split("/")
    if len(parts) > 1 and parts[-1][0] == "v" and parts[-1][1:].isdigit():
        return parts[-2]
    return parts[-1]


def _go(go: str, src: Path, out: Path, *args: str) -> None:
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOWORK": "off"}
    with (out / "build.log").open("a") as output:
        output.write(f"$ go {' '.join(args)}\n")
        output.flush()
        result = subprocess.run(
            ["nice", "-n", "19", go, *args],
            cwd=src,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if result.returncode != 0:
        tail = "\n".join((out / "build.log").read_text(errors="replace").splitlines()[-40:])
        raise BuildError(f"go {args[0]} of {src.name} exited {result.returncode}:\n{tail}")


def _find_go() -> str:
    go = shutil.which("go") or (
        "/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None
    )
    if go is None:
        raise BuildError(
            "Go is not installed: the cluster is compiled from the Go module proxy "
            f"and needs Go {'.'.join(map(str, _MINIMUM_GO))} or newer"
        )
    version = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=True)
    numbers = tuple(int(part) for part in version.stdout.strip().removeprefix("go").split(".")[:2])
    if numbers < _MINIMUM_GO:
        raise BuildError(
            f"{go} is {version.stdout.strip()}; the cluster needs Go "
            f"{'.'.join(map(str, _MINIMUM_GO))} or newer"
        )
    return go


@contextlib.contextmanager
def _build_lock(cache: Path) -> Iterator[None]:
    """One builder per cache at a time; the others wait and then find the result."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is building the cluster; waiting for it ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
