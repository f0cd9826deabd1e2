"""Where ARM bearer tokens come from.

In Azure: `DefaultAzureCredential`, which resolves to the Function App's managed identity
(`AZURE_CLIENT_ID` picks the user-assigned one). Locally against the simulator: a fixed token from
`ARM_DEV_TOKEN`, which settings.py only accepts for a loopback ARM endpoint.
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken, TokenCredential

from shared.core.settings import ArmSettings, LocalDevelopment


class StaticTokenCredential:
    """A TokenCredential that always returns one token (for the local ARM simulator only)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


def credential_for(arm: ArmSettings, local: LocalDevelopment) -> TokenCredential:
    if local.arm_dev_token:
        return StaticTokenCredential(local.arm_dev_token)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential(managed_identity_client_id=arm.managed_identity_client_id)
