"""``tally``: one command for the local stack and the services.

tally up        install what is missing, start everything, print where it is
tally down      stop everything ``up`` started
tally status    what runs, and where
tally migrate   apply the ClickHouse schema
tally ingest    run the ingest service in the foreground
tally worker    run a Faust worker in the foreground (run it again to add one)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import date, datetime, timedelta

from stack.stack import Stack, StackSettings, worker_web_port


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
        help="apply the replicated, sharded layout on every node of this ClickHouse cluster (README, Scaling)",
    )
    commands.add_parser("ingest", help="run the ingest service (foreground)")
    worker = commands.add_parser("worker", help="run a Faust worker (foreground)")
    worker.add_argument("--id", help="worker identity: its state lives in .stack/worker-ID (default: the first free)")
    replay = commands.add_parser("replay", help="rebuild the counts of past days from the events topic")
    replay.add_argument("--from", dest="first", required=True, type=date.fromisoformat, help="first day, YYYY-MM-DD")
    replay.add_argument("--to", dest="last", required=True, type=date.fromisoformat, help="last day, YYYY-MM-DD")
    replay.add_argument("--dry-run", action="store_true", help="show what would change, write nothing")
    reset = commands.add_parser("reset", help="recount everything from the events topic (workers stopped)")
    reset.add_argument("--yes", action="store_true", required=True, help="yes, forget the workers' state")
    args = parser.parse_args(argv)

    if args.command == "ingest":
        return _ingest()
    if args.command == "worker":
        return _worker(args.id)
    if args.command == "replay":
        return _replay(args.first, args.last, dry_run=args.dry_run)
    if args.command == "reset":
        return _reset()
    stack = Stack(StackSettings.from_env(os.environ))
    if args.command == "up":
        stack.up()
    elif args.command == "down":
        stack.down()
    elif args.command == "status":
        stack.print_status()
    elif args.command == "migrate":
        applied = stack.migrate(args.cluster)
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

    stack = Stack(StackSettings.from_env(os.environ))
    if worker_id is None:
        worker_id = next(str(n) for n in range(1, 1000) if stack.worker(str(n)).pid() in (None, os.getpid()))
    env = dict(os.environ)
    env.setdefault("TALLY_WORKER_DATA_DIR", str(stack.settings.root / f"worker-{worker_id}"))
    env.setdefault("TALLY_WORKER_WEB_PORT", str(worker_web_port(worker_id)))
    settings = WorkerSettings.from_env(env)
    own = stack.worker(worker_id)
    if own.pid() is None:  # started by hand, not by `tally up`: register it for status/down
        own.run_dir.mkdir(parents=True, exist_ok=True)
        own.pid_file.write_text(f"{os.getpid()}\n")
    logs.configure("INFO")
    mode.loop.use("uvloop")  # a quarter more events/s on one core (bench/worker.py)
    app = create_app(settings)
    # The worker holds whole batches of records while it counts them: collect
    # the young generation less often, and never walk what startup made.
    gc.set_threshold(50_000, 20, 100)
    gc.freeze()
    faust.Worker(app, loglevel="INFO", quiet=True, logging_config=logs.dict_config("INFO")).execute_from_commandline()
    return 0


def _replay(first: date, last: date, *, dry_run: bool) -> int:
    from kafka import KafkaConsumer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from rich.table import Table

    from aggregator import replay
    from aggregator.count import first_open_day
    from aggregator.settings import WorkerSettings
    from schema.settings import clickhouse_client

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
        f"read {outcome.counted.events_read:,} events ({outcome.counted.undecodable:,} undecodable) "
        f"from offsets {outcome.plan.start} to {outcome.plan.end}"
    )
    return 0


def _reset() -> int:
    from kafka import KafkaAdminClient, KafkaConsumer
    from rich.console import Console

    from aggregator.count import first_open_day
    from aggregator.reset import ResetRefused, reset
    from aggregator.settings import WorkerSettings
    from ingest.settings import IngestSettings
    from schema.settings import clickhouse_client

    settings = WorkerSettings.from_env(os.environ)
    stack = Stack(StackSettings.from_env(os.environ))
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
                state_dirs=sorted(stack.settings.root.glob("worker-*")),
                tz=settings.day_tz,
                first_open_day=first_open_day(datetime.now(settings.day_tz), settings.window_days),
                max_past_s=IngestSettings.from_env(os.environ).limits.max_client_ts_past_s,
                oldest_day=datetime.now(settings.day_tz).date() - timedelta(days=stack.settings.retention_days),
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
                      f"from {outcome.counted.events_read:,} events")  # fmt: skip
    console.print("workers' state forgotten; start the workers (tally worker / make up) to recount the open days")
    return 0


if __name__ == "__main__":
    sys.exit(main())
