"""deploy/k8s/, checked without a cluster.

Every manifest is validated against the Kubernetes API's own JSON schemas,
strictly (unknown fields are errors), for the oldest and the newest
Kubernetes version we claim; the schemas come with the PyPI package
``kubernetes-validate``. Then what an operator checks before ``kubectl
apply -k``: the pods run real ``tally`` commands with settings the services
accept, probes and Services point at the ports the processes listen on,
selectors select, the autoscaler scales the Deployment, the workers keep
their state on their volume and never outnumber the partitions.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aggregator.settings import WorkerSettings
from deploy import cli
from ingest.settings import IngestSettings
from tests.support.paths import ROOT

K8S = ROOT / "deploy" / "k8s"
VERSIONS = ("1.29.0", "1.37.0")
"""The oldest Kubernetes these manifests are for, and the newest the package knows."""
SECRET_PLACEHOLDER = "from-a-secret-0123456789"


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def resources() -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> the object, for everything `kubectl apply -k` creates."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    found = {}
    for name in kustomization["resources"]:
        for doc in documents(K8S / name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


def pod(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [only] = pod(workload)["containers"]
    return only


def environment(workload: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: the ConfigMaps first, then env (secrets stand in)."""
    objects = resources()
    c = container(workload)
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(objects[("ConfigMap", source["configMapRef"]["name"])]["data"])
    for item in c.get("env", []):
        env[item["name"]] = item.get("value", SECRET_PLACEHOLDER)
    return env


def port_number(c: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert port in numbers, f"no container port named {port}"
    return int(numbers[port])


# -- the API would accept them ----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifests(), ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    for doc in documents(path):
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("replicas", lambda d: d["spec"].update(replicas="three")),  # wrong type
        ("readinesProbe", lambda d: container(d).update(readinesProbe={"httpGet": {"path": "/readyz", "port": 8000}})),
        ("containerPort", lambda d: container(d)["ports"][0].pop("containerPort")),  # required
    ],
)
def test_a_broken_manifest_is_rejected(where: str, change: Any) -> None:
    broken = copy.deepcopy(resources()[("Deployment", "tally-ingest")])
    change(broken)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in manifests()} - {"secret.example.yaml"}
    example = documents(K8S / "secret.example.yaml")[0]
    referenced = {
        (ref["name"], ref["key"])
        for kind, _ in resources()
        if kind in ("Deployment", "StatefulSet", "Job")
        for workload in [resources()[(kind, _)]]
        for item in container(workload).get("env", [])
        if (ref := item.get("valueFrom", {}).get("secretKeyRef"))
    }
    assert referenced == {(example["metadata"]["name"], key) for key in example["stringData"]}


# -- the pods run tally as the services expect -----------------------------------------------------

WORKLOADS = [("Deployment", "tally-ingest"), ("StatefulSet", "tally-worker"), ("Job", "tally-migrate")]


@pytest.mark.parametrize(("kind", "name"), WORKLOADS)
def test_each_pod_runs_a_tally_command_of_the_image(kind: str, name: str, capsys: pytest.CaptureFixture[str]) -> None:
    workload = resources()[(kind, name)]
    c = container(workload)
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert c["image"] in {image["name"] for image in kustomization["images"]}  # set per release by kustomize
    assert "command" not in c  # the image's ENTRYPOINT is tally
    with pytest.raises(SystemExit) as exited:
        cli.main([*c["args"], "--help"])
    assert exited.value.code == 0, capsys.readouterr().err
    security = pod(workload)["securityContext"]
    assert security["runAsNonRoot"] and security["runAsUser"] == 10001  # deploy/Dockerfile's user
    assert c["securityContext"]["allowPrivilegeEscalation"] is False


