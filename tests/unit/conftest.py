"""Fixtures of the unit tests: the fakes of :mod:`tests.support.fakes`, one per test."""

import pytest

from tests.support.fakes import FakePublisher, FakeReader


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
def reader() -> FakeReader:
    return FakeReader()
