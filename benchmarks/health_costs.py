"""What health checks (#20) cost: the same rollout with and without a `healthCheck`, measured in one run.

A 40-VM rollout (canary, 25 %, rest; maxConcurrency 20) against the ARM simulator and Azurite, queue messages
delivered in-process, operations of 1-4 simulated hours at 3600x with Retry-After 1 s. With the health check:
after PT2S, within PT1M, signals vmHealth, resourceHealth and alerts, every machine healthy, so each is read once
before its start (the baseline) and once after. Prints, per machine, ARM calls by kind, Table round-trips and
queue messages; per wave, the wall time from its first admission to its last machine's end. Run with `make bench`.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from datetime import datetime
from typing import Any

from benchmarks.run_costs import run_to_end, stack
from tools import metrics

VMS = 40
INSTALL = {"maximumDuration": "PT4H", "rebootSetting": "IfRequired",
           "windowsParameters": {"classificationsToInclude": ["Critical", "Security", "UpdateRollUp"]},
           "linuxParameters": {"classificationsToInclude": ["Critical", "Security", "Other"]}}
ROLLOUT: dict[str, Any] = {"waves": [{"name": "canary", "size": 1}, {"size": "25%"}, {"size": "rest"}],
                           "maxConcurrency": 20, "maxFailures": "10%"}
HEALTH = {"after": "PT2S", "within": "PT1M", "signals": ["vmHealth", "resourceHealth", "alerts"]}


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def measure(health: bool) -> dict[str, Any]:
    with stack(VMS) as (svc, sim):
        calls_before, sent_before = metrics.arm_calls(), metrics.queue_messages()
        table_before = metrics.table_operations("runs")
        rollout = {**ROLLOUT, **({"healthCheck": HEALTH} if health else {})}
        request = {"machines": sim.vm_ids(), "installPatches": INSTALL, "rollout": rollout}
        run_id, elapsed = run_to_end(svc, request, timeout=900)
        targets = svc.store.list_targets(run_id)
        waves: dict[int, list[Any]] = defaultdict(list)
        for t in targets:
            waves[int(t.get("wave") or 0)].append(t)
        wave_seconds = {w: (max(_time(t["completedAt"]) for t in ts) - min(_time(t["admittedAt"]) for t in ts))
                        .total_seconds() for w, ts in sorted(waves.items())}
        table_ops = metrics.table_operations("runs") - table_before
        return {"elapsed": elapsed, "arm": metrics.arm_calls() - calls_before,
                "table": sum(v for k, v in table_ops.items() if k != "getRun"),
                "queue": sum((metrics.queue_messages() - sent_before).values()), "waves": wave_seconds,
                "states": sorted({str(t["state"]) for t in targets}),
                "healthy": sum(1 for t in targets if t.get("health") == "Healthy")}


def main() -> int:
    without, with_health = measure(False), measure(True)
    print(f"{VMS}-VM rollout (canary, 25%, rest; maxConcurrency 20), 1-4 h operations at 3600x, Retry-After 1 s")
    print(f"healthCheck: {json.dumps(HEALTH)}; healthy machines: {with_health['healthy']} of {VMS}; "
          f"states without: {without['states']}, with: {with_health['states']}")
    print()
    print("| per machine | without healthCheck | with healthCheck | added |")
    print("| --- | ---: | ---: | ---: |")
    kinds = sorted(set(without["arm"]) | set(with_health["arm"]))
    rows = [("ARM calls (all)", sum(without["arm"].values()), sum(with_health["arm"].values()))]
    rows += [(f"ARM `{k}`", without["arm"].get(k, 0), with_health["arm"].get(k, 0)) for k in kinds]
    rows += [("Table round-trips", without["table"], with_health["table"]),
             ("Queue messages sent", without["queue"], with_health["queue"])]
    for label, a, b in rows:
        print(f"| {label} | {a / VMS:.2f} | {b / VMS:.2f} | {(b - a) / VMS:+.2f} |")
    print()
    print("| wall time (s) | without healthCheck | with healthCheck | added |")
    print("| --- | ---: | ---: | ---: |")
    for wave in sorted(without["waves"]):
        a, b = without["waves"][wave], with_health["waves"].get(wave, 0.0)
        print(f"| wave {wave} (first admission to last end) | {a:.1f} | {b:.1f} | {b - a:+.1f} |")
    print(f"| whole run | {without['elapsed']:.1f} | {with_health['elapsed']:.1f} | "
          f"{with_health['elapsed'] - without['elapsed']:+.1f} |")
    print()
    print("Operations are compressed 3600x but ARM's reads budget is not (25/s, half of it for polls): the six "
          "health reads per machine are paced at Azure's real rate, so here they, not the operations, set the "
          "pace of the last wave. Queue messages and Table round-trips added beyond one Verifying step per "
          "machine are those paced steps (each a delayed message and a row write).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
