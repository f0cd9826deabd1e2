"""What a Table transaction costs the app's process with azure-core as shipped, with the serial multipart copies
(shared/storage/serial_multipart.py, issue #22) with and without the body written directly, and with the client
options the app builds its clients with (shared/storage/clients.py `client_options_from_environment`).

Why this exists: at 10,000 machines over four subscriptions the local stack's worker threads were the limit while
no process was saturated. A profile of the host (py-spy, GIL-holding samples) put 39 % of its Python time in
`TableClient.submit_transaction`, and every worker thread spent a large share of its time in
`ThreadPoolExecutor.submit`: azure-core starts new threads for each transaction's parts, one at a time across the
process (serial_multipart's docstring says where and why).

Measured here, in one run: two-operation transactions (an upsert of a machine's row and of a counter row in its
partition, the machine step's shape) sent as fast as they go for SECONDS, by 1 and by 6 threads (6: the Python
worker's default pool on 2 cores), against a fresh in-memory Azurite; transactions a second, threads started per
transaction and this process's CPU milliseconds per transaction. Each variant runs in its own process, since the
copies, once installed, stay. This process's environment is what the app would see (a proxy or CA bundle set
there is read per request as shipped, once with the app's options).
Run with `.venv/bin/python -m benchmarks.table_transactions`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

SECONDS = 10.0
THREADS = (1, 6)
VARIANTS = {
    "azure-core as shipped": "shipped",
    "serial parts, body by email (session 25)": "serial-email",
    "serial parts, body written directly": "serial",
    "and the environment read once (the app's clients)": "app",
}


def measure(variant: str, threads: int, connection_string: str) -> dict[str, float]:
    """In this process: `threads` threads each submit transactions to its own partition for SECONDS."""
    from azure.data.tables import TableServiceClient

    from shared.storage import serial_multipart
    from shared.storage.clients import client_options_from_environment

    if variant != "shipped" and not serial_multipart.install():
        raise SystemExit("this azure-core is not one the serial copies were checked against")
    if variant == "serial-email":  # session 25's copies: the body as azure-core writes it
        for module in serial_multipart.BODY_HELPER_CALLERS:
            module._prepare_multipart_body_helper = serial_multipart._ORIGINAL_BODY_HELPER  # type: ignore[attr-defined]
    options: dict[str, object] = {}
    if variant == "app":
        options = client_options_from_environment(TableServiceClient.from_connection_string(connection_string).url)
    service = TableServiceClient.from_connection_string(connection_string, **options)
    table = service.create_table_if_not_exists(f"tx{variant.replace('-', '')}{threads}")
    starts = [0]
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        starts[0] += 1
        original_start(self)

    done = [0] * threads
    deadline = 0.0

    def work(i: int) -> None:
        partition = f"p{i}"
        n = 0
        while time.monotonic() < deadline:
            n += 1
            table.submit_transaction([
                ("upsert", {"PartitionKey": partition, "RowKey": str(uuid.uuid4()), "state": "Running"}),
                ("upsert", {"PartitionKey": partition, "RowKey": "counts", "n": n}),
            ])
            done[i] = n

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    threading.Thread.start = counting_start  # type: ignore[method-assign]  # counts the transactions' threads
    try:
        cpu, began = time.process_time(), time.monotonic()
        deadline = began + SECONDS
        for w in workers:
            original_start(w)
        for w in workers:
            w.join()
        cpu, elapsed = time.process_time() - cpu, time.monotonic() - began
    finally:
        threading.Thread.start = original_start  # type: ignore[method-assign]
    total = sum(done)
    return {"per_s": total / elapsed, "threads_per_tx": starts[0] / total, "cpu_ms": 1000 * cpu / total}


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        variant, rest = sys.argv[2], sys.argv[3]
        threads, connection_string = rest.split(" ", 1)
        print(json.dumps(measure(variant, int(threads), connection_string)))
        return
    from tools.azurite import Azurite

    rows = []
    with Azurite(in_memory=True) as azurite:
        for threads in THREADS:
            for label, variant in VARIANTS.items():
                out = subprocess.run([sys.executable, "-m", "benchmarks.table_transactions", "--one", variant,
                                      f"{threads} {azurite.connection_string}"],
                                     check=True, capture_output=True, text=True).stdout
                rows.append((label, threads, json.loads(out.strip().splitlines()[-1])))
    print(f"Two-operation Table transactions against Azurite for {SECONDS:.0f} s each, one fresh process per row")
    print("| client | threads | transactions/s | threads started per transaction | CPU ms per transaction |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, threads, m in rows:
        print(f"| {label} | {threads} | {m['per_s']:.0f} | {m['threads_per_tx']:.1f} | {m['cpu_ms']:.2f} |")


if __name__ == "__main__":
    main()
