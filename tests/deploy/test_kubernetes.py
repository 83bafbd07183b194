"""k8s/: every kustomization renders, validates strictly, and the workers are deployed right.

The properties are those the talk and the issue ask for, checked on the rendered output (what
``kubectl apply -k`` would send), against the app itself where possible: probe paths are the
app's registered pages, environment variables are the fields of its Settings.
"""

from __future__ import annotations

import importlib.metadata
import math

import pytest

from tests.deploy.dockerfile import parse
from tests.deploy.manifests import (
    VARIANTS,
    Manifest,
    Rendered,
    all_containers,
    containers,
    env_references,
    pod_spec,
)
from tests.deploy.tools import (
    REPO,
    SHUTDOWN_SECONDS,
    app_paths,
    require_tool,
    run,
    settings_env_names,
)

#: Kubernetes versions the core resources must validate against: the newest schema
#: kubernetes-validate ships, and the oldest release with every field used here
#: (persistentVolumeClaimRetentionPolicy is GA in 1.32).
KUBERNETES_VERSIONS = ("1.32.0", "1.37.0")
MIB = 1024 * 1024
#: Resident memory of a worker besides RocksDB: interpreter, faust/aiokafka/aiohttp, window
#: state and stream buffers under load (see the arithmetic in k8s/base/statefulset.yaml).
PROCESS_BASELINE_BYTES = 256 * MIB


def _image_stage() -> dict[str, str]:
    runtime = parse(REPO / "Dockerfile")[-1]
    env = runtime.env()
    env["USER"] = runtime.last("USER").value
    return env


# --- every variant -------------------------------------------------------------------------


def test_every_variant_renders(rendered: dict[str, Rendered]) -> None:
    assert set(rendered) == set(VARIANTS)
    for variant in rendered.values():
        assert variant.docs, variant.variant
        assert variant.workload()["metadata"]["namespace"] == "tradestats"


def test_core_resources_validate_strictly(rendered: dict[str, Rendered], tmp_path) -> None:
    """kubernetes-validate --strict: unknown fields, wrong types, missing required fields."""
    validate = require_tool("kubernetes-validate")
    import yaml

    files = []
    for variant in rendered.values():
        path = tmp_path / f"{variant.variant}-core.yaml"
        path.write_text(yaml.safe_dump_all(variant.core_docs()))
        files.append(str(path))
    for version in KUBERNETES_VERSIONS:
        run([validate, "--strict", "--quiet", "--kubernetes-version", version, *files])


def test_no_secret_is_committed(rendered: dict[str, Rendered]) -> None:
    for variant in rendered.values():
        assert not variant.of_kind("Secret"), f"{variant.variant} renders a Secret"
        for container in containers(variant.workload()):
            names = {entry["name"] for entry in container.get("env", [])}
            # credentials come as files of a Secret, never as environment variables
            assert not names & {"KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"}, names
            assert {"KAFKA_SASL_USERNAME_FILE", "KAFKA_SASL_PASSWORD_FILE"} <= names
        volumes = {v["name"]: v for v in variant.workload()["spec"]["template"]["spec"]["volumes"]}
        secret = volumes["kafka-sasl"]["secret"]
        assert secret["secretName"] == "tradestats-kafka-credentials"
        assert secret["optional"] is True  # created out of band, when needed


def test_environment_names_are_settings(rendered: dict[str, Rendered]) -> None:
    """Every variable a worker gets is one Settings reads: a typo would be silently ignored."""
    known = settings_env_names()
    for variant in rendered.values():
        unknown = set(variant.config()) - known
        assert not unknown, f"{variant.variant} ConfigMap sets unknown settings {unknown}"
        for container in all_containers(variant.workload()):
            defined: set[str] = set(variant.config())
            for entry in container.get("env", []):
                assert entry["name"] in known, f"{variant.variant}: {entry['name']} unknown"
                # $(VAR) expands only variables defined before it
                missing = env_references(str(entry.get("value", ""))) - defined
                assert not missing, f"{variant.variant}: {entry['name']} references {missing}"
                defined.add(entry["name"])


