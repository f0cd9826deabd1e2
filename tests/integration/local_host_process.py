"""Run the local Functions host as its own process, as `make run` does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from tools.azurite import REPO_ROOT, free_port


class HostProcess:
    def __init__(self, settings: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        # A fresh `func start`: the host sets WEBSITE_HOSTNAME to its own address (an in-process test's
        # value for direct trigger calls must not leak into it).
        env = {**{k: v for k, v in os.environ.items() if k != "WEBSITE_HOSTNAME"}, **settings, "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.local_host", "--script-root", str(REPO_ROOT), "--port", str(self.port)],
            env=env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 60.0) -> HostProcess:
        wait_answering(self.process, self.base_url, self.log_path, timeout)
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def wait_answering(process: subprocess.Popen[bytes], base_url: str, log_path: Path, timeout: float,
                   probe_timeout: float = 1) -> None:
    """Wait until the host `process` answers GET /api/runs; if it exits first, or is not ready within
    `timeout` seconds, raise with the end of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"host exited {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            requests.get(f"{base_url}/api/runs", timeout=probe_timeout)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"host not ready in {timeout}s:\n{log_path.read_text()[-4000:]}")
