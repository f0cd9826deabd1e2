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
from azure.core import rest
from azure.core.pipeline import transport
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import _base as transport_base
from azure.core.rest import HttpRequest
from azure.core.rest import _helpers as rest_helpers

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
    """An upgrade fails here until its three functions are read again and the version added to VERIFIED."""
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


BODIES: list[Any] = [
    None,  # a DELETE
    b"",
    {"PartitionKey": "p", "RowKey": "\u00e9t\u00e9", "text": "two\nlines", "n": 1},  # JSON: escaped, one line
    "raw text\nwith a bare LF\rand a bare CR\r\nand CRLF\n",  # what email's generator rewrites to CRLF
    b"\x00\x7f control bytes",
    "From the start of a line\r\n--cs\r\n",  # mbox quoting and a boundary-like line: email leaves both
]


def _batch(module: Any, bodies: list[Any], *, changesets: int = 1, boundary: str | None = "batch_1",
           changeset_boundary: str = "changeset_{c}-9c1e6f0a-1b2c-4d5e-8f90", outside: bool = True) -> Any:
    """A Table-transaction-shaped request built from azure-core's `module` (rest or pipeline.transport)."""
    batch = module.HttpRequest("POST", "http://127.0.0.1:10002/devstoreaccount1/$batch")
    parts: list[Any] = []
    for c in range(changesets):
        ops = []
        for i, body in enumerate(bodies):
            url = f"http://127.0.0.1:10002/devstoreaccount1/t(PartitionKey='p',RowKey='{c}-{i}')"
            if body is None:
                ops.append(module.HttpRequest("DELETE", url, headers={"If-Match": "*"}))
            elif isinstance(body, dict):
                ops.append(module.HttpRequest("PATCH", url, headers={"Prefer": "return-no-content"}, json=body)
                           if module is rest else _transport_json(module, url, body))
            else:
                ops.append(module.HttpRequest("PUT", url, data=body) if module is not rest
                           else module.HttpRequest("PUT", url, content=body))
        changeset = module.HttpRequest("PATCH", "http://127.0.0.1:10002/devstoreaccount1/$batch")
        changeset.set_multipart_mixed(*ops, boundary=changeset_boundary.format(c=c))
        parts.append(changeset)
    if outside:
        parts.append(module.HttpRequest("GET", "http://127.0.0.1:10002/devstoreaccount1/t()"))  # a part outside
    batch.set_multipart_mixed(*parts, boundary=boundary)
    return batch


def _transport_json(module: Any, url: str, body: dict[str, Any]) -> Any:
    request = module.HttpRequest("PATCH", url, headers={"Prefer": "return-no-content"})
    request.set_json_body(body)
    return request


