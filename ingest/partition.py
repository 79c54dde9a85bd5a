"""Which partition a counter's events go to: kafka-python's default choice for the counter as a key.

Every event of a counter must land in one partition, where one worker
counts it (docs/exactness.md), whichever way it is sent and in whichever
record version. A request's events are grouped by their counters'
partitions, one v2 record per partition, sent with that partition given
explicitly: straight into a batch (:mod:`ingest.batches`, which remembers
each counter's :meth:`~RememberingPartitioner.choose`) or through ``send()``
(:meth:`RememberingPartitioner.group`). The choice is
:class:`kafka.partitioner.DefaultPartitioner`'s for a record keyed by the
counter (``label:category:dom_id``): murmur2 of the key, modulo the
partition count, over the sorted partitions. So v1 records (keyed by their
counter, placed by kafka-python) and v2 records of one counter share a
partition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Final

from kafka.partitioner import DefaultPartitioner, Partitioner, murmur2

from schema.event import LabelEvent, encode_key

MAX_REMEMBERED_KEYS: Final = 100_000
"""Keys whose hash is remembered (then forgotten all at once)."""
MAX_REMEMBERED_COUNTERS: Final = 100_000
"""Counters whose partition is remembered (then forgotten all at once)."""


class RememberingPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's default partition for a key, with each key's hash remembered.

    kafka-python's murmur2 is pure Python, and keys repeat (one per
    counter), so their hashes are kept, up to :data:`MAX_REMEMBERED_KEYS`.
    """

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()
        self._counters: dict[tuple[str, str, str], int] = {}
        """(label, category, dom_id) -> partition, for ``_counted_over`` partitions."""
        self._counted_over = 0

    def group(self, events: Iterable[LabelEvent], partitions: Collection[int]) -> dict[int, list[LabelEvent]]:
        """``events`` by the partition of their counter among ``partitions``, each group in the order given.

        Each group is what one v2 record holds (:func:`schema.event.encode_record`).
        """
        if len(partitions) != self._counted_over:
            self._counters.clear()
            self._counted_over = len(partitions)
        counters = self._counters
        grouped: dict[int, list[LabelEvent]] = {}
        for event in events:
            partition = counters.get(event[:3])  # (label, category, dom_id)
            if partition is None:
                partition = self._counter_partition(event, partitions)
            same = grouped.get(partition)
            if same is None:
                grouped[partition] = [event]
            else:
                same.append(event)
        return grouped

    def _counter_partition(self, event: LabelEvent, partitions: Collection[int]) -> int:
        if len(self._counters) >= MAX_REMEMBERED_COUNTERS:
            self._counters.clear()
        partition = self._counters[(event.label, event.category, event.dom_id)] = self.choose(
            encode_key(event), partitions
        )
        return partition

    def choose(self, key: bytes, partitions: Collection[int]) -> int:
        """The partition of ``key`` among ``partitions`` (the topic's, none missing)."""
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= MAX_REMEMBERED_KEYS:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        ordered = sorted(partitions)
        return int(ordered[hashed % len(ordered)])

    def partition(
        self, topic: str, key: Any, serialized_key: bytes | None, value: Any, serialized_value: Any, cluster: Any
    ) -> int:
        """kafka-python's hook, called by ``send()``."""
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or not partitions:
            return int(self._default.partition(topic, key, serialized_key, value, serialized_value, cluster))
        return self.choose(serialized_key, partitions)
