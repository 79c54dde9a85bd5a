"""kafka-python's private names that ingest relies on (ingest.kafka_internals.HOOKED): one contract each.

An upgrade that removes or changes one fails its test, named for it. And
ingest refuses a kafka-python other than the one proved.
"""

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.cluster import ClusterMetadata
from kafka.errors import KafkaError, NotEnoughReplicasError
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.producer.producer_batch import ProducerBatch
from kafka.producer.record_accumulator import RecordAccumulator
from kafka.producer.transaction_manager import TransactionManager, TransactionState
from kafka.record.memory_records import MemoryRecordsBuilder
from kafka.structs import TopicPartition
from starlette.testclient import TestClient

from ingest import kafka_internals
from ingest.app import create_app
from ingest.kafka_internals import (
    HOOKED,
    PROVED_VERSION,
    Accumulator,
    UnprovedVersion,
    batch_error,
    check_version,
    known_partitions,
    recover_after_reset,
)
from ingest.publish import KafkaPublisher, PublishSettings
from tests.support.fakes import DEFAULTS

TP = TopicPartition("t", 0)

Check = Callable[[KafkaProducer], None]
CONTRACTS: dict[str, Check] = {}


def contract(name: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        CONTRACTS[name] = check
        return check

    return register


@pytest.fixture
def producer() -> Iterator[KafkaProducer]:
    """ingest's producer's configuration, without a broker (the API version given, nothing is sent)."""
    made = KafkaProducer(
        bootstrap_servers=["127.0.0.1:1"], acks="all", enable_idempotence=True, linger_ms=2, api_version=(3, 9)
    )
    try:
        yield made
    finally:
        made._accumulator.abort_incomplete_batches()
        made.close(timeout=0)


def batch_with_a_record(producer: KafkaProducer) -> tuple[Any, Any]:
    future = producer._accumulator.append(TP, 1_764_000_000_000, b"k", b"v", [])[0]
    return producer._accumulator._batches[TP][-1], future


@contract("KafkaProducer._accumulator")
def _accumulator(producer: KafkaProducer) -> None:
    assert isinstance(producer._accumulator, RecordAccumulator)


@contract("KafkaProducer._sender")
def _sender(producer: KafkaProducer) -> None:
    producer._sender.wakeup()


@contract("KafkaProducer._metadata")
def _metadata(producer: KafkaProducer) -> None:
    assert isinstance(producer._metadata, ClusterMetadata)
    assert producer._metadata is producer._sender._metadata, "the cluster the sender sends by"


@contract("ClusterMetadata._partitions")
def _partitions(producer: KafkaProducer) -> None:
    metadata = producer._metadata
    assert isinstance(metadata._partitions, dict)
    assert known_partitions(metadata, "t") is None
    metadata._partitions["t"] = dict.fromkeys(range(6))
    assert metadata.partitions_for_topic("t") == set(known_partitions(metadata, "t") or ()) == set(range(6))


@contract("KafkaProducer._transaction_manager")
def _transaction_manager(producer: KafkaProducer) -> None:
    manager = producer._transaction_manager
    assert isinstance(manager, TransactionManager) and not manager.is_transactional()


@contract("TransactionManager.reset_producer_id")
def _reset_producer_id(producer: KafkaProducer) -> None:
    manager = producer._transaction_manager
    assert recover_after_reset(producer)
    assert producer._sender._transaction_manager is manager, "the sender resets through the same manager"
    manager.reset_producer_id()
    assert not manager.has_producer_id()


@contract("TransactionManager._lock")
def _lock(producer: KafkaProducer) -> None:
    lock = producer._transaction_manager._lock
    acquired = []
    # Held around reset_producer_id, which takes it again: it must be reentrant.
    worker = threading.Thread(target=lambda: acquired.extend([lock.acquire(timeout=1), lock.acquire(timeout=1)]))
    worker.start()
    worker.join(5)
    assert acquired == [True, True]


@contract("TransactionManager._current_state")
def _current_state(producer: KafkaProducer) -> None:
    manager = producer._transaction_manager
    assert isinstance(manager._current_state, TransactionState)
    recover_after_reset(producer)
    manager._current_state = TransactionState.READY  # as after its first InitProducerId
    manager.reset_producer_id()
    assert manager._current_state is TransactionState.UNINITIALIZED
    manager.init_producer_id()  # what the sender's run loop calls: a new id is asked for
    assert manager._current_state is TransactionState.INITIALIZING


@contract("RecordAccumulator._tp_lock")
def _tp_lock(producer: KafkaProducer) -> None:
    lock = producer._accumulator._tp_lock(TP)
    assert lock is producer._accumulator._tp_lock(TopicPartition("t", 0)), "one lock per partition"
    assert lock.acquire(timeout=1)
    lock.release()


@contract("RecordAccumulator._batches")
def _batches(producer: KafkaProducer) -> None:
    accumulator = Accumulator(producer)
    assert accumulator.open_batch(TP) is None and len(producer._accumulator._batches[TP]) == 0
    batch, _ = batch_with_a_record(producer)
    assert isinstance(batch, ProducerBatch)
    with accumulator.lock(TP):
        assert accumulator.open_batch(TP) is batch


@contract("RecordAccumulator._appends_in_progress")
def _appends_in_progress(producer: KafkaProducer) -> None:
    accumulator = Accumulator(producer)
    counted = producer._accumulator._appends_in_progress
    before = counted.get()
    accumulator.begin_appends()
    assert counted.get() == before + 1
    accumulator.end_appends()
    assert counted.get() == before


@contract("RecordAccumulator._closed")
def _closed(producer: KafkaProducer) -> None:
    accumulator = Accumulator(producer)
    assert producer._accumulator._closed is False
    producer._accumulator.close()
    assert producer._accumulator._closed is True
    with pytest.raises(KafkaError):
        accumulator.open_batch(TP)


@contract("RecordAccumulator.append")
def _append(producer: KafkaProducer) -> None:
    future, batch_future = Accumulator(producer).start_batch(TP, 1_764_000_000_000, b"k", b"v")
    assert isinstance(future, FutureRecordMetadata)
    assert batch_future is producer._accumulator._batches[TP][-1].produce_future


@contract("ProducerBatch.records")
def _records(producer: KafkaProducer) -> None:
    batch, _ = batch_with_a_record(producer)
    assert isinstance(batch.records, MemoryRecordsBuilder)
    appended = batch.records.append(1_764_000_000_001, b"k", b"v", ())
    assert appended is not None and appended.size > 0
    batch.records.close()
    assert batch.records.append(1_764_000_000_002, b"k", b"v", ()) is None, "None once it takes no more"


def twins(producer: KafkaProducer) -> tuple[Any, Any, list[tuple[int, bytes, bytes]]]:
    """Two batches, one filled by try_append record by record, the other by Accumulator.fill."""
    records = [(1_764_000_000_000 + n, b"key%d" % (n % 7), b"v" * (20 + n % 30)) for n in range(50)]
    theirs, ours = (ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 16384), now=0.0) for _ in range(2))
    for ts_ms, key, value in records:
        assert theirs.try_append(ts_ms, key, value, [], now=5.0) is not None
    assert Accumulator.fill(ours, records, 0, 5.0) == len(records)
    return theirs, ours, records


