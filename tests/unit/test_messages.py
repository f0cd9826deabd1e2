"""Every queue message contract round-trips through its own encode and parse (shared/core/messages.py),
and a malformed body is refused, never half-read."""

from __future__ import annotations

import json

import pytest

from shared.core.messages import (
    BadMessageError,
    DiscoveryMessage,
    DispatchMessage,
    PollRoundMessage,
    StepMessage,
    encode_delivery,
    parse_delivery,
    parse_discovery,
    parse_dispatch,
    parse_poll,
    parse_step,
)

RUN = "e5dd4c8afe8-fcad69ec"


def test_each_message_round_trips() -> None:
    step = StepMessage(RUN, "5b4b650e-28b9-4790-b3ab-ddbd88d727c4|rg|vm", 3)
    assert parse_step(step.encode()) == step
    for dispatch in (DispatchMessage(RUN), DispatchMessage(RUN, advance=True)):
        assert parse_dispatch(dispatch.encode()) == dispatch
    page = DiscoveryMessage(RUN, 2, 7)
    assert parse_discovery(page.encode()) == page
    for delivery in ({"kind": "event", "url": "https://example.com/hook", "body": {"a": 1}, "attempt": 2},
                     {"kind": "prehook", "runId": RUN}):
        assert parse_delivery(encode_delivery(delivery)) == delivery


@pytest.mark.parametrize(("parse", "body"), [
    (parse_step, '{"runId": "x", "machine": "a|b|c", "seq": 0}'),
    (parse_step, f'{{"runId": "{RUN}", "machine": "a|b", "seq": 0}}'),
    (parse_step, f'{{"runId": "{RUN}", "machine": "a|b|c", "seq": true}}'),
    (parse_step, f'{{"runId": "{RUN}\\n", "machine": "a|b|c", "seq": 0}}'),
    (parse_discovery, f'{{"runId": "{RUN}", "scope": -1, "page": 0}}'),
    (parse_dispatch, "not json"),
    (parse_delivery, '{"kind": "event"}'),
    (parse_delivery, '{"kind": "prehook"}'),
    (parse_delivery, '{"kind": "other", "url": "https://x"}'),
])
def test_malformed_bodies_are_refused(parse: object, body: str) -> None:
    with pytest.raises(BadMessageError):
        parse(body)  # type: ignore[operator]


def test_a_release_message_round_trips_and_a_bad_time_is_refused() -> None:
    from shared.core.messages import BadMessageError, DispatchMessage, parse_dispatch
    msg = DispatchMessage("e5dd42558ba-5a95fcef", release_from="2026-11-30T09:48:03.738423Z")
    assert parse_dispatch(msg.encode()) == msg
    for bad in ("2026-11-30T09:48:03Z", "2026-11-30 09:48:03.738423Z", "x" * 100, "2026-02-30T00:00:00.000000Z"):
        body = msg.encode().replace("2026-11-30T09:48:03.738423Z", bad)
        with pytest.raises(BadMessageError):
            parse_dispatch(body)


def test_a_poll_round_names_its_subscription_and_an_older_one_the_whole_run() -> None:
    sub = "5b4b650e-28b9-4790-b3ab-ddbd88d727c4"
    for message in (PollRoundMessage(RUN, 4, sub), PollRoundMessage(RUN, 0)):
        assert parse_poll(message.encode()) == message
    assert parse_poll(f'{{"runId":"{RUN}","round":4}}') == PollRoundMessage(RUN, 4, "")  # queued before chains
    step = StepMessage(RUN, f"{sub}|rg|vm", 3)
    assert parse_poll(step.encode()) == step  # the polls queue also carries steps
    for bad in (sub.upper(), "sub-1", f"{sub}|rg", 7):  # not as machine keys hold it: not a chain's row key
        with pytest.raises(BadMessageError):
            parse_poll(json.dumps({"runId": RUN, "round": 4, "subscription": bad}))
