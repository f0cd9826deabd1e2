"""Unit tests: settings precedence and %NAME% resolution, host.json parsing, route templates."""

from __future__ import annotations

import logging
import os
from datetime import timedelta

import pytest
import requests

from tools.local_host.host_config import HostConfigError, parse_host_config, parse_timespan
from tools.local_host.routes import Route, RouteError, RouteTable, reserved_route, routes_conflict
from tools.local_host.settings import (
    DEV_STORAGE,
    SettingsError,
    apply_local_settings,
    resolve,
    storage_connection_string,
)


def test_environment_wins_over_local_settings(caplog) -> None:
    env = {"A": "from-env"}
    with caplog.at_level(logging.INFO, logger="tools.local_host"):
        apply_local_settings({"A": "from-file", "B": "from-file"}, env)
    assert env == {"A": "from-env", "B": "from-file"}
    assert (
        "Skipping 'A' from local.settings.json as it's already defined in current environment variables."
        in caplog.text
    )


def test_env_override_reaches_the_function(start_host) -> None:
    host = start_host({"GREETING": "from-env"})
    assert requests.get(f"{host.base_url}/api/greeting", timeout=5).text == "from-env"


def test_local_settings_value_reaches_the_function(start_host) -> None:
    host = start_host()
    assert requests.get(f"{host.base_url}/api/greeting", timeout=5).text == "from-local-settings"


def test_website_hostname_is_the_address_the_host_listens_on(start_host, monkeypatch) -> None:
    monkeypatch.delenv("WEBSITE_HOSTNAME", raising=False)
    host = start_host()
    assert os.environ["WEBSITE_HOSTNAME"] == f"127.0.0.1:{host.port}"  # as Core Tools: localhost:<port>


def test_a_website_hostname_already_set_wins(start_host, monkeypatch) -> None:
    monkeypatch.setenv("WEBSITE_HOSTNAME", "app.example")
    start_host()
    assert os.environ["WEBSITE_HOSTNAME"] == "app.example"


def test_resolve_setting_references() -> None:
    env = {"Q": "orders", "P": "x"}
    assert resolve("%Q%-poison", env) == "orders-poison"
    assert resolve("%Q%/%P%", env) == "orders/x"
    assert resolve("plain", env) == "plain"
    with pytest.raises(SettingsError, match="MISSING"):
        resolve("%MISSING%", env)


def test_connection_strings() -> None:
    assert (
        storage_connection_string(None, {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}) == DEV_STORAGE
    )
    assert storage_connection_string("Other", {"AzureWebJobsOther": "cs"}) == "cs"
    with pytest.raises(SettingsError, match="'AzureWebJobsStorage' does not exist"):
        storage_connection_string("AzureWebJobsStorage", {})


def test_host_json_defaults_and_values() -> None:
    cfg = parse_host_config({"version": "2.0"})
    assert cfg.route_prefix == "api"
    q = cfg.queues
    assert (q.batch_size, q.max_dequeue_count, q.message_encoding) == (16, 5, "base64")
    assert q.max_polling_interval == timedelta(minutes=1)
    assert q.visibility_timeout == timedelta(0)
    assert q.effective_new_batch_threshold >= 8
    cfg = parse_host_config(
        {
            "version": "2.0",
            "extensions": {
                "http": {"routePrefix": ""},
                "queues": {
                    "batchSize": 8,
                    "newBatchThreshold": 1,
                    "maxPollingInterval": 2000,
                    "visibilityTimeout": "00:00:30",
                    "maxDequeueCount": 2,
                    "messageEncoding": "None",
                },
            },
        }
    )
    assert cfg.route_prefix == ""
    q = cfg.queues
    assert (q.batch_size, q.effective_new_batch_threshold, q.max_dequeue_count) == (8, 1, 2)
    assert q.max_polling_interval == timedelta(seconds=2)
    assert q.visibility_timeout == timedelta(seconds=30)
    assert q.message_encoding == "none"


