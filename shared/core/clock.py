"""Time: UTC now, fixed-width ISO timestamps that sort as strings, and the clock maintenance windows
are judged by (real time, or against the simulator only a compressed clock so that daily windows come
round in seconds; settings refuse it otherwise)."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.core.settings import LocalDevelopment


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Fixed-width UTC timestamps: they sort as strings, so Table filters can compare them."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def schedule_now(local: LocalDevelopment, real_now: datetime | None = None) -> datetime:
    real = real_now or datetime.now(UTC)
    if not local.schedule_clock_origin:
        return real
    origin = datetime.fromisoformat(local.schedule_clock_origin.replace("Z", "+00:00"))
    return origin + (real - origin) * local.schedule_clock_scale
