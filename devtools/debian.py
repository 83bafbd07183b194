"""Debian packages the development tooling needs (Docker engine, containerd, promtool, ...).

``ensure_packages`` installs what is missing with apt, once per machine, and never lets a
package's maintainer scripts start a service: Debian's init scripts would start daemons
(dockerd, containerd, prometheus) that nobody recorded and that listen on every address. The
tools start their own instances, on their own sockets and ports, and stop them by PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DebianError", "ensure_packages", "missing_packages"]

log = logging.getLogger(__name__)

_POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
_LOCK = Path("/var/lock/tradestats-devtools-apt.lock")
_APT_TIMEOUT_S = 1800


class DebianError(RuntimeError):
    """A package could not be installed; the message carries apt's output."""


def missing_packages(*names: str) -> list[str]:
    """The packages of ``names`` that dpkg does not list as installed."""
    missing = []
    for name in names:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Abbrev}", name],
            capture_output=True,
            text=True,
            check=False,
        )
        if not status.stdout.startswith("ii"):
            missing.append(name)
    return missing


def ensure_packages(*names: str) -> None:
    """Install the missing ones of ``names`` (root only; serialised across processes)."""
    if not missing_packages(*names):
        return
    if os.geteuid() != 0:
        raise DebianError(f"installing {', '.join(names)} needs root (apt-get)")
    if shutil.which("apt-get") is None:
        raise DebianError(f"no apt-get here: install {', '.join(names)} by hand")
    with _machine_lock():
        missing = missing_packages(*names)  # another process may have installed them
        if not missing:
            return
        log.info("installing Debian packages: %s", " ".join(missing))
        with _no_service_starts():
            _apt("update")
            _apt("install", "--yes", "--no-install-recommends", *missing)
        still = missing_packages(*missing)
        if still:
            raise DebianError(f"apt-get reported success but {', '.join(still)} is missing")


def _apt(*args: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        ["apt-get", "-q", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=_APT_TIMEOUT_S,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise DebianError(f"apt-get {' '.join(args)} exited {result.returncode}:\n{tail}")


@contextlib.contextmanager
def _machine_lock() -> Iterator[None]:
    with _LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def _no_service_starts() -> Iterator[None]:
    """invoke-rc.d asks /usr/sbin/policy-rc.d first; exit status 101 means "do not start"."""
    if _POLICY_RC_D.exists():  # someone else's policy: leave it alone
        yield
        return
    _POLICY_RC_D.write_text("#!/bin/sh\n# tradestats devtools: no services during apt\nexit 101\n")
    _POLICY_RC_D.chmod(0o755)
    try:
        yield
    finally:
        _POLICY_RC_D.unlink(missing_ok=True)
