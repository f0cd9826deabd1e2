"""Fixtures shared by every test: a real Azurite per test session, a clean environment per test, and a check that
no test changed the request bodies many modules share (tests.support.bodies)."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator

import pytest

from tests.support import bodies
from tools import metrics
from tools.azurite import Azurite

_BODIES = copy.deepcopy(bodies.SHARED)

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


@pytest.fixture(autouse=True)
def _shared_bodies_unchanged() -> Iterator[None]:
    """A test that changes a shared body in place would change what every later test sends."""
    yield
    changed = [name for name, body in bodies.SHARED.items() if body != _BODIES[name]]
    assert not changed, f"changed in place: {', '.join(changed)} (tests.support.bodies); copy it instead"
