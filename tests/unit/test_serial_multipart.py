"""The serial copies of azure-core's multipart functions (shared/storage/serial_multipart.py) do what the
originals do, part by part in the calling thread: every part's policies, a changeset's parts first, the
pipeline options passed on, the first failure raised. Their Table transactions on Azurite:
tests/integration/test_serial_multipart.py."""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

import azure.core
import pytest
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.rest import HttpRequest

from shared.storage import serial_multipart


class Recording(SansIOHTTPPolicy):  # type: ignore[type-arg]
    def __init__(self, fail_on: str | None = None) -> None:
        self.requests: list[tuple[str, dict[str, Any], str]] = []
        self.responses: list[str] = []
        self.fail_on = fail_on

    def on_request(self, request: Any) -> None:
        url = request.http_request.url
        self.requests.append((url, dict(request.context.options), threading.current_thread().name))
        if url == self.fail_on:
            raise RuntimeError(f"refused {url}")

    def on_response(self, request: Any, response: Any) -> None:
        self.responses.append(response.http_response.status)


def _transaction(policy: Recording, *urls: str) -> HttpRequest:
    changeset = HttpRequest("POST", "")
    changeset.set_multipart_mixed(*(HttpRequest("PUT", u) for u in urls), policies=[policy], boundary="cs")
    batch = HttpRequest("POST", "http://127.0.0.1/$batch")
    batch.set_multipart_mixed(changeset, policies=[policy], enforce_https=False, boundary="batch")
    return batch


def test_the_installed_azure_core_is_one_whose_code_was_checked() -> None:
    """An upgrade fails here until its two functions are read again and the version added to VERIFIED."""
    assert azure.core.__version__ in serial_multipart.VERIFIED


def test_every_part_gets_its_policies_in_order_in_the_calling_thread_with_the_options() -> None:
    policy = Recording()

    serial_multipart._prepare_serially(_transaction(policy, "http://t/a", "http://t/b"))

    me = threading.current_thread().name
    assert policy.requests == [("http://t/a", {}, me), ("http://t/b", {}, me),  # the changeset's parts first
                               ("", {"enforce_https": False}, me)]  # then the changeset, with the batch's options


def test_a_failing_policy_raises_the_first_failing_parts_exception() -> None:
    policy = Recording(fail_on="http://t/b")

    with pytest.raises(RuntimeError, match="refused http://t/b"):
        serial_multipart._prepare_serially(_transaction(policy, "http://t/a", "http://t/b", "http://t/c"))


def test_a_request_without_parts_is_left_alone() -> None:
    serial_multipart._prepare_serially(HttpRequest("GET", "http://t/a"))  # no multipart_mixed_info: nothing to do


def test_every_answered_part_gets_its_policies_on_response() -> None:
    policy = Recording()
    parts = [SimpleNamespace(request=HttpRequest("PUT", f"http://t/{name}"), status=status)
             for name, status in (("a", 204), ("b", 412))]
    response = SimpleNamespace(content_type="multipart/mixed; boundary=b", _get_raw_parts=lambda: parts,
                               request=SimpleNamespace(multipart_mixed_info=([], [policy], "b", {})))

    assert serial_multipart._parts_serially(response) is parts
    assert policy.responses == [204, 412]


def test_parts_of_a_response_that_is_not_multipart_is_an_error() -> None:
    response = SimpleNamespace(content_type="application/json")
    with pytest.raises(ValueError, match="not multipart/mixed"):
        serial_multipart._parts_serially(response)


def test_an_unchecked_version_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=serial_multipart.__name__):
        assert serial_multipart.install(version="99.0.0") is False
    assert "azure-core 99.0.0 is not one of" in caplog.text
