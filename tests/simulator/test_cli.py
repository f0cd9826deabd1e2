"""`python -m tools.azure_simulator` prints where it listens, then serves until terminated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]


def test_cli_serves_and_prints_its_url() -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.azure_simulator",
            "--port",
            "0",
            "--vms",
            "5",
            "--subscriptions",
            "2",
            "--seed",
            "1",
            "--time-scale",
            "600",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("ARM simulator listening on http://127.0.0.1:") and line.endswith("(5 VMs)")
        url = line.split(" on ")[1].split(" ")[0]
        example = proc.stdout.readline().strip()
        assert example.startswith("/subscriptions/")
        resp = requests.get(
            f"{url}{example}?api-version=2025-04-01", headers={"Authorization": "Bearer t"}, timeout=5
        )
        assert resp.status_code == 200 and resp.json()["id"] == example
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
