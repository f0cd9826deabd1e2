"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against the local host, Azurite and
the simulator: the pages load without console errors, a run started through the API shows up and reaches its
final state on screen, a failed machine's error is visible, and the compliance chart's numbers equal the API's;
a health-gated rollout halted by an unhealthy canary says why at the top of its page, and the canary's row shows
the signal that failed; a plan opened by its id shows its summary, the machine its window is too short for with
its code, on its timeline too, and its CSV; Apply links the run, and the run links back to the plan.
The run page's screenshot is docs/dashboard.md's (docs/dashboard.png, refreshed with UPDATE_SCREENSHOT=1), and so
is the plan page's (docs/dashboard-plan.png).

Chromium comes from `apt-get install chromium` (`make test` installs it first with tools/ensure_chromium.sh, or
stops saying what to install); Playwright's own browser download is not used. Run alone without Chromium, the
test fails, saying so: CI must run it."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.composition import Components
from shared.core.clock import iso, utcnow
from shared.runs.predictions import Sample
from shared.validation.resource_ids import parse_machine_id
from tests.integration.local_host_process import HostProcess
from tests.support.bodies import INSTALL
from tests.support.fleet import sim_config
from tools.azure_simulator import Simulator, SimulatorConfig

KEY = "dashboard-test-key"
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
FINISHED = {"Succeeded", "CompletedWithErrors", "CompletedWithWarnings", "Failed", "Halted", "Canceled"}


@pytest.fixture
def simulator_config() -> SimulatorConfig:
    return sim_config(vms=4, subscriptions=2, seed=7)


@pytest.fixture
def host_settings(app_settings: dict[str, str]) -> dict[str, str]:
    return {**app_settings, "LOCAL_HOST_FUNCTION_KEYS": KEY, "HEALTH_RECHECK_SECONDS": "1"}


def call(host: HostProcess, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{host.base_url}/api/{path}", json=body, headers={"x-functions-key": KEY},
                            timeout=30)


