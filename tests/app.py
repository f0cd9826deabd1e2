"""The app as in-process tests use it: triggers of an app built by the composition root's own
`build_app`, against the root's `services` (configured from os.environ; `reset_services()` after
changing settings). `runs_api.create_run(req)` calls the registered user function by its name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import function_app
from shared.runs.services import Services


class Triggers:
    """Attribute access to an app's functions by name (the names the host shows)."""

    def __init__(self) -> None:
        app = function_app.build_app(function_app.services)
        self._functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(f"the app has no function named {name!r}") from None


triggers = Triggers()
# One namespace for all: the names are unique across blueprints (the host requires it).
runs_api = run_workers = assessments_api = assessment_workers = maintenance_api = maintenance_timers = \
    event_workers = triggers


def get_services() -> Services:
    return function_app.services.get()


def reset_services() -> None:
    function_app.services.reset()
