"""Where a worker's time goes, per event: py-spy samples sorted into the pipeline's stages.

py-spy (PyPI) samples the worker from outside; ``uv tool run`` fetches it on
first use. Samples are taken of the thread holding the GIL (``--gil``): on a
worker pinned to one core that is where its CPU goes, apart from C code that
releases the GIL (socket I/O). Each sample is given to a stage by the code
on its stack (``STAGES``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.worker_runs import interrupt, pinned

PY_SPY_VERSION = "0.4.3"
RATE_HZ = 100

# (stage, substrings of a frame "function (file:line)"). A sample goes to the
# first stage, in this order, that any frame of its stack belongs to: the
# changelog produce under a table write under count_batch is "changelog".
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ClickHouse write (rollup, driver)", ("aggregator/rollup.py", "aggregator/write.py", "clickhouse_driver")),
    (
        "table write + changelog produce",
        ("FaustCountTable.set", "faust/tables/", "faust/stores/", "rocksdict", "producer"),
    ),
    ("decode (json + field rules)", ("schema/event.py", "aggregator/decode.py")),
    ("count (count_batch, table reads)", ("aggregator/count.py", "schema/keys.py", "FaustCountTable.get")),
    ("metrics (prometheus_client)", ("prometheus_client", "aggregator/metrics.py")),
    ("Kafka fetch (aiokafka consumer)", ("aiokafka/", "kafka/")),
    (
        "faust stream machinery (per event)",
        ("faust/streams", "faust/transport/", "faust/agents", "faust/channels", "faust/events", "faust/topics"),
    ),
    (
        "batching (consume, batch, commit, gaps, table)",
        (
            "aggregator/consume.py",
            "aggregator/batch.py",
            "aggregator/commit.py",
            "aggregator/gaps.py",
            "aggregator/table.py",
            "aggregator/faust_internals.py",
            "aggregator/app.py",
        ),
    ),
    ("faust/mode services, timers, web", ("faust/", "mode/", "aiohttp/")),
    ("asyncio event loop itself", ("asyncio/", "selectors.py")),
)
OTHER = "other"
# Frames every sample of a thread has (how it was started): no stage's.
ROOT_FRAMES = ("(tally:", "deploy/cli.py", "mode/worker.py", "threading.py", "mode/threads.py", "concurrent/futures/")


def py_spy() -> list[str]:
    found = shutil.which("py-spy")
    if found:
        return [found]
    uv = shutil.which("uv")
    uv_run = [uv] if uv else ["python3", "-m", "uv"]  # the Makefile's uv
    return [*uv_run, "tool", "run", "--from", f"py-spy=={PY_SPY_VERSION}", "py-spy"]


def py_spy_available() -> bool:
    try:
        subprocess.run([*py_spy(), "--version"], capture_output=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def recorder(out: Path, cpu: int) -> Callable[[list[int]], Callable[[], None]]:
    """A ``while_running`` hook for run_workers: record the first worker until the count is done."""

    def start(pids: list[int]) -> Callable[[], None]:
        argv = [*py_spy(), "record", "--pid", str(pids[0]), "--rate", str(RATE_HZ), "--format", "raw", "--threads"]
        # --gil: the thread running Python, i.e. the CPU time on a one-core worker. --nonblocking: pausing the
        # worker for every sample (py-spy's default) slowed it four times on this machine.
        argv += ["--gil", "--nonblocking", "-o", str(out)]
        with open(out.with_suffix(".log"), "wb") as log:
            process = subprocess.Popen(pinned(cpu, argv), stdout=log, stderr=log)
        return lambda: interrupt(process)

    return start


@dataclass(frozen=True)
class Profile:
    samples: int
    by_stage: dict[str, int]
    by_thread: dict[str, int]
    top_leaves: list[tuple[str, int]]

    def share(self, stage: str) -> float:
        return self.by_stage.get(stage, 0) / self.samples if self.samples else 0.0


def stage_of(frames: list[str]) -> str:
    frames = [frame for frame in frames if not any(root in frame for root in ROOT_FRAMES)]
    for stage, markers in STAGES:
        if any(marker in frame for frame in frames for marker in markers):
            return stage
    return OTHER


def read_profile(raw: Path) -> Profile:
    """Sum py-spy's collapsed stacks ("thread;frame;...;frame count") by stage."""
    by_stage: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread, frames = frames[0], frames[1:]
        n = int(count)
        by_stage[stage_of(frames)] += n
        by_thread[thread.split(" ")[0] + " " + thread.split(" ", 2)[-1][:40]] += n
        if frames:
            leaves[frames[-1]] += n
    total = sum(by_stage.values())
    return Profile(total, dict(by_stage.most_common()), dict(by_thread.most_common()), leaves.most_common(15))
