"""The composition root's wiring: the app's Services with every feature's hooks registered.

    rollouts     before_start: a stopped run's machine does not start; Linux pins after the canary
                 advance: the controller that admits machines and closes rollout runs
    maintenance  before_start: inside the window, once per VM across overlapping windows
    assessments  on_terminal (assessPatches): history and the latest snapshot per machine

function_app.py builds one `AppServices` per process; clients are created on first use and reused
across invocations (the Functions docs' advice on client reuse).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shared.assessments.results import record_outcome
from shared.core.settings import Settings
from shared.maintenance.window_guard import within_window
from shared.rollouts.controller import advance
from shared.rollouts.start_guard import stopped_or_pinned
from shared.runs.hooks import RunHooks
from shared.runs.services import Services


def build_hooks() -> RunHooks:
    return RunHooks(before_start=[stopped_or_pinned, within_window],
                    on_terminal={"assessPatches": record_outcome},
                    advance=advance)


def build_services(settings: Settings) -> Services:
    return Services(settings, build_hooks())


class AppServices:
    """The app's Services, built once from the settings on first use (not at import: indexing the
    functions must not need storage or credentials). `reset` is for tests that change settings."""

    def __init__(self, settings: Callable[[], Settings] = Settings.from_env) -> None:
        self._settings = settings
        self._services: Services | None = None
        self._lock = threading.Lock()

    def get(self) -> Services:
        if self._services is None:
            with self._lock:
                if self._services is None:
                    self._services = build_services(self._settings())
        return self._services

    def reset(self) -> None:
        with self._lock:
            self._services = None
