"""Run the endpoint fuzzer for a number of examples with a fixed seed, tallying what it finds.

Used by the fast tests (a few hundred examples) and by benchmarks/chaos.py (thousands). Problems are
tallied, not raised, so one run reports every kind of failure with a reproducer; the caller decides.
Replay: the same seed, endpoints and example count give the same requests (Hypothesis' `seed`).
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

from tests.reliability.harness import REQUEST_TIMEOUT, Sender, StorageProbe, Tally, call, check
from tests.reliability.strategies import requests_for

DEFAULT_SEED = 20261130


def fuzz(endpoints: Sequence[str], *, examples: int, seed: int, probe: StorageProbe | None, config_name: str,
         known: dict[str, list[str]] | None = None, tally: Tally | None = None,
         timeout: float = REQUEST_TIMEOUT, send: Sender = call) -> Tally:
    tally = tally or Tally()
    strategy = st.sampled_from(list(endpoints)).flatmap(lambda name: requests_for(name, config_name, known))

    @hypothesis_seed(seed)
    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(item: tuple[object, bool]) -> None:
        request, valid = item
        check(request, probe, tally, valid=valid, timeout=timeout, send=send)  # type: ignore[arg-type]

    one()
    return tally
