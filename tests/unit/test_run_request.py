"""Run request validation: every bad input is a 400 naming its field; accepted spellings normalise."""

from __future__ import annotations

import json

import pytest

from shared.core.errors import ValidationError
from shared.validation.run_request import parse_run_request

SUB = "00000000-0000-0000-0000-000000000001"
VM = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Compute/virtualMachines/web-01"


def body(**overrides: object) -> bytes:
    data: dict[str, object] = {
        "machines": [VM],
        "installPatches": {
            "maximumDuration": "PT2H",
            "rebootSetting": "IfRequired",
            "windowsParameters": {"classificationsToInclude": ["Critical", "Security"]},
            "linuxParameters": {"classificationsToInclude": ["Critical", "Security"]},
        },
    }
    data.update(overrides)
    return json.dumps(data).encode()


def parse(raw: bytes, max_machines: int = 1000):  # type: ignore[no-untyped-def]
    return parse_run_request(raw, max_bytes=64 * 1024, max_machines=max_machines)


def bad(raw: bytes, **kw: int) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse(raw, **kw)
    assert info.value.status == 400
    return info.value


def install(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {"maximumDuration": "PT2H", "rebootSetting": "IfRequired",
                               "windowsParameters": {"classificationsToInclude": ["Critical"]}}
    base.update(fields)
    return base


def test_valid_request_keeps_machines_and_normalises_parameters() -> None:
    req = parse(body())
    assert [m.name for m in req.machines] == ["web-01"]
    assert req.machines[0].key == f"{SUB}|rg-web|web-01"
    assert req.install_parameters["maximumDuration"] == "PT2H"
    assert req.install_parameters["windowsParameters"]["classificationsToInclude"] == ["Critical", "Security"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [("NeverReboot", "Never"), ("AlwaysReboot", "Always"), ("ifrequired", "IfRequired"), ("never", "Never")],
)
def test_reboot_setting_spellings_from_docs_and_cli(given: str, expected: str) -> None:
    req = parse(body(installPatches=install(rebootSetting=given)))
    assert req.install_parameters["rebootSetting"] == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("UpdateRollup", "UpdateRollUp"), ("Update Rollups", "UpdateRollUp"), ("critical", "Critical"),
     ("Definition Updates", "Definition"), ("FEATUREPACK", "FeaturePack"), ("Security Updates", "Security")],
)
def test_windows_classification_spellings(given: str, expected: str) -> None:
    req = parse(body(installPatches=install(windowsParameters={"classificationsToInclude": [given]})))
    assert req.install_parameters["windowsParameters"]["classificationsToInclude"] == [expected]


def test_kb_numbers_accept_kb_prefix() -> None:
    params = install(windowsParameters={"kbNumbersToInclude": ["KB5034441", "890830", 123]})
    req = parse(body(installPatches=params))
    assert req.install_parameters["windowsParameters"]["kbNumbersToInclude"] == ["5034441", "890830", "123"]


def test_max_patch_publish_date_with_seven_fraction_digits_is_normalised_to_utc() -> None:
    params = install(windowsParameters={"classificationsToInclude": ["Critical"],
                                        "maxPatchPublishDate": "2020-11-19T02:36:43.0539904+00:00"})
    req = parse(body(installPatches=params))
    assert req.install_parameters["windowsParameters"]["maxPatchPublishDate"] == "2020-11-19T02:36:43.053990Z"


@pytest.mark.parametrize(
    ("raw", "target", "code"),
    [
        (b"{not json", None, "InvalidRequestContent"),
        (b"[]", None, "InvalidRequestContent"),
        (b"", None, "InvalidRequestContent"),
        (body(extra=1), "extra", "InvalidRequestContent"),
        (body(machines=[]), "machines", "InvalidParameter"),
        (body(machines="x"), "machines", "InvalidParameter"),
        (body(machines=["/subscriptions/x/resourceGroups/rg"]), "machines[0]", "InvalidResourceId"),
        (body(machines=[VM, VM.upper().replace("SUBSCRIPTIONS", "subscriptions")]), "machines[1]", "InvalidParameter"),
        (body(machines=[VM.replace("web-01", "bad-")]), "machines[0]", "InvalidResourceId"),
        (body(machines=[VM.replace("Microsoft.Compute", "Microsoft.Storage")]), "machines[0]", "InvalidResourceId"),
        (body(installPatches=install(maximumDuration="2 hours")), "installPatches.maximumDuration",
         "InvalidParameter"),
        (body(installPatches=install(maximumDuration="P1M")), "installPatches.maximumDuration", "InvalidParameter"),
        (body(installPatches=install(maximumDuration="PT5H")), "installPatches.maximumDuration", "InvalidParameter"),
        (body(installPatches=install(maximumDuration="PT10M")), "installPatches.maximumDuration", "InvalidParameter"),
        (body(installPatches=install(maximumDuration=7200)), "installPatches.maximumDuration", "InvalidParameter"),
        (body(installPatches={"rebootSetting": "Never", "windowsParameters": {"classificationsToInclude": ["Tools"]}}),
         "installPatches.maximumDuration", "InvalidParameter"),
        (body(installPatches=install(rebootSetting="Sometimes")), "installPatches.rebootSetting", "InvalidParameter"),
        (body(installPatches=install(windowsParameters={"classificationsToInclude": ["Drivers"]})),
         "installPatches.windowsParameters.classificationsToInclude[0]", "InvalidParameter"),
        (body(installPatches=install(windowsParameters={"classificationsToInclude": ["Critical"], "kbs": []})),
         "installPatches.windowsParameters.kbs", "InvalidRequestContent"),
        (body(installPatches=install(windowsParameters={"kbNumbersToInclude": ["KBabc"]})),
         "installPatches.windowsParameters.kbNumbersToInclude[0]", "InvalidParameter"),
        (body(installPatches=install(windowsParameters={"excludeKbsRequiringReboot": True})),
         "installPatches.windowsParameters.classificationsToInclude", "InvalidParameter"),
        (body(installPatches=install(windowsParameters=None, linuxParameters={"classificationsToInclude": ["Other"],
                                                                               "packageNameMasksToInclude": [" "]})),
         "installPatches.linuxParameters.packageNameMasksToInclude[0]", "InvalidParameter"),
        (body(installPatches=install(windowsParameters=None)), "installPatches.windowsParameters", "InvalidParameter"),
        (body(installPatches=install(windowsParameters={"classificationsToInclude": ["Critical"],
                                                        "maxPatchPublishDate": "yesterday"})),
         "installPatches.windowsParameters.maxPatchPublishDate", "InvalidParameter"),
    ],
)
def test_bad_input_names_the_field(raw: bytes, target: str | None, code: str) -> None:
    err = bad(raw)
    assert err.target == target
    assert err.code == code
    assert err.body()["error"]["message"]