def wait_done(host: HostProcess, path: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        resp = call(host, "GET", path)
        if resp.status_code == 200:
            return resp.json()  # type: ignore[no-any-return]
        assert resp.status_code == 202 and time.monotonic() < deadline, resp.text
        time.sleep(0.5)


@contextmanager
def chromium(errors: list[str]) -> Iterator[Any]:
    """A page in headless Chromium that adds every console error and page error to `errors`."""
    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install chromium (make test does)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page
        finally:
            browser.close()


def test_dashboard_in_chromium(host: HostProcess, simulator: Simulator, tmp_path: Path) -> None:
    vms = simulator.vm_ids()
    assessment = call(host, "POST", "assessments", {"machines": vms})
    assert assessment.status_code == 202, assessment.text
    wait_done(host, f"assessments/{assessment.json()['id']}")
    config = {"location": "westeurope", "properties": {
        "maintenanceScope": "InGuestPatch",
        "maintenanceWindow": {"startDateTime": "2026-01-01 22:00", "duration": "03:55",
                              "timeZone": "W. Europe Standard Time", "recurEvery": "Month Second Tuesday"},
        "installPatches": {"windowsParameters": {"classificationsToInclude": ["Critical"]}}}}
    assert call(host, "PUT", "maintenance-configurations/patch-tuesday", config).status_code in (200, 201)
    stopped = vms[0]
    simulator.set_power(stopped, "deallocated")
    started = call(host, "POST", "runs", {"machines": vms, "installPatches": INSTALL})
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]

    errors: list[str] = []
    with chromium(errors) as page:
        page.goto(f"{host.base_url}/api/dashboard?code={KEY}")
        assert "code=" not in page.url, (errors, page.content()[:3000])  # the key leaves the address bar

        page.locator(f'tr[data-run="{run_id}"] a').click(timeout=15_000)
        page.wait_for_function("s => s.includes(document.getElementById('run-status')?.textContent)",
                               arg=sorted(FINISHED), timeout=60_000)
        final = call(host, "GET", f"runs/{run_id}").json()
        assert page.locator("#run-status").inner_text() == final["status"]
        failed = next(m for m in final["machines"] if m["id"].lower() == stopped.lower())
        assert failed["state"] == "Failed"
        row = page.locator(f'tr[data-machine="{failed["id"]}"]')
        row.wait_for(timeout=10_000)  # the filter starts on Failed
        assert row.locator(".state").inner_text() == "Failed"
        assert failed["error"]["message"] in row.locator(".error").inner_text()
        for state, count in final["states"].items():
            assert page.locator(f'#state-counts [data-state="{state}"] b').inner_text() == str(count)
        row.get_by_role("button", name="Patches").click()
        detail = page.locator("#machine-detail .request-id")
        detail.first.wait_for(timeout=10_000)
        shown_ids = " ".join(detail.all_inner_texts())
        assert failed["armCalls"] and all(c["requestId"] in shown_ids for c in failed["armCalls"])
        # UPDATE_SCREENSHOT=1 refreshes docs/dashboard.png; otherwise it goes to the test's own directory
        shot = ROOT / "docs" / "dashboard.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)

        assert "null" not in page.inner_text("#main")
        page.goto(f"{host.base_url}/api/dashboard#/compliance")
        page.locator("#by-subscription").wait_for(timeout=15_000)
        report = call(host, "GET", "compliance?top=10").json()
        assert report["bySubscription"], report
        for sub, counts in report["bySubscription"].items():
            for metric in ("missingCriticalOrSecurity", "stale"):
                shown = page.locator(f'#by-subscription text[data-row="{sub}"][data-metric="{metric}"]')
                assert shown.text_content() == str(counts[metric]), (sub, metric)
        for name in ("machines", "assessed", "missingCriticalOrSecurity"):
            assert page.locator(f'#compliance-counts [data-count="{name}"] b').inner_text() == str(report[name])

        page.goto(f"{host.base_url}/api/dashboard#/maintenance")
        page.wait_for_selector('section[data-config="patch-tuesday"] table, #load-error', timeout=15_000)
        assert page.locator("#load-error").count() == 0, page.locator("#load-error").inner_text()
    assert errors == [], errors


def test_a_halted_rollout_shows_why_and_the_unhealthy_canary(host: HostProcess, simulator: Simulator) -> None:
    vms = simulator.vm_ids()
    canary = vms[0]
    simulator.set_health(canary, after_patch={"availabilityState": "Unavailable"})  # installs, does not come back
    body = {"machines": vms, "installPatches": INSTALL,
            "rollout": {"waves": [{"name": "canary", "machines": [canary]}, {"size": "rest"}], "maxFailures": 1,
                        "healthCheck": {"after": "PT1S", "within": "PT3S",
                                        "signals": ["vmHealth", "resourceHealth"]}}}
    started = call(host, "POST", "runs", body)
    assert started.status_code == 202, started.text
    run_id = started.json()["id"]
    final = wait_done(host, f"runs/{run_id}", timeout=120)
    assert final["status"] == "Halted", final.get("states")
    halted = final["rollout"]["halted"]
    assert [m.lower() for m in halted["machines"]] == [canary.lower()], halted
    shown = next(m for m in final["machines"] if m["id"].lower() == canary.lower())
    assert shown["state"] == "Unhealthy" and shown["health"]["failedSignals"] == ["resourceHealth"], shown
    name = canary.split("/")[-1]

    errors: list[str] = []
    with chromium(errors) as page:
        page.goto(f"{host.base_url}/api/dashboard?code={KEY}#/runs/{run_id}")
        banner = page.locator("#halt-reason")
        banner.wait_for(timeout=15_000)
        assert page.locator("#run-status").inner_text() == "Halted"
        # the banner comes first on the page, right under the run's heading
        assert page.locator("#main > :nth-child(2)").get_attribute("id") == "halt-reason"
        text = banner.inner_text()
        assert name in text and "resourceHealth" in text, text
        assert halted["reason"] in text
        item = banner.locator(f'li[data-halted="{halted["machines"][0]}"]')
        assert "Unhealthy" in item.inner_text() and "resourceHealth" in item.locator(".signal").inner_text()

        row = page.locator(f'tr[data-machine="{shown["id"]}"]')
        row.wait_for(timeout=10_000)  # the filter opens on Unhealthy
        assert row.locator(".state").inner_text() == "Unhealthy"
        health = row.locator("td.health")
        assert health.locator(".health-status").inner_text() == "Unhealthy"
        failing = health.locator('.health-reading[data-signal="resourceHealth"]')
        reading = next(r for r in shown["health"]["after"] if r["signal"] == "resourceHealth")
        assert failing.inner_text() == f"resourceHealth: {reading['verdict']} — {reading['observed']}"
        assert reading["verdict"] == "unhealthy" and "Unavailable" in reading["observed"]
        assert health.locator('.health-reading[data-signal="vmHealth"]').count() == 0  # it passed: not listed
        assert page.locator('#state-counts [data-state="Unhealthy"] b').inner_text() == "1"
        assert "null" not in page.inner_text("#main") and "undefined" not in page.inner_text("#main")
    assert errors == [], errors


