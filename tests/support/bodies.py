"""Request bodies the tests send. `installPatches` is Compute's VirtualMachineInstallPatchesParameters
(Compute API 2025-04-01); a run request carries it beside its machines.

The constants are shared by many modules: never change one in place. Copy it (`{**INSTALL, "rebootSetting": ...}`)
or build another with install(); tests/conftest.py fails a test that changes one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CRITICAL_SECURITY = ("Critical", "Security")


def install(*, duration: str = "PT2H", reboot: str = "IfRequired",
            windows: Sequence[str] | None = CRITICAL_SECURITY,
            linux: Sequence[str] | None = CRITICAL_SECURITY) -> dict[str, Any]:
    """installPatches parameters: classifications for each OS (None leaves that OS's parameters out)."""
    body: dict[str, Any] = {"maximumDuration": duration, "rebootSetting": reboot}
    if windows is not None:
        body["windowsParameters"] = {"classificationsToInclude": list(windows)}
    if linux is not None:
        body["linuxParameters"] = {"classificationsToInclude": list(linux)}
    return body


# Critical and Security updates on both OSes, a 2-hour window, reboot if required: most tests' request.
INSTALL = install()
# ... and Linux's "Other" too.
INSTALL_LINUX_OTHER = install(linux=(*CRITICAL_SECURITY, "Other"))
# ... and Windows' update rollups too.
INSTALL_WIDE = install(windows=(*CRITICAL_SECURITY, "UpdateRollUp"), linux=(*CRITICAL_SECURITY, "Other"))

SHARED = {"INSTALL": INSTALL, "INSTALL_LINUX_OTHER": INSTALL_LINUX_OTHER, "INSTALL_WIDE": INSTALL_WIDE}
