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


# A prediction from the machine's own installations or its OS peers' (shared/runs/predictions.py); not "default"
# (no information) nor "plan" (a plan's own prediction may itself be the default).
INFORMED_BASES = frozenset({"machine", "peers"})
FIRST_POLL_SHARE = 0.9  # the first poll at this share of the predicted duration


def first_poll_delay(retry_after: int, retries: RetrySettings, *, predicted_seconds: float | None,
                     basis: str | None, deadline_seconds: float) -> int:
    """Seconds from an accepted installPatches to its first poll: `poll_delay`, or, when the installation's
    duration is predicted from history (`basis` in INFORMED_BASES), 90% of the prediction if that is later,
    never past the operation's deadline (`deadline_seconds` from now).

    Polling later than ARM's Retry-After is allowed (it is a minimum, RFC 9110 §10.2.3); polling a 40-minute
    installation every minute spends about 40 reads and queue messages to learn one thing. The recorded
    durations run from the accepted POST to the poll that saw the end, so a prediction that comes too late
    shrinks by 10% per installation until the first poll falls before the end again (install_history.py)."""
    delay = poll_delay(retry_after, retries)
    if predicted_seconds and predicted_seconds > 0 and basis in INFORMED_BASES:
        delay = max(delay, min(int(predicted_seconds * FIRST_POLL_SHARE), int(deadline_seconds)))
    return delay


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
