"""Hypothesis strategies for every endpoint: valid requests built from the shapes the validation code
accepts, and mutations of them.

Valid shapes follow shared/validation/run_request.py, install_parameters.py, rollout.py,
assessment_request.py, scopes.py, dynamic_scope.py and shared/maintenance/configuration.py +
recurrence.py (and docs/api.md), including the alternative spellings they normalise
(`NeverReboot`, `Update Rollups`, `KB5034441`, any case). Mutations of a valid body: a node replaced by
a wrong type, null, a huge string, deep nesting, unicode digits, an extreme number or a value at the edge
of a field's domain; an extra field; a removed field; a duplicate key written into the raw JSON text; and
raw-text damage (truncation, invalid UTF-8, a byte-order mark, a body over MAX_REQUEST_BYTES).
"""

from __future__ import annotations

import json
import string
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from tests.reliability.harness import BY_NAME, Endpoint, Request

# -- building blocks ------------------------------------------------------------------------------------
SUBSCRIPTIONS = ("00000000-0000-0000-0000-000000000001", "8f3a2c1e-9b7d-4e6f-a5c4-3b2a1f0e9d8c",
                 "ABCDEF01-2345-6789-ABCD-EF0123456789")
subscription_ids = st.one_of(st.sampled_from(SUBSCRIPTIONS), st.uuids().map(str))
resource_groups = st.one_of(st.sampled_from(("rg", "rg-prod.web", "RG_(x)", "Rg.1-a", "rg-münchen")),
                            st.from_regex(r"[A-Za-z0-9_()-][-A-Za-z0-9_().]{0,20}[A-Za-z0-9_()-]", fullmatch=True))
vm_names = st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,20}[A-Za-z0-9]|[A-Za-z0-9]", fullmatch=True)


@st.composite
def vm_ids(draw: st.DrawFn) -> str:
    provider = draw(st.sampled_from(("Microsoft.Compute", "microsoft.compute")))
    groups = draw(st.sampled_from(("resourceGroups", "resourcegroups")))
    return (f"/subscriptions/{draw(subscription_ids)}/{groups}/{draw(resource_groups)}"
            f"/providers/{provider}/virtualMachines/{draw(vm_names)}")


def distinct_vms(min_size: int = 1, max_size: int = 6) -> st.SearchStrategy[list[str]]:
    return st.lists(vm_ids(), min_size=min_size, max_size=max_size, unique_by=str.lower)


durations_in_range = st.sampled_from(("PT30M", "PT1H", "PT2H30M", "PT4H", "pt3h", "PT90M", "PT1H30M", "PT3H59M",
                                      "PT14400S", "PT0H45M"))
reboot_settings = st.sampled_from(("IfRequired", "Never", "Always", "NeverReboot", "AlwaysReboot", "ifrequired",
                                   "Reboot If Required", "never"))
windows_classes = st.sampled_from(("Critical", "Security", "UpdateRollUp", "Update Rollups", "UpdateRollup",
                                   "FeaturePack", "ServicePack", "Definition", "Definition Updates", "Tools",
                                   "Updates", "critical"))
linux_classes = st.sampled_from(("Critical", "Security", "Other", "security"))
kb_numbers = st.one_of(st.integers(1, 9_999_999_999), st.integers(1, 9_999_999).map(lambda n: f"KB{n}"),
                       st.integers(1, 9_999_999).map(str))
masks = st.lists(st.text(string.ascii_letters + string.digits + "*-._:", min_size=1, max_size=40), max_size=4)
publish_dates = st.datetimes().map(lambda d: d.isoformat(timespec="seconds") + "Z")


