"""The system benchmark's step logic (bench/system.py): which rate comes next, and when a step holds."""

from __future__ import annotations

import math

from bench.system import highest_held, next_rate, verdict


def rates(outcomes: dict[float, bool], start: float = 1000, max_steps: int = 8) -> list[float]:
    """The rates the benchmark offers when each rate holds as ``outcomes`` says."""
    history: list[tuple[float, bool]] = []
    while (rate := next_rate(history, start, 2.0, max_steps)) is not None:
        history.append((rate, outcomes[round(rate)]))
    return [r for r, _ in history]


def test_the_rate_doubles_while_steps_hold_then_tries_once_between() -> None:
    offered = rates({1000: True, 2000: True, 4000: False, 2828: True})
    assert offered == [1000, 2000, 4000, 2000 * math.sqrt(2)]


def test_a_failing_step_between_ends_the_search_below_it() -> None:
    history = [(1000.0, True), (2000.0, False), (1414.2, False)]
    assert next_rate(history, 1000, 2.0, 8) is None
    assert highest_held(history) == 1000


def test_nothing_holds_when_the_first_step_fails() -> None:
    assert rates({1000: False}) == [1000]
    assert highest_held([(1000.0, False)]) is None


def test_the_steps_stop_at_the_most_allowed() -> None:
    offered = rates({1000 * 2**n: True for n in range(10)}, max_steps=4)
    assert offered == [1000, 2000, 4000, 8000]


def test_a_step_holds_only_if_everything_does() -> None:
    good = {"offered": 1000.0, "achieved": 990.0, "non_2xx": 0, "wrong": 0, "unseen": 0, "p99": 2.0}
    assert verdict(**good).holds
    for change, reason in (
        ({"achieved": 900.0}, "2xx at 90% of the offered rate"),
        ({"non_2xx": 3}, "3 requests not 2xx"),
        ({"wrong": 1}, "1 counters differ"),
        ({"unseen": 2}, "2 probes never visible"),
        ({"p99": 5.5}, "p99 5.5 s > 5 s"),
        ({"p99": math.nan}, "p99 nan s > 5 s"),
    ):
        judged = verdict(**{**good, **change})
        assert not judged.holds and judged.why == reason
