"""The tally image built and run here: a Docker engine of the stack's own, a base image made here, the build.

Debian's ``dockerd`` runs as our own process with everything under
``.stack/docker``: its configuration, data root, exec root, socket, pid file
and key. It has no bridge and writes no iptables rules, so it never touches a
system Docker or the host's firewall; builds and containers use the host's
network (``--network=host``), where the local stack's Kafka and ClickHouse
listen on loopback.

No image registry is reachable here, so the base is made here, once:
``debootstrap`` of Debian 12 with its Python 3.11, made to look like the
official ``python:3.11-slim`` where ``deploy/Dockerfile`` needs it (``python``
and ``pip`` on the PATH, pip allowed to install into the system Python), and
trusting the certificate authorities this machine trusts, so that pip and uv
in the build reach PyPI the way the machine's own do. It is imported as
``tally-base:bookworm`` and kept in the engine's data root; the image is
built from it with ``--build-arg BASE_IMAGE``, and Docker's layer cache
rebuilds only what the code changed. The Dockerfile's default base stays the
official image.

    python -m stack.docker build   # install what is missing, start the engine, make the base once, build tally:local
    python -m stack.docker stop    # stop the engine (``tally down`` does too)
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stack.processes import Managed

CHECKOUT = Path(__file__).resolve().parent.parent
DOCKERFILE = CHECKOUT / "deploy" / "Dockerfile"
IMAGE = "tally:local"
BASE_IMAGE = "tally-base:bookworm"
DOCKERD = "/usr/sbin/dockerd"
# docker.io's own client, of the engine's version; its legacy builder needs no buildx plugin.
CLIENT = "/usr/bin/docker"
DEBOOTSTRAP = "/usr/sbin/debootstrap"
SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-pip")
# Bumped when the base's recipe below changes, so that a base made by an older one is made again.
BASE_REVISION = "1"
BASE_LABEL = "tally.base"
# What the official image sets and deploy/Dockerfile's steps rely on, and where pip and uv find the CAs.
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    'CMD ["python3"]',
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SOCKET_PATH_MAX = 107  # sun_path, less its terminating NUL
BUILD_TIMEOUT_S = 1800.0


def missing_packages() -> list[str]:
    """The Debian packages the engine and the base need that are not installed."""
    needed = (("docker.io", DOCKERD), ("docker.io", CLIENT), ("debootstrap", DEBOOTSTRAP))
    return sorted({package for package, binary in needed if not Path(binary).exists()})


def install() -> bool:
    """apt-get install docker.io and debootstrap unless they are there. Return whether it installed."""
    packages = missing_packages()
    if not packages:
        return False
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], check=True, env=env
    )
    return True


@dataclass(frozen=True)
class Engine:
    """The stack's own ``dockerd``: its files under ``home`` (``.stack/docker``), its process ``process``."""

    home: Path
    process: Managed

    @property
    def socket(self) -> Path:
        return self.home / "docker.sock"

    @property
    def host(self) -> str:
        """What ``DOCKER_HOST`` (or ``docker --host``) is for this engine."""
        return f"unix://{self.socket}"

    @property
    def config(self) -> dict[str, object]:
        """daemon.json: every path under ``home``, no bridge, no firewall rules."""
        return {
            "data-root": str(self.home / "data"),
            "exec-root": str(self.home / "run"),
            "pidfile": str(self.home / "dockerd.pid"),
            "hosts": [self.host],
            "deprecated-key-path": str(self.home / "key.json"),
            "bridge": "none",
            "iptables": False,
            "ip-masq": False,
            "log-level": "warn",
        }

    def docker(self, *args: str) -> list[str]:
        """The argv of ``docker ARGS`` against this engine."""
        return [CLIENT, "--host", self.host, *args]

    def run(self, *args: str, timeout_s: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this engine, its output captured; fails with what it printed if ``check``."""
        result = subprocess.run(
            self.docker(*args), capture_output=True, text=True, timeout=timeout_s, check=False, env=_client_env()
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def answers(self) -> bool:
        return self.socket.exists() and self.run("version", timeout_s=10, check=False).returncode == 0

    def start(self) -> bool:
        """Start ``dockerd`` unless it runs, and wait until it answers. Return whether it started it."""
        if missing := missing_packages():
            raise RuntimeError(f"{', '.join(missing)} missing: `make docker` installs them")
        if os.geteuid() != 0:
            raise RuntimeError("the stack's Docker engine runs as root, as dockerd needs")
        # containerd's socket is the deepest the engine makes under its exec root.
        deepest = self.home / "run" / "containerd" / "containerd.sock.ttrpc"
        if len(str(deepest)) > SOCKET_PATH_MAX:
            raise RuntimeError(f"{deepest} is too long for a unix socket: set TALLY_STACK_DIR to a shorter path")
        with self.locked():
            if self.process.pid() is not None:
                self.process.wait_until(self.answers, what="answering on its socket")
                return False
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / "daemon.json").write_text(json.dumps(self.config, indent=2) + "\n")
            self.process.start_and_wait(
                [DOCKERD, "--config-file", str(self.home / "daemon.json")],
                ready=self.answers,
                what="answering on its socket",
            )
            return True

    def stop(self) -> bool:
        """Stop ``dockerd`` (and the containers it runs). Return whether it was running."""
        stopped = self.process.stop(timeout_s=60)
        unmount_under(self.home / "run")  # the network namespace dockerd leaves mounted there
        return stopped

    def has_image(self, name: str) -> bool:
        return self.run("image", "inspect", name, check=False).returncode == 0

    def label(self, image: str, label: str) -> str | None:
        result = self.run("image", "inspect", "--format", f'{{{{index .Config.Labels "{label}"}}}}', image, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One starter and one base maker at a time, across test sessions and ``make image``."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def engine(root: Path, process: Managed) -> Engine:
    """The engine of the stack whose folder is ``root``, tracked as ``process``."""
    return Engine(root / "docker", process)


# -- the base ---------------------------------------------------------------------------------------------------


def base_recipe() -> str:
    return f"{SUITE} {' '.join(BASE_PACKAGES)} r{BASE_REVISION}"


def make_base(docker: Engine, log: Path) -> bool:
    """``tally-base:bookworm`` unless the engine has it from this recipe. Return whether it made it."""
    with docker.locked():
        if docker.label(BASE_IMAGE, BASE_LABEL) == base_recipe():
            return False
        rootfs = docker.home / "base-rootfs"
        _remove_rootfs(rootfs)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            subprocess.run(
                [DEBOOTSTRAP, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(rootfs)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=BUILD_TIMEOUT_S,
            )
        like_the_official_image(rootfs)
        _import(docker, rootfs)
        _remove_rootfs(rootfs)
        return True


def like_the_official_image(rootfs: Path) -> None:
    """Make a debootstrapped Debian look like ``python:3.11-slim`` where deploy/Dockerfile needs it."""
    for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()  # the official image's Python takes `pip install`, and so must this one
    for name, target in (("python", "/usr/bin/python3"), ("pip", "/usr/bin/pip3")):
        link = rootfs / "usr/local/bin" / name
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    if HOST_CA_BUNDLE.exists():  # the CAs this machine's pip and uv trust (a proxy's among them, if any)
        shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    for left in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*")]:
        if left.is_file():
            left.unlink()


def _import(docker: Engine, rootfs: Path) -> None:
    label = f'LABEL {BASE_LABEL}="{base_recipe()}"'
    changes = [arg for change in (*BASE_CHANGES, label) for arg in ("--change", change)]
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        result = subprocess.run(
            docker.docker("import", *changes, "-", BASE_IMAGE),
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            env=_client_env(),
        )
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait()
    if result.returncode != 0 or tar.returncode != 0:
        raise RuntimeError(f"importing {rootfs} as {BASE_IMAGE} failed:\n{result.stdout}{result.stderr}")


def _remove_rootfs(rootfs: Path) -> None:
    """Remove a rootfs, first unmounting what an interrupted debootstrap left mounted in it (/proc, /sys)."""
    if rootfs.exists():
        unmount_under(rootfs)
        shutil.rmtree(rootfs)


def unmount_under(folder: Path) -> None:
    """Unmount whatever is mounted below ``folder``, deepest first."""
    prefix = str(folder.resolve()) + "/"
    mounted = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounted if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=True)


# -- the image --------------------------------------------------------------------------------------------------


def build_image(docker: Engine, log: Path, tag: str = IMAGE) -> str:
    """deploy/Dockerfile built on the base made here (``make_base`` first), tagged ``tag``; its image id.

    What it printed goes to ``log``; a failed build raises, naming it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time on the engine: the prune below must not take another build's newest step.
    with docker.locked(), open(log, "ab") as out:
        result = subprocess.run(
            docker.docker(
                "build",
                "--network=host",
                "--build-arg",
                f"BASE_IMAGE={BASE_IMAGE}",
                "--file",
                str(DOCKERFILE),
                "--tag",
                tag,
                str(CHECKOUT),
            ),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=BUILD_TIMEOUT_S,
            check=False,
            env=_client_env(),
        )
        if result.returncode != 0:
            raise RuntimeError(f"docker build of {DOCKERFILE} failed; see {log}")
        docker.run("image", "prune", "--force")  # the builds this one replaced, which nothing names any more
    return docker.run("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()


def image_size(docker: Engine, image: str) -> int:
    return int(docker.run("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def _client_env() -> dict[str, str]:
    # The legacy builder: this engine's BuildKit would need the buildx plugin on the client.
    return {**os.environ, "DOCKER_BUILDKIT": "0"}


# -- python -m stack.docker -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    from stack.stack import Stack, StackSettings  # here: stack.stack imports this module

    parser = argparse.ArgumentParser(
        prog="python -m stack.docker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=("build", "stop"))
    args = parser.parse_args(argv)
    stack = Stack(StackSettings.from_env(os.environ))
    docker = stack.docker
    if args.command == "stop":
        _say(f"docker engine: {'stopped' if docker.stop() else 'not running'}")
        return 0
    install()
    _say(f"docker engine: {'started' if docker.start() else 'already running'} ({docker.host})")
    log = docker.process.log_dir / "image.log"
    started = time.monotonic()
    made = make_base(docker, log)
    _say(f"base {BASE_IMAGE}: {f'made in {time.monotonic() - started:.0f}s' if made else 'exists'}")
    started = time.monotonic()
    image = build_image(docker, log)
    size = image_size(docker, image) / 1e6
    _say(f"image {IMAGE}: {image[:19]}, {size:.0f} MB, built in {time.monotonic() - started:.0f}s (log: {log})")
    _say(f"  DOCKER_HOST={docker.host} {CLIENT} run --rm --network=host {IMAGE} ingest")
    _say("  the engine runs until `make down` (or python -m stack.docker stop)")
    return 0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
