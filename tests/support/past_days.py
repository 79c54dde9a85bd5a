"""Events of past days published straight to Kafka, the truth about them, and the damage an operator
finds in ClickHouse: what ``tally replay`` and ``tally reset`` must repair."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from ingest.publish import KafkaPublisher, PublishSettings
from schema.event import LabelEvent
from schema.settings import clickhouse_client
from tests.support.servers import Services, eventually

TODAY = datetime.now(UTC).date()
DAYS = [TODAY - timedelta(days=n) for n in (5, 4, 3)]
Truth = Counter[tuple[date, str, str, str]]


def publish_past_days(services: Services) -> Truth:
    truth: Truth = Counter()
    events = []
    for i, day in enumerate(DAYS):
        for n in range(30 + 10 * i):
            ts = int(datetime(day.year, day.month, day.day, n % 24, n % 60, tzinfo=UTC).timestamp() * 1000)
            event = LabelEvent(f"past{n % 4}", "c", f"d{n % 3}", ts)
            events.append(event)
            truth[(day, event.label, event.category, event.dom_id)] += 1
    publisher = KafkaPublisher(services.stack.settings.kafka.bootstrap, services.topic, PublishSettings())

    async def one_request_each() -> None:  # as many records as events, oldest first, as clients sent them
        for event in events:
            await publisher.publish([event])

    asyncio.run(one_request_each())
    publisher.close()
    return truth


def by_day(services: Services) -> Truth:
    with clickhouse_client(services.clickhouse) as client:
        rows = client.execute("SELECT day, label, category, dom_id, counter FROM daily_stats WHERE day < today() - 2")
    return Counter({(day, label, category, dom_id): counter for day, label, category, dom_id, counter in rows})


def hourly_by_day(services: Services) -> Truth:
    with clickhouse_client(services.clickhouse) as client:
        rows = client.execute(
            "SELECT day, label, category, dom_id, sum(counter) FROM hourly_stats WHERE day < today() - 2 "
            "GROUP BY day, label, category, dom_id"
        )
    return Counter({(day, label, category, dom_id): counter for day, label, category, dom_id, counter in rows})


def corrupt(services: Services) -> Truth:
    """What an operator finds: a lost row, an inflated row, an invented row."""
    with clickhouse_client(services.clickhouse) as client:
        client.execute(
            "ALTER TABLE daily_counts DELETE WHERE day = %(day)s AND label = 'past0'",
            {"day": DAYS[0]},
        )
        client.execute(
            "INSERT INTO daily_counts (day, label, category, dom_id, counter, version, written_at) VALUES",
            [
                (DAYS[1], "past1", "c", "d1", 999_999, 10**12, datetime(2026, 1, 1, tzinfo=UTC)),
                (DAYS[2], "invented", "", "", 7, 1, datetime(2026, 1, 1, tzinfo=UTC)),
            ],
        )

    def deleted() -> Truth:  # ALTER ... DELETE is a mutation: it lands in the background
        found = by_day(services)
        return found if not any(day == DAYS[0] and label == "past0" for day, label, _, _ in found) else Counter()

    return eventually(deleted)