class Helpers:
    """Which body helper azure-core's requests call (the name their modules imported), and how often the copy
    handed a request back to the original."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.handed_back = 0
        original = serial_multipart._ORIGINAL_BODY_HELPER

        def counting(request: Any, content_index: int = 0) -> int:
            self.handed_back += 1
            return original(request, content_index)  # type: ignore[no-any-return]

        monkeypatch.setattr(serial_multipart, "_ORIGINAL_BODY_HELPER", counting)
        self.original = original

    def use(self, helper: Any) -> None:
        for module in serial_multipart.BODY_HELPER_CALLERS:
            self.monkeypatch.setattr(module, "_prepare_multipart_body_helper", helper)

    def theirs(self, request: Any, content_index: int = 0) -> int:
        """azure-core's own helper, at every level (a changeset's parts too)."""
        self.use(self.original)
        return self.original(request, content_index)  # type: ignore[no-any-return]

    def ours(self, request: Any, content_index: int = 0) -> int:
        """The copy at every level, counting what it hands back."""
        self.use(serial_multipart._prepare_body_directly)
        return serial_multipart._prepare_body_directly(request, content_index)


@pytest.fixture
def helpers(monkeypatch: pytest.MonkeyPatch) -> Helpers:
    return Helpers(monkeypatch)


@pytest.mark.parametrize("module", [rest, transport], ids=["rest", "pipeline.transport"])
@pytest.mark.parametrize("changesets", [1, 3])
def test_the_body_is_the_same_bytes_the_email_package_writes(helpers: Helpers, module: Any, changesets: int) -> None:
    """The copy against azure-core's own helper, on the same requests: body, Content-Type, next Content-ID; the
    copy wrote all of it (nothing handed back)."""
    theirs, ours = _batch(module, BODIES, changesets=changesets), _batch(module, BODIES, changesets=changesets)

    their_index = helpers.theirs(theirs, 5)
    our_index = helpers.ours(ours, 5)

    assert helpers.handed_back == 0
    assert our_index == their_index == 5 + changesets * len(BODIES) + 1
    assert ours.headers["Content-Type"] == theirs.headers["Content-Type"] == "multipart/mixed; boundary=batch_1"
    assert ours.body == theirs.body
    assert b"with a bare LF\r\nand a bare CR\r\n" in ours.body  # the case the copy must rewrite, as email does
    assert b"Content-ID: 5\r\n" in ours.body and f"Content-ID: {our_index - 2}\r\n".encode() in ours.body


@pytest.mark.parametrize("module", [rest, transport], ids=["rest", "pipeline.transport"])
def test_a_changeset_inside_a_changeset_is_the_same_bytes(helpers: Helpers, module: Any) -> None:
    def build() -> Any:
        inner = _batch(module, [b"a", None], boundary="changeset_inner", outside=False)
        outer = module.HttpRequest("POST", "http://127.0.0.1:10002/devstoreaccount1/$batch")
        outer.set_multipart_mixed(inner, module.HttpRequest("GET", "http://t/x"), boundary="batch_outer")
        return outer

    theirs, ours = build(), build()
    assert helpers.ours(ours) == helpers.theirs(theirs) == 3
    assert helpers.handed_back == 0
    assert ours.body == theirs.body


@pytest.mark.parametrize("boundary", ["batch_1 ", 'a"b', "a\\b", "=?utf-8?q?a?=", " ", '"q"', "b" * 71])
def test_a_boundary_email_would_change_is_left_to_it(helpers: Helpers, boundary: str) -> None:
    """email unquotes, strips, decodes or replaces these (sometimes wrongly): whatever it writes is written."""
    theirs, ours = _batch(rest, [b"x"], boundary=boundary), _batch(rest, [b"x"], boundary=boundary)
    helpers.theirs(theirs)

    helpers.ours(ours)

    assert helpers.handed_back == 1
    if not boundary.strip() or boundary == '"q"':  # email made one up: random, so only its shape compares
        assert ours.headers["Content-Type"].startswith("multipart/mixed; boundary===")
    else:
        assert ours.body == theirs.body


@pytest.mark.parametrize("module", [rest, transport], ids=["rest", "pipeline.transport"])
def test_no_parts_is_left_to_email_which_writes_an_empty_part(helpers: Helpers, module: Any) -> None:
    """`TableClient.submit_transaction([])` sends an empty changeset and relies on the service's 400 for it."""
    theirs, ours = _batch(module, [], outside=False), _batch(module, [], outside=False)
    helpers.theirs(theirs)

    helpers.ours(ours)

    assert helpers.handed_back == 1  # the empty changeset; the batch around it is the copy's
    assert ours.body == theirs.body
    assert b"--changeset_0-9c1e6f0a-1b2c-4d5e-8f90\r\n\r\n--changeset_0-9c1e6f0a-1b2c-4d5e-8f90--" in ours.body


@pytest.mark.parametrize("body", ["caf\u00e9".encode(), b"\xff\x85"])
def test_a_payload_outside_ascii_is_left_to_the_email_package_which_refuses_it_in_a_changeset(
        helpers: Helpers, body: bytes) -> None:
    with pytest.raises(UnicodeEncodeError):
        helpers.theirs(_batch(rest, [body]))
    with pytest.raises(UnicodeEncodeError):
        helpers.ours(_batch(rest, [body]))
    assert helpers.handed_back == 3  # the changeset; the batch, whose original prepares the changeset again


def test_a_batch_without_a_boundary_is_left_to_the_email_package(helpers: Helpers) -> None:
    """email makes a boundary up (one the payload does not contain): the copy does not try to."""
    request = _batch(rest, [b"x"], boundary=None)

    assert helpers.ours(request) == 2
    assert helpers.handed_back == 1
    assert request.headers["Content-Type"].startswith("multipart/mixed; boundary===")  # email's own


def test_the_body_copy_is_what_requests_use_once_installed() -> None:
    assert serial_multipart.install()
    request = _batch(rest, [b"x"])
    request.prepare_multipart_body()  # azure-core's entry point, as Pipeline.run calls it
    legacy = _batch(transport, [b"x"])
    legacy.prepare_multipart_body()

    assert rest_helpers._prepare_multipart_body_helper is serial_multipart._prepare_body_directly
    assert transport_base._prepare_multipart_body_helper is serial_multipart._prepare_body_directly
    assert request.content.startswith(b"--batch_1\r\nContent-Type: multipart/mixed; boundary=changeset_0")
    assert legacy.body == request.content
