"""The overlays: what each adds to the base, and custom resources shaped right.

ServiceMonitor, ScaledObject and KafkaTopic have no schema available offline, so their shape and
their agreement with the settings are asserted here.
"""

from __future__ import annotations

import json

from tests.deploy.manifests import Rendered, containers, pod_spec
from tests.deploy.tools import REPO, app_paths
from tradestats.service.app import STATE_TABLE


def test_ephemeral_is_a_deployment_with_empty_dir_state(rendered: dict[str, Rendered]) -> None:
    ephemeral = rendered["ephemeral"]
    assert not ephemeral.of_kind("StatefulSet")
    deployment = ephemeral.one("Deployment")
    container = containers(deployment)[0]
    volumes = {volume["name"]: volume for volume in pod_spec(deployment)["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[ephemeral.setting("DATA_DIR")]]
    env = {entry["name"]: entry for entry in container["env"]}
    # no static membership with pod names that change on every restart
    assert "POD_NAME" not in env
    assert "CONSUMER_GROUP_INSTANCE_ID" not in ephemeral.config()
    # the canonical URL must still reach this pod: its IP
    assert env["WEB_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    anti = pod_spec(deployment)["affinity"]["podAntiAffinity"]
    assert anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == (
        "kubernetes.io/hostname"
    )


def test_keda_scales_the_statefulset_on_lag(rendered: dict[str, Rendered]) -> None:
    keda = rendered["keda"]
    config = keda.config()
    statefulset = keda.one("StatefulSet")
    scaled = keda.one("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": statefulset["metadata"]["name"],
    }
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["maxReplicaCount"] <= int(config["TOPIC_PARTITIONS"])
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["consumerGroup"] == config["APP_ID"]  # faust's group id is the app id
    assert metadata["topic"] == config["TRADES_TOPIC"]
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["allowIdleConsumers"] == "false"
    assert int(metadata["lagThreshold"]) > 0
    assert all(isinstance(value, str) for value in metadata.values())  # KEDA wants strings
    assert "replicas" not in statefulset["spec"]  # the HPA owns it
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300


def test_service_monitor_scrapes_every_worker(rendered: dict[str, Rendered]) -> None:
    operator = rendered["prometheus-operator"]
    monitor = operator.one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    matched = [
        service
        for service in operator.of_kind("Service")
        if selector.items() <= service["metadata"]["labels"].items()
    ]
    # exactly the headless Service, which lists not-ready (restoring) pods too
    assert [service["spec"].get("clusterIP") for service in matched] == ["None"]
    assert matched[0]["spec"]["publishNotReadyAddresses"] is True
    port_names = {port["name"] for port in matched[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] in app_paths()


def test_grafana_dashboard_config_map(rendered: dict[str, Rendered]) -> None:
    operator = rendered["prometheus-operator"]
    dashboards = [
        config_map
        for config_map in operator.of_kind("ConfigMap")
        if config_map["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 1
    (content,) = dashboards[0]["data"].values()
    on_disk = REPO / "k8s/monitoring/grafana/dashboards/tradestats.json"
    assert json.loads(content) == json.loads(on_disk.read_text())


def test_strimzi_topics_match_the_settings(rendered: dict[str, Rendered]) -> None:
    strimzi = rendered["strimzi"]
    config = strimzi.config()
    topics = {topic["spec"]["topicName"]: topic for topic in strimzi.of_kind("KafkaTopic")}
    changelog = f"{config['APP_ID']}-{STATE_TABLE}-changelog"
    wanted = {config["TRADES_TOPIC"], config["STATS_TOPIC"], config["DLQ_TOPIC"], changelog}
    assert set(topics) == wanted
    (bootstrap_host,) = {
        server.split(":")[0] for server in config["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    }
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1"
        cluster = topic["metadata"]["labels"]["strimzi.io/cluster"]
        # the workers connect to the cluster the topics belong to
        assert bootstrap_host.startswith(f"{cluster}-kafka-bootstrap")
        assert bootstrap_host.split(".")[1] == topic["metadata"]["namespace"]
        assert topic["spec"]["partitions"] == int(config["TOPIC_PARTITIONS"]), name
        assert topic["spec"]["replicas"] == int(config["TOPIC_REPLICATION_FACTOR"]), name
        assert topic["spec"]["config"]["min.insync.replicas"] < topic["spec"]["replicas"]
    changelog_config = topics[changelog]["spec"]["config"]
    assert changelog_config["cleanup.policy"] == "compact"
    assert changelog_config["segment.bytes"] == int(config["CHANGELOG_SEGMENT_BYTES"])
    egress = strimzi.one("NetworkPolicy")["spec"]["egress"]
    kafka_rules = [rule for rule in egress if any(p["port"] == 9092 for p in rule["ports"])]
    assert kafka_rules
    assert all("to" in rule for rule in kafka_rules)