def test_service_links_disabled(rendered: dict[str, Rendered]) -> None:
    """Docker-link variables (e.g. WEB_PORT=tcp://... for a Service named web) would reach
    Settings: the pods get none."""
    for variant in rendered.values():
        assert pod_spec(variant.workload())["enableServiceLinks"] is False


def test_replicas_at_most_partitions(rendered: dict[str, Rendered]) -> None:
    for variant in rendered.values():
        partitions = int(variant.config()["TOPIC_PARTITIONS"])
        replicas = variant.workload()["spec"].get("replicas")
        if variant.variant == "keda":
            assert replicas is None  # owned by the ScaledObject (checked in test_overlays)
        else:
            assert 1 <= replicas <= partitions, variant.variant


def test_probes_hit_the_apps_pages(rendered: dict[str, Rendered]) -> None:
    paths = app_paths()
    assert {"/health", "/ready", "/metrics"} <= paths
    for variant in rendered.values():
        container = containers(variant.workload())[0]
        web_port = int(variant.setting("WEB_PORT") or 6066)
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": web_port}
        probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe")}
        probes["readinessProbe"] = container["readinessProbe"]
        for kind, probe in probes.items():
            assert probe["httpGet"]["path"] in paths, (variant.variant, kind)
            assert probe["httpGet"]["port"] in ("http", web_port)
        assert probes["livenessProbe"]["httpGet"]["path"] == "/health"
        assert probes["startupProbe"]["httpGet"]["path"] == "/health"
        assert probes["readinessProbe"]["httpGet"]["path"] == "/ready"
        startup = probes["startupProbe"]
        # generous: a slow start on a busy node must not be killed (>= 5 minutes)
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
        annotations = variant.workload()["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(web_port)
        assert annotations["prometheus.io/path"] in paths


def test_graceful_shutdown_fits_the_grace_period(rendered: dict[str, Rendered]) -> None:
    for variant in rendered.values():
        assert pod_spec(variant.workload())["terminationGracePeriodSeconds"] == SHUTDOWN_SECONDS


def test_restricted_security_context(rendered: dict[str, Rendered]) -> None:
    image = _image_stage()
    uid, gid = (int(part) for part in image["USER"].split(":"))
    for variant in rendered.values():
        spec = pod_spec(variant.workload())
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (pod["runAsUser"], pod["runAsGroup"], pod["fsGroup"]) == (uid, gid, gid)
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        assert variant.one("ServiceAccount", spec["serviceAccountName"])
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        for container in all_containers(variant.workload()):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            assert context.get("privileged", False) is False
            assert context.get("runAsNonRoot", True) is True
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            # a read-only root: /tmp is the only writable place besides DATA_DIR
            assert "emptyDir" in volumes[mounts["/tmp"]]
        namespace = variant.one("Namespace")["metadata"]["labels"]
        assert namespace["pod-security.kubernetes.io/enforce"] == "restricted"


def test_resources_sized_to_rocksdb(rendered: dict[str, Rendered]) -> None:
    """Memory limit >= worst-case RocksDB memory (one worker away) + the process baseline."""
    for variant in rendered.values():
        config = variant.config()
        partitions = int(config["TOPIC_PARTITIONS"])
        standbys = int(config.get("STANDBY_REPLICAS", 1))
        replicas = (
            variant.workload()["spec"].get("replicas")
            or variant.one("ScaledObject")["spec"]["minReplicaCount"]
        )
        copies = partitions * (1 + standbys)
        # one worker away: the rest hold every copy; a worker never holds two copies of one
        per_worker = min(math.ceil(copies / max(replicas - 1, 1)), partitions)
        per_database = int(config["ROCKSDB_BLOCK_CACHE_BYTES"]) + 2 * int(
            config["ROCKSDB_WRITE_BUFFER_BYTES"]
        )
        needed = per_worker * per_database + PROCESS_BASELINE_BYTES
        for container in containers(variant.workload()):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), (variant.variant, kind)
            limit = _bytes(resources["limits"]["memory"])
            assert limit >= needed, f"{variant.variant}: {limit / MIB} MiB < {needed / MIB} MiB"
            assert _bytes(resources["requests"]["memory"]) == limit  # never reclaimed


