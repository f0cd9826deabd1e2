"""Queue triggers against real Azurite: encoding, retries with visibility timeout, poison, batches,
competing hosts."""

from __future__ import annotations

import itertools
import json
import time

from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from tests.local_host.conftest import Records, wait_for


def _sender(settings: dict[str, str], queue: str | None = None, *, base64: bool = True) -> QueueClient:
    policy = TextBase64EncodePolicy() if base64 else None
    client = QueueClient.from_connection_string(
        settings["AzureWebJobsStorage"], queue or settings["WORK_QUEUE"], message_encode_policy=policy
    )
    return client


def _peek_all(client: QueueClient) -> list[str]:
    return [m.content for m in client.peek_messages(max_messages=32)]


def test_base64_message_is_delivered_and_deleted(start_host, settings, records: Records) -> None:
    host = start_host()  # creates the trigger queue
    sender = _sender(settings)
    sender.send_message(json.dumps({"tag": "hello"}))
    got = wait_for(lambda: records("work"))
    assert got[0]["tag"] == "hello"
    assert got[0]["dequeue_count"] == 1
    wait_for(lambda: host.invocations and host.invocations[-1].succeeded)
    wait_for(lambda: sender.get_queue_properties().approximate_message_count == 0)
    assert not _peek_all(_sender(settings))


def test_failing_message_retries_after_visibility_timeout_then_goes_to_poison(
    start_host, settings, records: Records
) -> None:
    start_host()
    body = json.dumps({"tag": "bad", "fail": True})
    _sender(settings).send_message(body)
    poison = _sender(settings, settings["WORK_QUEUE"] + "-poison", base64=False)
    wait_for(
        lambda: poison.get_queue_properties().approximate_message_count == 1 if _exists(poison) else False,
        timeout=15,
    )
    attempts = records("work")
    assert [a["dequeue_count"] for a in attempts] == [1, 2, 3]  # host.json maxDequeueCount 3
    gaps = [b["started"] - a["ended"] for a, b in itertools.pairwise(attempts)]
    assert all(g >= 0.9 for g in gaps), gaps  # visibilityTimeout 00:00:01 between attempts
    # the poison copy keeps the host's encoding: base64 of the original body
    import base64

    [stored] = _peek_all(poison)
    assert base64.b64decode(stored).decode() == body
    assert _sender(settings).get_queue_properties().approximate_message_count == 0


def _exists(client: QueueClient) -> bool:
    try:
        client.get_queue_properties()
    except Exception:
        return False
    return True


def test_message_that_is_not_base64_goes_to_poison_without_invocation(
    start_host, settings, caplog, records: Records
) -> None:
    host = start_host()
    raw = '{"tag": "plain text, not base64"}'
    _sender(settings, base64=False).send_message(raw)
    poison = _sender(settings, settings["WORK_QUEUE"] + "-poison", base64=False)
    wait_for(lambda: _exists(poison) and _peek_all(poison), timeout=10)
    assert _peek_all(poison) == [raw]  # moved as is, at the first attempt, like the host
    assert records("work") == []
    assert not [i for i in host.invocations if i.function == "work"]
    assert "TextBase64EncodePolicy" in caplog.text and "not valid base64" in caplog.text


def test_batch_runs_messages_concurrently(start_host, settings, records: Records) -> None:
    start_host()
    sender = _sender(settings)
    for i in range(4):  # batchSize 4
        sender.send_message(json.dumps({"tag": f"m{i}", "sleep": 1.0}))
    got = wait_for(lambda: len(records("work")) == 4 and records("work"), timeout=15)
    first_end = min(r["ended"] for r in got)
    overlapping = [r for r in got if r["started"] < first_end]
    assert len(overlapping) >= 3, got  # not one after another
    assert len({r["thread"] for r in got}) >= 3


def test_two_hosts_compete_and_each_message_runs_once(
    start_host, spawn_host, settings, records: Records
) -> None:
    start_host()
    spawn_host()
    sender = _sender(settings)
    tags = [f"m{i}" for i in range(24)]
    for tag in tags:
        sender.send_message(json.dumps({"tag": tag, "sleep": 0.2}))
    got = wait_for(lambda: len(records("work")) >= len(tags) and records("work"), timeout=20)
    time.sleep(0.5)  # would reveal a late duplicate
    got = records("work")
    assert sorted(r["tag"] for r in got) == sorted(tags)
    assert all(r["dequeue_count"] == 1 for r in got)
    assert len({r["pid"] for r in got}) == 2  # both hosts took part
