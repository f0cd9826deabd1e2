"""Fixtures shared by every test: a real Azurite per test session, and a clean environment per test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tools import metrics
from tools.azurite import Azurite

# The app's OpenTelemetry counters (ARM calls, queue messages, Table round-trips) are read by tests in-process.
metrics.install()


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    """One Azurite for the whole session; tests isolate themselves with unique queue/table names."""
    with Azurite() as running:
        yield running


@pytest.fixture(autouse=True)
def _clean_environ() -> Iterator[None]:
    """Settings are read from os.environ; no test may leak its settings into the next."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
