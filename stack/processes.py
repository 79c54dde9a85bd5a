"""Background processes of the local stack, tracked by pid files under .stack/run.

:meth:`Managed.start_and_wait` is the one way a server or a service of the
stack (and of the tests, benchmarks and the soak) is started and waited for.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# How long a process may take to be ready by default; StackSettings.start_timeout_s
# (TALLY_STACK_START_TIMEOUT_S) sets it for the processes of a stack.
START_TIMEOUT_S = 180.0
# Processes this process started: kept so they are reaped (not left as
# zombies, nor warned about as "still running" when garbage-collected).
_children: dict[int, subprocess.Popen[bytes]] = {}


def http_status(url: str, timeout_s: float = 2) -> int:
    """The status a service answers ``url`` with; 0 if it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class StartFailed(RuntimeError):
    """A process did not come up; the message says where its log is."""


@dataclass(frozen=True)
class Managed:
    """One background process: its name, pid file and log file, and how long it may take to be ready."""

    name: str
    run_dir: Path
    log_dir: Path
    start_timeout_s: float = START_TIMEOUT_S

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def log_size(self) -> int:
        return self.log_file.stat().st_size if self.log_file.exists() else 0

    def log_since(self, offset: int) -> bytes:
        """What the process logged after ``offset`` (a ``log_size()`` taken earlier)."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                return f.read()
        except FileNotFoundError:
            return b""

    def pid(self) -> int | None:
        """The pid if the process is alive, else None (and a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        if _alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
        """Start ``argv`` detached from this terminal, output to the log file."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ if env is None else env),
                cwd=cwd,
                start_new_session=True,
            )
        _children[process.pid] = process
        self.pid_file.write_text(f"{process.pid}\n")
        return process.pid

    def start_and_wait(
        self,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool] | bytes,
        what: str = "ready",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> int:
        """Start ``argv`` (as :meth:`start`) and wait until it is ready; return its pid.

        ``ready`` is a check to poll, or a marker the process logs once ready
        (looked for in what it logs after this start). Raises
        :class:`StartFailed` if the process exits first or is not ready
        within ``start_timeout_s``.
        """
        if isinstance(ready, bytes):
            marker, seen = ready, self.log_size()

            def check() -> bool:
                return marker in self.log_since(seen)

        else:
            check = ready
        pid = self.start(argv, env=env, cwd=cwd)
        self.wait_until(check, what=what)
        return pid

    def wait_until(self, check: Callable[[], bool], timeout_s: float | None = None, what: str = "ready") -> None:
        """Poll ``check`` until true; fail if the process dies or ``timeout_s`` (``start_timeout_s``) runs out."""
        timeout_s = self.start_timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if check():
                return
            if self.pid() is None:
                raise StartFailed(f"{self.name} exited before it was {what}; see {self.log_file}")
            time.sleep(0.3)
        raise StartFailed(f"{self.name} not {what} after {timeout_s:.0f}s; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``. Return whether it was running."""
        pid = self.pid()
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would (tests use it)."""
        pid = self.pid()
        if pid is not None:
            _signal_group(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.05)
            self.pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return True
        del _children[pid]
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)
