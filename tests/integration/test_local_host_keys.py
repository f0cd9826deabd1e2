"""Function keys through the local host running function_app.py: a client starts a run and follows its
Location to the end (the async request-reply pattern), authenticating with `x-functions-key` sent again
on every GET (scripts, SDK clients), or with `?code=`, which the app carries over into the Location it
builds. The second is what a Logic App needs: its HTTP action re-applies only its `authentication`
property to the polling GETs, not custom headers (Azure/logicapps#611)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.integration.local_host_process import HostProcess
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import SimulatorConfig

KEY = "local-test-key"


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=3, seed=5)


@pytest.fixture
def host_settings(app_settings: dict[str, str]) -> dict[str, str]:
    return {**app_settings, "LOCAL_HOST_FUNCTION_KEYS": KEY}


def follow(url: str, headers: dict[str, str], timeout: float = 120) -> requests.Response:
    """GET the Location (with `headers`) until it is not 202, waiting Retry-After, as Logic Apps does."""
    deadline = time.monotonic() + timeout
    while True:
        resp = requests.get(url, headers=headers, timeout=10)
        if resp.status_code != 202:
            return resp
        assert time.monotonic() < deadline, "run still running"
        url = resp.headers["Location"]
        time.sleep(int(resp.headers["Retry-After"]))


def test_header_key_client_follows_the_run_to_its_end(host: HostProcess, simulator) -> None:
    body = {"machines": simulator.vm_ids(), "installPatches": INSTALL}
    assert requests.post(f"{host.base_url}/api/runs", json=body, timeout=30).status_code == 401
    headers = {"x-functions-key": KEY}
    resp = requests.post(f"{host.base_url}/api/runs", json=body, headers=headers, timeout=30)
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    assert "code" not in parse_qs(urlsplit(location).query)
    assert requests.get(location, timeout=10).status_code == 401  # the key is needed on every GET
    final = follow(location, headers)
    assert final.status_code == 200
    assert {m["state"] for m in final.json()["machines"]} == {"Completed"}


def test_code_query_client_follows_the_location_it_is_given(host: HostProcess, simulator) -> None:
    body = {"machines": simulator.vm_ids(), "installPatches": INSTALL}
    resp = requests.post(f"{host.base_url}/api/runs", params={"code": KEY}, json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    location = resp.headers["Location"]
    assert parse_qs(urlsplit(location).query)["code"] == [KEY]  # shared/http/responses.absolute_url
    final = follow(location, {})
    assert final.status_code == 200
    assert {m["state"] for m in final.json()["machines"]} == {"Completed"}


def test_openapi_document_is_served_without_a_key_and_names_this_host(host: HostProcess) -> None:
    from openapi_spec_validator import OpenAPIV2SpecValidator

    assert requests.get(f"{host.base_url}/api/runs", timeout=10).status_code == 401
    resp = requests.get(f"{host.base_url}/api/openapi.json", timeout=10)
    assert resp.status_code == 200, resp.text
    document = resp.json()
    OpenAPIV2SpecValidator(document).validate()
    assert document["host"] == urlsplit(host.base_url).netloc
    assert document["schemes"] == ["http"]  # a loopback host keeps the request's scheme
    assert KEY not in resp.text