@st.composite
def windows_parameters(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    selector = draw(st.sampled_from(("classificationsToInclude", "kbNumbersToInclude", "patchNameMasksToInclude")))
    if selector == "classificationsToInclude" or draw(st.booleans()):
        out["classificationsToInclude"] = draw(st.lists(windows_classes, min_size=1, max_size=4))
    if selector == "kbNumbersToInclude" or draw(st.booleans()):
        out["kbNumbersToInclude"] = draw(st.lists(kb_numbers, min_size=1, max_size=4))
    if selector == "patchNameMasksToInclude":
        out["patchNameMasksToInclude"] = draw(masks.filter(bool))
    if draw(st.booleans()):
        out["kbNumbersToExclude"] = draw(st.lists(kb_numbers, max_size=3))
    if draw(st.booleans()):
        out["excludeKbsRequiringReboot"] = draw(st.booleans())
    if draw(st.booleans()):
        out["maxPatchPublishDate"] = draw(publish_dates)
    if draw(st.booleans()):
        out["patchNameMasksToExclude"] = draw(masks)
    return out


@st.composite
def linux_parameters(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        out["packageNameMasksToInclude"] = draw(masks.filter(bool))
    if "packageNameMasksToInclude" not in out or draw(st.booleans()):
        out["classificationsToInclude"] = draw(st.lists(linux_classes, min_size=1, max_size=3))
    if draw(st.booleans()):
        out["packageNameMasksToExclude"] = draw(masks)
    if draw(st.booleans()):
        out["maintenanceRunId"] = draw(st.text(string.ascii_letters + string.digits + "-", min_size=1, max_size=36))
    return out


@st.composite
def install_patches(draw: st.DrawFn, *, with_duration: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_duration:
        out["maximumDuration"] = draw(durations_in_range)
    out["rebootSetting"] = draw(reboot_settings)
    parts = draw(st.sampled_from(("windows", "linux", "both")))
    if parts in ("windows", "both"):
        out["windowsParameters"] = draw(windows_parameters())
    if parts in ("linux", "both"):
        out["linuxParameters"] = draw(linux_parameters())
    return out


counts_or_percents = st.one_of(st.integers(1, 50), st.integers(1, 100).map(lambda n: f"{n}%"))


@st.composite
def rollouts(draw: st.DrawFn, machines: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if draw(st.booleans()):
        waves: list[dict[str, Any]] = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(("size", "machines", "selector")))
            wave: dict[str, Any] = {"name": draw(st.text(max_size=10))} if draw(st.booleans()) else {}
            if kind == "size":
                wave["size"] = draw(counts_or_percents)
            elif kind == "machines":
                wave["machines"] = draw(st.lists(st.sampled_from(machines), min_size=1, max_size=2))
            else:
                sub = machines[0].split("/")[2]
                wave["selector"] = {"subscriptions": [sub]}
            waves.append(wave)
        if draw(st.booleans()):
            waves.append({"size": "rest"})
        out["waves"] = waves
    if draw(st.booleans()):
        out["soakTime"] = draw(st.sampled_from(("PT0S", "PT1M", "PT30M", "P1D")))
    for name in ("maxConcurrency", "maxConcurrencyPerSubscription"):
        if draw(st.booleans()):
            out[name] = draw(counts_or_percents)
    if draw(st.booleans()):
        out["maxFailures"] = draw(st.one_of(st.integers(0, 10), st.integers(1, 100).map(lambda n: f"{n}%")))
    if draw(st.booleans()):
        out["failureOn"] = draw(st.lists(st.sampled_from(("Failed", "TimedOut", "FailedPatches",
                                                          "CompletedWithWarnings", "Maintenance Window Exceeded")),
                                         min_size=1, max_size=3))
    if draw(st.booleans()):
        out["approveAfterDays"] = draw(st.integers(0, 365))
    if draw(st.booleans()):  # loopback hooks are allowed with ARM_DEV_TOKEN (the simulator setup)
        out["preHook"] = {"url": "http://127.0.0.1:9/drain", "timeoutSeconds": draw(st.integers(1, 200))}
    return out


@st.composite
def run_bodies(draw: st.DrawFn) -> dict[str, Any]:
    machines = draw(distinct_vms())
    body: dict[str, Any] = {"machines": machines, "installPatches": draw(install_patches())}
    if draw(st.booleans()):
        body["rollout"] = draw(rollouts(machines))
    return body


@st.composite
def assessment_bodies(draw: st.DrawFn) -> dict[str, Any]:
    if draw(st.booleans()):
        return {"machines": draw(distinct_vms())}
    subs = draw(st.lists(subscription_ids, min_size=1, max_size=3, unique_by=str.lower))
    if draw(st.booleans()):
        return {"scopes": [f"/subscriptions/{s}" for s in subs]}
    groups = draw(st.lists(resource_groups, min_size=1, max_size=3, unique_by=str.lower))
    return {"scopes": [f"/subscriptions/{subs[0]}/resourceGroups/{g}" for g in groups]}


TIME_ZONES = ("UTC", "W. Europe Standard Time", "Pacific Standard Time", "Tokyo Standard Time", "Europe/Berlin",
              "America/New_York", "india standard time", "Australia/Lord_Howe", "Asia/Kathmandu")
# Not a bare "Month"/"2Months": Azure's service refuses those (docs/azure-input-rules.md).
RECUR = ("Day", "3Days", "Week", "2Weeks Monday,Friday", "Week Saturday, Sunday", "Month day5", "2Months day1",
         "Month day1,day15", "Month day28", "Month Second Tuesday Offset2", "Month Last Sunday Offset-6",
         "month first monday", "6Hours", "12Hours", "Days")
names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,30}", fullmatch=True)


@st.composite
def window_durations(draw: st.DrawFn) -> str:
    minutes = draw(st.integers(90, 235))
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@st.composite
def configuration_bodies(draw: st.DrawFn, name: str) -> dict[str, Any]:
    start = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 12, 28)))
    start = start.replace(day=min(start.day, 28))
    window: dict[str, Any] = {"startDateTime": start.strftime("%Y-%m-%d %H:%M"),
                              "timeZone": draw(st.sampled_from(TIME_ZONES)),
                              "recurEvery": draw(st.sampled_from(RECUR))}
    if draw(st.booleans()):
        window["duration"] = draw(window_durations())
    if draw(st.booleans()):
        window["expirationDateTime"] = f"{start.year + draw(st.integers(3, 50))}-12-31 23:59"
    patches = draw(install_patches(with_duration=False))
    if draw(st.booleans()):
        patches.pop("rebootSetting")
    if draw(st.booleans()):
        patches["tasks"] = {"preTasks": [{"source": "runbook", "parameters": {"a": "b"}}], "postTasks": []}
    props: dict[str, Any] = {"maintenanceScope": draw(st.sampled_from(("InGuestPatch", "inguestpatch"))),
                             "maintenanceWindow": window, "installPatches": patches}
    if draw(st.booleans()):  # as exported from Azure
        props.update({"namespace": "Microsoft.Maintenance", "visibility": "Custom",
                      "extensionProperties": {"InGuestPatchMode": "User"}})
    body: dict[str, Any] = {"location": draw(st.sampled_from(("westeurope", "East US", ""))), "properties": props}
    if draw(st.booleans()):
        body.update({"id": f"/subscriptions/{SUBSCRIPTIONS[0]}/resourceGroups/rg/providers/Microsoft.Maintenance"
                           f"/maintenanceConfigurations/{name}", "name": name,
                     "type": "Microsoft.Maintenance/maintenanceConfigurations",
                     "tags": {"team": "ops"}, "systemData": {"createdBy": "someone@example.com"}})
    return body