def test_too_many_machines() -> None:
    vms = [VM.replace("web-01", f"web-{i}") for i in range(3)]
    err = bad(body(machines=vms), max_machines=2)
    assert err.target == "machines"
    assert "at most 2" in err.message


def test_oversized_body_is_rejected_before_parsing() -> None:
    with pytest.raises(ValidationError) as info:
        parse_run_request(b" " * 2048 + body(), max_bytes=1024, max_machines=10)
    assert info.value.code == "RequestBodyTooLarge"


def test_fingerprint_ignores_spelling_and_order() -> None:
    vm2 = VM.replace("web-01", "web-02")
    a = parse(body(machines=[VM, vm2], installPatches=install(rebootSetting="NeverReboot")))
    b = parse(body(machines=[vm2, VM], installPatches=install(rebootSetting="never")))
    c = parse(body(machines=[VM], installPatches=install(rebootSetting="never")))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


SUB_RG = "/subscriptions/20b46a6d-0000-0000-0000-000000000001/resourceGroups/rg-web/providers/"


@pytest.mark.parametrize(("machine", "said"), [
    (SUB_RG + "Microsoft.Compute/virtualMachine/web-1",
     "the resource type 'Microsoft.Compute/virtualMachine' is not Microsoft.Compute/virtualMachines or "
     "Microsoft.HybridCompute/machines"),
    (SUB_RG + "Microsfot.Compute/virtualMachines/web-1", "the resource type 'Microsfot.Compute/virtualMachines'"),
    (SUB_RG + "Microsoft.Compute/virtualMachines/web-1.", "'web-1.' is not a VM name"),
    (SUB_RG + "Microsoft.HybridCompute/machines/" + "s" * 55, "is not an Arc-enabled server's name"),
    (SUB_RG + "Microsoft.Compute/virtualMachines/web-1/extensions/x", "'extensions/x' follows the machine's name"),
    (SUB_RG + "Microsoft.Compute/virtualMachines", "it ends after 'virtualMachines'"),
    (SUB_RG.replace("resourceGroups", "resourcegroup") + "Microsoft.Compute/virtualMachines/web-1",
     "'resourcegroup' stands where 'resourceGroups' belongs"),
    (SUB_RG.replace("rg-web", "rg-web.") + "Microsoft.Compute/virtualMachines/web-1", "resource group name 'rg-web.'"),
    ("/subscriptions/prod/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a", "'prod' is not a GUID"),
    ("subscriptions/x", "does not start with /subscriptions/"),
    ("  ", "it is empty"),
    (SUB_RG + "Microsoft.Compute/virtualMachines/web-1/", "it ends with a '/'"),
    (SUB_RG.replace("/providers/", "//providers/") + "Microsoft.Compute/virtualMachines/web-1",
     "a '/' is doubled after 'rg-web'"),
    (SUB_RG + "Microsoft.Compute/virtualMachines/w\u00e9b-1", "it holds 'é', U+00E9"),
])
def test_a_machine_id_that_does_not_read_says_which_part_is_wrong(machine: str, said: str) -> None:
    """An error repeats only the start of a value (errors.quoted), and an id's typo is usually near its end: the
    message names the part that is wrong."""
    body = json.dumps({"machines": [machine], "installPatches": {"maximumDuration": "PT2H",
                                                                 "rebootSetting": "IfRequired",
                                                                 "linuxParameters": {"classificationsToInclude":
                                                                                     ["Critical"]}}})
    with pytest.raises(ValidationError) as refused:
        parse_run_request(body.encode(), max_bytes=1 << 20, max_machines=10)
    assert refused.value.target == "machines[0]" and refused.value.code == "InvalidResourceId"
    assert said in str(refused.value), str(refused.value)


def test_where_only_a_vm_will_do_an_arc_id_is_said_to_be_the_wrong_type() -> None:
    from shared.validation.resource_ids import parse_vm_id

    with pytest.raises(ValidationError) as refused:
        parse_vm_id(SUB_RG + "Microsoft.HybridCompute/machines/store-1", target="vm")
    assert "the resource type 'Microsoft.HybridCompute/machines' is not Microsoft.Compute/virtualMachines)" in str(
        refused.value)
