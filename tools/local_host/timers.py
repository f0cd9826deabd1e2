"""Timer triggers: schedules, the past-due schedule monitor, and the singleton listener lock.

Follows the host's TimerListener:
- the schedule is NCRONTAB (6 fields) or a TimeSpan `hh:mm:ss` (a constant interval); anything else is
  "The schedule expression '...' was not recognized as a valid cron expression or timespan string.";
- schedules run on UTC unless WEBSITE_TIME_ZONE (or TZ) names an IANA zone (Windows zone names, which
  the host also accepts on Windows, are not supported here);
- `past_due` is True only for the catch-up invocation made at startup when the schedule monitor finds
  a recorded `Next` occurrence already in the past (the host was down when it was due). Scheduled
  firings are never past due, however late their thread wakes up; a long invocation that overruns the
  next occurrence makes the next one run immediately. This is exactly the host's behaviour;
- the monitor (`useMonitor`, default on, forced off for schedules firing more than once a minute) keeps
  `{"Last","Next","LastUpdated"}` in blob `azure-webjobs-hosts/timers/<hostId>/Host.Functions.<name>/status`;
- each timer runs on one instance only: the listener holds a blob lease on
  `azure-webjobs-hosts/locks/<hostId>/Host.Functions.<name>.Listener` (renewed at half the
  `singleton.listenerLockPeriod`); an instance without it retries every
  `singleton.listenerLockRecoveryPollingInterval`, as the host's SingletonListener does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from azure.functions.timer import TimerRequest

from shared.scheduling.ncrontab import CrontabError, CrontabSchedule

from .host_config import parse_timespan

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

    from .host_config import SingletonOptions
    from .invoker import FunctionInfo, InvocationRecord, Invoker

log = logging.getLogger("tools.local_host")

HOSTS_CONTAINER = "azure-webjobs-hosts"


class ScheduleError(ValueError):
    """The schedule expression is neither NCRONTAB nor a TimeSpan."""


def schedule_time_zone() -> tzinfo:
    """WEBSITE_TIME_ZONE, then TZ, else UTC (the host's default in Azure)."""
    name = os.environ.get("WEBSITE_TIME_ZONE") or os.environ.get("TZ")
    if not name or name.upper() == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except Exception as exc:
        raise ScheduleError(f"time zone '{name}' (WEBSITE_TIME_ZONE/TZ) is not an IANA zone name") from exc


@dataclass(frozen=True)
class TimerSchedule:
    """A cron or constant schedule evaluated in a time zone; all inputs and outputs are aware datetimes."""

    expression: str
    cron: CrontabSchedule | None = None
    interval: timedelta | None = None
    tz: tzinfo = UTC

    @classmethod
    def parse(cls, expression: str, tz: tzinfo | None = None) -> TimerSchedule:
        tz = tz or schedule_time_zone()
        try:
            return cls(expression, cron=CrontabSchedule.parse(expression), tz=tz)
        except CrontabError as cron_error:
            try:
                interval = parse_timespan(expression)
            except ValueError:
                raise ScheduleError(
                    f"The schedule expression '{expression}' was not recognized as a valid cron "
                    f"expression or timespan string ({cron_error})"
                ) from None
            if interval <= timedelta(0):
                raise ScheduleError(f"The schedule interval '{expression}' must be positive") from None
            return cls(expression, interval=interval, tz=tz)

    def next_after(self, now: datetime) -> datetime | None:
        if self.interval is not None:
            return now + self.interval
        assert self.cron is not None
        local = now.astimezone(self.tz).replace(tzinfo=None)
        nxt = self.cron.next_after(local)
        return None if nxt is None else nxt.replace(tzinfo=self.tz).astimezone(UTC)

    @property
    def is_sub_minute(self) -> bool:
        """More than one occurrence a minute: the host then turns the schedule monitor off."""
        if self.interval is not None:
            return self.interval < timedelta(minutes=1)
        now = datetime.now(UTC)
        first = self.next_after(now)
        second = self.next_after(first) if first else None
        return bool(first and second and second - now <= timedelta(minutes=1))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _parse_iso(text: Any) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(str(text))
    return t if t.tzinfo else t.replace(tzinfo=UTC)


class TimerListener:
    """Fires one timer function on its schedule, while this instance holds the function's listener lock."""

    def __init__(
        self,
        fn: FunctionInfo,
        invoker: Invoker,
        blobs: BlobServiceClient,
        host_id: str,
        singleton: SingletonOptions,
    ) -> None:
        self.fn = fn
        self.invoker = invoker
        self.schedule = TimerSchedule.parse(str(fn.properties["schedule"]))
        self.run_on_startup = bool(fn.properties.get("runOnStartup"))
        explicit = fn.properties.get("useMonitor")
        self.use_monitor = (
            False if self.schedule.is_sub_minute else (True if explicit is None else bool(explicit))
        )
        self.singleton = singleton
        self._container = blobs.get_container_client(HOSTS_CONTAINER)
        self._lock_blob = f"locks/{host_id}/Host.Functions.{fn.name}.Listener"
        self._status_blob = f"timers/{host_id}/Host.Functions.{fn.name}/status"
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._invocation_lock = threading.Lock()
        self._lease: Any = None
        self._thread: threading.Thread | None = None
        self.status: dict[str, datetime | None] = {}
        self.holds_lock = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        with contextlib.suppress(Exception):
            self._container.create_container()
        self._thread = threading.Thread(target=self._run, name=f"timer-{self.fn.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float) -> None:
        """Stop scheduling, wait (bounded) for a running invocation, then give the lock up."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        if self._invocation_lock.acquire(timeout=timeout):
            self._invocation_lock.release()
        self._release()

    # -- singleton lock --------------------------------------------------------------------------------
    def _try_acquire(self) -> bool:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        blob = self._container.get_blob_client(self._lock_blob)
        with contextlib.suppress(ResourceExistsError, HttpResponseError):
            blob.upload_blob(b"", overwrite=False)
        try:
            self._lease = blob.acquire_lease(
                lease_duration=int(self.singleton.listener_lock_period.total_seconds())
            )
        except HttpResponseError:
            return False
        self._lost.clear()
        threading.Thread(target=self._renew, name=f"timer-lease-{self.fn.name}", daemon=True).start()
        return True

    def _renew(self) -> None:
        interval = self.singleton.listener_lock_period.total_seconds() / 2
        lease = self._lease
        while not self._stop.wait(interval):
            if lease is not self._lease:
                return
            try:
                lease.renew()
            except Exception:
                log.warning(
                    "Timer '%s' lost its singleton listener lock; stopping it on this instance", self.fn.name
                )
                self._lost.set()
                return

    def _release(self) -> None:
        lease, self._lease = self._lease, None
        self.holds_lock.clear()
        if lease is not None:
            with contextlib.suppress(Exception):
                lease.release()

    # -- schedule monitor ------------------------------------------------------------------------------
    def _read_status(self) -> dict[str, datetime | None] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            data = json.loads(self._container.get_blob_client(self._status_blob).download_blob().readall())
        except (ResourceNotFoundError, ValueError):
            return None
        return {k: _parse_iso(data.get(k)) for k in ("Last", "Next", "LastUpdated")}

    def _write_status(self) -> None:
        if not self.use_monitor:
            return
        body = json.dumps({k: _iso(v) for k, v in self.status.items()})
        try:
            self._container.get_blob_client(self._status_blob).upload_blob(body, overwrite=True)
        except Exception as exc:
            log.warning("Timer '%s': could not record schedule status: %s", self.fn.name, exc)

    def _check_past_due(self, now: datetime) -> bool:
        """The host's ScheduleMonitor.CheckPastDueAsync: was a recorded `Next` missed while we were down?"""
        status = self._read_status() if self.use_monitor else None
        if status is None or status.get("Next") is None:
            self.status = {"Last": None, "Next": self.schedule.next_after(now), "LastUpdated": now}
            self._write_status()
            return False
        last, updated = status.get("Last"), status.get("LastUpdated")
        base = updated if updated and (last is None or updated > last) else last
        expected = self.schedule.next_after(base) if base else None
        self.status = status
        if expected != status["Next"]:
            # the schedule changed since the status was written: start over from now
            self.status = {"Last": last, "Next": self.schedule.next_after(now), "LastUpdated": now}
            self._write_status()
            return False
        return now > status["Next"]

    # -- firing ----------------------------------------------------------------------------------------
    def _timer_request(self, past_due: bool) -> TimerRequest:
        status = {k: _iso(v) for k, v in self.status.items()} if self.use_monitor else None
        return TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True})

    def fire(
        self, past_due: bool = False, *, scheduled: bool = False, run_on_startup: bool = False
    ) -> InvocationRecord:
        """Invoke now. Scheduled firings also advance (and record) the schedule status."""
        with self._invocation_lock:
            now = datetime.now(UTC)
            record = self.invoker.invoke(
                self.fn, self._timer_request(past_due), f"Timer fired at {now.isoformat()}"
            )
            if scheduled or past_due or run_on_startup:
                adjusted = now
                nxt = self.status.get("Next")
                if scheduled and nxt is not None and nxt > now:
                    adjusted = nxt  # fired a little early: don't schedule the same occurrence twice
                self.status = {
                    "Last": adjusted,
                    "Next": self.schedule.next_after(adjusted),
                    "LastUpdated": adjusted,
                }
                self._write_status()
            return record

    def _run(self) -> None:
        recovery = self.singleton.listener_lock_recovery_polling_interval.total_seconds()
        while not self._stop.is_set():
            try:
                acquired = self._try_acquire()
            except Exception as exc:
                log.warning("Timer '%s': singleton lock check failed: %s", self.fn.name, exc)
                acquired = False
            if not acquired:
                log.debug(
                    "Timer '%s' is running on another instance; retrying in %ss", self.fn.name, recovery
                )
                self._stop.wait(recovery)
                continue
            self.holds_lock.set()
            try:
                self._run_schedule()
            except Exception:
                log.exception("Timer '%s' listener failed; restarting it", self.fn.name)
                self._release()
                self._stop.wait(recovery)
            finally:
                self._release()

    def _run_schedule(self) -> None:
        now = datetime.now(UTC)
        past_due = self._check_past_due(now)
        if self.status.get("Next") is None:
            log.warning("Timer '%s': schedule '%s' never occurs", self.fn.name, self.schedule.expression)
        else:
            log.info(
                "Timer '%s' schedule %s (UTC): next occurrence %s",
                self.fn.name,
                self.schedule.expression,
                self.status["Next"].isoformat(),
            )
        if past_due:
            log.info("Timer '%s' is past due on startup. Executing now.", self.fn.name)
            self.fire(past_due=True)
        elif self.run_on_startup:
            log.info("Timer '%s' is configured to run on startup. Executing now.", self.fn.name)
            self.fire(run_on_startup=True)
        while not self._stop.is_set() and not self._lost.is_set():
            nxt = self.status.get("Next")
            if nxt is None:
                self._stop.wait(3600)
                continue
            delay = (nxt - datetime.now(UTC)).total_seconds()
            if delay > 0:
                # wake at least every second to notice a lost lease promptly
                self._stop.wait(min(delay, 1.0))
                continue
            if self._stop.is_set() or self._lost.is_set():
                return
            self.fire(scheduled=True)