@st.composite
def assignment_bodies(draw: st.DrawFn, configuration: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if draw(st.booleans()):
        props["resourceId"] = draw(vm_ids())
    else:
        scope = f"/subscriptions/{draw(subscription_ids)}"
        if draw(st.booleans()):
            scope += f"/resourceGroups/{draw(resource_groups)}"
        props["resourceId"] = scope
        if draw(st.booleans()):
            flt: dict[str, Any] = {}
            if draw(st.booleans()):
                flt["resourceTypes"] = ["Microsoft.Compute/virtualMachines"]
            if draw(st.booleans()):
                flt["resourceGroups"] = draw(st.lists(resource_groups, min_size=1, max_size=2))
            if draw(st.booleans()):
                flt["osTypes"] = draw(st.lists(st.sampled_from(("Windows", "Linux", "linux")), min_size=1))
            if draw(st.booleans()):
                flt["locations"] = ["westeurope", "East US"]
            if draw(st.booleans()):
                flt["tagSettings"] = {"tags": {"patch": ["tuesday"], "Env": ["prod", "test"]},
                                      "filterOperator": draw(st.sampled_from(("Any", "All", "all")))}
            props["filter"] = flt
    if draw(st.booleans()):
        props["maintenanceConfigurationId"] = f"/maintenance-configurations/{configuration}"
    return {"properties": props}


# -- raw JSON text with room for what json.dumps cannot write ---------------------------------------------
class Raw:
    """A fragment written into the JSON text as it is (deep nesting, NaN, 5,000-digit numbers)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


class Dup:
    """A JSON object written with one key twice: `first` is written before the object's own items."""

    def __init__(self, obj: dict[str, Any], key: str, value: Any, first: bool) -> None:
        self.obj, self.key, self.value, self.first = obj, key, value, first


def encode(value: Any, ascii_only: bool = True) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, Dup):
        items = [f"{json.dumps(k)}:{encode(v, ascii_only)}" for k, v in value.obj.items()]
        extra = f"{json.dumps(value.key)}:{encode(value.value, ascii_only)}"
        return "{" + ",".join([extra, *items] if value.first else [*items, extra]) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=ascii_only)}:{encode(v, ascii_only)}"
                              for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(encode(v, ascii_only) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [here]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*here, i))
    return out


def replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (replace(v, rest, new) if k == head else v) for k, v in value.items()}
    return [replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


# Digits Python's int(), float(), str.isdecimal() and re's \d all take: Arabic-Indic, Devanagari, fullwidth,
# mathematical bold, N'Ko (zero of each block; the nine others follow it).
UNICODE_DIGITS = tuple("".join(chr(zero + i) for i in range(10)) for zero in (0x660, 0x966, 0xFF10, 0x1D7CE, 0x7C0))
WRONG_TYPES = (0, -1, 1.5, True, False, "text", "", " ", [], {}, [1, "a"], {"a": 1}, 2**63, -(2**63) - 1)
EXTREME = (10**30, -(10**30), 1e308, -1e-308, Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("9" * 5000),
           Raw("1e999"), Raw("-0"))
# Values at the edges of a field's domain (dates at datetime's limits and past them in UTC, durations
# at and past the bounds, the schedule grammar's extremes), put in any string's place.
EDGE_STRINGS = ("0001-01-01 00:00", "9999-12-31 23:59", "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                "1970-01-01T00:00:00Z", "2026-02-29 10:00", "2024-02-29 10:00", "P99999999999W", "PT0S", "PT4H0M1S",
                "PT29M59S", "P1Y", "PT-1H", "24:00", "00:00", "03:56", "01:29", "Month day31", "12Months day30",
                "Month Last Sunday Offset6", "366Days", "9999Hours", "6Hours", "Week Monday,Monday", "Etc/GMT+14",
                "Dateline Standard Time", "Line Islands Standard Time", "rest", "0%", "100%", "101%", "KB0", "0")
NEAR_MISS_KEYS = ("maximumduration", "rebootsetting", "Machines", "installpatches", "windowsparameters",
                  "properties ", "", "__proto__", "constructor", "\u0000", "ünïcode", "a" * 300)


def to_unicode_digits(value: Any, table: str) -> Any:
    text = value if isinstance(value, str) else str(value)
    if not any(c.isdigit() for c in text):
        text = text + "1"
    return text.translate(str.maketrans("0123456789", table))


@st.composite
def mutated(draw: st.DrawFn, valid: Any) -> tuple[bytes, str]:
    """A valid body damaged in one way: (raw bytes, what was done)."""
    kind = draw(st.sampled_from(("wrong_type", "null", "huge_string", "deep_nesting", "unicode_digits", "extreme",
                                 "extra_field", "remove_field", "duplicate_key", "raw_text", "max_lists", "edge")))
    nodes = paths(valid)
    path = draw(st.sampled_from(nodes))
    where = "/".join(map(str, path)) or "(root)"
    if kind == "raw_text":
        text = encode(valid).encode()
        damage = draw(st.sampled_from(("truncate", "invalid_utf8", "bom", "empty", "null", "array", "oversize",
                                       "whitespace", "latin1", "trailing")))
        if damage == "truncate":
            cut = draw(st.integers(0, max(0, len(text) - 1)))
            return text[:cut], f"raw truncated at {cut}"
        raw = {"invalid_utf8": b'{"machines": "\xff\xfe"}' + text[:0],
               "bom": b"\xef\xbb\xbf" + text,
               "empty": b"",
               "null": b"null",
               "array": b"[" + text + b"]",
               "oversize": text + b" " * (1_048_577 - len(text)) if len(text) < 1_048_577 else text,
               "whitespace": b" \t\r\n ",
               "latin1": encode(valid, ascii_only=False).encode("latin-1", errors="replace"),
               "trailing": text + b" {}"}[damage]
        return raw, f"raw {damage}"
    if kind == "remove_field":
        dict_paths = [p for p in nodes if p and isinstance(get(valid, p[:-1]), dict)]
        if not dict_paths:
            return encode(valid).encode(), "unchanged"
        path = draw(st.sampled_from(dict_paths))
        parent = get(valid, path[:-1])
        smaller = {k: v for k, v in parent.items() if k != path[-1]}
        return encode(replace(valid, path[:-1], smaller)).encode(), f"removed {'/'.join(map(str, path))}"
    if kind in ("extra_field", "duplicate_key"):
        dict_paths = [p for p in nodes if isinstance(get(valid, p), dict)]
        path = draw(st.sampled_from(dict_paths))
        obj = get(valid, path)
        where = "/".join(map(str, path)) or "(root)"
        if kind == "extra_field" or not obj:
            key = draw(st.one_of(st.sampled_from(NEAR_MISS_KEYS), st.text(max_size=12)))
            return encode(replace(valid, path, {**obj, key: draw(st.sampled_from(WRONG_TYPES))})).encode(), \
                f"extra field {key!r} at {where}"
        key = draw(st.sampled_from(sorted(obj)))
        other = draw(st.one_of(st.sampled_from(WRONG_TYPES), st.just(None), st.just(obj[key])))
        first = draw(st.booleans())
        dup = Dup(obj, key, other, first)
        note = f"duplicate key {key!r} at {where} ({other!r}, first={first})"
        return encode(replace(valid, path, dup)).encode(), note
    if kind == "wrong_type":
        new: Any = draw(st.sampled_from(WRONG_TYPES))
    elif kind == "null":
        new = None
    elif kind == "huge_string":
        size = draw(st.sampled_from((257, 1000, 40_000, 70_000, 300_000)))
        new = draw(st.sampled_from(("x", "é", "😀", "\u0000", "/", "%", "'", "\\"))) * size
    elif kind == "deep_nesting":
        depth = draw(st.sampled_from((30, 200, 900, 5000, 100_000)))
        opener, closer = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
        new = Raw(opener * depth + "1" + closer * depth)
    elif kind == "unicode_digits":
        new = to_unicode_digits(get(valid, path), draw(st.sampled_from(UNICODE_DIGITS)))
    elif kind == "edge":
        new = draw(st.sampled_from(EDGE_STRINGS))
    elif kind == "max_lists":  # every list at its longest, each item at its longest: a big valid-looking body
        new = draw(st.sampled_from((["A" * 256] * 200, ["KB" + "9" * 10] * 200, [1] * 5000)))
    else:
        new = draw(st.sampled_from(EXTREME))
    return encode(replace(valid, path, new)).encode(), f"{kind} at {where}"


# -- whole requests ---------------------------------------------------------------------------------------
RUN_IDS = st.one_of(
    st.from_regex(r"[0-9a-f]{11}-[0-9a-f]{8}", fullmatch=True),
    st.text(max_size=40),
    st.sampled_from(("", "..", "%2e%2e", "00000000000-00000000", "FFFFFFFFFFF-FFFFFFFF", "a" * 5000)),
)
ANY_TEXT = st.one_of(st.text(max_size=30), st.sampled_from((
    "", " ", "..", "/", "%00", "\u0000", "a" * 3000, "\u0661\u0662", "\uff11\uff10", "-1", "0", "1e3",
    "99999999999999999999")))
idempotency_keys = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(("k1", "k2", "\u0000x", "a" * 300)))


