"""The project's local single-node Kubernetes cluster, built from source (development only).

``python -m devtools.kube up|down|status|build`` (``make cluster-up``, ``make cluster-down``);
see :class:`LocalCluster` and :func:`ensure_built`.
"""

from devtools.kube.build import KUBERNETES_VERSION, BuildError, default_cache_dir, ensure_built
from devtools.kube.cluster import ClusterError, LocalCluster, default_state_dir

__all__ = [
    "KUBERNETES_VERSION",
    "BuildError",
    "ClusterError",
    "LocalCluster",
    "default_cache_dir",
    "default_state_dir",
    "ensure_built",
]
