"""The tally image (deploy/Dockerfile), built here and run against the local stack's Kafka and ClickHouse.

The image is built on the base made here (``tally-base:bookworm``,
:mod:`stack.docker`) by the stack's own Docker engine, which the module
starts if it is not running (and stops if it started it); Docker's layer
cache makes a build of unchanged code take seconds. Its containers run with
the host's network: ``tally migrate`` lays the schema in a fresh database,
``tally ingest`` and ``tally worker`` run on free ports, a fresh topic and
app id, and beacons sent to the container's ingest come back counted from
ClickHouse and from its ``/get_stats/``. Every container is removed at the
end, passed or failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client
from stack import docker as images
from stack.docker import Engine
from stack.kafka import delete_topics
from stack.ports import free_port
from stack.processes import http_status
from stack.stack import Stack
from tests.support.servers import PARTITIONS, daily_stats, eventually

pytestmark = [pytest.mark.docker, pytest.mark.kafka, pytest.mark.clickhouse]

DEV_TOOLING = ("stack", "tests", "bench", "soak", "docs", ".stack", ".git", "node_modules")
READ_TOKEN = f"test-read-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class Built:
    docker: Engine
    image: str


@pytest.fixture(scope="module")
def built(stack: Stack) -> Iterator[Built]:
    """The image, built from this checkout on the base made here (the engine started if it was not running)."""
    docker = stack.docker
    assert not (missing := images.missing_packages()), f"{missing} missing: `make docker` installs them"
    started = docker.start()
    try:
        log = docker.process.log_dir / "image.log"
        images.make_base(docker, log)
        # A tag of this checkout's own: a session of another checkout on the same engine never replaces it.
        tag = f"tally:test-{hashlib.sha1(str(images.CHECKOUT).encode()).hexdigest()[:8]}"
        yield Built(docker, images.build_image(docker, log, tag))
    finally:
        if started:
            docker.stop()


@dataclass
class Containers:
    """The containers a test runs from the image, with the host's network; all removed by :meth:`remove_all`."""

    built: Built
    names: list[str] = field(default_factory=list)

    def run(self, env: dict[str, str], *command: str, detach: bool = False) -> str:
        """``docker run`` the image with ``command``: its output, or (``detach``) its container's name."""
        name = f"tally-test-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        flags = [f"--env={key}={value}" for key, value in env.items()]
        mode = ["--detach"] if detach else []
        args = ("run", *mode, "--name", name, "--network=host", *flags, self.built.image, *command)
        result = self.built.docker.run(*args, timeout_s=120, check=False)
        assert result.returncode == 0, f"tally {' '.join(command)}: {result.stdout}{result.stderr}{self.logs(name)}"
        return name if detach else result.stdout

    def running(self, name: str) -> bool:
        state = self.built.docker.run("inspect", "--format", "{{.State.Running}}", name, check=False)
        return state.stdout.strip() == "true"

    def logs(self, name: str) -> str:
        result = self.built.docker.run("logs", name, check=False)
        return f"\n--- {name}'s log:\n{result.stdout}{result.stderr}"

    def wait_until(self, name: str, ready: str, check: Callable[[], bool], timeout_s: float = 120) -> None:
        """Poll ``check`` until true; fail with the container's log if it exits first or takes too long."""
        deadline = time.monotonic() + timeout_s
        while not check():
            assert self.running(name), f"{name} exited before it was {ready}{self.logs(name)}"
            assert time.monotonic() < deadline, f"{name} not {ready} after {timeout_s:.0f}s{self.logs(name)}"
            time.sleep(0.5)

    def remove_all(self) -> None:
        if self.names:
            self.built.docker.run("rm", "--force", "--volumes", *self.names, check=False)
            self.names.clear()


@pytest.fixture
def containers(built: Built) -> Iterator[Containers]:
    containers = Containers(built)
    yield containers
    containers.remove_all()


