"""Every offset of a partition reaches counting: holes in what Faust delivered are read again from Kafka.

Faust's stream skips -- and acknowledges -- an event that arrives while a
rebalance has stopped the flow, or that was fetched in an older generation;
such an event also moves Faust's read position past the same event fetched
again after the seek, so Faust drops that too: events at the start of a
partition's new generation would be lost.

So the worker does not trust the sequence Faust hands it. The table keeps,
per events partition, the last offset counted (``through``; written after
the batch's counters, in the same changelog partition, so a restored table
never claims more than its counters hold). A batch that does not continue
from there -- the first event after ``through`` is not ``through + 1``, or a
batch has a hole inside -- is replaced by the whole range read straight from
Kafka (``GapReader``). Events counted already are skipped by their counters'
own offsets (``aggregator.count``), so reading a range again is always safe.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from aggregator.decode import Fetched, Message

log = logging.getLogger(__name__)

READ_TIMEOUT_MS = 1000
SLOW_READ_LOG_S = 10.0


def continues(through: int, offsets: Iterable[int]) -> bool:
    """Whether ``offsets`` (in order) leave no hole after ``through``.

    Offsets at or below ``through`` are repeats (a seek back during a
    rebalance): harmless, their counters skip them.
    """
    expected = through + 1
    for offset in offsets:
        if offset > expected:
            return False
        expected = max(expected, offset + 1)
    return True


class GapReader:
    """Reads a range of an events partition straight from Kafka, outside the consumer group.

    Its own consumer (no group membership, no commits), started at the first
    hole: a worker that sees no rebalance may never need one.
    """

    def __init__(self, bootstrap: str, topic: str, client_id: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_id = client_id
        self._consumer: Any = None

    async def _started(self) -> Any:
        if self._consumer is None:
            from aiokafka import AIOKafkaConsumer

            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap.split(","),
                # No group: it assigns itself one partition at a time and never
                # commits. With the group's id, aiokafka's coordinator for
                # manual assignment fails an assertion when the partition
                # changes, and takes the worker with it.
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id=self.client_id,
            )
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def start_of(self, partition: int, committed: int | None) -> int:
        """Where counting of ``partition`` starts when the table knows nothing of it.

        The group's ``committed`` offset if it has one, else the first offset
        Kafka still holds (a new deployment).
        """
        if committed is not None:
            return committed
        from aiokafka.structs import TopicPartition

        consumer = await self._started()
        tp = TopicPartition(self.topic, partition)
        beginning = await consumer.beginning_offsets([tp])
        return int(beginning[tp])

    async def read(self, partition: int, start: int, end: int) -> list[Message]:
        """The messages of ``partition`` at offsets ``start`` up to (not including) ``end``.

        Waits as long as Kafka is away, saying so. Offsets Kafka no longer
        holds (retention deleted them) are reported and skipped.
        """
        from aiokafka.structs import TopicPartition

        consumer = await self._started()
        tp = TopicPartition(self.topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        messages: list[Message] = []
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        position = start
        while position < end:
            polled = await consumer.getmany(tp, timeout_ms=READ_TIMEOUT_MS)
            messages.extend(
                Message(partition, record.offset, record.value or b"", record.timestamp)
                for record in polled.get(tp, ())
                if record.offset < end
            )
            now_at = await consumer.position(tp)
            if now_at > position:
                position, last_progress = now_at, loop.time()
            elif loop.time() - last_progress > SLOW_READ_LOG_S:
                log.warning(
                    "reading offsets %d..%d of partition %d: no progress for %.0f s",
                    start,
                    end - 1,
                    partition,
                    loop.time() - last_progress,
                )
                last_progress = loop.time()
        if not messages or messages[0].offset > start:
            log.warning(
                "partition %d holds no event at offsets %d..%d (deleted by retention?)",
                partition,
                start,
                (messages[0].offset if messages else end) - 1,
            )
        return messages

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def complete(
    reader: GapReader, partition: int, through: int, messages: Sequence[Fetched]
) -> tuple[Sequence[Fetched], int]:
    """``messages`` as delivered when they continue from ``through``, else the whole range from Kafka.

    Returns the messages to count and how many of them Faust had not delivered.
    """
    first, last = messages[0].offset, messages[-1].offset
    if first <= through + 1 and last - first + 1 == len(messages):  # consecutive offsets: the usual batch
        return messages, 0
    offsets = [m.offset for m in messages]
    if continues(through, offsets):
        return messages, 0
    end = max(offsets) + 1
    read = await reader.read(partition, through + 1, end)
    delivered = {offset for offset in offsets if offset > through}
    missed = sum(1 for m in read if m.offset not in delivered)
    log.warning(
        "partition %d: Faust delivered offsets from %d, the table counted through %d; read %d..%d again from "
        "Kafka (%d events it had skipped)",
        partition,
        min(offsets),
        through,
        through + 1,
        end - 1,
        missed,
    )
    return read, missed