def route_values(endpoint: Endpoint, config_name: str,
                 known: dict[str, list[str]] | None = None) -> st.SearchStrategy[dict[str, str]]:
    """Route values: fuzzed text, well-formed values, and (from `known`) ones that exist in storage."""
    parts: dict[str, st.SearchStrategy[str]] = {}
    for name in endpoint.route_params:
        if name == "runId":
            parts[name] = RUN_IDS
        elif name == "subscriptionId":
            parts[name] = st.one_of(subscription_ids, ANY_TEXT)
        elif name == "resourceGroupName":
            parts[name] = st.one_of(resource_groups, ANY_TEXT)
        elif name == "vmName":
            parts[name] = st.one_of(vm_names, ANY_TEXT)
        elif name == "name":
            parts[name] = st.one_of(st.just(config_name), names, ANY_TEXT)
        else:
            parts[name] = st.one_of(names, ANY_TEXT)
        if known and known.get(name):
            parts[name] = st.one_of(st.sampled_from(known[name]), parts[name])
    return st.fixed_dictionaries(parts)


PARAM_VALUES = {
    "top": st.one_of(st.integers(-5, 200).map(str), ANY_TEXT),
    "history": st.one_of(st.integers(-5, 200).map(str), ANY_TEXT),
    "count": st.one_of(st.integers(-5, 200).map(str), ANY_TEXT),
    "continuationToken": st.one_of(ANY_TEXT, st.binary(max_size=40).map(lambda b: b.hex())),
    "subscriptionId": st.one_of(subscription_ids, ANY_TEXT),
    "resourceGroup": st.one_of(resource_groups, ANY_TEXT),
    "osType": st.one_of(st.sampled_from(("Windows", "linux", "LINUX", "Mac")), ANY_TEXT),
    "from": st.one_of(st.datetimes().map(lambda d: d.isoformat()), ANY_TEXT,
                      st.sampled_from(("0001-01-01T00:00:00", "9999-12-31T23:59:59", "9999-12-31T23:59:59-14:00",
                                       "1970-01-01", "2026-01-01T00:00:00+14:00"))),
}


