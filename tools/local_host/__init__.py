"""A local Azure Functions host for v2-model Python apps (Core Tools cannot be installed here).

    from tools.local_host import LocalHost
    host = LocalHost("path/to/app", port=0, env_overrides={...}).start()
    host.base_url  # "http://127.0.0.1:PORT"
    host.stop()

or `python -m tools.local_host [--script-root DIR] [--port 7071] [--host 127.0.0.1]`.
"""

from __future__ import annotations

from .host import HostStartupError, LocalHost
from .invoker import InvocationRecord

__all__ = ["HostStartupError", "InvocationRecord", "LocalHost"]
