"""Every private name of kafka-python that ingest uses, for the one version they are proved with.

kafka-python's public API cannot do two things ingest needs: append a
request's records to the open batches without ``send()``'s per-record costs
(:mod:`ingest.batches`), and recover the idempotent producer after a broker
restart (:func:`recover_after_reset`). Both reach into the producer, so they
hold only for :data:`PROVED_VERSION` (pinned in ``pyproject.toml``);
:func:`check_version` refuses any other, and ``tests/unit/ingest/test_kafka_internals.py``
checks each name of :data:`HOOKED`. The rest of ingest uses kafka-python's
internals only through this module.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final

import kafka
from kafka import KafkaProducer
from kafka.errors import KafkaError
from kafka.producer.transaction_manager import TransactionState
from kafka.structs import TopicPartition

PROVED_VERSION: Final = "3.0.12"
"""The kafka-python release whose internals below are proved (the contract tests)."""

HOOKED: Final[Mapping[str, str]] = {
    "KafkaProducer._accumulator": "its RecordAccumulator, whose open batches ingest appends to",
    "KafkaProducer._sender": "its I/O thread, woken when a batch is started, as send() does",
    "KafkaProducer._metadata": "its ClusterMetadata: the topic's partitions, looked up on every publish",
    "ClusterMetadata._partitions": "topic -> partitions, read without the set partitions_for_topic() builds per call",
    "KafkaProducer._transaction_manager": "the idempotent producer's state, repaired by recover_after_reset",
    "TransactionManager.reset_producer_id": "wrapped, to move to UNINITIALIZED after it (recover_after_reset)",
    "TransactionManager._lock": "held while the state is set, as kafka-python's own transitions hold it",
    "TransactionManager._current_state": "set to UNINITIALIZED, the state from which the sender asks for a new id",
    "RecordAccumulator._tp_lock": "a partition's lock, held while appending to its open batch, as append() holds it",
    "RecordAccumulator._batches": "each partition's deque of batches; the last one is being filled",
    "RecordAccumulator._appends_in_progress": "counted while appending: close() waits for the appends in progress",
    "RecordAccumulator._closed": "no append once the producer is closed, as append() checks",
    "RecordAccumulator.append": "starts a new batch with kafka-python's own code; returns the record's future first",
    "ProducerBatch.records": "its MemoryRecordsBuilder, whose append() writes each record (the format stays theirs)",
    "ProducerBatch.max_record_size": "kept as ProducerBatch.try_append keeps it (the sender's record-size-max)",
    "ProducerBatch.last_append": "kept as ProducerBatch.try_append keeps it",
    "ProducerBatch.produce_future": "the batch's future: one callback settles every request waiting on the batch",
    "FutureRecordMetadata._produce_future": "the batch behind a record's future: whether a new batch is still open",
    "FutureProduceResult value": "(base offset, log append time, the records' errors): how a batch failed",
}
"""Each private name ingest relies on, and why."""

log = logging.getLogger(__name__)

Record = tuple[int, bytes | None, bytes]
"""A record to write: its timestamp (ms), key (None: no key), value."""

NO_HEADERS: Final = ()
"""A record's headers: none (a tuple, so that kafka-python makes no empty list per record)."""


class UnprovedVersion(RuntimeError):
    """A library whose internals ingest uses (kafka-python, uvicorn, httptools) is not the release it is proved with."""


def installed_version() -> str:
    return str(kafka.__version__)


def check_version() -> None:
    """Refuse to run on a kafka-python other than :data:`PROVED_VERSION`."""
    found = installed_version()
    if found != PROVED_VERSION:
        raise UnprovedVersion(
            f"kafka-python {found} is installed, but ingest is proved with kafka-python {PROVED_VERSION} only:"
            " it uses the library's private names (ingest/kafka_internals.py); install kafka-python=="
            f"{PROVED_VERSION}"
        )


