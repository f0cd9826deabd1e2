"""Table transactions without azure-core's per-call thread pools, their bodies written without the email package.

What azure-core 1.41.0 does (azure/core/pipeline/_base.py `Pipeline._prepare_multipart_mixed_request`,
azure/core/utils/_pipeline_transport_rest_shared.py `_parts_helper`): before a multipart/mixed request is sent
it runs the part policies' `on_request` on every part inside a new `concurrent.futures.ThreadPoolExecutor`,
recursively (a Table transaction is a batch holding one changeset holding the operations: two pools), and
after the answer it runs their `on_response` inside another new pool. Each pool starts its threads on first
use, and `ThreadPoolExecutor.submit` starts a thread while holding `concurrent.futures.thread`'s process-wide
`_global_shutdown_lock`, waiting until the new thread has started. So a two-operation transaction (the machine
step's shape) starts three threads (benchmarks/table_transactions.py counts them), one at a time across the whole
process, and under a busy GIL each start waits for the GIL to be handed over. The machine step submits about
five transactions a machine (docs/performance.md), from every worker thread at once.

Measured (`python -m benchmarks.table_transactions`, two-operation transactions against Azurite on the
2-core development machine): see docs/performance.md, session 25. The policies the Tables SDK gives the parts
(`StorageHeadersPolicy`) only set headers, so running them one after another in the calling thread is the same
work without the threads. A failing policy raises the first failing part's exception, as `executor.map` does;
the copy stops there, where the pool had run the other parts' policies too (headers on a request then not sent).

The body of the request (`_prepare_multipart_body_helper`) is built by flattening an `email.message.Message`,
which costs more than the rest of the transaction's preparation (benchmarks/table_transactions.py: 3.9 CPU ms a
two-operation transaction with it, 2.4 with the body written directly): `_prepare_body_directly` writes the same bytes
(its docstring says which, and when it leaves the work to the original).

`install()` replaces those functions with copies: serial, and without email for the body. It patches a library's
private functions, done only for the azure-core versions whose code was read and tested (`VERIFIED`): any
other version is left as it is, with a warning in the log, so an upgrade is never silently patched with code
written for an older one (tests/unit/test_serial_multipart.py fails on a new version until it is checked and
added). Why not the library as it is: it halves the Table transactions one thread can send. Why
not our own $batch code: the SDK's serialization and its error mapping (`TableTransactionError.index`, which
the run store reads) stay the SDK's. To be reported upstream (Azure/azure-sdk-for-python, azure-core).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import azure.core
from azure.core.pipeline import PipelineContext, PipelineRequest, PipelineResponse
from azure.core.pipeline import _base as pipeline_base
from azure.core.pipeline._tools import await_result
from azure.core.pipeline.transport import _base as transport_base
from azure.core.rest import _helpers as rest_helpers
from azure.core.rest import _http_response_impl as rest_response
from azure.core.utils import _pipeline_transport_rest_shared as shared_helpers

log = logging.getLogger(__name__)

VERIFIED = frozenset({"1.41.0"})  # azure-core versions whose three functions were read and match these copies

_lock = threading.Lock()
_ORIGINAL_BODY_HELPER = shared_helpers._prepare_multipart_body_helper
BODY_HELPER_CALLERS = (rest_helpers, transport_base)  # where the original is imported by name and called


def _prepare_serially(request: Any) -> None:
    """`Pipeline._prepare_multipart_mixed_request` of azure-core 1.41.0, the parts in order in this thread."""
    info = request.multipart_mixed_info
    if not info:
        return
    requests, policies, pipeline_options = info[0], info[1], info[3]
    for part in requests:
        if part.multipart_mixed_info:
            _prepare_serially(part)  # a changeset's own parts
        pipeline_request = PipelineRequest(part, PipelineContext(None, **pipeline_options))
        for policy in policies:
            await_result(policy.on_request, pipeline_request)


def _parts_serially(response: Any) -> Iterator[Any]:
    """`_parts_helper` of azure-core 1.41.0, the parts' `on_response` in order in this thread."""
    if not response.content_type or not response.content_type.startswith("multipart/mixed"):
        raise ValueError("You can't get parts if the response is not multipart/mixed")
    responses = response._get_raw_parts()
    if response.request.multipart_mixed_info:
        policies = response.request.multipart_mixed_info[1]
        for part in responses:
            context = PipelineContext(None)
            pipeline_request = PipelineRequest(part.request, context)
            pipeline_response = PipelineResponse(part.request, part, context=context)
            for policy in policies:
                await_result(policy.on_response, pipeline_request, pipeline_response)
    return responses  # type: ignore[no-any-return]