def test_image_is_the_project_version(rendered: dict[str, Rendered]) -> None:
    version = importlib.metadata.version("tradestats")
    for variant in rendered.values():
        for container in containers(variant.workload()):
            assert container["image"] == f"tradestats:{version}", variant.variant


def _bytes(quantity: str) -> int:
    units = {"Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


# --- the base StatefulSet ------------------------------------------------------------------


@pytest.fixture(scope="module")
def statefulset(base: Rendered) -> Manifest:
    return base.one("StatefulSet")


def test_statefulset_parallel_and_replicated(statefulset: Manifest) -> None:
    spec = statefulset["spec"]
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["replicas"] == 3


def test_state_volume_is_mounted_at_the_data_dir(base: Rendered, statefulset: Manifest) -> None:
    """The original demo's mistake: its volume was mounted where no state was written."""
    data_dir = base.setting("DATA_DIR")
    image = _image_stage()
    assert data_dir == image["DATA_DIR"]  # the image's default and the volume agree
    volume_of = {
        mount["mountPath"]: mount["name"] for mount in containers(statefulset)[0]["volumeMounts"]
    }
    claim = volume_of[data_dir]
    templates = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert claim in templates
    assert templates[claim]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim not in {v["name"] for v in pod_spec(statefulset).get("volumes", [])}
    dockerfile_volume = parse(REPO / "Dockerfile")[-1].last("VOLUME").exec_form()
    assert dockerfile_volume == [data_dir]


def test_required_anti_affinity_across_nodes(statefulset: Manifest) -> None:
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    terms = pod_spec(statefulset)["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert any(
        term["topologyKey"] == "kubernetes.io/hostname"
        and term["labelSelector"]["matchLabels"].items() <= labels.items()
        for term in terms
    )


def test_identity_from_the_downward_api(base: Rendered, statefulset: Manifest) -> None:
    """POD_NAME is the static group instance id; WEB_HOST its stable DNS name."""
    env = {entry["name"]: entry for entry in containers(statefulset)[0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    headless = base.one("Service", statefulset["spec"]["serviceName"])
    assert env["WEB_HOST"]["value"] == f"$(POD_NAME).{headless['metadata']['name']}"
    assert base.setting("CANONICAL_URL") is None  # derived from WEB_HOST and WEB_PORT
    assert base.setting("CONSUMER_GROUP_INSTANCE_ID") is None  # POD_NAME is the instance id


def test_services(base: Rendered, statefulset: Manifest) -> None:
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    headless = base.one("Service", statefulset["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    # peers and Prometheus reach a pod while it restores (not ready)
    assert headless["spec"]["publishNotReadyAddresses"] is True
    for service in base.of_kind("Service"):
        assert service["spec"]["selector"].items() <= labels.items()
        assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"]
    assert len(base.of_kind("Service")) == 2


def test_disruption_budget(base: Rendered, statefulset: Manifest) -> None:
    budget = base.one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_network_policy(base: Rendered, statefulset: Manifest) -> None:
    policy = base.one("NetworkPolicy")["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    for rule in policy["ingress"]:  # only the web port
        assert [port["port"] for port in rule["ports"]] == ["http"]
    sources = [peer for rule in policy["ingress"] for peer in rule["from"]]
    assert {"podSelector": {}} in sources
    assert any(
        peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
        == "monitoring"
        for peer in sources
    )
    egress_ports = {
        (port["port"], port.get("protocol", "TCP"))
        for rule in policy["egress"]
        for port in rule["ports"]
    }
    assert {(53, "UDP"), (53, "TCP"), (9092, "TCP"), ("http", "TCP")} <= egress_ports
