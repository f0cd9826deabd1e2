"""Exponential backoff with jitter, for every retry that is not ARM's to pace (5xx, dropped connections,
failed event deliveries). Pure."""

from __future__ import annotations

import math
import random

from shared.core.settings import RetrySettings


def backoff(attempt: int, retries: RetrySettings, rng: random.Random | None = None) -> int:
    """Exponential backoff with jitter: base·2^(attempt-1), capped, drawn from [cap/2, cap]."""
    cap = min(retries.retry_max_seconds, retries.retry_base_seconds * 2 ** max(0, attempt - 1))
    draw = (rng or random).uniform(cap / 2, cap)
    return max(1, math.ceil(draw))
