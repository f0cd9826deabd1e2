"""HTTP triggers through a real socket: routes, constraints, methods, query, body, errors, admin API."""

from __future__ import annotations

import requests

from tests.local_host.conftest import Records, wait_for


def test_route_params_query_body_and_absolute_url(start_host) -> None:
    host = start_host()
    r = requests.post(
        f"{host.base_url}/api/items/42?a=1&b=two&a=3", data=b"payload", headers={"X-Test": "yes"}, timeout=5
    )
    assert r.status_code == 201
    assert r.headers["X-Item"] == "42"
    assert r.headers["Content-Type"] == "application/json"
    got = r.json()
    assert got["id"] == "42"
    assert got["method"] == "POST"
    assert got["query"] == {"a": "1,3", "b": "two"}
    assert got["body"] == "payload"
    assert got["header"] == "yes"
    assert got["url"] == f"{host.base_url}/api/items/42?a=1&b=two&a=3"


def test_literal_segments_are_case_insensitive_and_beat_parameters(start_host) -> None:
    host = start_host()
    assert requests.get(f"{host.base_url}/API/Items/7", timeout=5).json()["id"] == "7"
    r = requests.get(f"{host.base_url}/api/items/special", timeout=5)
    assert r.status_code == 200
    assert r.text == "literal route wins"


def test_constraint_method_and_unknown_paths_are_404(start_host) -> None:
    host = start_host()
    assert requests.get(f"{host.base_url}/api/items/abc", timeout=5).status_code == 404  # {id:int}
    assert requests.delete(f"{host.base_url}/api/items/1", timeout=5).status_code == 404  # GET/POST only
    assert requests.post(f"{host.base_url}/api/items/special", timeout=5).status_code == 404
    assert requests.get(f"{host.base_url}/api/nothing-here", timeout=5).status_code == 404
    assert requests.get(f"{host.base_url}/items/1", timeout=5).status_code == 404  # outside the prefix


def test_catch_all_default_route_async_and_context(start_host) -> None:
    host = start_host()
    assert requests.get(f"{host.base_url}/api/files/a/b/c.txt", timeout=5).text == "a/b/c.txt"
    assert requests.get(f"{host.base_url}/api/greeting", timeout=5).status_code == 200  # name as route
    assert requests.get(f"{host.base_url}/api/async/ann", timeout=5).text == "hello ann from async_hello"


def test_unhandled_exception_is_500(start_host) -> None:
    host = start_host()
    r = requests.get(f"{host.base_url}/api/boom", timeout=5)
    assert r.status_code == 500
    assert r.content == b""
    failed = [i for i in host.invocations if i.function == "boom"]
    assert failed and not failed[-1].succeeded and "the function failed" in str(failed[-1].error)


def test_admin_endpoint_runs_a_non_http_function(start_host, records: Records) -> None:
    host = start_host()
    r = requests.post(f"{host.base_url}/admin/functions/work", json={"input": '{"tag": "admin"}'}, timeout=5)
    assert r.status_code == 202
    got = wait_for(lambda: records("work"))
    assert got[0]["tag"] == "admin"
    assert requests.post(f"{host.base_url}/admin/functions/nope", json={}, timeout=5).status_code == 404
    assert requests.post(f"{host.base_url}/admin/functions/items", json={}, timeout=5).status_code == 400
