"""`make run`: Azurite + the ARM simulator + the local Functions host, wired together.

Prints a `curl` that starts a run on the simulated fleet and one that follows it. Ctrl-C stops
everything. Azurite keeps its data in .azurite/ so runs survive a restart, like a real account.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import requests

from tools.azurite import REPO_ROOT, Azurite

DEV_TOKEN = "local-simulator-token"


def ensure_local_settings(arm_endpoint: str) -> dict[str, Any]:
    """local.settings.json is not committed; create it from the example the first time, and add a setting the
    example gained since (a new queue's binding name: the host cannot index a trigger whose %NAME% has no value).
    Returns its Values."""
    path = REPO_ROOT / "local.settings.json"
    example = REPO_ROOT / "local.settings.example.json"
    if not path.exists():
        shutil.copy(example, path)
        print(f"created {path.name} from local.settings.example.json")
    data = json.loads(path.read_text())
    missing = {k: v for k, v in json.loads(example.read_text())["Values"].items() if k not in data["Values"]}
    if missing:
        data["Values"].update(missing)
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"added {', '.join(sorted(missing))} to {path.name} from local.settings.example.json")
    if data["Values"].get("ARM_ENDPOINT") != arm_endpoint:
        print(f"note: local.settings.json has ARM_ENDPOINT={data['Values'].get('ARM_ENDPOINT')}; "
              f"this run overrides it with {arm_endpoint}")
    return dict(data["Values"])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until `url` answers; RuntimeError if `proc` (what serves it) exits first or `timeout` (s) passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the host exited with {proc.returncode} before {url} answered")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


HOST_STOP_WAIT = 35.0  # s: past the local host's own graceful stop (LocalHost.shutdown_timeout, 30 s)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after HOST_STOP_WAIT or at a second Ctrl-C (which _stop raises here)."""
    proc.terminate()
    try:
        proc.wait(timeout=HOST_STOP_WAIT)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        proc.kill()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=20, help="simulated fleet size")
    parser.add_argument("--arc", type=int, default=2, help="simulated Azure Arc-enabled servers (connected)")
    parser.add_argument("--time-scale", type=float, default=600.0, help="simulated seconds per real second")
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--arm-port", type=int, default=8090)
    args = parser.parse_args()

    from tools.azure_simulator import Simulator, SimulatorConfig

    stop = serving = False

    def _stop(*_: object) -> None:
        nonlocal stop
        again, stop = stop, True
        if again or not serving:  # still starting, or a second signal: unwind now; the ExitStack stops what started
            raise KeyboardInterrupt

    # The children have process groups of their own (a terminal's signals reach only this process), so every
    # signal that would have reached them must end this one through its ExitStack: a closed terminal (SIGHUP)
    # and Ctrl-\ (SIGQUIT) too, or they would outlive it and hold the ports.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, _stop)
    try:
        with contextlib.ExitStack() as services:  # whatever started is stopped, however we leave
            # Stopped through the stack even if Ctrl-C lands while it starts: its own process group does not get it.
            azurite = Azurite(blob_port=10000, queue_port=10001, table_port=10002,
                              location=str(REPO_ROOT / ".azurite"), own_process_group=True)
            services.callback(azurite.stop)
            azurite.start()
            sim = Simulator(SimulatorConfig(vms=args.vms, subscriptions=1, seed=1, time_scale=args.time_scale,
                                            port=args.arm_port, retry_after_seconds=2, stopped_ratio=0.1,
                                            upcoming_patches=3, upcoming_within_hours=72.0,
                                            arc_machines=args.arc, arc_disconnected=0)).start()
            services.callback(sim.stop)
            values = ensure_local_settings(sim.url)
            scope = f"/subscriptions/{sim.subscriptions()[0]}"
            env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string, "ARM_ENDPOINT": sim.url,
                   "ARM_DEV_TOKEN": DEV_TOKEN, "ASSESSMENT_SCOPES": scope}
            # A VM busy with another operation is tried again after this (120 s in Azure); the simulator's
            # operations last a second or two here, so the assessment below waits seconds, not minutes. Unless the
            # shell or local.settings.json says otherwise.
            if "CONFLICT_RETRY_SECONDS" not in os.environ and "CONFLICT_RETRY_SECONDS" not in values:
                env["CONFLICT_RETRY_SECONDS"] = "10"
            host = subprocess.Popen([sys.executable, "-m", "tools.local_host", "--script-root", str(REPO_ROOT),
                                     "--port", str(args.port)], env=env, cwd=REPO_ROOT,
                                    process_group=0)  # Ctrl-C reaches only this process, which stops the host first
            services.callback(stop_process, host)
            wait_http(f"http://127.0.0.1:{args.port}/api/runs", host)
            fleet = sim.state()
            running = [v["id"] for v in fleet["vms"] if v["powerState"] == "running"]
            vms = running[:4]
            body = json.dumps({
                "machines": vms,
                "installPatches": {
                    "maximumDuration": "PT2H",
                    "rebootSetting": "IfRequired",
                    "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                    "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]},
                },
            }, separators=(",", ":"))
            api = f"http://127.0.0.1:{args.port}/api"
            arc = [m["id"] for m in fleet["arcMachines"]]
            arc_body = json.dumps({**json.loads(body), "machines": arc}, separators=(",", ":"))
            arc_text = f"""
Azure Arc-enabled servers are patched the same way ({sim.url}/_sim/machines lists them):

ARCLOC=$(curl -s -o /dev/null -D - -X POST {api}/runs -H 'Content-Type: application/json' -d '{arc_body}' \\
  | awk 'tolower($1)=="location:" {{print $2}}' | tr -d '\\r'); echo "$ARCLOC"
curl -s -w '\\nHTTP %{{http_code}}\\n' "$ARCLOC"
""" if arc else ""
            others = running[4:8] or vms
            plan_body = json.dumps({**json.loads(body), "machines": others}, separators=(",", ":"))
            # The next whole minute at least five minutes away: time to read and send what comes before it.
            opens = (datetime.now(UTC) + timedelta(minutes=6)).replace(second=0, microsecond=0)
            window = opens.strftime("%Y-%m-%d %H:%M")
            window_iso = (opens - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:00Z")
            maintenance = json.dumps({"location": "westeurope", "properties": {
                "maintenanceScope": "InGuestPatch",
                "maintenanceWindow": {"startDateTime": window, "duration": "02:00", "timeZone": "UTC",
                                      "recurEvery": "Day"},
                "installPatches": {"rebootSetting": "IfRequired",
                                   "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
                                   "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]}}}},
                separators=(",", ":"))
            print(f"""
PatchPilot is running:
  Functions host   {api}
  ARM simulator    {sim.url}  ({args.vms} VMs, {len(arc)} Arc-enabled server(s), {args.time_scale:g}x time; state at
                   {sim.url}/_sim/vms)
  Azurite          blob 10000, queue 10001, table 10002 (data in .azurite/)

Start a run on four simulated VMs (answers 202 with Location and Retry-After):

LOC=$(curl -s -o /dev/null -D - -X POST {api}/runs -H 'Content-Type: application/json' \\
  -H "Idempotency-Key: demo-$(date +%s)" -d '{body}' \\
  | awk 'tolower($1)=="location:" {{print $2}}' | tr -d '\\r'); echo "$LOC"

Follow it (202 while it runs, 200 with every machine's result when it is done):

curl -s -w '\\nHTTP %{{http_code}}\\n' "$LOC"
{arc_text}
Assess the whole simulated subscription now (the periodic_assessment timer does this daily for
ASSESSMENT_SCOPES={scope}), follow it the same way (repeat until it answers 200: a VM the run above is
still patching answers 409 and is assessed about 10 s later), then ask for the compliance view:

ALOC=$(curl -s -o /dev/null -D - -X POST {api}/assessments -H 'Content-Type: application/json' \\
  -d '{{"scopes":["{scope}"]}}' | awk 'tolower($1)=="location:" {{print $2}}' | tr -d '\\r'); echo "$ALOC"
curl -s -w '\\nHTTP %{{http_code}}\\n' "$ALOC"
curl -s -w '\\n' {api}/compliance

Plan before you patch: what the same request would install on four other VMs (after the assessment above),
how long each would take and when it would start; then apply exactly that plan (nothing published since):

PLOC=$(curl -s -o /dev/null -D - -X POST {api}/plans -H 'Content-Type: application/json' -d '{plan_body}' \\
  | awk 'tolower($1)=="location:" {{print $2}}' | tr -d '\\r'); echo "$PLOC"
curl -s -w '\\nHTTP %{{http_code}}\\n' "$PLOC"
curl -s -w '\\nHTTP %{{http_code}}\\n' -X POST "${{PLOC%%\\?*}}/apply"

(the dashboard shows a plan at {api}/dashboard#/plans/<plan id>)

A maintenance schedule (Azure's InGuestPatch shape) whose first window opens at {window} UTC (five to
six minutes after this was printed; if that has passed, put a later time in startDateTime), for every VM
tagged owner=payments; then the windows it will open:

curl -s -w '\\n' -X PUT {api}/maintenance-configurations/nightly -H 'Content-Type: application/json' \\
  -d '{maintenance}'
curl -s -w '\\n' -X PUT {api}/maintenance-configurations/nightly/assignments/payments \\
  -H 'Content-Type: application/json' \\
  -d '{{"properties":{{"resourceId":"{scope}","filter":{{"tagSettings":{{"tags":{{"owner":["payments"]}}}}}}}}}}'
curl -s -w '\\n' "{api}/maintenance-configurations/nightly/occurrences?count=3"

Once the window has opened, see its run (add from= an earlier time: occurrences start now by default):

curl -s -w '\\n' "{api}/maintenance-configurations/nightly/occurrences?count=3&from={window_iso}"

Ctrl-C stops everything.
""", flush=True)
            serving = True  # from here a signal ends the loop below, and the stack stops the host, then the rest
            while not stop and host.poll() is None:
                time.sleep(0.5)
        return 0 if stop else (host.returncode or 1)
    except KeyboardInterrupt:  # raised by _stop while starting, or at a second signal
        print("stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
