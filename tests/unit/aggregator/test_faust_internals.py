"""The Faust internals the worker hooks (aggregator/faust_internals.py) are still there and still what it needs.

One test per private name: an upgrade that removes one or changes its kind or
signature fails here, naming it. The worker also refuses to start on a
faust-streaming or aiokafka it is not proved with.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import faust
import faust.streams
import pytest
from aiokafka.structs import ConsumerRecord
from faust.tables.recovery import Recovery
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from aggregator import faust_internals
from aggregator.app import create_app
from aggregator.consume import CountingApp, CountingConsumer
from aggregator.faust_internals import (
    PROVED,
    HookedApp,
    HookedConsumer,
    UnprovedVersion,
    active_restore,
    check_versions,
    current_event,
)
from aggregator.settings import WorkerSettings
from aggregator.table import stand_in_for

EVENTS = TP("events", 3)


@pytest.fixture(autouse=True)
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """The loop Faust's objects bind to when built, closed after the test."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield loop
    asyncio.set_event_loop(None)
    loop.close()


@pytest.fixture
def app() -> Iterator[CountingApp]:
    yield CountingApp("contract", counted_topic="events", broker="kafka://127.0.0.1:1", store="memory://")


@pytest.fixture
def consumer(app: CountingApp) -> Iterator[CountingConsumer]:
    built = app.consumer
    assert isinstance(built, CountingConsumer), "App._new_transport / Transport.Consumer: the worker's consumer unused"
    yield built
    built._thread.thread_loop.close()  # the consumer's thread, never started, made a loop of its own


@pytest.fixture
def app_consumer(app: CountingApp, consumer: CountingConsumer) -> CountingApp:
    """``app``, its consumer built (and its loop closed after the test)."""
    return app


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


# (name, its owner in Faust, coroutine?, parameters)
METHODS = [
    ("App._new_transport", faust.App, False, ["self"]),
    ("Consumer._drain_messages", faust_consumer.Consumer, True, ["self", "fetcher"]),
    ("Consumer._new_offset", faust_consumer.Consumer, False, ["self", "tp"]),
    ("Consumer._wait_next_records", faust_consumer.Consumer, True, ["self", "timeout"]),
    ("Consumer._to_message", faust_aiokafka.Consumer, False, ["self", "tp", "record"]),
    ("Consumer._new_consumer_thread", faust_aiokafka.Consumer, False, ["self"]),
    (
        "AIOKafkaConsumerThread._create_worker_consumer",
        faust_aiokafka.AIOKafkaConsumerThread,
        False,
        ["self", "transport"],
    ),
    ("Consumer._add_gap", faust_consumer.Consumer, True, ["self", "tp", "offset_from", "offset_to"]),
    (
        "Table.send_changelog",
        faust.Table,
        False,
        ["self", "partition", "key", "value", "key_serializer", "value_serializer"],
    ),
]


@pytest.mark.parametrize(("name", "owner", "coroutine", "expected"), METHODS, ids=[m[0] for m in METHODS])
def test_each_hooked_method_is_there_with_its_signature(
    name: str, owner: type, coroutine: bool, expected: list[str]
) -> None:
    method = getattr(owner, name.split(".")[1], None)
    assert callable(method), f"{name} is gone"
    assert inspect.iscoroutinefunction(method) == coroutine, f"{name}: {'no longer' if coroutine else 'now'} async"
    assert parameters(method) == expected, f"{name} takes {parameters(method)} now"


# (name, the type its value has on a consumer just built)
CONSUMER_STATE = [
    ("_acked", defaultdict),
    ("_acked_index", defaultdict),
    ("_read_offset", defaultdict),
    ("_committed_offset", defaultdict),
    ("_buffered_partitions", set),
    ("_n_acked", int),
    ("_commit_every", int),
]


@pytest.mark.parametrize(("name", "kind"), CONSUMER_STATE, ids=[f"Consumer.{n}" for n, _ in CONSUMER_STATE])
def test_each_consumer_attribute_is_there_with_its_kind(consumer: CountingConsumer, name: str, kind: type) -> None:
    assert isinstance(getattr(consumer, name, None), kind), f"Consumer.{name} is gone or no longer a {kind.__name__}"


