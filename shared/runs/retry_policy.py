"""How long to wait before the next step: polling cadence and retry backoff. Pure functions."""

from __future__ import annotations

import random
import sys

from shared.arm.operations import Retry
from shared.core.retry import backoff
from shared.core.settings import RetrySettings


def poll_delay(retry_after: int, retries: RetrySettings) -> int:
    """Never sooner than ARM's Retry-After; never sooner than POLL_MIN_SECONDS either, because a
    fleet polling every 10 s would spend the subscription's read budget (25/s) on nothing."""
    return max(retry_after, retries.poll_min_seconds)


def retry_delay(retry: Retry, attempt: int, retries: RetrySettings, rng: random.Random | None = None) -> int:
    """429 waits exactly what ARM said; 409 waits what ARM said or CONFLICT_RETRY_SECONDS;
    5xx and dropped connections back off exponentially (or wait ARM's hint when it gave one)."""
    if retry.kind == "throttled":
        return retry.retry_after if retry.retry_after is not None else retries.default_retry_after_seconds
    if retry.retry_after is not None:
        return retry.retry_after
    if retry.kind == "conflict":
        return retries.conflict_retry_seconds
    return backoff(attempt, retries, rng)


def retry_limit(retry: Retry, retries: RetrySettings) -> int:
    if retry.kind == "conflict":
        return retries.max_conflict_retries
    if retry.kind == "throttled":
        # Throttling is never a machine's failure: a 429 only delays it (the budget waits it out, see
        # shared/runs/pacing.py); its maintenance window or its operation's deadline may still end it.
        return sys.maxsize
    return retries.max_transient_retries
