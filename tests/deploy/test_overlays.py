"""The overlays: what each adds to the base, and custom resources shaped right.

ServiceMonitor, ScaledObject and KafkaTopic have no schema available offline, so their shape and
their agreement with the settings are asserted here.
"""

from __future__ import annotations

import json

import yaml

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


def test_single_node_is_a_complete_stack_on_one_node(rendered: dict[str, Rendered]) -> None:
    single = rendered["single-node"]
    config = single.config()
    workers = single.workload()
    # soft anti-affinity: three workers fit on one node
    anti = pod_spec(workers)["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert containers(workers)[0]["imagePullPolicy"] == "Never"  # loaded, never pulled
    # Kafka in the cluster, where the workers look for it, with one replica per topic
    kafka = single.one("StatefulSet", "kafka")
    (broker,) = containers(kafka)
    assert broker["image"] == "apache/kafka:4.1.2"
    broker_env = {entry["name"]: entry["value"] for entry in broker["env"]}
    service = single.one("Service", "kafka")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "kafka")
    assert config["KAFKA_BOOTSTRAP_SERVERS"] == f"kafka:{port}"
    assert f"PLAINTEXT://kafka:{port}" in broker_env["KAFKA_ADVERTISED_LISTENERS"]
    assert config["TOPIC_REPLICATION_FACTOR"] == "1"
    # the topics come from the workers' own settings
    (create,) = containers(single.one("Job", "kafka-topics"))
    assert create["envFrom"] == containers(workers)[0]["envFrom"]
    script = create["args"][0]
    for name in ("TRADES_TOPIC", "STATS_TOPIC", "DLQ_TOPIC", "TOPIC_PARTITIONS"):
        assert f"${name}" in script
    # Prometheus discovers the pods by the annotations the workers carry
    prometheus = single.one("Deployment", "prometheus")
    (volume,) = (v for v in pod_spec(prometheus)["volumes"] if "configMap" in v)
    config_map = single.one("ConfigMap", volume["configMap"]["name"])
    prometheus_config = yaml.safe_load(config_map["data"]["prometheus.yml"])
    (job,) = prometheus_config["scrape_configs"]
    assert job["kubernetes_sd_configs"][0]["role"] == "pod"
    relabeled = {source for rule in job["relabel_configs"] for source in rule["source_labels"]}
    annotations = workers["spec"]["template"]["metadata"]["annotations"]
    for annotation in (name for name in annotations if name.startswith("prometheus.io/")):
        meta = "__meta_kubernetes_pod_annotation_" + annotation.replace(".", "_").replace("/", "_")
        assert meta in relabeled, annotation
    role = single.one("Role", "prometheus")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
    ]