class Accumulator:
    """One producer's record accumulator, as :class:`ingest.batches.BatchAppender` appends to it.

    Mirrors what ``RecordAccumulator.append`` and ``ProducerBatch.try_append``
    do, without a future per record: hold the partition's lock, check the
    producer is open, write into the last batch until it is full.
    """

    __slots__ = ("_accumulator", "_metadata", "_sender")

    def __init__(self, producer: KafkaProducer) -> None:
        self._accumulator = producer._accumulator
        self._sender = producer._sender
        self._metadata = producer._metadata

    def partitions(self, topic: str) -> Collection[int] | None:
        """The topic's partitions, if the producer knows them (without copying them)."""
        return known_partitions(self._metadata, topic)

    def begin_appends(self) -> None:
        """Before appending: close() waits until :meth:`end_appends`."""
        self._accumulator._appends_in_progress.increment()

    def end_appends(self) -> None:
        self._accumulator._appends_in_progress.decrement()

    def lock(self, tp: TopicPartition) -> Any:
        """The partition's lock: hold it around :meth:`open_batch`, :meth:`fill` and :meth:`last_batch`."""
        return self._accumulator._tp_lock(tp)

    def open_batch(self, tp: TopicPartition) -> Any | None:
        """Under the lock: the batch being filled, if any; KafkaError once the producer is closed."""
        accumulator = self._accumulator
        if accumulator._closed:
            raise KafkaError("the producer is closed")
        batches = accumulator._batches[tp]
        return batches[-1] if batches else None

    def last_batch_future(self, tp: TopicPartition) -> Any | None:
        """Under the lock: the future of the partition's last batch, if any."""
        batches = self._accumulator._batches[tp]
        return batches[-1].produce_future if batches else None

    @staticmethod
    def fill(batch: Any, records: Sequence[Record], start: int, now: float) -> int:
        """Under the lock: ``records[start:]`` into ``batch`` until it is full; the index after the last written."""
        written, biggest = write_records(batch.records, records, start)
        if written > start:
            batch.max_record_size = max(batch.max_record_size, biggest)
            batch.last_append = now
        return written

    @staticmethod
    def batch_future(batch: Any) -> Any:
        """The batch's own future: acked (or failed) once for all its records."""
        return batch.produce_future

    def start_batch(self, tp: TopicPartition, ts_ms: int, key: bytes | None, value: bytes) -> tuple[Any, Any]:
        """A new batch with its first record, by kafka-python's own append: (the record's future, its batch's)."""
        future = self._accumulator.append(tp, ts_ms, key, value, [])[0]
        self._sender.wakeup()
        return future, future._produce_future


def known_partitions(metadata: Any, topic: str) -> Collection[int] | None:
    """The partitions ``metadata`` (a producer's ClusterMetadata) knows for ``topic``, or None."""
    known: Collection[int] | None = metadata._partitions.get(topic)
    return known


def write_records(memory_records: Any, records: Sequence[Record], start: int) -> tuple[int, int]:
    """Append ``records[start:]`` to an open batch until it is full; (index after the last written, largest size).

    Each record is written by kafka-python's own ``MemoryRecordsBuilder.append``
    (the record format is the library's to write, not ours); what this saves
    over ``send()`` is everything around it.
    """
    append = memory_records.append
    biggest = 0
    for index in range(start, len(records)):
        ts_ms, key, value = records[index]
        appended = append(ts_ms, key, value, NO_HEADERS)
        if appended is None:  # full (or closed): the caller starts a new batch
            return index, biggest
        if appended.size > biggest:
            biggest = appended.size
    return len(records), biggest


def batch_error(result: object) -> BaseException | None:
    """What a batch's future settled with (its errback's error, or its value): None when Kafka took every record."""
    if isinstance(result, BaseException):
        return result
    if isinstance(result, tuple) and result[2] is not None:  # (base offset, log append time, the records' errors)
        failed = result[2](0)
        return failed if isinstance(failed, BaseException) else KafkaError("the batch failed")
    return None


def recover_after_reset(producer: KafkaProducer) -> bool:
    """Make the idempotent ``producer`` ask for a new producer id after it dropped its own.

    When batches already sent expire (the broker went away while they were
    in flight), the idempotent producer must forget its producer id and ask
    the broker for a new one, since it cannot know which sequence numbers the
    broker kept. kafka-python's ``reset_producer_id()`` drops the id, but its
    sender asks for a new one only from the UNINITIALIZED state
    (``init_producer_id``), and the reset leaves the state at READY: the
    producer would never send again, and ingest would answer 503 although the
    broker is back (``tests/integration/ingest/test_publish_outage.py``). Apache
    Kafka's Java client moves to UNINITIALIZED in the same place (KAFKA-7737,
    ``TransactionManager.resetIdempotentProducerId``); this makes
    kafka-python do the same.

    Returns whether it applied (an idempotent, non-transactional producer).
    """
    manager: Any = producer._transaction_manager
    if manager is None or manager.is_transactional():
        return False
    reset = manager.reset_producer_id

    def reset_then_reinitialize() -> None:
        with manager._lock:
            reset()
            # Not a transition kafka-python's state machine allows, which is the bug;
            # from here the sender's run loop enqueues an InitProducerIdRequest.
            manager._current_state = TransactionState.UNINITIALIZED
        log.warning("Kafka producer dropped its producer id (records expired after being sent); asking for a new one")

    manager.reset_producer_id = reset_then_reinitialize
    return True