def test_the_worker_s_consumer_fetches_with_its_own_fetch_max_wait(
    consumer: CountingConsumer, loop: asyncio.AbstractEventLoop
) -> None:
    """Consumer._new_consumer_thread, AIOKafkaConsumerThread._create_worker_consumer, and aiokafka's
    AIOKafkaConsumer._fetch_max_wait_ms, which its start() hands to the fetcher."""
    from aiokafka.consumer.fetcher import Fetcher

    thread = consumer._thread
    assert isinstance(thread, faust_internals.HookedConsumerThread), "Consumer._new_consumer_thread: not ours"

    async def build() -> Any:
        return thread._create_worker_consumer(consumer.transport)

    built = loop.run_until_complete(build())
    loop.run_until_complete(built.stop())
    assert built._fetch_max_wait_ms == CountingConsumer.fetch_max_wait_ms == 100
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(type(built).start), (
        "AIOKafkaConsumer.start no longer hands _fetch_max_wait_ms to its fetcher"
    )
    assert "fetch_max_wait_ms" in parameters(Fetcher.__init__)


def test_acked_holds_lists_and_the_acked_index_sets(consumer: CountingConsumer) -> None:
    assert consumer._acked[EVENTS] == [], "Consumer._acked: no longer a list per partition"
    assert consumer._acked_index[EVENTS] == set(), "Consumer._acked_index: no longer a set per partition"
    assert consumer._read_offset[EVENTS] is None, "Consumer._read_offset: no longer None for an unread partition"
    assert consumer._committed_offset[EVENTS] is None, "Consumer._committed_offset: no longer None if uncommitted"


def test_a_counted_batch_is_committed_up_to_its_last_offset_and_no_further_than_confirmed(
    app: CountingApp, consumer: CountingConsumer
) -> None:
    """Consumer._acked, _acked_index, _n_acked, _read_offset and _new_offset, as Faust's commit uses them."""
    consumer.acknowledge_through(EVENTS, 41, records=7)
    assert consumer._read_offset[EVENTS] == 41 and consumer._n_acked == 7
    app.batch_handler = lambda gathered, current: asyncio.sleep(0, {})  # type: ignore[assignment,arg-type,return-value]
    app.commits.confirmed_next[EVENTS.partition] = 40
    assert consumer._new_offset(EVENTS) == 40  # acked through 41, but confirmed only up to 39
    assert consumer._new_offset(EVENTS) is None  # nothing acknowledged since
    assert consumer._acked_index[EVENTS] == set()


def test_a_commit_is_made_after_broker_commit_every_acknowledgements(
    consumer: CountingConsumer, loop: asyncio.AbstractEventLoop
) -> None:
    """Consumer._n_acked and _commit_every."""
    commits: list[None] = []

    async def commit(*args: Any, **kwargs: Any) -> bool:
        commits.append(None)
        return True

    consumer.commit = commit  # type: ignore[method-assign]
    consumer._commit_every = 10
    consumer._n_acked = 9
    loop.run_until_complete(consumer.commit_if_due())
    assert commits == []
    consumer._n_acked = 10
    loop.run_until_complete(consumer.commit_if_due())
    assert commits == [None] and consumer._n_acked == 0


def test_buffered_partitions_and_committed_offsets_read_as_the_worker_reads_them(consumer: CountingConsumer) -> None:
    consumer._buffered_partitions.add(EVENTS)
    consumer._committed_offset[EVENTS] = 17
    assert consumer.is_buffered(EVENTS) and not consumer.is_buffered(TP("events", 4))
    assert consumer.committed_offset(EVENTS) == 17


def test_a_record_becomes_faust_message_and_a_stand_in_event(app_consumer: CountingApp) -> None:
    """Consumer._to_message, on an aiokafka record."""
    record = ConsumerRecord("events", 3, 41, 1_795_611_600_000, 0, b"k", b"v", None, 1, 1, ())
    message = app_consumer.hooked_consumer.message_of(EVENTS, record)
    assert (message.topic, message.partition, message.offset, message.value) == ("events", 3, 41, b"v")
    assert stand_in_for(app_consumer, EVENTS, record).message.offset == 41


