"""The app settings the code reads are the app settings infra/ sets: derived from the code, not from a list.

Code side: `_str("NAME"`, `_int("NAME"`, `os.environ.get("NAME"` / `os.environ["NAME"]` / `os.getenv("NAME"`
anywhere under shared/, plus every `%NAME%` in the registered functions' bindings.
Bicep side: the keys of `appSettings` (infra/main.bicep) and `hostSettings` (infra/app/api.bicep), which
infra/app/api.bicep merges into the Function App's `siteConfig.appSettings`.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from tests.infra.bicep import INFRA, ROOT, parse, resolve_literal, variable

SHARED = ROOT / "shared"
MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"

READ_PATTERNS = [
    re.compile(r"""\b_(?:str|int|list)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\bos\.environ\.get\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
    re.compile(r"""\bos\.environ\[\s*["']([A-Za-z_][A-Za-z0-9_]*)["']\s*\]"""),
    re.compile(r"""\bos\.getenv\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']"""),
]
BINDING_SETTING = re.compile(r"%([A-Za-z_][A-Za-z0-9_]*)%")

# Read by the code, deliberately not set in Azure; the code default is the production value.
NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "identity-based: the AzureWebJobsStorage__* settings replace the connection string",
    "ARM_DEV_TOKEN": "local ARM simulator only; settings.py refuses it for a non-loopback ARM_ENDPOINT",
    "MAX_REQUEST_BYTES": "request size guard; 4 MiB default fits 10,000 of the longest VM ids",
    "WEBSITE_HOSTNAME": "set by App Service itself (the app's default host name); Location headers use it",
    "DEFAULT_RETRY_AFTER_SECONDS": "retry tuning knob: used when ARM sends no Retry-After",
    "RETRY_BASE_SECONDS": "retry tuning knob: backoff base for transient ARM errors",
    "RETRY_MAX_SECONDS": "retry tuning knob: backoff cap",
    "MAX_TRANSIENT_RETRIES": "retry tuning knob: attempts before a machine step fails",
    "MAX_CONFLICT_RETRIES": "retry tuning knob: attempts while another operation holds the VM (409)",
    "CONFLICT_RETRY_SECONDS": "retry tuning knob: wait between 409 retries",
    "OPERATION_GRACE_SECONDS": "sweeper tuning knob: how long an operation may run before it is chased",
    "CLAIM_TIMEOUT_SECONDS": "sweeper tuning knob: when a claimed step counts as abandoned",
    "STALL_AFTER_SECONDS": "sweeper tuning knob: how overdue a step is before the sweeper queues another",
    "POLL_ROUND_SECONDS": "polling tuning knob: how often a run's poll round may come",
    "ARM_TIMEOUT_SECONDS": "HTTP timeout per ARM call",
    "EVENT_MAX_ATTEMPTS": "delivery tuning knob: attempts before an event becomes a dead letter",
    "EVENT_CONNECT_TIMEOUT_SECONDS": "delivery tuning knob: connect timeout for events and hooks",
    "EVENT_READ_TIMEOUT_SECONDS": "delivery tuning knob: read timeout for events and post-run hooks",
    "SCHEDULE_CLOCK_ORIGIN": "compressed clock for the simulator only; settings.py refuses it for real ARM",
    "SCHEDULE_CLOCK_SCALE": "compressed clock for the simulator only; settings.py refuses it for real ARM",
    **dict.fromkeys(("GUEST_PATCH_BURST", "GUEST_PATCH_PER_MINUTE", "ARM_WRITE_BURST", "ARM_WRITES_PER_SECOND",
                     "ARM_READ_BURST", "ARM_READS_PER_SECOND"), "ARM budget: the code default is Azure's limit"),
    "POLL_READ_PERCENT": "pacing tuning knob: share of the read budget polling may use",
    "PACING_LATE_SECONDS": "pacing tuning knob: queue lateness the budget keeps burst back for",
    "DISPATCH_HORIZON_SECONDS": "pacing tuning knob: how far ahead of its slot a machine's start message is queued",
    "PACING_LEASE_TOKENS": "pacing tuning knob: most budget tokens a process takes from the shared row at once",
    "HEALTH_RECHECK_SECONDS": "health-check tuning knob: between reads of a machine not yet healthy",
    "HEALTH_PROBE_TIMEOUT_SECONDS": "health-check tuning knob: connect plus read per workload probe",
    "HEALTH_PROBE_NETWORKS": "egress opening an operator adds by hand for probes of private addresses; none by default",
    "PLAN_MAX_AGE_HOURS": "plan tuning knob: how long a plan may wait for its apply",
    "DEFAULT_INSTALL_SECONDS": "plan tuning knob: predicted duration with no history",
    "LONGEST_FIRST": "start-order knob: longest predicted first (the default) or request order",
}

