"""The app as in-process tests use it: triggers of an app built by the composition root's own
`build_app`, against the root's `services` (configured from os.environ; `reset_services()` after
changing settings). `runs_api.create_run(req)` calls the registered user function by its name."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.runs.services import Services


def _load_composition_root() -> ModuleType:
    """The repository's function_app.py by path: the local host's tests import a sample app's
    `function_app` module in this same process, so the name alone could find that one."""
    path = Path(__file__).resolve().parents[1] / "function_app.py"
    spec = importlib.util.spec_from_file_location("_patchpilot_function_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


function_app = _load_composition_root()


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
