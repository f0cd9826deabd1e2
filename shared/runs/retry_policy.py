"""How long to wait before the next step: polling cadence and retry backoff. Pure functions."""

from __future__ import annotations

import random
import sys

from shared.arm.operations import Retry
from shared.core.retry import backoff
from shared.core.settings import RetrySettings


def poll_delay(retry_after: int, retries: RetrySettings, *, spacing: float = 0.0,
               ends_in_seconds: float | None = None) -> int:
    """Never sooner than ARM's Retry-After; never sooner than POLL_MIN_SECONDS either, because a
    fleet polling every 10 s would spend the subscription's read budget (25/s) on nothing.

    `spacing` (seconds, shared/runs/pacing.py Pacer.spacing: the subscription's polls have been finding their
    share of ARM's reads spent) is added in whole seconds, but only up to one Retry-After before
    `ends_in_seconds` (the operation's deadline, from now), as first_poll_delay does: a poll that came at the
    deadline would time the operation out without asking ARM, so the last stretch is polled as without spacing.
    Retry-After is a minimum (RFC 9110 §10.2.3); a poll the budget cannot serve sooner is as late either way,
    and asked for later it is made once instead of found unserved and paced (a message of its own, holding a
    token, where a poll left to its run's poll rounds would have taken none: shared/runs/poll_rounds.py)."""
    delay = max(retry_after, retries.poll_min_seconds)
    room = float("inf") if ends_in_seconds is None else ends_in_seconds - 2 * delay
    return delay + int(max(0.0, min(spacing, room)))


FIRST_POLL_SHARE = 0.9  # the first poll at this share of the machine's shortest recorded installation


def first_poll_delay(retry_after: int, retries: RetrySettings, *, shortest_seconds: float | None,
                     ends_in_seconds: float) -> int:
    """Seconds from an accepted installPatches to its first poll: `poll_delay`, or, when the machine has a
    history of its own (`shortest_seconds`: its shortest recorded installation, shared/runs/predictions.py), 90%
    of that if later. Never later than one Retry-After before `ends_in_seconds` (the sooner of the operation's
    deadline and its maintenance window's end, from now), so the end is polled before the step would time out.
    The caller uses it only where nothing waits on an early end: no rollout, no health check.

    Polling later than ARM's Retry-After is allowed (it is a minimum: RFC 9110 §10.2.3); polling a 40-minute
    installation every minute spends 40 reads and queue messages to learn one thing. Why the shortest, not the
    prediction: a duration is recorded from the accepted POST to the poll that saw the end, so an installation
    that ended before its first poll is recorded at that poll (90% of the shortest), which becomes the new
    shortest: the first poll comes 10% sooner after each such installation until it falls before the end
    again, and it never drifts later (a median would: install_history.py). For a machine with no history the
    caller may pass the run's early ends instead (shared/runs/run_durations.py): a quantile, which can move later
    as the run's longer installations end."""
    delay = poll_delay(retry_after, retries)
    if shortest_seconds and shortest_seconds > 0:
        latest = int(ends_in_seconds) - delay
        delay = max(delay, min(int(shortest_seconds * FIRST_POLL_SHARE), latest))
    return delay


LATER_POLL_CAP = 4  # a later poll waits at most this many of its Retry-After (poll_delay) for the run's ends


def later_poll_delay(retry_after: int, retries: RetrySettings, *, later_seconds: float | None, spacing: float = 0.0,
                     ends_in_seconds: float | None = None) -> int:
    """Seconds until the next poll of an installation a poll has just found running: `poll_delay`, or, when the
    run's installations that ran longer say so (`later_seconds`: shared/runs/run_durations.py `later_end`, the
    wait until half of them had ended), that wait if longer, capped at LATER_POLL_CAP times `poll_delay`'s
    Retry-After part, so an end is seen at most that late. Never later than one Retry-After before
    `ends_in_seconds` (the sooner of the operation's deadline and its maintenance window's end, from now), as
    `first_poll_delay`. The caller uses it only where nothing waits on an early end (no rollout, no health
    check). Retry-After is a minimum (RFC 9110 §10.2.3): polling later is allowed, and a fleet's first run
    (no machine has a history) otherwise polls every installation at every Retry-After to its end. With a
    Retry-After of 0 and no POLL_MIN_SECONDS there is nothing to scale the cap by, and it is `poll_delay`."""
    delay = poll_delay(retry_after, retries, spacing=spacing, ends_in_seconds=ends_in_seconds)
    if later_seconds and later_seconds > delay:
        step = max(retry_after, retries.poll_min_seconds)
        latest = LATER_POLL_CAP * step
        if ends_in_seconds is not None:
            latest = min(latest, int(ends_in_seconds) - step)
        delay = max(delay, min(int(later_seconds), latest))
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
