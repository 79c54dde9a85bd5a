"""Every part of faust-streaming below its public API that the worker uses, in one place.

Faust's public API cannot hand a topic's records over in batches, commit no
further than what was counted, or restart a stalled changelog restore. This
module reaches into Faust for those and offers the rest of the worker plain
functions and classes; no other module of the aggregator names a private
Faust attribute. The worker is proved with one version only (``PROVED``):
``check_versions`` refuses another, and ``tests/unit/aggregator/test_faust_internals.py``
holds a contract test per name below, failing with the name when an upgrade
removes or changes it.

Private names, and why each is needed:

``App._new_transport`` (overridden)
    Builds the app's transport: ``HookedApp`` gives Faust a transport whose
    consumer is the worker's (``consumer_class``, set as the transport's
    ``Consumer``).
``Consumer._drain_messages`` (overridden, and called for Faust's own loop)
    Faust's fetch loop, which hands each message to the streams one at a
    time. ``HookedConsumer.drain`` replaces it (aggregator.consume).
``Consumer._new_consumer_thread`` (overridden), ``AIOKafkaConsumerThread._create_worker_consumer``
(overridden, and called for Faust's own consumer), aiokafka's ``AIOKafkaConsumer._fetch_max_wait_ms``
    Faust builds aiokafka's consumer with ``fetch_max_wait_ms=1500`` and no
    setting for it; ``HookedConsumer.fetch_max_wait_ms`` replaces it before
    the consumer starts its fetcher (aggregator.consume says why).
``Consumer._new_offset`` (overridden, and called for Faust's own answer)
    The offset a commit of a partition goes up to.
    ``HookedConsumer.offset_to_commit`` replaces it (aggregator.commit caps it).
``Consumer._wait_next_records``
    One fetch from the consumer thread: the records of the active partitions.
``Consumer._buffered_partitions``
    Partitions Faust wants records of although they are not active (its own
    loop delivers them too).
``Consumer._to_message``
    An aiokafka record as Faust's message: for the per-message path of the
    other topics and for the stand-in event of a partition (aggregator.table).
``Consumer._read_offset``
    Per partition, the last offset handed to the streams: Faust drops what
    comes at or below it, so a counted batch moves it.
``Consumer._add_gap``
    Faust's record of offsets never delivered, on its per-message path.
``Consumer._acked``, ``Consumer._acked_index``
    The acknowledged offsets per partition that a commit is computed from:
    a counted batch is acknowledged as its last offset.
``Consumer._n_acked``, ``Consumer._commit_every``
    Faust commits every ``broker_commit_every`` acknowledged messages.
``Consumer._committed_offset``
    The group's committed offset per partition, as read at the assignment.
``faust.streams._current_event``
    The context variable behind ``faust.current_event()``: Faust's stores and
    the table's changelog pick the partition from it; no public setter exists.
``Recovery._recovery_started_at``, ``Recovery._active_events_received_at``
    When the changelog restore began, and when each active changelog
    partition last delivered a record: how a stalled restore is told.
``Recovery.active_offsets``, ``Recovery.active_highwaters``, ``TableManager.recovery``
    Public names, but neither documented nor typed: how far each active
    changelog partition is restored, and how far it goes.

aiokafka is pinned with Faust: Faust's consumer is built on aiokafka's, and
the records handed over in batches are aiokafka's ``ConsumerRecord``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import weakref
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import faust
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, EventT, Message

PROVED = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}
"""The versions the worker is proved with: the pins of pyproject.toml."""


class UnprovedVersion(RuntimeError):
    """An installed library is not the version the worker is proved with."""


def check_versions() -> None:
    """Refuse to run on a faust-streaming or aiokafka other than ``PROVED``."""
    for library, proved in PROVED.items():
        found = importlib.metadata.version(library)
        if found != proved:
            raise UnprovedVersion(
                f"{library} {found} is installed; the worker is proved with {proved} only "
                "(aggregator/faust_internals.py)"
            )


@contextmanager
def current_event(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` what ``faust.current_event()`` returns, for the block."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class HookedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's thread around aiokafka's consumer, with the consumer's ``fetch_max_wait_ms`` its consumer's."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes 1500 and has no setting for it; aiokafka reads it when it starts its fetcher.
        consumer._fetch_max_wait_ms = cast(HookedConsumer, self.consumer).fetch_max_wait_ms
        return consumer


class HookedConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with its fetch loop and its commit offsets open to a subclass.

    The hooks (``drain``, ``offset_to_commit``) default to Faust's own; the
    other methods are what a replacement fetch loop needs of Faust's state.
    """

    fetch_max_wait_ms: ClassVar[int] = 1500
    """How long the broker may hold a fetch that has nothing to return yet (Faust's value by default)."""

    def _new_consumer_thread(self) -> HookedConsumerThread:
        return HookedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:
        await self.drain(fetcher)

    def _new_offset(self, tp: TP) -> int | None:
        return self.offset_to_commit(tp)

    async def drain(self, fetcher: Any) -> None:
        """Read records until the consumer or ``fetcher`` stops: Faust's own loop, unless overridden."""
        await super()._drain_messages(fetcher)

    def offset_to_commit(self, tp: TP) -> int | None:
        """The offset a commit of ``tp`` goes up to (None: no commit): Faust's own answer, unless overridden."""
        return super()._new_offset(tp)

    async def next_records(self, within_s: float) -> tuple[Mapping[TP, Sequence[Any]] | None, set[TP] | None]:
        """One fetch: records per partition (aiokafka's), and the partitions that were active (None: all)."""
        return cast("tuple[Mapping[TP, Sequence[Any]] | None, set[TP] | None]", await self._wait_next_records(within_s))

    def is_buffered(self, tp: TP) -> bool:
        """Whether Faust wants ``tp``'s records although it is not active."""
        return tp in self._buffered_partitions

    async def commit_if_due(self) -> None:
        """Commit if ``broker_commit_every`` messages were acknowledged since the last commit."""
        if self._commit_every and self._n_acked >= self._commit_every:
            self._n_acked = 0
            await self.commit()

    def acknowledge_through(self, tp: TP, offset: int, records: int) -> None:
        """Acknowledge ``tp`` up to ``offset`` (``records`` records): as if the streams had acked the last."""
        self._acked[tp].append(offset)
        self._n_acked += records
        self._read_offset[tp] = offset

    def take_acknowledged(self, tp: TP) -> int | None:
        """The highest offset acknowledged in ``tp`` since the last call (None if none), forgetting them."""
        acked = self._acked[tp]
        if not acked:
            return None
        highest = max(acked)
        acked.clear()
        self._acked_index[tp].clear()
        return highest

    def message_of(self, tp: TP, record: Any) -> Message:
        """Faust's message for an aiokafka record of ``tp``."""
        return cast(Message, self._to_message(tp, record))

    async def deliver(self, tp: TP, record: Any) -> None:
        """Faust's per-message path for one record: to the streams, unless at or below the read offset."""
        message = self.message_of(tp, record)
        offset = message.offset
        r_offset = self._read_offset[tp]
        if r_offset is None or offset >= r_offset:
            if r_offset and offset - r_offset > 1 and self.app.topics.acks_enabled_for(message.topic):
                await self._add_gap(tp, r_offset + 1, offset)
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            self._read_offset[tp] = offset

    def committed_offset(self, tp: TP) -> int | None:
        """The group's committed offset of ``tp``, as read at the assignment (None if none)."""
        return self._committed_offset.get(tp)


