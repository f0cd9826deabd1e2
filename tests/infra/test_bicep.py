"""infra/ is checked offline: every .bicep file parses, checkov passes, and the security properties the design
depends on (keyless storage, least-privilege custom role, azd parameters) are stated as tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from shared.arm.operations import POLL_ACTION
from tests.infra.bicep import BICEP_FILES, INFRA, evaluate, parse, role_actions, variable

MAIN = INFRA / "main.bicep"
APP = INFRA / "app"
# Health-gated rollouts: the machine's Resource Health status, and the alerts fired on it (a subscription list).
HEALTH_ACTION = "Microsoft.ResourceHealth/availabilityStatuses/read"
ALERTS_ACTION = "Microsoft.AlertsManagement/alerts/read"


# HybridCompute's Azure-AsyncOperation and Location of a patch operation (#23), both at the machine's subscription
ARC_LRO = ["Microsoft.HybridCompute/locations/operationstatus/read",
           "Microsoft.HybridCompute/locations/operationresults/read"]

def test_infra_has_the_expected_bicep_files() -> None:
    names = {p.relative_to(INFRA).as_posix() for p in BICEP_FILES}
    assert {"main.bicep", "app/api.bicep", "app/storage.bicep", "app/rbac.bicep", "app/patch-role.bicep",
            "app/poll-role.bicep", "app/poll-role-assignment-subscription.bicep"} <= names


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_bicep_file_parses(path) -> None:  # type: ignore[no-untyped-def]
    # checkov silently skips a file pycep cannot parse, so this is what makes the checkov run below meaningful.
    doc = parse(path)
    assert doc["resources"] or doc["modules"], f"{path.name} declares nothing"


def test_checkov_passes_with_every_skip_justified() -> None:
    pytest.importorskip("checkov", reason="checkov is a dev requirement (requirements-dev.txt)")
    cmd = [sys.executable, "-m", "checkov.main", "-d", str(INFRA), "--framework", "bicep",
           "--quiet", "--compact", "--skip-download", "--output", "json"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout)["summary"]
    assert summary["failed"] == 0
    assert summary["parsing_errors"] == 0
    assert summary["passed"] >= 10, f"checkov scanned suspiciously little: {summary}"
    for path in BICEP_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip=" in line:
                justified = re.search(r"checkov:skip=CKV2?_AZURE_\d+:\S.{15,}", line)
                assert justified, f"{path.name}: skip without a reason: {line}"


def test_no_keys_or_connection_strings_anywhere() -> None:
    for path in BICEP_FILES:
        text = path.read_text()
        assert "listKeys(" not in text, path.name
        assert "AccountKey=" not in text, path.name
        assert "InstrumentationKey=" not in text, path.name


def test_storage_is_keyless_and_private_to_entra() -> None:
    props = parse(APP / "storage.bicep")["resources"]["storage"]["config"]["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True


def test_app_insights_accepts_only_entra_ingestion() -> None:
    props = parse(APP / "monitoring.bicep")["resources"]["applicationInsights"]["config"]["properties"]
    assert props["DisableLocalAuth"] is True


def test_function_app_is_flex_consumption_python_311_with_identity_deployment() -> None:
    doc = parse(APP / "api.bicep")
    assert doc["resources"]["plan"]["config"]["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    config = doc["resources"]["functionApp"]["config"]["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["deployment"]["storage"]["authentication"]["type"] == "UserAssignedIdentity"
    assert set(config["scaleAndConcurrency"]) == {"instanceMemoryMB", "maximumInstanceCount"}
    host = variable(APP / "api.bicep", "hostSettings")
    assert host["AzureWebJobsStorage__credential"] == "managedidentity"
    # Flex Consumption rejects these; the runtime comes from functionAppConfig.runtime.
    assert not {"FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "AzureWebJobsStorage"} & set(host)


def test_custom_role_grants_exactly_the_calls_the_app_makes() -> None:
    role = parse(APP / "patch-role.bicep")["resources"]["patchOperator"]["config"]["properties"]
    [permissions] = role["permissions"]
    assert set(permissions["actions"]) == {
        "Microsoft.Compute/virtualMachines/read",  # GET a VM; list VMs in a subscription / resource group
        "Microsoft.Compute/virtualMachines/instanceView/read",
        "Microsoft.Compute/virtualMachines/installPatches/action",
        "Microsoft.Compute/virtualMachines/assessPatches/action",
        "Microsoft.Compute/locations/operations/read",  # GET the long-running operation URL
        "Microsoft.HybridCompute/machines/read",  # GET an Arc machine; list them in a subscription / resource group
        "Microsoft.HybridCompute/machines/installPatches/action",
        "Microsoft.HybridCompute/machines/assessPatches/action",
        "Microsoft.HybridCompute/locations/updateCenterOperationResults/read",  # an Arc operation's Location
        *ARC_LRO,  # HybridCompute's Azure-AsyncOperation (operationstatus) and Location (operationresults)
        HEALTH_ACTION,  # GET {machineId}/providers/Microsoft.ResourceHealth/availabilityStatuses/current
        ALERTS_ACTION,  # GET /subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts (subscription targets)
    }
    assert not any("*" in a for a in permissions["actions"])
    assert permissions["dataActions"] == [] and permissions["notActions"] == []
    assert role["assignableScopes"] == "assignableScopes"


def test_poll_role_grants_only_reading_operation_status() -> None:
    role = parse(APP / "poll-role.bicep")["resources"]["operationStatusReader"]["config"]["properties"]
    [permissions] = role["permissions"]
    # the action the app's 403 message names (shared.arm.operations), and Arc's counterpart
    arc_poll = "Microsoft.HybridCompute/locations/updateCenterOperationResults/read"
    # and the alerts list of health-gated rollouts, also a subscription path
    assert permissions["actions"] == [POLL_ACTION, arc_poll, *ARC_LRO, ALERTS_ACTION]
    assert permissions["dataActions"] == [] and permissions["notActions"] == []
    assert role["assignableScopes"] == "assignableScopes"


def test_health_gate_reads_are_granted_where_their_urls_lie_and_nothing_wider() -> None:
    # Health-gated rollouts read, per machine after patching:
    #  - {machineId}/providers/Microsoft.ResourceHealth/availabilityStatuses/current: under the machine, so the
    #    role on the target scope (subscription or resource group) covers it; the subscription-wide poll role
    #    must not carry it (that would reach every machine in a resource-group target's subscription);
    #  - /subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts: a subscription path, so it must be in
    #    the role assigned at the subscription of resource-group targets (poll role) and in the patch role, which
    #    is the only role a subscription target gets (pollRole is deployed only for resource-group targets).
    patch = role_actions("patch-role.bicep", "patchOperator")
    poll = role_actions("poll-role.bicep", "operationStatusReader")
    assert HEALTH_ACTION in patch and HEALTH_ACTION not in poll
    assert ALERTS_ACTION in patch and ALERTS_ACTION in poll
    for actions in (patch, poll):
        assert len(actions) == len(set(actions))
        assert not any("*" in a for a in actions), actions  # no "*/read", "Microsoft.AlertsManagement/*", ...
        # only reads of those two providers: no write, delete or action on health or alerts
        providers = ("Microsoft.ResourceHealth/", "Microsoft.AlertsManagement/")
        assert {a for a in actions if a.startswith(providers)} <= {HEALTH_ACTION, ALERTS_ACTION}
    # every action line states the REST call it serves in the comment above it
    for file in ("patch-role.bicep", "poll-role.bicep"):
        lines = (APP / file).read_text().splitlines()
        for action in (HEALTH_ACTION, ALERTS_ACTION):
            at = [i for i, line in enumerate(lines) if line.strip() == f"'{action}'"]
            if not at:
                continue
            [i] = at
            comment = "\n".join(line for line in lines[max(0, i - 3):i] if line.strip().startswith("//"))
            url = ("/providers/Microsoft.ResourceHealth/availabilityStatuses/current" if action == HEALTH_ACTION
                   else "/subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts")
            assert "GET " in comment and url in comment, f"{file}: {action} needs a comment with its REST call"


TARGETS = ["/subscriptions/aaaa", "/subscriptions/BBBB/resourceGroups/rg-1", "/subscriptions/bbbb/resourceGroups/rg-2",
           "/subscriptions/cccc/resourceGroups/rg-3", "/subscriptions/aaaa/resourceGroups/rg-4", "not-a-scope"]


@pytest.mark.parametrize("targets", [TARGETS, TARGETS[:1], []], ids=["mixed", "subscription-only", "none"])
def test_poll_role_is_assigned_at_the_subscription_of_every_resource_group_target(targets: list[str]) -> None:
    # Polling .../subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id} needs
    # POLL_ACTION at the subscription; a resource group's role does not reach it (shared.arm.operations).
    env = {"patchTargetScopes": targets}
    modules = parse(MAIN)["modules"]
    loop = modules["pollRoleOnSubscriptions"]
    assert loop["detail"]["path"] == "app/poll-role-assignment-subscription.bicep"
    each = loop["config"]["loop_type"]["detail"]
    body = loop["config"]["config"]
    scopes = [evaluate(MAIN, body["scope"], {**env, each["item_name"]: item})
              for item in evaluate(MAIN, each["array_name"], env)]
    wanted = {"/subscriptions/" + t.split("/")[2].lower() for t in targets if len(t.split("/")) == 5}
    assert set(scopes) == wanted and len(scopes) == len(wanted)  # every one, each once (ids ignore case)
    assert body["dependsOn"] == ["pollRole"]

    role = modules["pollRole"]
    assert role["detail"]["path"] == "app/poll-role.bicep"
    assert evaluate(MAIN, role["config"]["condition"], env) is bool(wanted)  # no role when no resource group
    assert set(evaluate(MAIN, role["config"]["config"]["params"]["assignableScopes"], env)) == wanted
    assert role["config"]["config"]["params"]["roleDefinitionName"] == body["params"]["roleDefinitionName"]


def test_custom_roles_are_unique_per_subscription_and_environment() -> None:
    # Role definitions are tenant-wide: two azd environments named alike in two subscriptions of one tenant
    # must not share a role definition name (a GUID) or a role name.
    doc = parse(MAIN)
    resource_token = variable(MAIN, "resourceToken")["function"]["parameters"]["string_to_change"]["function"]
    assert resource_token["type"] == "unique_string"
    token_seeds = list(resource_token["parameters"].values())
    assert "environmentName" in token_seeds and "location" in token_seeds
    subscription_id = {"function": {"type": "subscription", "parameters": {"subscription_id": None},
                                    "property_name": "id"}}
    assert subscription_id in token_seeds
    names = set()
    for role, module in (("patch", "patchRole"), ("poll", "pollRole")):
        guid = variable(MAIN, f"{role}RoleDefinitionName")["function"]
        assert guid["type"] == "guid"
        seeds = list(guid["parameters"].values())
        assert subscription_id in seeds and "environmentName" in seeds, role
        names.add(json.dumps(seeds))
        role_name = variable(MAIN, f"{role}RoleName")
        assert "${environmentName}" in role_name and "${resourceToken}" in role_name, role
        params = doc["modules"][module]["config"]["config"]["params"]
        assert params["roleDefinitionName"] == f"{role}RoleDefinitionName" and params["roleName"] == f"{role}RoleName"
    assert len(names) == 2  # the two roles never share a name


def test_every_role_assignment_is_named_by_scope_principal_and_role_and_commented() -> None:
    for path in BICEP_FILES:
        lines = path.read_text().splitlines()
        for name, res in parse(path)["resources"].items():
            if res["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = res["config"].get("config", res["config"])  # conditional resources nest their body
            assert config["name"]["function"]["type"] == "guid", f"{path.name}:{name}"
            assert config["properties"]["principalType"] in ("ServicePrincipal", "User"), f"{path.name}:{name}"
            start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {name} "))
            assert lines[start - 1].startswith("// "), f"{path.name}:{name} needs a comment naming its role"


def test_parameters_file_matches_main_bicep() -> None:
    params = parse(MAIN)["parameters"]
    given = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(given) <= set(params), f"unknown parameters: {set(given) - set(params)}"
    required = {name for name, p in params.items() if "default" not in p}
    assert required <= set(given), f"required parameters azd does not pass: {required - set(given)}"
    assert given["patchTargetScopes"]["value"] == "${PATCH_TARGET_SCOPES=[]}"


def test_azure_yaml_deploys_this_folder_as_a_python_function() -> None:
    text = (INFRA.parent / "azure.yaml").read_text()
    assert re.search(r"^services:\n  api:\n    project: \.\n    language: python\n    host: function$", text, re.M)


def test_every_api_route_but_the_dashboards_is_left_to_function_keys_when_sign_in_is_on() -> None:
    """With dashboardAuthClientId, App Service Authentication sends browsers to sign-in except on keyOnlyPaths: a
    route missing there would redirect Logic Apps and scripts (plans were, once)."""
    from pathlib import Path

    from tests.unit.test_docs import http_routes

    text = (INFRA / "main.bicep").read_text(encoding="utf-8")
    listed = re.search(r"keyOnlyPaths: \[(.*?)\]", text, re.DOTALL)
    assert listed is not None
    paths = set(re.findall(r"'([^']+)'", listed.group(1)))
    routes = {"/api/" + route.split("/")[0] for _, route in http_routes(Path(__file__).resolve().parents[2])}
    assert routes - {"/api/dashboard"} <= paths, routes - paths
