"""Keep kafka-python's idempotent producer able to recover after a broker restart.

When batches that were already sent expire (the broker went away while they
were in flight), the idempotent producer must forget its producer id and ask
the broker for a new one, since it cannot know which sequence numbers the
broker kept. kafka-python 3.0.x does the first half: ``reset_producer_id()``
drops the id. But its sender asks for a new id only from the UNINITIALIZED
state (``init_producer_id``), and the reset leaves the state at READY, so the
producer never sends again: every later record waits until it expires and
ingest answers 503 forever, although the broker is back (found by
``make soak``; ``tests/integration/test_publish_outage.py``). Apache Kafka's
Java client moves to UNINITIALIZED in the same place (KAFKA-7737,
``TransactionManager.resetIdempotentProducerId``); :func:`recover_after_reset`
makes kafka-python do the same.
"""

from __future__ import annotations

import logging
from typing import Any

from kafka import KafkaProducer
from kafka import __version__ as kafka_python_version
from kafka.producer.transaction_manager import TransactionState

log = logging.getLogger(__name__)

FIXED_SERIES = ("3.0.",)
"""The kafka-python releases this repairs; a new series must be checked again (the test above does)."""


def recover_after_reset(producer: KafkaProducer) -> bool:
    """Make the idempotent ``producer`` ask for a new producer id after it dropped its own.

    Returns whether it applied (an idempotent, non-transactional producer of a
    kafka-python series known to need it).
    """
    manager: Any = getattr(producer, "_transaction_manager", None)
    if (
        manager is None
        or manager.is_transactional()
        or not kafka_python_version.startswith(FIXED_SERIES)
        or not hasattr(manager, "init_producer_id")
    ):
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