# Set in Azure for the Functions host or the platform, not read by the app's own code.
HOST_ONLY = {
    "AzureWebJobsStorage__credential": "host: use the managed identity for AzureWebJobsStorage",
    "AzureWebJobsStorage__blobServiceUri": "host: keys, timer schedule status and singleton leases live in blobs",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "host: telemetry destination",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "host: Entra ingestion with the identity (local auth is off)",
}


def settings_read_by_code() -> set[str]:
    names: set[str] = set()
    for path in SHARED.rglob("*.py"):
        text = path.read_text()
        for pattern in READ_PATTERNS:
            names.update(pattern.findall(text))
    return names | settings_in_bindings()


@lru_cache(maxsize=1)
def settings_in_bindings() -> frozenset[str]:
    # A private copy of function_app: FunctionApp.get_functions() refuses a second call on the same app, and the
    # local host (integration tests) may already have indexed the shared one.
    spec = importlib.util.spec_from_file_location("_function_app_for_infra_tests", ROOT / "function_app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    names: set[str] = set()
    for function in module.app.get_functions():
        for binding in function.get_bindings():
            names.update(BINDING_SETTING.findall(json.dumps(binding.get_dict_repr(), default=str)))
    return frozenset(names)


def settings_set_by_bicep() -> dict[str, Any]:
    app = variable(MAIN, "appSettings")
    host = variable(API, "hostSettings")
    assert not set(app) & set(host), "a setting is defined twice"
    return {**app, **host}


def test_the_function_app_gets_exactly_app_and_host_settings() -> None:
    site_config = parse(API)["resources"]["functionApp"]["config"]["properties"]["siteConfig"]
    loop = site_config["appSettings"]["loop_type"]
    assert loop["type"] == "object"  # [for setting in items(...): {name: setting.key, value: setting.value}]
    assert ast.literal_eval(loop["detail"]["object_name"]) == {
        "function": {"type": "union", "parameters": {"arg_1": "appSettings", "arg_2": "hostSettings"}}
    }
    assert parse(MAIN)["modules"]["api"]["config"]["params"]["appSettings"] == "appSettings"


def test_code_discovery_finds_settings_from_each_source() -> None:
    found = settings_read_by_code()
    assert {"ARM_ENDPOINT", "MAX_MACHINES_PER_RUN"} <= found  # _str / _int in settings.py
    assert "AzureWebJobsStorage__tableServiceUri" in found  # os.environ.get in storage/clients.py
    assert {"SWEEP_SCHEDULE", "DISPATCH_QUEUE", "OPERATIONS_QUEUE"} <= settings_in_bindings()


def test_bicep_sets_every_setting_the_code_reads_and_nothing_else() -> None:
    code = settings_read_by_code()
    bicep = set(settings_set_by_bicep())
    missing = code - bicep - set(NOT_SET_IN_AZURE)
    unread = bicep - code - set(HOST_ONLY)
    assert not missing, f"the code reads these but infra/ does not set them: {sorted(missing)}"
    assert not unread, f"infra/ sets these but nothing reads them (list host ones in HOST_ONLY): {sorted(unread)}"


def test_exception_lists_are_not_stale() -> None:
    code = settings_read_by_code()
    bicep = set(settings_set_by_bicep())
    assert set(NOT_SET_IN_AZURE) <= code, f"no longer read: {sorted(set(NOT_SET_IN_AZURE) - code)}"
    assert not set(NOT_SET_IN_AZURE) & bicep, "a setting cannot be both set and deliberately unset"
    assert set(HOST_ONLY) <= bicep and not set(HOST_ONLY) & code


def code_defaults() -> dict[str, object]:
    """NAME -> default for every `_str("NAME", default)` / `_int("NAME", default)` in shared/core/settings.py."""
    import shared.core.settings as module

    defaults: dict[str, object] = {}
    for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_str", "_int"):
            name = node.args[0]
            if isinstance(name, ast.Constant) and len(node.args) > 1:
                defaults[name.value] = eval(ast.unparse(node.args[1]), vars(module))  # our own source, trusted
    return defaults


@pytest.mark.parametrize("name", ["COMPUTE_API_VERSION", "HYBRIDCOMPUTE_API_VERSION",
                                  "DISPATCH_QUEUE", "OPERATIONS_QUEUE", "POLLS_QUEUE", "RUNS_TABLE",
                                  "TARGETS_TABLE", "PATCHES_TABLE", "MAX_MACHINES_PER_RUN", "POLL_MIN_SECONDS",
                                  "RUN_RETRY_AFTER_SECONDS"])
def test_bicep_values_match_code_defaults(name: str) -> None:
    value, default = resolve_literal(MAIN, settings_set_by_bicep()[name]), code_defaults()[name]
    assert value == str(default), f"{name}: infra sets {value!r}, the code defaults to {default!r}"


def test_sweep_schedule_matches_local_settings_example() -> None:
    example = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert resolve_literal(MAIN, settings_set_by_bicep()["SWEEP_SCHEDULE"]) == example["SWEEP_SCHEDULE"]