_LINE_END = re.compile(rb"\r\n|\r|\n")  # email's NLCRE: the line ends its generator rewrites
_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*")  # printable ASCII: a part's header written back as given
# What the Tables SDK uses (batch_<uuid4>, changeset_<uuid4>) and email keeps as it is: no quoting, spaces or
# encoded words, which email's set_boundary/get_boundary would unquote, strip, decode or replace.
_BOUNDARY = re.compile(r"[0-9A-Za-z_.\-]{1,70}")


def _prepare_body_directly(http_request: Any, content_index: int = 0) -> int:
    """`_prepare_multipart_body_helper` of azure-core 1.41.0 without the email package: the same bytes.

    The original builds the body as an `email.message.Message` and flattens it with `email.policy.HTTP`
    (email's generator, and its header registry parsing the Content-Type and Content-Transfer-Encoding headers
    it looks up: 10 % of the host's GIL time in the four-subscription benchmark, docs/performance.md session
    26). Its output for the parts azure-core gives it is: per part, `--boundary`, the part's headers, a blank
    line, the payload, CRLF; then `--boundary--` and CRLF. An operation's payload has every bare CR or LF
    written as CRLF (the generator rewrites line ends); a changeset's is written as it is, and is all CRLF
    already, so the same rewrite leaves it unchanged. Header values are written as given when they are
    printable ASCII. Anything else goes to the original, so the copy only ever writes what it would:
    a boundary that is not `_BOUNDARY` (none set, and email makes one up; quoted, spaced or encoded, and email
    changes it), no parts (email writes an empty part), a changeset's Content-Type outside printable ASCII,
    a payload with bytes outside ASCII (email raises UnicodeEncodeError on those inside a changeset; the
    Tables SDK's JSON is ASCII, non-ASCII characters escaped).
    tests/unit/test_serial_multipart.py compares the two on the same requests."""
    info = http_request.multipart_mixed_info
    if not info:
        return 0
    requests, boundary = info[0], info[2]
    if not requests or not isinstance(boundary, str) or not _BOUNDARY.fullmatch(boundary):
        return _ORIGINAL_BODY_HELPER(http_request, content_index)
    start = content_index
    chunks: list[bytes] = []
    for req in requests:
        if req.multipart_mixed_info:
            content_index = req.prepare_multipart_body(content_index=content_index)
            content_type = req.headers["Content-Type"]
            if not _PLAIN_HEADER.fullmatch(content_type):
                return _ORIGINAL_BODY_HELPER(http_request, start)
            headers = f"Content-Type: {content_type}\r\n"
            payload = req.serialize()
            payload = payload[payload.index(b"--"):]  # as the original: without the HTTP/1.1 line and its headers
        else:
            headers = ("Content-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
                       f"Content-ID: {content_index}\r\n")
            payload = req.serialize()
            content_index += 1
        if not payload.isascii():  # email writes these, or refuses them inside a changeset: its call
            return _ORIGINAL_BODY_HELPER(http_request, start)
        chunks.append(b"--%s\r\n%s\r\n%s\r\n" % (boundary.encode("ascii"), headers.encode("ascii"),
                                                    _LINE_END.sub(b"\r\n", payload)))
    chunks.append(b"--%s--\r\n" % boundary.encode("ascii"))
    http_request.set_bytes_body(b"".join(chunks))
    http_request.headers["Content-Type"] = "multipart/mixed; boundary=" + boundary
    return content_index


def install(version: str | None = None) -> bool:
    """Use the serial copies in this process if azure-core's `version` is in VERIFIED; returns whether they
    are in use. `version` is for tests: the app passes nothing, and the imported azure-core's is checked. Logs a
    warning when the version is not verified. Idempotent and thread-safe; the copies are looked up at each call,
    so clients built before it use them too. The composition root calls it once per process."""
    version = azure.core.__version__ if version is None else version
    if version not in VERIFIED:
        log.warning("azure-core %s is not one of %s: Table transactions keep its per-call thread pools "
                    "(shared/storage/serial_multipart.py)", version, ", ".join(sorted(VERIFIED)))
        return False
    with _lock:
        if pipeline_base.Pipeline._prepare_multipart_mixed_request is not _prepare_serially:
            pipeline_base.Pipeline._prepare_multipart_mixed_request = staticmethod(  # type: ignore[method-assign]
                _prepare_serially)
            for module in (shared_helpers, rest_response, transport_base):
                module._parts_helper = _parts_serially  # type: ignore[attr-defined]
            for module in BODY_HELPER_CALLERS:
                module._prepare_multipart_body_helper = _prepare_body_directly  # type: ignore[attr-defined]
    return True
