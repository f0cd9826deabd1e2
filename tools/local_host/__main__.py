"""`python -m tools.local_host`: run the app in the current folder (or --script-root) like `func start`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .host import HostStartupError, LocalHost
from .settings import read_local_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local_host", description=__doc__)
    parser.add_argument("--script-root", default=".", help="folder holding function_app.py and host.json")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="HTTP port (default: local.settings.json Host.LocalHttpPort, else 7071)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="[%(asctime)s] %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    port = args.port
    if port is None:
        port = int(
            (read_local_settings(Path(args.script_root)).get("Host") or {}).get("LocalHttpPort") or 7071
        )
    try:
        host = LocalHost(args.script_root, port=port, host=args.host).start()
    except (HostStartupError, OSError, ValueError) as exc:
        logging.getLogger("tools.local_host").error("Host failed to start: %s", exc)
        return 1
    host.serve_forever()
    return 0


if __name__ == "__main__":
    code = main()
    # stop() has already waited (bounded) for running functions; a function still stuck (or one left
    # behind by a worker restart) must not keep the process alive: the host kills its worker likewise.
    logging.shutdown()
    sys.stdout.flush()
    os._exit(code)