class HookedApp(faust.App):
    """A Faust app whose Kafka transport uses ``consumer_class`` as its consumer."""

    consumer_class: ClassVar[type[HookedConsumer]] = HookedConsumer

    @property
    def hooked_consumer(self) -> HookedConsumer:
        """``consumer``, as the class it is."""
        return cast(HookedConsumer, self.consumer)

    def _new_transport(self) -> faust_aiokafka.Transport:
        return _transport_for(self.consumer_class)(self.conf.broker_consumer, self)


@functools.cache
def _transport_for(consumer_class: type[HookedConsumer]) -> type[faust_aiokafka.Transport]:
    """Faust's aiokafka transport, with ``consumer_class`` as its consumer."""
    return type(f"{consumer_class.__name__}Transport", (faust_aiokafka.Transport,), {"Consumer": consumer_class})


@dataclass(frozen=True)
class Restore:
    """Where the restore of the table's active changelog partitions stands (Faust's ``Recovery``)."""

    offsets: Mapping[TP, int | None]
    """Per active changelog partition, the last offset restored."""
    highwaters: Mapping[TP, int | None]
    """Per active changelog partition, the offset it must reach (None until known)."""
    started_at: float | None
    """When the restore began (monotonic)."""
    received_at: MutableMapping[TP, float]
    """Per active changelog partition, when it last delivered a record (monotonic); writable."""


def active_restore(app: faust.App) -> Restore | None:
    """The restore under way on ``app``'s tables, or None if none is."""
    recovery: Any = cast(Any, app.tables).recovery
    if not recovery.in_recovery:
        return None
    return Restore(
        recovery.active_offsets,
        recovery.active_highwaters,
        recovery._recovery_started_at,
        recovery._active_events_received_at,
    )
