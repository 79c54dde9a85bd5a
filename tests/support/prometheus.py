"""Debian's Prometheus and promtool (``make prometheus``), as the tests run them: never the package's service."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def require(binary: str) -> str:
    """``binary``'s path; fails (never skips) when it is missing."""
    assert shutil.which(binary), f"{binary} is missing: `make prometheus` installs Debian's prometheus"
    return binary


def promtool(*args: str | Path, cwd: Path | None = None) -> None:
    """Run ``promtool ARGS``; fail with what it printed unless it succeeds."""
    result = subprocess.run(
        [require(PROMTOOL), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(map(str, args))}:\n{result.stdout}{result.stderr}"


def api(url: str, path: str, **params: str) -> Any:
    """The ``data`` of a Prometheus HTTP API answer (``/api/v1/...``); fails unless its status is success."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=10) as response:
        answer = json.loads(response.read())
    assert answer["status"] == "success", answer
    return answer["data"]
