"""The actions of the custom roles infra/ grants (read from its Bicep), for the simulator's role assignments."""

from __future__ import annotations

from tests.infra.bicep import role_actions

# On each target: read machines, assess and install patches (and follow operations where they lie inside).
PATCH_ACTIONS = role_actions("patch-role.bicep", "patchOperator")
# At each target's subscription: read the status of the operations started there.
POLL_ACTIONS = role_actions("poll-role.bicep", "operationStatusReader")
