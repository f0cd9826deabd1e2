"""Fixtures for the local host tests: a fresh copy of the sample app per test, hosts in-process or as
subprocesses, and helpers to read what the sample functions recorded."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tools.azurite import REPO_ROOT, Azurite
from tools.local_host import LocalHost

SAMPLE_APP = Path(__file__).parent / "sample_app"

# local.settings.json is git-ignored, so the test copy of the app gets it written here.
LOCAL_SETTINGS = {
    "IsEncrypted": False,
    "Values": {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
        "WORK_QUEUE": "sample-work",
        "TICK_SCHEDULE": "0 0 0 1 1 *",
        "GREETING": "from-local-settings",
    },
}


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


class Records:
    """The JSON files the sample app's functions write, one per invocation."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, kind: str) -> list[dict[str, Any]]:
        out = [json.loads(p.read_text()) for p in self.folder.glob(f"{kind}-*.json")]
        return sorted(out, key=lambda r: r["at"])


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    target = tmp_path / "app"
    shutil.copytree(SAMPLE_APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "local.settings.json").write_text(json.dumps(LOCAL_SETTINGS))
    return target


@pytest.fixture
def records(tmp_path: Path) -> Records:
    folder = tmp_path / "records"
    folder.mkdir()
    return Records(folder)


@pytest.fixture
def settings(azurite: Azurite, records: Records) -> dict[str, str]:
    """Environment for a host: this test's Azurite, queue name and record folder."""
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "WORK_QUEUE": f"work-{secrets.token_hex(4)}",
        "SAMPLE_RECORD_DIR": str(records.folder),
    }


@pytest.fixture
def start_host(app_dir: Path, settings: dict[str, str]) -> Iterator[Callable[..., LocalHost]]:
    """Start an in-process host on a free port; stopped at teardown."""
    hosts: list[LocalHost] = []

    def _start(extra: dict[str, str] | None = None, root: Path | None = None, **options: Any) -> LocalHost:
        host = LocalHost(
            root or app_dir, port=0, env_overrides={**settings, **(extra or {})}, shutdown_timeout=10, **options
        ).start()
        hosts.append(host)
        return host

    yield _start
    for host in hosts:
        gate = getattr(host.app_module, "GATE", None)
        if gate is not None:
            gate.set()  # let held functions end
        host.stop()


def set_host_json(app_dir: Path, **values: Any) -> None:
    """Change top-level host.json values of the test's copy of the sample app."""
    path = app_dir / "host.json"
    data = json.loads(path.read_text())
    data.update(values)
    path.write_text(json.dumps(data))


@pytest.fixture
def spawn_host(app_dir: Path, settings: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `python -m tools.local_host` as a subprocess; returns its base URL once it answers."""
    procs: list[subprocess.Popen[bytes]] = []

    def _spawn(extra: dict[str, str] | None = None) -> str:
        from tools.azurite import free_port

        port = free_port()
        env = {**os.environ, **settings, **(extra or {}), "PYTHONPATH": str(REPO_ROOT)}
        log = open(tmp_path / f"host-{port}.log", "wb")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            [sys.executable, "-m", "tools.local_host", "--port", str(port)],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def _up() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"host exited: {(tmp_path / f'host-{port}.log').read_text()}")
            try:
                return requests.get(f"{url}/admin/host/status", timeout=1).ok
            except requests.RequestException:
                return False

        wait_for(_up, timeout=20)
        return url

    yield _spawn
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