@pytest.fixture
def database(stack: Stack) -> Iterator[ClickHouseSettings]:
    """A fresh database name, not migrated: the container's ``tally migrate`` lays it out."""
    base = stack.settings.clickhouse
    settings = ClickHouseSettings(base.host, base.port, f"test_{uuid.uuid4().hex[:12]}", base.user, base.password)
    yield settings
    with clickhouse_client(settings, database="default") as admin:
        admin.execute(f"DROP DATABASE IF EXISTS `{settings.database}`")


def get(url: str) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, json.loads(response.read())


def test_the_image_runs_as_tally_and_holds_no_dev_tooling(built: Built) -> None:
    user = built.docker.run("image", "inspect", "--format", "{{.Config.User}}", built.image).stdout.strip()
    assert user == "tally"
    script = "import os; print(os.getuid(), os.getcwd(), *sorted(os.listdir('/app')))"
    uid, workdir, *app = _python(built, script)
    assert (uid, workdir) == ("10001", "/app")
    assert {"schema", "ingest", "query", "aggregator", "deploy", "web"} <= set(app)
    assert not set(DEV_TOOLING) & set(app), f"the image holds dev tooling: {sorted(set(DEV_TOOLING) & set(app))}"
    # What a user of the image meets when they ask it for the local stack.
    result = built.docker.run("run", "--rm", "--network=none", built.image, "up", check=False)
    assert result.returncode == 2
    assert "tally up: the local stack is dev tooling, run from a checkout" in result.stderr


def _python(built: Built, script: str) -> list[str]:
    """What ``python -c script`` prints in a container of the image (the entry point overridden)."""
    args = ("run", "--rm", "--network=none", "--entrypoint", "python", built.image, "-c", script)
    result = built.docker.run(*args, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_ingest_and_worker_containers_count_beacons_into_clickhouse(
    stack: Stack, topic: str, database: ClickHouseSettings, containers: Containers
) -> None:
    app_id = f"test-app-{uuid.uuid4().hex[:8]}"
    ingest_port, worker_port = free_port(), free_port()
    env = {
        "TALLY_KAFKA_BOOTSTRAP": stack.settings.kafka.bootstrap,
        "TALLY_EVENTS_TOPIC": topic,
        "TALLY_EVENTS_PARTITIONS": str(PARTITIONS),
        "TALLY_CLICKHOUSE_HOST": database.host,
        "TALLY_CLICKHOUSE_PORT": str(database.port),
        "TALLY_CLICKHOUSE_DATABASE": database.database,
    }
    try:
        applied = containers.run(env, "migrate")
        assert applied.splitlines() == [f"applied {m.version:04d}_{m.name}" for m in migrations.available()]

        ingest = containers.run(
            {
                **env,
                "TALLY_INGEST_HOST": "127.0.0.1",
                "TALLY_INGEST_PORT": str(ingest_port),
                "TALLY_API_READ_TOKENS": READ_TOKEN,
                "TALLY_API_PUBLIC_GET_STATS": "true",
            },
            "ingest",
            detach=True,
        )
        url = f"http://127.0.0.1:{ingest_port}"
        containers.wait_until(ingest, "ready", lambda: http_status(f"{url}/readyz") == 200)
        worker_env = {
            **env,
            "TALLY_WORKER_APP_ID": app_id,
            "TALLY_WORKER_WEB_HOST": "127.0.0.1",
            "TALLY_WORKER_WEB_PORT": str(worker_port),
        }
        worker = containers.run(worker_env, "worker", "--id", "1", detach=True)
        containers.wait_until(worker, "ready", lambda: http_status(f"http://127.0.0.1:{worker_port}/readyz") == 200)

        for _ in range(3):
            status, body = get(f"{url}/track/?labels=signup:forms:btn1|home")
            assert (status, body) == (202, {"accepted": 2})

        expected = {("signup", "forms", "btn1"): 3, ("home", "", ""): 3}
        with contextlib.suppress(AssertionError):
            eventually(lambda: daily_stats(database) == expected, timeout_s=60)
        assert daily_stats(database) == expected, containers.logs(worker)
        assert get(f"{url}/get_stats/?dom_ids=btn1|") == (200, [["btn1", 3, "signup"]])
    finally:
        containers.remove_all()
        delete_topics(stack.settings.kafka.bootstrap, app_id)
