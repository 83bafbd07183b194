"""What the cluster changes on the host itself, and how each change is undone.

- Kernel settings: the kubelet rewrites a few of them at every start and cannot be told not to
  (``vm.overcommit_memory=1``, ``kernel.panic=10``, ``kernel.panic_on_oops=1``, ...); the cluster
  itself needs IP forwarding and bridged traffic to pass iptables. :class:`KernelSettings`
  records the host's values before anything starts and writes them back.
- The pods' bridge, created with the gateway address before the CNI plugin adopts it, so the
  API server's forwarder can listen on the pod network before the first pod exists.
- Mounts the kubelet or containerd left behind under the state directory.
- iptables chains the kubelet and the CNI firewall plugin create and never remove (kube-proxy
  removes its own with ``--cleanup``).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "CHANGED_BY_KUBELET",
    "LEFTOVER_CHAINS",
    "NEEDED_BY_CLUSTER",
    "create_bridge",
    "delete_bridge",
    "read_settings",
    "remove_chains",
    "unmount_under",
    "write_settings",
]

log = logging.getLogger(__name__)

#: What the kubelet's container manager sets at start (pkg/kubelet/cm, setupKernelTunables),
#: and what kube-proxy would set if its conntrack and localhost-NodePort options allowed it.
CHANGED_BY_KUBELET = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)
#: What the cluster needs: pods' traffic forwarded, and bridged traffic seen by kube-proxy's
#: iptables rules (ClusterIPs between pods on the same bridge).
NEEDED_BY_CLUSTER = {"net.ipv4.ip_forward": "1", "net.bridge.bridge-nf-call-iptables": "1"}
#: The kubelet's (KUBE-FIREWALL drops non-loopback packets to 127.0.0.0/8) and the CNI firewall
#: plugin's chains, in every table and family they appear in.
LEFTOVER_CHAINS = (
    "KUBE-FIREWALL",
    "KUBE-KUBELET-CANARY",
    "KUBE-IPTABLES-HINT",
    "CNI-FORWARD",
    "CNI-ADMIN",
)


def _path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_settings(names: Iterable[str]) -> dict[str, str]:
    """The current values of the settings that exist on this kernel."""
    values = {}
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            values[name] = " ".join(_path(name).read_text().split())
    return values


def write_settings(values: Mapping[str, str]) -> dict[str, str]:
    """Write the values that differ; returns what was changed (name -> value before)."""
    before = read_settings(values)
    changed = {}
    for name, value in values.items():
        if name in before and before[name] != value:
            _path(name).write_text(value + "\n")
            changed[name] = before[name]
            log.info("sysctl %s: %s -> %s", name, before[name], value)
    return changed


def create_bridge(name: str, gateway_cidr: str) -> None:
    """The pods' bridge with the gateway address, up (idempotent)."""
    if not Path(f"/sys/class/net/{name}").exists():
        _ip("link", "add", name, "type", "bridge")
    addresses = _ip("-o", "addr", "show", "dev", name)
    if f" {gateway_cidr} " not in addresses:
        _ip("addr", "add", gateway_cidr, "dev", name)
    _ip("link", "set", name, "up")


def delete_bridge(name: str) -> None:
    if Path(f"/sys/class/net/{name}").exists():
        _ip("link", "delete", name)


def _ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def remove_chains(chains: Iterable[str]) -> None:
    """Delete every rule that jumps to one of ``chains``, then the chains themselves."""
    names = set(chains)
    for command in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            listing = subprocess.run(
                [command, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            )
            rules = listing.stdout.splitlines()
            present = [line.split()[1] for line in rules if line.startswith("-N ")]
            for rule in rules:
                words = rule.split()
                if words[0] == "-A" and words[1] not in names and _jump(words) in names:
                    _iptables(command, table, "-D", *shlex.split(rule)[1:])
            for chain in (name for name in present if name in names):
                _iptables(command, table, "-F", chain)
            for chain in (name for name in present if name in names):
                _iptables(command, table, "-X", chain)


def _jump(words: list[str]) -> str | None:
    return words[words.index("-j") + 1] if "-j" in words else None


def _iptables(command: str, table: str, *args: str) -> None:
    subprocess.run([command, "-w", "-t", table, *args], capture_output=True, check=False)


def unmount_under(directory: Path) -> list[str]:
    """Lazily unmount everything mounted below ``directory``, deepest first."""
    prefix = str(directory.resolve()) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point.startswith(prefix):
            mounts.append(point)
    for point in sorted(set(mounts), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    return mounts
