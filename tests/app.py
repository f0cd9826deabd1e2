"""The app as in-process tests use it: triggers of an app built by the composition root's own
`build_app`, against Components built from os.environ on first use (`reset_services()` after changing
settings: the next use builds them again). `runs_api.create_run(req)` calls the registered user function by
its name."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.composition import Components
from shared.core.settings import Settings


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


_current: Components | None = None


def get_services() -> Components:
    """The Components the in-process app uses now (built from os.environ when first asked)."""
    global _current  # noqa: PLW0603 -- one app per test process, rebuilt when a test changes its settings
    if _current is None:
        _current = Components(Settings.from_env())
    return _current


def reset_services() -> None:
    global _current  # noqa: PLW0603
    _current = None


class Triggers:
    """Attribute access to an app's functions by name (the names the host shows)."""

    def __init__(self) -> None:
        app = function_app.build_app(get_services)
        self._functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self._functions[name]
        except KeyError:
            raise AttributeError(f"the app has no function named {name!r}") from None


triggers = Triggers()
# One namespace for all: the names are unique across blueprints (the host requires it).
runs_api = run_workers = assessments_api = assessment_workers = maintenance_api = maintenance_timers = \
    event_workers = plans_api = triggers
