"""The image's base: deploy/Dockerfile's argument, and the base made here (stack/docker.py) without Docker.

That the image builds on that base and its containers count is
tests/integration/deploy/test_image.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stack import docker as images
from stack.stack import Stack, StackSettings
from tests.support.paths import ROOT


def test_the_dockerfile_builds_from_an_argument_whose_default_is_the_official_python_image() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert re.findall(r"^(ARG|FROM)\s+(.+?)\s*$", dockerfile, re.MULTILINE)[:2] == [
        ("ARG", "BASE_IMAGE=python:3.11-slim"),
        ("FROM", "${BASE_IMAGE}"),
    ]
    assert len(re.findall(r"^FROM\s", dockerfile, re.MULTILINE)) == 1


def test_the_base_made_here_looks_like_the_official_image_where_the_dockerfile_needs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rootfs = tmp_path / "rootfs"
    for folder in (
        "usr/lib/python3.11",
        "usr/local/bin",
        "etc/ssl/certs",
        "var/cache/apt/archives",
        "var/lib/apt/lists",
    ):
        (rootfs / folder).mkdir(parents=True)
    (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").write_text("[externally-managed]\n")
    (rootfs / "etc/ssl/certs/ca-certificates.crt").write_text("Debian's CAs\n")
    (rootfs / "var/cache/apt/archives/python3_3.11.2-1_amd64.deb").write_bytes(b"deb")
    (rootfs / "var/lib/apt/lists/bookworm_Packages").write_text("Package: python3\n")
    host_cas = tmp_path / "host-cas.crt"
    host_cas.write_text("Debian's CAs and the machine's own\n")
    monkeypatch.setattr(images, "HOST_CA_BUNDLE", host_cas)

    images.like_the_official_image(rootfs)

    assert not (rootfs / "usr/lib/python3.11/EXTERNALLY-MANAGED").exists()  # `pip install uv` is allowed
    assert str((rootfs / "usr/local/bin/python").readlink()) == "/usr/bin/python3"
    assert str((rootfs / "usr/local/bin/pip").readlink()) == "/usr/bin/pip3"
    assert (rootfs / "etc/ssl/certs/ca-certificates.crt").read_text() == host_cas.read_text()
    assert list((rootfs / "var/cache/apt/archives").iterdir()) == []
    assert list((rootfs / "var/lib/apt/lists").iterdir()) == []


def test_the_engine_keeps_its_files_under_the_stack_folder_and_leaves_the_host_network_alone(tmp_path: Path) -> None:
    docker = Stack(StackSettings.from_env({"TALLY_STACK_DIR": str(tmp_path)})).docker
    config = docker.config
    home = tmp_path / "docker"
    paths = [config["data-root"], config["exec-root"], config["pidfile"], config["deprecated-key-path"]]
    assert all(Path(str(path)).parent == home for path in paths), paths
    assert config["hosts"] == [f"unix://{home / 'docker.sock'}"]
    assert (config["bridge"], config["iptables"], config["ip-masq"]) == ("none", False, False)
    assert docker.docker("ps") == [images.CLIENT, "--host", f"unix://{home / 'docker.sock'}", "ps"]
    assert docker.process.pid_file == tmp_path / "run" / "docker.pid"
