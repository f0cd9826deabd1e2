"""Table transactions without azure-core's two thread pools per call.

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

`install()` replaces those two functions with serial copies of the same code. It is a patch of a library's
private functions, done only for the azure-core versions whose code was read and tested (`VERIFIED`): any
other version is left as it is, with a warning in the log, so an upgrade is never silently patched with code
written for an older one (tests/unit/test_serial_multipart.py fails on a new version until it is checked and
added). Why not the library as it is: it halves the Table transactions one thread can send. Why
not our own $batch code: the SDK's serialization and its error mapping (`TableTransactionError.index`, which
the run store reads) stay the SDK's. To be reported upstream (Azure/azure-sdk-for-python, azure-core).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import azure.core
from azure.core.pipeline import PipelineContext, PipelineRequest, PipelineResponse
from azure.core.pipeline import _base as pipeline_base
from azure.core.pipeline._tools import await_result
from azure.core.pipeline.transport import _base as transport_base
from azure.core.rest import _http_response_impl as rest_response
from azure.core.utils import _pipeline_transport_rest_shared as shared_helpers

log = logging.getLogger(__name__)

VERIFIED = frozenset({"1.41.0"})  # azure-core versions whose two functions were read and match these copies

_lock = threading.Lock()


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
    return True
