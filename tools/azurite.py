"""Start and stop Azurite (the Azure Storage emulator) from the npm package pinned in package.json.

Tests and the dev runner both use this, so there is exactly one way Azurite is launched:
loopback only, telemetry off, free ports, its own data folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connection_string(blob: int, queue: int, table: int, host: str = "127.0.0.1") -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob}/{ACCOUNT};"
        f"QueueEndpoint=http://{host}:{queue}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table}/{ACCOUNT};"
    )


def azurite_binary() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if not found:
        raise RuntimeError("Azurite is not installed: run `npm ci` in the repository root")
    return found


@dataclass
class Azurite:
    """A running Azurite process; `connection_string` is what AzureWebJobsStorage should hold."""

    blob_port: int = 0
    queue_port: int = 0
    table_port: int = 0
    location: str | None = None
    in_memory: bool = False  # --inMemoryPersistence: nothing written to disk (benchmarks; tests keep the default)
    # Its own process group, so a terminal's Ctrl-C reaches only the parent, which stops it after what uses it
    # (tools/dev.py: a host whose storage vanished first retried for 15 s before it could stop).
    own_process_group: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _owns_location: bool = field(default=False, repr=False)

    @property
    def connection_string(self) -> str:
        return connection_string(self.blob_port, self.queue_port, self.table_port)

    def start(self, timeout: float = 30.0) -> Azurite:
        self.blob_port = self.blob_port or free_port()
        self.queue_port = self.queue_port or free_port()
        self.table_port = self.table_port or free_port()
        if self.location is None:
            self.location = tempfile.mkdtemp(prefix="azurite-")
            self._owns_location = True
        cmd = [
            azurite_binary(),
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            # Azurite refuses --location with --inMemoryPersistence; its log still goes to `location`.
            *(["--inMemoryPersistence"] if self.in_memory else ["--location", self.location]),
            "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port),
        ]
        os.makedirs(self.location, exist_ok=True)
        log = open(os.path.join(self.location, "azurite.log"), "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.location,
                                        process_group=0 if self.own_process_group else None)
        deadline = time.monotonic() + timeout
        for port in (self.blob_port, self.queue_port, self.table_port):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"Azurite exited with {self.process.returncode}; see {self.location}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"Azurite did not listen on {port} within {timeout}s") from None
                    time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._owns_location and self.location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