@pytest.mark.parametrize(
    "queues",
    [
        {"batchSize": 33},
        {"batchSize": 0},
        {"maxPollingInterval": "00:00:00.050"},
        {"maxDequeueCount": 0},
        {"messageEncoding": "utf8"},
        {"visibilityTimeout": "soon"},
    ],
)
def test_host_json_invalid_values(queues: dict) -> None:
    with pytest.raises(HostConfigError):
        parse_host_config({"version": "2.0", "extensions": {"queues": queues}})


def test_function_timeout_default_unbounded_and_minimum() -> None:
    # ScriptJobHostOptionsSetup outside the Consumption plan: 30 minutes unset, -1 unbounded, >= 1 s
    assert parse_host_config({}).function_timeout == timedelta(minutes=30)
    assert parse_host_config({"functionTimeout": "-1"}).function_timeout is None
    assert parse_host_config({"functionTimeout": "01:00:00"}).function_timeout == timedelta(hours=1)
    with pytest.raises(HostConfigError, match="FunctionTimeout must be greater than 00:00:01"):
        parse_host_config({"functionTimeout": "00:00:00.500"})


def test_timespans() -> None:
    assert parse_timespan("00:00:00.500") == timedelta(milliseconds=500)
    assert parse_timespan("1.02:03:04") == timedelta(days=1, hours=2, minutes=3, seconds=4)
    assert parse_timespan("00:05") == timedelta(minutes=5)
    with pytest.raises(ValueError, match="TimeSpan"):
        parse_timespan("00:61:00")


def test_route_templates() -> None:
    r = Route.compile("users/{id:int}/files/{name}.{ext}", "t", None)
    assert r.match("/users/5/files/a.txt") == {"id": "5", "name": "a", "ext": "txt"}
    assert r.match("/USERS/5/files/a.txt") is not None
    assert r.match("/users/x/files/a.txt") is None
    opt = Route.compile("things/{id:guid?}", "t", None)
    assert opt.match("/things") == {}
    assert opt.match("/things/0f8fad5b-d9cb-469f-a165-70867728950e") is not None
    assert opt.match("/things/nope") is None
    assert Route.compile("a/{n=7}", "t", None).match("/a") == {"n": "7"}
    assert Route.compile("r/{n:range(1,3)}", "t", None).match("/r/4") is None
    with pytest.raises(RouteError, match="unknown route constraint"):
        Route.compile("a/{x:bogus}", "t", None)
    with pytest.raises(RouteError, match="last segment"):
        Route.compile("a/{*x}/b", "t", None)


def test_route_table_tries_routes_in_function_name_order_first_match_wins() -> None:
    # The host sorts functions by name (OrdinalIgnoreCase) and its RouteCollection stops at the first match;
    # ASP.NET-style precedence (literal before parameter before catch-all) would pick 'literal' here.
    table = RouteTable("api")
    table.add("items/new", "literal", None, "Zeta")
    table.add("items/{id}", "param", frozenset({"GET"}), "beta")
    table.add("{*all}", "catch", None, "Alpha")
    assert [r.name for r in table.routes] == ["Alpha", "beta", "Zeta"]
    assert table.find("GET", "/api/items/new")[0].target == "catch"
    table = RouteTable("api")
    table.add("{*all}", "catch", None, "zz-catch")
    table.add("items/{id}", "param", frozenset({"GET"}), "b-param")
    table.add("items/new", "literal", None, "a-literal")
    assert table.find("GET", "/api/items/new")[0].target == "literal"
    assert table.find("GET", "/api/items/9")[0].target == "param"
    assert table.find("POST", "/api/items/9")[0].target == "catch"  # the method is a route constraint
    assert table.find("GET", "/other") is None


def test_route_conflicts_and_reserved_routes() -> None:
    assert routes_conflict("/Runs/{id}", frozenset({"GET"}), "runs/{id}/", frozenset({"GET", "POST"}))
    assert routes_conflict("runs", None, "runs", frozenset({"POST"}))
    assert not routes_conflict("runs", frozenset({"GET"}), "runs", frozenset({"POST"}))
    assert not routes_conflict("runs/{id}", None, "runs/{runId}", None)  # different templates
    assert reserved_route("admin/things") and reserved_route("/Runtime/x") and not reserved_route("api/admin")