def test_current_event_is_the_context_variable_faust_reads() -> None:
    """faust.streams._current_event."""
    assert isinstance(faust.streams._current_event, ContextVar), "faust.streams._current_event is gone"
    app = faust.App("contract-event", broker="memory://")
    event = faust.events.Event(app, None, None, None, None)  # type: ignore[arg-type]
    with current_event(event):
        assert faust.current_event() is event
    assert faust.current_event() is None


RECOVERY_STATE = [
    ("Recovery._recovery_started_at", lambda value: value is None),
    ("Recovery._active_events_received_at", lambda value: isinstance(value, dict)),
    ("Recovery.active_offsets", lambda value: isinstance(value, dict)),
    ("Recovery.active_highwaters", lambda value: isinstance(value, dict)),
    ("Recovery.in_recovery", lambda value: value is False),
]


@pytest.mark.parametrize(("name", "holds"), RECOVERY_STATE, ids=[n for n, _ in RECOVERY_STATE])
def test_each_recovery_attribute_is_there(app: CountingApp, name: str, holds: Callable[[Any], bool]) -> None:
    recovery = app.tables.recovery  # type: ignore[attr-defined]  # TableManager.recovery
    assert isinstance(recovery, Recovery), "TableManager.recovery is gone"
    attribute = name.split(".")[1]
    assert hasattr(recovery, attribute) and holds(getattr(recovery, attribute)), f"{name} is gone or changed"


def test_the_restore_is_read_only_while_one_is_under_way(app: CountingApp) -> None:
    recovery: Any = app.tables.recovery  # type: ignore[attr-defined]
    assert active_restore(app) is None
    recovery.in_recovery = True
    recovery._recovery_started_at = 12.0
    restore = active_restore(app)
    assert restore is not None and restore.started_at == 12.0
    restore.received_at[EVENTS] = 13.0
    assert recovery._active_events_received_at == {EVENTS: 13.0}  # the restart's own time is Faust's


def test_the_monitor_keeps_inbound_times_per_partition(app: CountingApp) -> None:
    """Monitor.stream_inbound_time: the consumer sets it for each partition a batch was counted of."""
    assert isinstance(app.monitor.stream_inbound_time, dict)


CLASS_MECHANICS = {"_abc_impl", "logger"}
"""Set on every class by ABCMeta and mode's Service."""


def test_the_worker_adds_no_name_faust_already_has() -> None:
    """The fence's methods and the app's attributes must not override a Faust name by accident."""
    faust_consumer_names = set(dir(faust_aiokafka.Consumer))
    hooks = {"_drain_messages", "_new_offset", "_new_consumer_thread", *CLASS_MECHANICS}
    added = {n for n in vars(HookedConsumer) | vars(CountingConsumer) if not n.startswith("__")} - hooks
    assert added & faust_consumer_names == set()
    app_hooks = {"_new_transport", "consumer_class", *CLASS_MECHANICS}
    added_to_app = {n for n in vars(HookedApp) | vars(CountingApp) if not n.startswith("__")} - app_hooks
    built = CountingApp("contract-names", counted_topic="events", broker="memory://")
    instance_names = set(vars(built)) - set(vars(faust.App("contract-plain", broker="memory://")))
    assert (added_to_app | instance_names) & set(dir(faust.App)) == set()


def test_the_installed_versions_are_the_proved_ones() -> None:
    check_versions()
    assert importlib.metadata.version("faust-streaming") == PROVED["faust-streaming"]


@pytest.mark.parametrize("library", sorted(PROVED))
def test_a_worker_refuses_to_start_on_another_version(monkeypatch: pytest.MonkeyPatch, library: str) -> None:
    installed = importlib.metadata.version

    def version(name: str) -> str:
        return "0.16.0" if name == library else installed(name)

    monkeypatch.setattr(faust_internals.importlib.metadata, "version", version)
    with pytest.raises(UnprovedVersion) as refused:
        create_app(WorkerSettings())
    assert str(refused.value) == (
        f"{library} 0.16.0 is installed; the worker is proved with {PROVED[library]} only "
        "(aggregator/faust_internals.py)"
    )
