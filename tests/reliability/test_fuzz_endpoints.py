"""Every HTTP endpoint, fuzzed in-process with Hypothesis (a few hundred examples in all): valid requests
built from the shapes the validation code accepts, and mutations of them. For each request:

- an answer within REQUEST_TIMEOUT (no hang);
- never a 5xx (harness.KNOWN_BUGS, empty now, would list a pending one);
- a 4xx in ARM's error shape, with nothing written: every Table entity (key and ETag) and every queue's
  message count are the same after the request as before;
- a request valid by construction is accepted (2xx; 404/409 only for a missing configuration or a key).

Seeds are fixed (RELIABILITY_SEED overrides) and printed with any failure, so it can be replayed.
The full run with thousands of examples is `make chaos` (benchmarks/chaos.py).
"""

from __future__ import annotations

import os

import pytest

from tests.reliability.conftest import CONFIG_NAME, FuzzApp
from tests.reliability.fuzz import DEFAULT_SEED, fuzz
from tests.reliability.harness import ENDPOINTS, Tally

SEED = int(os.environ.get("RELIABILITY_SEED", DEFAULT_SEED))
BODY_ENDPOINTS = [e.name for e in ENDPOINTS if e.body]
OTHER_ENDPOINTS = [e.name for e in ENDPOINTS if not e.body]


def report(tally: Tally, seed: int) -> str:
    lines = [f"seed {seed} (replay: RELIABILITY_SEED={seed}); {tally.tried} requests, statuses {tally.by_status}"]
    for title, items in (("5xx not known", tally.unknown), ("hangs", tally.hangs),
                         ("wrote on a refused request", tally.wrote_on_refusal),
                         ("4xx not in ARM's error shape", tally.bad_error_shape),
                         ("valid request refused", tally.valid_refused)):
        if items:
            lines.append(f"--- {title}: {len(items)}; first ones:")
            lines += items[:3]
    return "\n".join(lines)


@pytest.mark.parametrize(("endpoints", "examples"), [
    pytest.param(["create_run"], 90, id="runs"),
    pytest.param(["create_assessment"], 40, id="assessments"),
    pytest.param(["put_configuration"], 80, id="configurations"),
    pytest.param(["put_assignment"], 40, id="assignments"),
    pytest.param(OTHER_ENDPOINTS, 80, id="reads-deletes-actions"),
])
def test_endpoint_never_5xx_never_hangs_and_writes_nothing_when_refusing(fuzz_app: FuzzApp, endpoints: list[str],
                                                                         examples: int) -> None:
    tally = fuzz(endpoints, examples=examples, seed=SEED, probe=fuzz_app.probe, config_name=CONFIG_NAME,
                 known=fuzz_app.known)
    assert tally.tried == examples
    assert not tally.problems(), report(tally, SEED)
    # The fuzzer reached both sides: requests accepted and requests refused.
    accepted = sum(n for s, n in tally.by_status.items() if s.startswith("2"))
    refused = sum(n for s, n in tally.by_status.items() if s.startswith("4"))
    assert refused > 0, report(tally, SEED)
    if set(endpoints) <= set(BODY_ENDPOINTS):
        assert accepted > 0, report(tally, SEED)
