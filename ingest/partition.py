"""Which partition a counter's events go to: kafka-python's default choice for their key.

Every event of a counter must land in one partition, where one worker
counts it (docs/exactness.md), whichever way it is sent: through
``send()`` (kafka-python calls :meth:`RememberingPartitioner.partition`) or
straight into a batch (:mod:`ingest.batches` calls :meth:`~RememberingPartitioner.choose`).
Both are the choice of :class:`kafka.partitioner.DefaultPartitioner` for a
keyed record: murmur2 of the key, modulo the partition count, over the
sorted partitions.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

from kafka.partitioner import DefaultPartitioner, Partitioner, murmur2

MAX_REMEMBERED_KEYS: Final = 100_000
"""Keys whose hash is remembered (then forgotten all at once)."""


class RememberingPartitioner(Partitioner):  # type: ignore[misc]  # kafka-python is untyped
    """kafka-python's default partition for a key, with each key's hash remembered.

    kafka-python's murmur2 is pure Python, and keys repeat (one per
    counter), so their hashes are kept, up to :data:`MAX_REMEMBERED_KEYS`.
    """

    def __init__(self) -> None:
        self._hashes: dict[bytes, int] = {}
        self._default = DefaultPartitioner()

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