def test_a_plan_shows_its_window_fit_and_links_the_run_that_applied_it(
        host: HostProcess, services: Components, simulator: Simulator, tmp_path: Path) -> None:
    vms = [v for v in simulator.vm_ids() if "/Microsoft.Compute/" in v]
    assessment = call(host, "POST", "assessments", {"machines": vms})
    assert assessment.status_code == 202, assessment.text
    wait_done(host, f"assessments/{assessment.json()['id']}")
    # the slow machine: one with something to install, whose own history says two hours (its last prediction
    # was 100 min: a 17% error); the others have none (DEFAULT_INSTALL_SECONDS, 20 min)
    wanted = {vm["id"].lower() for vm in simulator.state()["vms"]
              if any(p["classification"] in ("Critical", "Security") for p in vm["pendingPatches"])}
    slow = parse_machine_id(next(v for v in vms if v.lower() in wanted), target="m")
    services.durations.save(slow.subscription_id, [(slow, {"osType": "", "samples": [Sample(
        at=iso(utcnow() - timedelta(days=7)), seconds=7200, patches=0, rebooted=False, predicted=6000).to_json()]})])
    window = {"startDateTime": iso(datetime.now(UTC) - timedelta(minutes=5)), "duration": "PT1H30M"}
    created = call(host, "POST", "plans", {"machines": vms, "installPatches": INSTALL, "maintenanceWindow": window})
    assert created.status_code == 202, created.text
    plan = wait_done(host, f"plans/{created.json()['id']}")
    summary = plan["summary"]
    assert [(o["machine"].lower(), o["code"]) for o in summary["outsideWindow"]] == [
        (slow.resource_id.lower(), "WouldNotFinish")], summary
    slow_id = summary["outsideWindow"][0]["machine"]
    machines = {m["resourceId"]: m for m in call(host, "GET", f"plans/{plan['id']}/machines?top=50").json()["value"]}

    errors: list[str] = []
    dialogs: list[str] = []
    with chromium(errors) as page:
        page.goto(f"{host.base_url}/api/dashboard?code={KEY}#/plans")
        page.locator("#plan-id").fill(plan["id"])
        page.get_by_role("button", name="Open plan").click()
        page.locator("#plan-machines").wait_for(timeout=15_000)
        assert page.locator("#plan-status").inner_text() == "Succeeded"
        for name in ("machineCount", "installing", "patchInstalls", "rebootsExpected"):
            assert page.locator(f'#plan-summary [data-count="{name}"] b').inner_text() == str(summary[name]), name
        basis = page.locator("#plan-basis").inner_text()
        assert "own history 1" in basis and "longest predicted first" in basis, basis
        assert summary["basis"]["meanAbsoluteError"] == 0.167
        assert page.locator("#plan-error-rate").inner_text() == "mean absolute error of past predictions 17%"

        fit = page.locator("#plan-window .window-fit")
        assert fit.get_attribute("data-fits") == "false"
        assert fit.inner_text() == "does not fit: 0 would not start, 1 would not finish"
        outside = page.locator(f'#outside-window tr[data-machine="{slow_id}"]')
        assert outside.locator(".outside-code").inner_text() == "WouldNotFinish"
        assert outside.locator(".outside-message").inner_text() == summary["outsideWindow"][0]["message"]
        assert page.locator("#outside-window tr[data-machine]").count() == 1

        row = page.locator(f'#plan-machines tr[data-machine="{slow_id}"]')
        assert row.locator(".outside-code").inner_text() == "WouldNotFinish"
        assert row.locator(".prediction").inner_text() == "120 min machine, 1 sample, ±17%"
        assert row.locator(".patch-count summary").inner_text() == str(machines[slow_id]["patchCount"])
        for cls, counts in summary["totals"]["byClassification"].items():
            cells = page.locator(f'#by-classification tr[data-classification="{cls}"] td').all_inner_texts()
            assert cells == [cls, str(counts["patches"]), str(counts["installs"]), str(counts["machines"])], cls
        # the timeline: one bar per machine installing, the slow one red, all against the window
        bars = page.locator("#plan-timeline rect[data-machine]")
        assert bars.count() == sum(1 for m in machines.values() if m.get("predictedStart")) == summary["installing"]
        assert page.locator(f'#plan-timeline rect[data-machine="{slow_id}"]').get_attribute("fill") == "#b3261e"
        assert page.locator("#plan-timeline rect.window").count() == 1

        with page.expect_download() as download:
            page.locator("#plan-csv").click()
        csv_path = tmp_path / "plan.csv"
        download.value.save_as(csv_path)
        lines = csv_path.read_text().strip().splitlines()
        assert lines[0].startswith("resourceId,osType,wave,action") and len(lines) == 1 + summary["patchInstalls"]
        assert "null" not in page.inner_text("#main") and "undefined" not in page.inner_text("#main")
        # UPDATE_SCREENSHOT=1 refreshes docs/dashboard-plan.png; otherwise it goes to the test's own directory
        shot = ROOT / "docs" / "dashboard-plan.png" if os.environ.get("UPDATE_SCREENSHOT") else tmp_path / "plan.png"
        page.screenshot(path=str(shot), full_page=True)

        page.once("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        page.locator("#apply-plan").click()
        applied = page.locator("#plan-run")
        applied.wait_for(timeout=15_000)
        run_id = call(host, "GET", f"plans/{plan['id']}").json()["appliedRunId"]
        assert applied.inner_text() == run_id
        assert dialogs == [f"Apply plan {plan['id']} now: install {summary['patchInstalls']} patches on "
                           f"{summary['installing']} machines?"]
        assert page.locator("#apply-plan").count() == 0  # applied: no second button

        applied.click()
        back = page.locator("#run-plan a")
        back.wait_for(timeout=15_000)
        assert page.url.endswith(f"#/runs/{run_id}")
        assert back.inner_text() == plan["id"] and call(host, "GET", f"runs/{run_id}").json()["planId"] == plan["id"]
        # the run skips the machine the plan said would not finish, for that reason
        page.wait_for_function("s => s.includes(document.getElementById('run-status')?.textContent)",
                               arg=sorted(FINISHED), timeout=60_000)
        skipped = page.locator(f'tr[data-machine="{slow_id}"]')
        assert skipped.locator(".state").inner_text() == "Skipped"
        assert skipped.locator(".error").inner_text().startswith("WouldNotFinish: ")
        back.click()
        page.locator("#plan-run").wait_for(timeout=15_000)
        assert page.url.endswith(f"#/plans/{plan['id']}")

        page.goto(f"{host.base_url}/api/dashboard#/")
        page.locator(f'tr[data-run="{run_id}"] a[href="#/plans/{plan["id"]}"]').wait_for(timeout=15_000)
        assert "null" not in page.inner_text("#main") and "undefined" not in page.inner_text("#main")
    assert errors == [], errors
