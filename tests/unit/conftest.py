"""Fixtures shared by the unit tests: a fake guest with every release in its registry, a clock."""

from __future__ import annotations

import pytest

from tests.unit.engine_kit import Clock, fake_host
from tests.unit.fake_host import FakeHost


@pytest.fixture
def host() -> FakeHost:
    return fake_host()


@pytest.fixture
def clock() -> Clock:
    return Clock()
