"""The clock maintenance windows are judged by: real time, or, against the simulator only, a
compressed clock so that daily windows come round in seconds (settings.py refuses it otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.settings import Settings


def schedule_now(settings: Settings, real_now: datetime | None = None) -> datetime:
    real = real_now or datetime.now(UTC)
    if not settings.schedule_clock_origin:
        return real
    origin = datetime.fromisoformat(settings.schedule_clock_origin.replace("Z", "+00:00"))
    return origin + (real - origin) * settings.schedule_clock_scale