def query(endpoint: Endpoint) -> st.SearchStrategy[dict[str, str]]:
    return st.fixed_dictionaries({}, optional={p: PARAM_VALUES[p] for p in endpoint.params})


def valid_body(endpoint: Endpoint, route: dict[str, str], config_name: str) -> st.SearchStrategy[Any]:
    if endpoint.body == "run":
        return run_bodies()
    if endpoint.body == "assessment":
        return assessment_bodies()
    if endpoint.body == "configuration":
        return configuration_bodies(route.get("name", config_name))
    return assignment_bodies(route.get("name", config_name))


@st.composite
def requests_for(draw: st.DrawFn, endpoint_name: str, config_name: str,
                 known: dict[str, list[str]] | None = None) -> tuple[Request, bool]:
    """(request, valid by construction). Body endpoints: half valid, half mutated; others: fuzzed route/query."""
    endpoint = BY_NAME[endpoint_name]
    if endpoint.body is None:
        route = draw(route_values(endpoint, config_name, known))
        return Request(endpoint_name, route, draw(query(endpoint)), note="fuzzed route/query"), False
    bad_route = False
    if endpoint.body in ("configuration", "assignment"):
        # an assignment's configuration must exist (the test creates `config_name`); others answer 404
        route = {"name": config_name if draw(st.integers(0, 3)) else draw(names)}
        if endpoint.body == "assignment":
            route["assignmentName"] = draw(names)
        if draw(st.integers(0, 9)) == 0:  # sometimes a bad name too
            route[draw(st.sampled_from(sorted(route)))] = draw(ANY_TEXT)
            bad_route = True
    else:
        route = {}
    body = draw(valid_body(endpoint, route, config_name))
    key = draw(idempotency_keys) if endpoint.method == "POST" else None
    headers = {"Idempotency-Key": key} if key is not None else {}
    if draw(st.booleans()):
        valid = not bad_route and not headers  # a key may be refused, or reused with another body (409)
        return Request(endpoint_name, route, {}, encode(body).encode(), headers, note="valid"), valid
    raw, note = draw(mutated(body))
    return Request(endpoint_name, route, {}, raw, headers, note=note), False
