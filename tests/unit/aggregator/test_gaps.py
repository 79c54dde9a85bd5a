"""A batch that does not continue from what the table counted is replaced by the range read from Kafka."""

from __future__ import annotations

import asyncio

from aggregator.count import Tally
from aggregator.decode import Message
from aggregator.gaps import complete, continues
from aggregator.table import FaustCountTable


def test_offsets_continue_when_they_start_right_after_through_and_leave_no_hole() -> None:
    assert continues(9, [10, 11, 12])
    assert continues(9, [])
    assert continues(9, [5, 6, 10, 11])  # repeats after a seek back, then on


def test_a_hole_at_the_start_or_inside_does_not_continue() -> None:
    assert not continues(9, [11, 12])  # offset 10 skipped: the start of a new generation
    assert not continues(9, [10, 12])  # offset 11 skipped inside
    assert not continues(-1, [3])  # a partition never counted, first events skipped


class FakeKafka:
    """The partition's log, read the way GapReader reads it."""

    def __init__(self, log: list[Message]) -> None:
        self.log = log
        self.reads: list[tuple[int, int, int]] = []

    async def read(self, partition: int, start: int, end: int) -> list[Message]:
        self.reads.append((partition, start, end))
        return [m for m in self.log if start <= m.offset < end]


def messages(offsets: range | list[int]) -> list[Message]:
    return [Message(2, o, b"e%d" % o) for o in offsets]


def test_a_batch_that_continues_is_counted_as_delivered_without_reading_kafka() -> None:
    kafka = FakeKafka(messages(range(20)))
    batch = messages(range(10, 15))
    counted, missed = asyncio.run(complete(kafka, 2, 9, batch))  # type: ignore[arg-type]
    assert (counted, missed) == (batch, 0)
    assert kafka.reads == []


def test_events_faust_skipped_are_read_again_and_counted_in_order() -> None:
    kafka = FakeKafka(messages(range(60)))
    delivered = messages(range(53, 60))  # 10..52 skipped and acknowledged by Faust's stream
    counted, missed = asyncio.run(complete(kafka, 2, 9, delivered))  # type: ignore[arg-type]
    assert [m.offset for m in counted] == list(range(10, 60))
    assert missed == 43
    assert kafka.reads == [(2, 10, 60)]


def test_the_tables_position_is_not_one_of_its_counters() -> None:
    table = FaustCountTable({})  # type: ignore[arg-type]  # a dict has the Faust table's mapping interface
    table.set("d2026-11-25:signup::", Tally(3, 41, 0))
    table.set_through(0, 41)
    assert table.through(0) == 41
    assert table.through(1) is None
    assert table.items() == [("d2026-11-25:signup::", Tally(3, 41, 0))]
