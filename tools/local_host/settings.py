"""App settings as the Functions host sees them: local.settings.json, the environment, `%NAME%` references.

Core Tools copies `local.settings.json` `Values` into the worker's environment, except that a variable
already set in the process environment wins (it prints "Skipping 'X' from local.settings.json as it's
already defined in current environment variables."). We do the same in `os.environ` because the user's
code reads settings from there, exactly as it does in Azure.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

log = logging.getLogger("tools.local_host")

_SETTING_REF = re.compile(r"%([^%]+)%")

# The development storage account Azurite serves on its default ports (same key as tools/azurite.py).
DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
    "TableEndpoint=http://127.0.0.1:10002/devstoreaccount1;"
)


class SettingsError(Exception):
    """A setting the app's bindings need is missing or malformed: the host refuses to start."""


def read_local_settings(script_root: Path) -> dict[str, Any]:
    """The parsed local.settings.json, or {} when the file does not exist (it is optional)."""
    path = script_root / "local.settings.json"
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{path} is not valid JSON: {exc}") from exc
    if data.get("IsEncrypted"):
        raise SettingsError(
            f"{path} is encrypted (IsEncrypted=true); the local host only reads plain settings"
        )
    return data


def apply_local_settings(values: Mapping[str, Any], environ: MutableMapping[str, str] | None = None) -> None:
    """Copy `Values` into the environment without overriding what the environment already defines."""
    env = os.environ if environ is None else environ
    for name, value in values.items():
        if name in env:
            log.info(
                "Skipping '%s' from local.settings.json as it's already defined in current "
                "environment variables.",
                name,
            )
            continue
        env[name] = "" if value is None else str(value)


def resolve(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every `%NAME%` with the setting's value, as the host's name resolver does for bindings."""
    env = os.environ if environ is None else environ

    def _lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise SettingsError(
                f"'%{name}%' does not resolve to a value: add the app setting '{name}' "
                "(local.settings.json Values or the environment)"
            )
        return env[name]

    return _SETTING_REF.sub(_lookup, value)


def resolve_properties(props: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resolve `%NAME%` in every string property of a binding (queueName, schedule, route ...)."""
    return {k: resolve(v, environ) if isinstance(v, str) else v for k, v in props.items()}


def storage_connection_string(connection: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The storage connection string a binding's `connection` names.

    Like the host: an empty name means `AzureWebJobsStorage`; a name `X` is looked up as `X` and then
    `AzureWebJobsX`; `UseDevelopmentStorage=true` means Azurite on 127.0.0.1:10000-10002.
    Identity-based connections (`X__accountName`, `X__queueServiceUri`) are not supported locally.
    """
    env = os.environ if environ is None else environ
    name = connection or "AzureWebJobsStorage"
    value = env.get(name) or env.get(f"AzureWebJobs{name}")
    if not value:
        raise SettingsError(
            f"Storage account connection string '{name}' does not exist. "
            "Make sure that it is a defined App Setting."
        )
    if value.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
        return DEV_STORAGE
    return value
