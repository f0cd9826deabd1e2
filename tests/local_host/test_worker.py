"""The Python worker's one sync thread pool, and the host's functionTimeout with its worker restart.

Functions are held on the sample app's GATE (an Event in the in-process host's copy of the app), so
what waits for a pool thread is decided by the pool's size, not by timing.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tests.local_host.conftest import Records, set_host_json, wait_for
from tools.local_host import invoker
from tools.local_host.invoker import FunctionTimeoutError, sync_pool_size


def _sender(settings: dict[str, str]) -> QueueClient:
    return QueueClient.from_connection_string(
        settings["AzureWebJobsStorage"], settings["WORK_QUEUE"], message_encode_policy=TextBase64EncodePolicy()
    )


def test_pool_size_setting_and_its_default() -> None:
    # azure_functions_worker/dispatcher.py _get_sync_tp_max_workers: unset or invalid -> None on 3.9+
    assert sync_pool_size({}) is None
    assert sync_pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "abc"}) is None
    assert sync_pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "0"}) is None
    assert sync_pool_size({"PYTHON_THREADPOOL_THREAD_COUNT": "7"}) == 7


def test_unset_thread_count_gives_pythons_default_pool(start_host, monkeypatch) -> None:
    monkeypatch.delenv("PYTHON_THREADPOOL_THREAD_COUNT", raising=False)
    host = start_host()
    assert host.invoker.worker.max_workers == min(32, (os.cpu_count() or 1) + 4)


def test_sync_functions_of_every_trigger_share_one_pool(
    start_host, settings, records: Records, monkeypatch
) -> None:
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "2")
    host = start_host()
    assert host.invoker.worker.max_workers == 2
    with ThreadPoolExecutor(3) as pool:
        held = [pool.submit(requests.get, f"{host.base_url}/api/hold/h{i}", timeout=30) for i in range(2)]
        wait_for(lambda: len(records("hold_start")) == 2)
        # both threads are taken: a queue message and a timer are dispatched but must wait
        _sender(settings).send_message(json.dumps({"tag": "queued"}))
        timer = pool.submit(host.trigger_timer, "tick")
        wait_for(lambda: len(host.invoker.worker.executing) == 4, timeout=15)
        time.sleep(0.5)  # room for a wrongly started function to show up
        assert records("work") == [] and records("tick") == []
        host.app_module.GATE.set()
        assert all(r.result().status_code == 200 for r in held)
        assert timer.result().succeeded
    got = wait_for(lambda: records("work"))
    threads = {r["thread"] for r in [*records("hold_end"), *got, *records("tick")]}
    assert len(threads) <= 2, threads


@pytest.fixture
def two_second_timeout(app_dir: Path, monkeypatch) -> None:
    set_host_json(app_dir, functionTimeout="00:00:02")
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "1")


@pytest.mark.usefixtures("two_second_timeout")
def test_timeout_counts_from_dispatch_and_restarts_the_worker(start_host, records: Records) -> None:
    host = start_host()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.get, f"{host.base_url}/api/hold/a", timeout=30)
        wait_for(lambda: records("hold_start"))
        # 'b' waits for the only pool thread all along: that wait counts against its timeout
        second = pool.submit(requests.get, f"{host.base_url}/api/hold/b", timeout=30)
        assert first.result().status_code == 500
        assert second.result().status_code == 500
    assert [r["tag"] for r in records("hold_start")] == ["a"]
    failed = [i for i in host.invocations if i.function == "hold_http"]
    assert len(failed) == 2
    assert all(isinstance(i.error, FunctionTimeoutError) for i in failed)
    assert "Timeout value of 00:00:02 was exceeded by function: Functions.hold_http" in str(failed[0].error)
    assert host.invoker.worker_restarts == 1
    # the restarted worker serves at once, though 'a' still sits in the old one
    assert requests.get(f"{host.base_url}/api/items/1", timeout=10).status_code == 200
    host.app_module.GATE.set()
    # the old worker's function does not go on: the restart stopped it
    [stopped] = wait_for(lambda: records("hold_stopped"))
    assert stopped == {**stopped, "tag": "a", "error": "WorkerProcessExit"}
    assert records("hold_end") == []


def test_restart_loses_the_other_invocations_of_the_worker(
    start_host, app_dir: Path, records: Records, monkeypatch
) -> None:
    set_host_json(app_dir, functionTimeout="00:00:02")
    monkeypatch.setenv("PYTHON_THREADPOOL_THREAD_COUNT", "2")
    host = start_host()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(requests.get, f"{host.base_url}/api/hold/a", timeout=30)
        # 'a' has timed out; the host now waits its 2 s grace period before restarting the worker
        wait_for(lambda: [i for i in host.invocations if i.function == "hold_http"], timeout=10)
        second = pool.submit(requests.get, f"{host.base_url}/api/hold/b", timeout=30)
        wait_for(lambda: len(records("hold_start")) == 2)
        assert first.result().status_code == 500
        # the restart drops 'b' without an answer: it fails when its own timeout passes
        assert second.result().status_code == 500
    assert host.invoker.worker_restarts == 1
    b = [i for i in host.invocations if i.function == "hold_http"][-1]
    assert isinstance(b.error, FunctionTimeoutError)
    host.app_module.GATE.set()
    stopped = wait_for(lambda: len(records("hold_stopped")) == 2 and records("hold_stopped"))
    assert {(r["tag"], r["error"]) for r in stopped} == {("a", "WorkerProcessExit"), ("b", "WorkerProcessExit")}
    assert records("hold_end") == []


@pytest.mark.usefixtures("two_second_timeout")
@pytest.mark.parametrize("slow_kill", [False, True], ids=["kill", "slow-kill"])
def test_timed_out_queue_message_is_released_and_retried(
    start_host, settings, records: Records, monkeypatch, slow_kill: bool
) -> None:
    if slow_kill:  # a restart seen before its kill() is done would let the gate free the old invocation (CI's race)
        kill = invoker._Worker.kill
        monkeypatch.setattr(invoker._Worker, "kill", lambda worker: (time.sleep(0.5), kill(worker))[1])
    host = start_host()
    _sender(settings).send_message(json.dumps({"tag": "slow", "hold": True}))
    wait_for(lambda: host.invoker.worker_restarts == 1, timeout=15)
    host.app_module.GATE.set()
    # released as a failure (visibilityTimeout 1 s), delivered again to the new worker
    [done] = wait_for(lambda: records("work"), timeout=15)
    assert done["dequeue_count"] == 2
    assert [r["error"] for r in wait_for(lambda: records("work_stopped"))] == ["WorkerProcessExit"]
    first = next(i for i in host.invocations if i.function == "work")
    assert isinstance(first.error, FunctionTimeoutError)
    wait_for(lambda: _sender(settings).get_queue_properties().approximate_message_count == 0)


def test_function_answering_within_the_grace_period_fails_without_a_restart(
    start_host, app_dir: Path, records: Records
) -> None:
    set_host_json(app_dir, functionTimeout="00:00:01")
    host = start_host()
    # 1.5 s: past the 1 s timeout, inside the host's 2 s grace period for the worker's answer
    r = requests.get(f"{host.base_url}/api/hold/late?sleep=1.5", timeout=10)
    assert r.status_code == 500
    assert isinstance(host.invocations[-1].error, FunctionTimeoutError)
    assert host.invoker.worker_restarts == 0
    assert [x["tag"] for x in records("hold_end")] == ["late"]
