"""``tally``: one command for the services, and for the local stack in a checkout.

tally up        install what is missing, start everything, print where it is (in a checkout)
tally down      stop everything ``up`` started
tally status    what runs, and where
tally migrate   apply the ClickHouse schema
tally ingest    run the ingest service in the foreground
tally worker    run a Faust worker in the foreground (run it again to add one)
tally replay    rebuild the counts of past days from the events topic
tally reset     recount everything from the events topic (workers stopped)
"""

# The service commands read their settings only. up, down and status drive the
# local stack (stack/), dev tooling that does not ship: they import it when run,
# and exit 2 saying so where it is not installed. In a checkout, `tally worker`
# joins the local stack and `tally reset` forgets its workers' state; an
# installed tally does neither.

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from schema import migrations
from schema.settings import ClickHouseSettings, clickhouse_client, config_from

LOCAL_STACK_ONLY = (
    "tally {command}: the local stack is dev tooling, run from a checkout of the repository "
    "(make up, make status, make down); this tally is installed without it\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tally", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start the whole local stack")
    commands.add_parser("down", help="stop the local stack")
    commands.add_parser("status", help="what runs, and where")
    migrate = commands.add_parser("migrate", help="apply the ClickHouse schema")
    migrate.add_argument(
        "--cluster",
        metavar="NAME",
        help="apply the replicated, sharded layout on every node of this ClickHouse cluster (docs/scaling.md)",
    )
    commands.add_parser("ingest", help="run the ingest service (foreground)")
    worker = commands.add_parser("worker", help="run a Faust worker (foreground)")
    worker.add_argument(
        "--id",
        help="worker identity: /metrics on 6065 + ID unless TALLY_WORKER_WEB_PORT says; in a checkout, "
        "its state lives in .stack/worker-ID (default: the first free)",
    )
    replay = commands.add_parser("replay", help="rebuild the counts of past days from the events topic")
    replay.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD")
    replay.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last day, YYYY-MM-DD")
    replay.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    reset = commands.add_parser("reset", help="recount everything from the events topic (workers stopped)")
    reset.add_argument("--yes", action="store_true", required=True, help="yes, forget the workers' state")
    reset.add_argument(
        "--state-dir",
        dest="state_dirs",
        action="append",
        type=Path,
        metavar="DIR",
        help="a worker's local state to remove (repeatable; default: TALLY_WORKER_DATA_DIR, "
        "in a checkout the local stack's .stack/worker-*)",
    )
    args = parser.parse_args(argv)

    if args.command == "migrate":
        return _migrate(args.cluster)
    if args.command == "ingest":
        return _ingest()
    if args.command == "worker":
        return _worker(args.id)
    if args.command == "replay":
        return _replay(args.first, args.last, dry_run=args.dry_run)
    if args.command == "reset":
        return _reset(args.state_dirs)
    return _local_stack(args.command)


def _local_stack(command: str) -> int:
    """``tally up``, ``down`` or ``status``: the local stack, in a checkout only."""
    try:
        from stack.stack import Stack, StackSettings
    except ModuleNotFoundError as missing:
        if not _is_local_stack(missing):
            raise
        sys.stderr.write(LOCAL_STACK_ONLY.format(command=command))
        return 2
    stack = Stack(StackSettings.from_env(os.environ))
    if command == "up":
        stack.up()
    elif command == "down":
        stack.down()
    elif command == "status":
        stack.print_status()
    return 0


def _migrate(cluster: str | None) -> int:
    applied = migrations.apply(ClickHouseSettings.from_config(config_from(os.environ)), cluster)
    sys.stdout.write("\n".join(f"applied {m.version:04d}_{m.name}" for m in applied) or "schema up to date")
    sys.stdout.write("\n")
    return 0


def _ingest() -> int:
    """uvicorn with TALLY_INGEST_WORKERS processes on one port, JSON logs, no uvicorn access log.

    Several processes share their metrics through prometheus_client's
    multiprocess mode: a fresh directory per start (unless
    PROMETHEUS_MULTIPROC_DIR is given), removed when ingest stops.
    """
    import shutil
    import tempfile

    import uvicorn

    from deploy import logs
    from ingest.metrics import MULTIPROCESS_ENV
    from ingest.protocol import ONE_WRITE_HTTP
    from ingest.settings import IngestSettings

    settings = IngestSettings.from_env(os.environ)  # a bad setting stops here, in the parent, named
    logs.configure(settings.log_level)
    own_dir = None
    if settings.workers > 1 and MULTIPROCESS_ENV not in os.environ:
        own_dir = os.environ[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="tally-ingest-metrics-")
    try:
        uvicorn.run(
            "ingest.app:from_env",  # each worker process builds its app (and its producer) from the environment
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=logs.dict_config(settings.log_level),
            log_level=settings.log_level.lower(),
            access_log=False,  # TALLY_INGEST_ACCESS_LOG logs answers in the app instead, without the client's address
            proxy_headers=False,  # the client's address is never used: no IP is kept
            timeout_graceful_shutdown=10,
            http=ONE_WRITE_HTTP,  # httptools, each answer written with one system call
        )
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    return 0


def _worker(worker_id: str | None) -> int:
    import gc

    import faust
    import mode.loop

    from aggregator.app import create_app
    from aggregator.settings import WorkerSettings
    from deploy import logs

    env = dict(os.environ)
    try:
        from stack.stack import join_by_hand
    except ModuleNotFoundError as missing:  # installed: the worker's own settings only
        if not _is_local_stack(missing):
            raise
        if worker_id is not None:
            env.setdefault("TALLY_WORKER_WEB_PORT", str(worker_web_port(worker_id)))
    else:  # in a checkout, the worker joins the local stack
        env = join_by_hand(worker_id, env)
    settings = WorkerSettings.from_env(env)
    logs.configure(settings.log_level)
    mode.loop.use("uvloop")  # more events/s on one core than asyncio's loop (docs/performance.md)
    app = create_app(settings)
    # The worker holds whole batches of records while it counts them: collect
    # the young generation less often, and never walk what startup made.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    worker = faust.Worker(
        app, loglevel=settings.log_level, quiet=True, logging_config=logs.dict_config(settings.log_level)
    )
    worker.execute_from_commandline()
    return 0


