"""Apache Kafka for the local stack: official jars from Maven Central, KRaft mode.

Two versions: 3.9.2 (the default) and 4.4.0 (``TALLY_STACK_KAFKA_VERSION``).
``stack/kafka/pom.xml`` takes the version as ``-Dkafka.version``;
``mvn dependency:copy-dependencies`` puts that version's jars in its own
folder once (``.stack/kafka/libs``, ``.stack/kafka-4.4.0/libs``). The storage
directory is formatted on first start with a fresh cluster id.
"""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from stack.processes import Managed

HERE = Path(__file__).parent / "kafka"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
DEFAULT_VERSION = "3.9.2"


@dataclass(frozen=True)
class Release:
    """What differs between the Kafka versions the stack runs: where a tool's class is, how it logs."""

    version: str
    config_tool: str
    log_config: str  # the file under stack/kafka/ rendered beside server.properties
    log_property: str  # the JVM property that names it


RELEASES = {
    "3.9.2": Release("3.9.2", "kafka.admin.ConfigCommand", "log4j.properties", "log4j.configuration"),
    # Kafka 4 logs through log4j2, and ConfigCommand moved to the kafka-tools jar.
    "4.4.0": Release("4.4.0", "org.apache.kafka.tools.ConfigCommand", "log4j2.properties", "log4j2.configurationFile"),
}
VERSIONS = tuple(RELEASES)


def home_of(root: Path, version: str) -> Path:
    """Where a stack under ``root`` keeps Kafka ``version``: the default's in ``kafka``, another's beside it."""
    return root / ("kafka" if version == DEFAULT_VERSION else f"kafka-{version}")


@dataclass(frozen=True)
class KafkaServer:
    home: Path  # .stack/kafka
    process: Managed
    host: str = "127.0.0.1"
    port: int = 9092
    controller_port: int = 9093
    heap: str = "768m"
    release: Release = RELEASES[DEFAULT_VERSION]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def libs(self) -> Path:
        return self.home / "libs"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def version(self) -> str:
        return self.release.version

    def install(self) -> bool:
        """Fetch the jars unless this version's are there. Return whether it fetched."""
        marker = self.libs / f".kafka-{self.version()}"
        if marker.exists():
            return False
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed to fetch Kafka: apt-get install maven")
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(HERE / "pom.xml"),
                "dependency:copy-dependencies",
                f"-Dkafka.version={self.version()}",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
            check=True,
        )
        marker.touch()
        return True

    def reachable(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def configure(self) -> Path:
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.home / "server.properties"
        config.write_text(
            (HERE / "server.properties")
            .read_text()
            .format(host=self.host, port=self.port, controller_port=self.controller_port, data_dir=self.data_dir)
        )
        log_config = self.home / self.release.log_config
        log_config.write_text(
            (HERE / self.release.log_config)
            .read_text()
            .format(log_file=self.process.log_dir / f"{self.process.name}-server.log")
        )
        return config

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            f"-D{self.release.log_property}=file:{self.home / self.release.log_config}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def set_producer_quota(self, client_id: str, bytes_per_s: int | None) -> None:
        """Throttle what clients named ``client_id`` may produce (None lifts it): a slow broker, on demand.

        The tool runs from this stack's jars, fetched here if the broker is one this stack reuses."""
        self.install()
        change = (
            ["--add-config", f"producer_byte_rate={bytes_per_s}"]
            if bytes_per_s
            else ["--delete-config", "producer_byte_rate"]
        )
        subprocess.run(
            self._java(
                self.release.config_tool,
                "--bootstrap-server",
                self.bootstrap,
                "--alter",
                *change,
                "--entity-type",
                "clients",
                "--entity-name",
                client_id,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def format_storage(self, config: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        subprocess.run(
            # One argument with "=": a random id can start with "-", which would read as an option.
            self._java(STORAGE_TOOL, "format", f"--cluster-id={cluster_id}", "-c", str(config)),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self) -> bool:
        """Start the broker unless it runs. Return whether it started it."""
        if self.process.pid() is not None or self.reachable():
            return False
        self.install()
        config = self.configure()
        self.format_storage(config)
        self.process.start_and_wait(self._java(MAIN_CLASS, str(config)), ready=self.ready, what="accepting clients")
        return True

    def ready(self) -> bool:
        """The broker answers a metadata request."""
        if not self.reachable():
            return False
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000, client_id="tally-stack")
        except Exception:
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()


def ensure_topic(
    bootstrap: str, name: str, partitions: int, replication: int = 1, retention_ms: int | None = None
) -> bool:
    """Create ``name`` unless it exists. Return whether it created it."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tally-stack")
    try:
        if name in admin.list_topics():
            return False
        configs = {"min.insync.replicas": str(min(2, replication))}
        if retention_ms is not None:
            configs["retention.ms"] = str(retention_ms)
        try:
            admin.create_topics([NewTopic(name, partitions, replication, topic_configs=configs)])
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        admin.close()


def delete_topics(bootstrap: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (tests clean up with it)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tally-stack")
    try:
        doomed = [t for t in admin.list_topics() if t.startswith(prefix)]
        if doomed:
            admin.delete_topics(doomed)
        return doomed
    finally:
        admin.close()