def test_configuration_is_known_settings_and_reaches_the_external_services() -> None:
    config = resources()[("ConfigMap", "tally-config")]["data"]
    sources = "\n".join(p.read_text() for package in ("schema", "ingest", "query", "aggregator", "deploy")
                        for p in (ROOT / package).rglob("*.py"))  # fmt: skip
    unknown = [key for key in config if f'"{key}"' not in sources]
    assert not unknown, f"settings nobody reads: {unknown}"
    services = {name for kind, name in resources() if kind == "Service"}
    kafka_hosts = {address.rsplit(":", 1)[0] for address in config["TALLY_KAFKA_BOOTSTRAP"].split(",")}
    assert kafka_hosts <= services and config["TALLY_CLICKHOUSE_HOST"] in services
    for host in (*kafka_hosts, config["TALLY_CLICKHOUSE_HOST"]):
        service = resources()[("Service", host)]
        assert service["spec"]["type"] == "ExternalName", f"{host}: Kafka and ClickHouse are run outside"


def test_ingest_is_probed_and_served_on_the_port_it_listens() -> None:
    deployment = resources()[("Deployment", "tally-ingest")]
    c = container(deployment)
    settings = IngestSettings.from_env(environment(deployment))
    assert settings.host == "0.0.0.0"
    assert port_number(c, "http") == settings.port
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert port_number(c, c["readinessProbe"]["httpGet"]["port"]) == settings.port
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert settings.query.read_tokens, "reads need a token from the Secret"
    service = resources()[("Service", "tally-ingest")]
    assert port_number(c, service["spec"]["ports"][0]["targetPort"]) == settings.port
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.port


def test_autoscaler_scales_the_ingest_deployment() -> None:
    hpa = resources()[("HorizontalPodAutoscaler", "tally-ingest")]["spec"]
    target = hpa["scaleTargetRef"]
    assert resources()[(target["kind"], target["name"])]["apiVersion"] == target["apiVersion"]
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    # CPU utilisation is relative to the request: the container must have one.
    assert container(resources()[("Deployment", "tally-ingest")])["resources"]["requests"]["cpu"]


def test_workers_keep_their_state_on_their_own_volume() -> None:
    statefulset = resources()[("StatefulSet", "tally-worker")]
    settings = WorkerSettings.from_env(environment(statefulset))
    assert settings.store.startswith("rocksdb://")
    mounts = {m["name"]: m["mountPath"] for m in container(statefulset)["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts.get(next(iter(claims))) == settings.data_dir
    assert pod(statefulset)["securityContext"]["fsGroup"] == 10001
    headless = resources()[("Service", statefulset["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"


def test_workers_serve_metrics_and_probes_where_they_listen() -> None:
    statefulset = resources()[("StatefulSet", "tally-worker")]
    c = container(statefulset)
    settings = WorkerSettings.from_env(environment(statefulset))
    assert settings.web_host == "0.0.0.0"
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert c[probe]["httpGet"]["path"] == path
        assert port_number(c, c[probe]["httpGet"]["port"]) == settings.web_port
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.web_port


def test_no_more_workers_than_partitions() -> None:
    statefulset = resources()[("StatefulSet", "tally-worker")]
    partitions = int(environment(statefulset)["TALLY_EVENTS_PARTITIONS"])
    assert 1 <= statefulset["spec"]["replicas"] <= partitions


def test_selectors_select_their_pods() -> None:
    objects = resources()
    pods = {
        name: workload["spec"]["template"]["metadata"]["labels"]
        for (kind, name), workload in objects.items()
        if kind in ("Deployment", "StatefulSet")
    }
    for (kind, name), obj in objects.items():
        selector = obj["spec"].get("selector") if kind != "ConfigMap" and "spec" in obj else None
        if selector is None:
            continue
        wanted = selector.get("matchLabels", selector)
        matched = [p for p, labels in pods.items() if wanted.items() <= labels.items()]
        assert matched, f"{kind} {name} selects no pod: {wanted}"
        if kind in ("Deployment", "StatefulSet"):
            assert matched == [name], f"{kind} {name} selects {matched}"


def test_the_readme_says_how_to_apply() -> None:
    text = (K8S / "README.md").read_text()
    assert "kubectl apply -k deploy/k8s" in text
    assert re.search(r"kafka-topics\S* .*--partitions", text), "how to create the topic"