def _replay(first: date, last: date, *, dry_run: bool) -> int:
    from kafka import KafkaConsumer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from aggregator import replay
    from aggregator.count import first_open_day
    from aggregator.settings import WorkerSettings

    settings = WorkerSettings.from_env(os.environ)
    console = Console()
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap.split(","),
        enable_auto_commit=False,
        group_id=None,
        fetch_max_bytes=64 << 20,
        max_partition_fetch_bytes=16 << 20,
        client_id="tally-replay",
    )
    progress = Progress(
        TextColumn("reading"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10,.0f} events/s"), TimeRemainingColumn(),
        console=console,
    )  # fmt: skip
    task = progress.add_task("read", total=None, rate=0.0)
    started = time.monotonic()

    def on_read(n: int) -> None:
        done = progress.tasks[0].completed + n
        progress.update(task, advance=n, rate=done / max(time.monotonic() - started, 1e-6))

    try:
        with clickhouse_client(settings.clickhouse) as client, progress:
            outcome = replay.replay(
                consumer, client, settings.kafka.bootstrap, settings.kafka.topic, first, last,
                tz=settings.day_tz,
                first_open_day=first_open_day(datetime.now(settings.day_tz), settings.window_days),
                dry_run=dry_run,
                window_ms=settings.dedupe_window_s * 1000,
                on_plan=lambda plan: progress.update(task, total=plan.total),
                on_read=on_read,
            )  # fmt: skip
    except replay.ReplayRefused as refused:
        console.print(f"[bold red]refused:[/] {refused}")
        return 2
    finally:
        consumer.close()
    summary = Table(title="dry run: nothing written" if dry_run else f"replay {outcome.replay_id}: swapped in")
    for column in ("day", "events", "counters", "before", "after", "counters changed"):
        summary.add_column(column, justify="right")
    for r in outcome.reports:
        summary.add_row(
            str(r.day), f"{r.events:,}", f"{r.counters:,}", f"{r.before:,}", f"{r.after:,}", f"{r.changed:,}"
        )
    console.print(summary)
    console.print(
        f"read {outcome.counted.events_read:,} records ({outcome.counted.undecodable:,} undecodable, "
        f"{outcome.counted.duplicates:,} repeats of a keyed request and {outcome.counted.reused:,} reused keys "
        f"dropped) from offsets {outcome.plan.start} to {outcome.plan.end}"
    )
    return 0


def worker_web_port(worker_id: str) -> int:
    """Where ``tally worker --id N`` serves /metrics, /healthz and /readyz unless TALLY_WORKER_WEB_PORT says."""
    return 6065 + int(worker_id) if worker_id.isdigit() else 6066


def _reset(state_dirs: list[Path] | None) -> int:
    from kafka import KafkaAdminClient, KafkaConsumer
    from rich.console import Console

    from aggregator.count import first_open_day
    from aggregator.reset import ResetRefused, reset
    from aggregator.settings import WorkerSettings
    from ingest.settings import IngestSettings

    settings = WorkerSettings.from_env(os.environ)
    if state_dirs is None:
        state_dirs = _workers_state(settings.data_dir)
    console = Console()
    bootstrap = settings.kafka.bootstrap.split(",")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tally-reset")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                             fetch_max_bytes=64 << 20, max_partition_fetch_bytes=16 << 20)  # fmt: skip
    try:
        with clickhouse_client(settings.clickhouse) as client:
            outcome = reset(
                admin, consumer, client,
                bootstrap=settings.kafka.bootstrap, topic=settings.kafka.topic, app_id=settings.app_id,
                state_dirs=state_dirs,
                tz=settings.day_tz,
                first_open_day=first_open_day(datetime.now(settings.day_tz), settings.window_days),
                max_past_s=IngestSettings.from_env(os.environ).limits.max_client_ts_past_s,
                window_s=settings.dedupe_window_s,
                oldest_day=datetime.now(settings.day_tz).date() - timedelta(days=settings.kafka.retention_days),
            )  # fmt: skip
    except ResetRefused as refused:
        console.print(f"[bold red]refused:[/] {refused}")
        return 2
    finally:
        admin.close()
        consumer.close()
    if outcome is None:
        console.print("no closed day in the topic to replay")
    else:
        console.print(f"closed days {outcome.plan.first_day}..{outcome.plan.last_day} rebuilt "
                      f"from {outcome.counted.events_read:,} records")  # fmt: skip
    console.print("workers' state forgotten; start the workers (tally worker / make up) to recount the open days")
    return 0


def _workers_state(data_dir: str) -> list[Path]:
    """What ``tally reset`` forgets unless told: the local stack's workers' state in a checkout, else ``data_dir``."""
    try:
        from stack.stack import worker_state_dirs
    except ModuleNotFoundError as missing:
        if not _is_local_stack(missing):
            raise
        return [Path(data_dir)]
    return worker_state_dirs(os.environ)


def _is_local_stack(missing: ModuleNotFoundError) -> bool:
    """Whether what could not be imported is the local stack itself (not installed), not one of its imports."""
    return missing.name in ("stack", "stack.stack")


if __name__ == "__main__":
    sys.exit(main())