@contract("ProducerBatch.max_record_size")
def _max_record_size(producer: KafkaProducer) -> None:
    assert "max_record_size" in vars(ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 16384))), "a field of theirs"
    theirs, ours, _ = twins(producer)
    assert ours.max_record_size == theirs.max_record_size > 0
    assert ours.record_count == theirs.record_count


@contract("ProducerBatch.last_append")
def _last_append(producer: KafkaProducer) -> None:
    assert "last_append" in vars(ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 16384))), "a field of theirs"
    theirs, ours, _ = twins(producer)
    assert ours.last_append == theirs.last_append == 5.0


@contract("ProducerBatch.produce_future")
def _produce_future(producer: KafkaProducer) -> None:
    batch = ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 16384))
    record_future = batch.try_append(1_764_000_000_000, b"k", b"v", [])
    assert isinstance(Accumulator.batch_future(batch), FutureProduceResult)
    settled: list[object] = []
    batch.produce_future.add_both(settled.append)
    batch.complete(17, -1)
    assert record_future.is_done and record_future.value.offset == 17, "a record's future follows its batch's"
    assert len(settled) == 1 and batch_error(settled[0]) is None


@contract("FutureRecordMetadata._produce_future")
def _record_produce_future(producer: KafkaProducer) -> None:
    batch, record_future = batch_with_a_record(producer)
    assert record_future._produce_future is batch.produce_future


@contract("FutureProduceResult value")
def _produce_result(producer: KafkaProducer) -> None:
    refused = NotEnoughReplicasError("2 of 3")
    ok, failed, aborted = (ProducerBatch(TP, MemoryRecordsBuilder(2, 0, 16384)) for _ in range(3))
    results: list[list[object]] = [[], [], []]
    for batch, settled in zip((ok, failed, aborted), results, strict=True):
        batch.produce_future.add_both(settled.append)
    ok.complete(3, -1)
    failed.complete_exceptionally(refused, lambda _index: refused)
    aborted.abort(refused)
    assert [batch_error(settled[0]) for settled in results] == [None, refused, refused]


@pytest.mark.parametrize("name", list(HOOKED))
def test_each_hooked_name_still_does_what_ingest_relies_on(name: str, producer: KafkaProducer) -> None:
    check = CONTRACTS.get(name)
    assert check is not None, f"{name}: hooked, but no contract test"
    try:
        check(producer)
    except Exception as exc:
        pytest.fail(f"kafka-python's {name} changed ({HOOKED[name]}): {exc!r}")


def test_every_contract_is_of_a_hooked_name() -> None:
    assert set(CONTRACTS) == set(HOOKED)


def test_the_installed_kafka_python_is_the_proved_one() -> None:
    check_version()
    assert kafka_internals.installed_version() == PROVED_VERSION


def test_ingest_refuses_to_start_on_another_kafka_python(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_internals, "installed_version", lambda: "3.1.0")
    with pytest.raises(UnprovedVersion) as refused:
        check_version()
    message = str(refused.value)
    assert "kafka-python 3.1.0 is installed" in message and f"kafka-python {PROVED_VERSION} only" in message
    with pytest.raises(UnprovedVersion):
        KafkaPublisher("127.0.0.1:1", "t", PublishSettings())
    with pytest.raises(UnprovedVersion), TestClient(create_app(DEFAULTS)):  # the real publisher, at startup
        pass
