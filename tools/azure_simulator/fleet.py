"""The simulated fleet: subscriptions, resource groups, VMs and the patches each VM is missing.

Everything is generated from the seed, so two simulators with the same config hold the same VMs with the
same ids and the same missing patches. Windows patches carry KB ids and Windows Update titles; Linux
patches are package name + version. Classification strings are the ones Compute reports on patches (the
spec examples show "Definition Updates" and "Update Rollups"), not the request enum names.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.azure_simulator.errors import ArmError

REFERENCE_DATE = datetime(
    2025, 10, 20, tzinfo=UTC
)  # "today" for publish dates: deterministic, never real time
PATCH_TUESDAY = datetime(2025, 10, 14, 17, 0, tzinfo=UTC)

CRITICAL_OR_SECURITY = frozenset({"Critical", "Security"})
COMPUTE = "Microsoft.Compute"
HYBRID_COMPUTE = "Microsoft.HybridCompute"
ARC_STATUSES = ("Connected", "Disconnected", "Expired")


def iso_z(when: datetime) -> str:
    """Compute's result timestamps: UTC with 7 fractional digits and a Z, as in the spec examples."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def new_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(frozen=True)
class Patch:
    """One missing update. `duration` is simulated seconds to install it."""

    patch_id: str
    name: str
    version: str
    kb_id: str | None
    classification: str
    reboot_behavior: str  # NeverReboots | AlwaysRequiresReboot | CanRequestReboot
    published: datetime
    duration: float
    requests_reboot: bool  # for CanRequestReboot: whether installing it actually asks for a reboot
    security_fix: bool = False  # a security fix reported as Other (Ubuntu's -updates pocket: see updates_pocket)

    @property
    def needs_reboot(self) -> bool:
        return self.reboot_behavior == "AlwaysRequiresReboot" or (
            self.reboot_behavior == "CanRequestReboot" and self.requests_reboot
        )

    @property
    def critical_or_security(self) -> bool:
        return self.classification in CRITICAL_OR_SECURITY

    def _identity(self) -> dict[str, Any]:
        data: dict[str, Any] = {"patchId": self.patch_id, "name": self.name, "version": self.version}
        if self.kb_id is not None:
            data["kbId"] = self.kb_id
        data["classifications"] = [self.classification]
        return data

    def available(self, activity_id: str, when: datetime) -> dict[str, Any]:
        """VirtualMachineSoftwarePatchProperties, as assessPatches reports it."""
        return {
            **self._identity(),
            "rebootBehavior": self.reboot_behavior,
            "activityId": activity_id,
            "publishedDate": self.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastModifiedDateTime": iso_z(when),
            "assessmentState": "Available",
        }

    def installation(self, state: str) -> dict[str, Any]:
        """PatchInstallationDetail, as installPatches reports it."""
        return {**self._identity(), "installationState": state}

    def summary(self) -> dict[str, Any]:
        return {
            "patchId": self.patch_id,
            "name": self.name,
            "version": self.version,
            "kbId": self.kb_id,
            "classification": self.classification,
            "rebootBehavior": self.reboot_behavior,
            "publishedDate": self.published.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "simulatedSeconds": self.duration,
            **({"securityFix": True} if self.security_fix else {}),
        }


@dataclass(frozen=True)
class OsImage:
    os_type: str  # Windows | Linux
    os_name: str
    os_version: str
    publisher: str
    offer: str
    sku: str
    product: str  # how Windows Update titles name the product, or the Linux distro id


WINDOWS_IMAGES = (
    OsImage(
        "Windows",
        "Windows Server 2019 Datacenter",
        "10.0.17763.7792",
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2019-datacenter-gensecond",
        "Windows Server 2019",
    ),
    OsImage(
        "Windows",
        "Windows Server 2022 Datacenter: Azure Edition",
        "10.0.20348.4171",
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2022-datacenter-azure-edition",
        "Windows Server 2022",
    ),
    OsImage(
        "Windows",
        "Windows Server 2025 Datacenter: Azure Edition",
        "10.0.26100.6584",
        "MicrosoftWindowsServer",
        "WindowsServer",
        "2025-datacenter-azure-edition",
        "Windows Server 2025",
    ),
)
LINUX_IMAGES = (
    OsImage(
        "Linux",
        "ubuntu",
        "22.04",
        "Canonical",
        "0001-com-ubuntu-server-jammy",
        "22_04-lts-gen2",
        "Ubuntu_22.04",
    ),
    OsImage("Linux", "ubuntu", "24.04", "Canonical", "ubuntu-24_04-lts", "server", "Ubuntu_24.04"),
    OsImage("Linux", "redhat", "9.5", "RedHat", "RHEL", "9-lvm-gen2", "RHEL_9"),
)

# name, classification, rebootBehavior, {distro: new version}
LINUX_PACKAGES: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    (
        "openssl",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "3.0.2-0ubuntu1.20",
            "Ubuntu_24.04": "3.0.13-0ubuntu3.6",
            "RHEL_9": "1:3.2.2-6.el9_5.1",
        },
    ),
    (
        "libssl3",
        "Security",
        "NeverReboots",
        {"Ubuntu_22.04": "3.0.2-0ubuntu1.20", "Ubuntu_24.04": "3.0.13-0ubuntu3.6"},
    ),
    (
        "curl",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "7.81.0-1ubuntu1.21",
            "Ubuntu_24.04": "8.5.0-2ubuntu10.6",
            "RHEL_9": "7.76.1-31.el9",
        },
    ),
    (
        "libcurl4",
        "Security",
        "NeverReboots",
        {"Ubuntu_22.04": "7.81.0-1ubuntu1.21", "Ubuntu_24.04": "8.5.0-2ubuntu10.6"},
    ),
    (
        "linux-image-azure",
        "Critical",
        "AlwaysRequiresReboot",
        {"Ubuntu_22.04": "6.8.0.1041.46~22.04.1", "Ubuntu_24.04": "6.14.0.1012.12~24.04.1"},
    ),
    ("kernel", "Critical", "AlwaysRequiresReboot", {"RHEL_9": "5.14.0-503.40.1.el9_5"}),
    (
        "sudo",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "1.9.9-1ubuntu2.5",
            "Ubuntu_24.04": "1.9.15p5-3ubuntu5.24.04.1",
            "RHEL_9": "1.9.5p2-10.el9_3",
        },
    ),
    (
        "systemd",
        "Security",
        "CanRequestReboot",
        {
            "Ubuntu_22.04": "249.11-0ubuntu3.16",
            "Ubuntu_24.04": "255.4-1ubuntu8.10",
            "RHEL_9": "252-46.el9_5.3",
        },
    ),
    (
        "libc6",
        "Critical",
        "CanRequestReboot",
        {"Ubuntu_22.04": "2.35-0ubuntu3.10", "Ubuntu_24.04": "2.39-0ubuntu8.5"},
    ),
    ("glibc", "Critical", "CanRequestReboot", {"RHEL_9": "2.34-125.el9_5.8"}),
    (
        "openssh-server",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "1:8.9p1-3ubuntu0.13",
            "Ubuntu_24.04": "1:9.6p1-3ubuntu13.12",
            "RHEL_9": "8.7p1-43.el9",
        },
    ),
    (
        "python3",
        "Security",
        "NeverReboots",
        {"Ubuntu_22.04": "3.10.6-1~22.04.1", "Ubuntu_24.04": "3.12.3-0ubuntu2", "RHEL_9": "3.9.21-1.el9_5"},
    ),
    (
        "libxml2",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "2.9.13+dfsg-1ubuntu0.7",
            "Ubuntu_24.04": "2.9.14+dfsg-1.3ubuntu3.3",
            "RHEL_9": "2.9.13-9.el9_5",
        },
    ),
    (
        "tzdata",
        "Other",
        "NeverReboots",
        {
            "Ubuntu_22.04": "2025b-0ubuntu0.22.04.1",
            "Ubuntu_24.04": "2025b-0ubuntu0.24.04.1",
            "RHEL_9": "2025b-1.el9",
        },
    ),
    (
        "vim",
        "Other",
        "NeverReboots",
        {
            "Ubuntu_22.04": "2:8.2.3995-1ubuntu2.24",
            "Ubuntu_24.04": "2:9.1.0016-1ubuntu7.8",
            "RHEL_9": "2:8.2.2637-21.el9",
        },
    ),
    (
        "git",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "1:2.34.1-1ubuntu1.15",
            "Ubuntu_24.04": "1:2.43.0-1ubuntu7.3",
            "RHEL_9": "2.43.5-2.el9_5",
        },
    ),
    (
        "ca-certificates",
        "Other",
        "NeverReboots",
        {
            "Ubuntu_22.04": "20240203~22.04.1",
            "Ubuntu_24.04": "20240203",
            "RHEL_9": "2024.2.69_v8.0.303-91.4.el9_4",
        },
    ),
    ("snapd", "Other", "NeverReboots", {"Ubuntu_22.04": "2.67.1+22.04", "Ubuntu_24.04": "2.67.1+24.04"}),
    (
        "rsync",
        "Security",
        "NeverReboots",
        {
            "Ubuntu_22.04": "3.2.7-0ubuntu0.22.04.4",
            "Ubuntu_24.04": "3.2.7-1ubuntu1.2",
            "RHEL_9": "3.2.3-20.el9_5.1",
        },
    ),
    (
        "libexpat1",
        "Security",
        "NeverReboots",
        {"Ubuntu_22.04": "2.4.7-1ubuntu0.6", "Ubuntu_24.04": "2.6.1-2ubuntu0.3"},
    ),
    ("expat", "Security", "NeverReboots", {"RHEL_9": "2.5.0-3.el9_5.3"}),
    ("apt", "Other", "NeverReboots", {"Ubuntu_22.04": "2.4.14", "Ubuntu_24.04": "2.8.3"}),
)

VM_SIZES = ("Standard_D2s_v5", "Standard_D4s_v5", "Standard_B2ms", "Standard_E4s_v5", "Standard_D2as_v5")
RG_NAMES = ("RG-Prod-Web", "rg-prod-data", "RG-Shared-Infra", "rg-dev-Apps")
WINDOWS_ROLES = ("WEB", "SQL", "APP", "DC", "FS")
LINUX_ROLES = ("web", "api", "db", "cache", "worker")


def _kb(rng: random.Random) -> str:
    return str(rng.randint(5_040_000, 5_069_999))


def windows_catalog(image: OsImage, rng: random.Random) -> dict[str, list[Patch]]:
    """Missing updates a Windows VM on this image may have, grouped by how often VMs miss them."""
    product = image.product
    cu_kb = "5066782" if product == "Windows Server 2022" else _kb(rng)

    def patch(  # noqa: PLR0917 - a local table-builder; positional reads like the table it builds
        name: str,
        kb: str,
        classification: str,
        reboot: str,
        published: datetime,
        seconds: tuple[float, float],
        requests_reboot: bool = False,
    ) -> Patch:
        return Patch(
            new_uuid(rng),
            name,
            "",
            kb,
            classification,
            reboot,
            published,
            round(rng.uniform(*seconds)),
            requests_reboot,
        )

    month = PATCH_TUESDAY.strftime("%Y-%m")
    previous = (PATCH_TUESDAY - timedelta(days=35)).strftime("%Y-%m")
    core = [
        patch(
            f"{month} Cumulative Update for {product} for x64-based Systems (KB{cu_kb})",
            cu_kb,
            "Security",
            "AlwaysRequiresReboot",
            PATCH_TUESDAY,
            (1200, 2700),
        ),
        patch(
            f"{month} Servicing Stack Update for {product} for x64-based Systems (KB{(kb := _kb(rng))})",
            kb,
            "Critical",
            "NeverReboots",
            PATCH_TUESDAY,
            (120, 300),
        ),
        patch(
            f"Security Intelligence Update for Microsoft Defender Antivirus - KB2267602 "
            f"(Version 1.439.{rng.randint(100, 400)}.0)",
            "2267602",
            "Definition Updates",
            "NeverReboots",
            REFERENCE_DATE - timedelta(hours=rng.randint(2, 40)),
            (30, 90),
        ),
    ]
    common = [
        patch(
            f"{month} Cumulative Update for .NET Framework 3.5, 4.8 and 4.8.1 for {product} for x64 "
            f"(KB{(kb := _kb(rng))})",
            kb,
            "Security",
            "CanRequestReboot",
            PATCH_TUESDAY,
            (300, 900),
            True,
        ),
        patch(
            "Windows Malicious Software Removal Tool x64 - v5.135 (KB890830)",
            "890830",
            "Update Rollups",
            "CanRequestReboot",
            PATCH_TUESDAY,
            (120, 240),
            False,
        ),
    ]
    optional = [
        patch(
            f"{previous} Update for {product} for x64-based Systems (KB{(kb := _kb(rng))})",
            kb,
            "Updates",
            "CanRequestReboot",
            PATCH_TUESDAY - timedelta(days=21),
            (120, 600),
            rng.random() < 0.5,
        ),
        patch(
            f"{month} Dynamic Update for {product} for x64-based Systems (KB{(kb := _kb(rng))})",
            kb,
            "Updates",
            "NeverReboots",
            PATCH_TUESDAY + timedelta(days=2),
            (60, 240),
        ),
        patch(
            f"Microsoft .NET Framework 4.8.1 for {product} for x64 (KB{(kb := _kb(rng))})",
            kb,
            "FeaturePack",
            "AlwaysRequiresReboot",
            datetime(2025, 8, 12, 17, tzinfo=UTC),
            (600, 1200),
        ),
        patch(
            f"Update for Windows Server Diagnostic Tools for {product} (KB{(kb := _kb(rng))})",
            kb,
            "Tools",
            "NeverReboots",
            datetime(2025, 7, 8, 17, tzinfo=UTC),
            (60, 180),
        ),
        patch(
            "SQL Server 2016 Service Pack 3 (KB5003279)",
            "5003279",
            "ServicePack",
            "AlwaysRequiresReboot",
            datetime(2021, 9, 15, 17, tzinfo=UTC),
            (900, 1800),
        ),
    ]
    return {"core": core, "common": common, "optional": optional}


def linux_catalog(image: OsImage, rng: random.Random) -> list[Patch]:
    patches = []
    for name, classification, reboot, versions in LINUX_PACKAGES:
        version = versions.get(image.product)
        if version is None:
            continue
        published = REFERENCE_DATE - timedelta(days=rng.randint(1, 75), hours=rng.randint(0, 23))
        seconds = (60, 240) if reboot == "AlwaysRequiresReboot" else (10, 90)
        patches.append(
            Patch(
                f"{name}_{version}_{image.product}",
                name,
                version,
                None,
                classification,
                reboot,
                published,
                round(rng.uniform(*seconds)),
                rng.random() < 0.3,
            )
        )
    return patches


def updates_pocket(catalog: list[Patch], image: OsImage, share: float) -> list[Patch]:
    """Ubuntu: `share` of the image's security fixes classified Other instead of Security.

    Azure's patch extension classifies an Ubuntu package Security only when the candidate version comes from
    the -security pocket; Canonical publishes security fixes to -updates too, and a package apt takes from there
    is reported Other, so a "Critical and Security only" installation skips a real security fix. Which packages
    are drawn depends only on distribution and package name (not the seed), so every VM of an image agrees, and
    a larger share keeps the packages a smaller one chose."""
    if share <= 0 or image.os_name != "ubuntu":
        return catalog
    return [
        replace(p, classification="Other", security_fix=True)
        if p.classification == "Security" and random.Random(f"updates-pocket:{image.product}:{p.name}").random() < share
        else p
        for p in catalog
    ]


def new_patch(os_type: str, classification: str, name: str | None, published: datetime, n: int) -> Patch:
    """An update published during the simulation (Windows: a KB; Linux: a package version)."""
    rng = random.Random(f"published:{os_type}:{n}:{published.isoformat()}")
    if os_type == "Windows":
        kb = str(5070000 + rng.randint(0, 9999))
        title = name or f"{published:%Y-%m} Security Update for Windows Server (KB{kb})"
        return Patch(new_uuid(rng), title, "", kb, classification, "CanRequestReboot", published,
                     rng.uniform(120, 900), rng.random() < 0.5)
    package = name or f"libsim{n}"
    version = f"1.{n}.{rng.randint(0, 9)}-1"
    return Patch(f"{package}_{version}", package, version, None, classification, "NeverReboots", published,
                 rng.uniform(10, 90), False)


def upcoming_patches(count: int, within_hours: float, seed: int, start: datetime) -> dict[str, list[Patch]]:
    """`count` updates per OS type with publish dates spread over the next `within_hours` (simulated)."""
    rng = random.Random(f"upcoming:{seed}")
    result: dict[str, list[Patch]] = {}
    for offset, os_type in enumerate(("Windows", "Linux")):
        result[os_type] = [
            new_patch(os_type, rng.choice(("Critical", "Security", "Security", "Other")), None,
                      start + timedelta(hours=rng.uniform(0.01, within_hours)), 100000 + 500 * offset + i)
            for i in range(count)
        ]
    return result


@dataclass
class VirtualMachine:
    """One VM: its ARM model plus the guest state the patch operations change."""

    subscription_id: str
    resource_group: str
    name: str
    location: str
    image: OsImage
    vm_size: str
    vm_id: str
    tags: dict[str, str]
    patch_mode: str
    assessment_mode: str
    power_state: str  # running | deallocated | stopped
    reboot_pending: bool
    pending: list[Patch]
    time_created: datetime
    installed: list[Patch] = field(default_factory=list)
    upcoming: list[Patch] = field(default_factory=list)  # published later in simulated time (see settle())
    # An Azure Arc-enabled server (Microsoft.HybridCompute/machines) instead of an Azure VM: it has no power
    # state that ARM knows, but its Connected Machine agent's status (Connected | Disconnected | Expired).
    arc: bool = False
    agent_status: str = "Connected"
    last_status_change: datetime | None = None

    @property
    def provider(self) -> str:
        return HYBRID_COMPUTE if self.arc else COMPUTE

    @property
    def id(self) -> str:
        kind = "Microsoft.HybridCompute/machines" if self.arc else "Microsoft.Compute/virtualMachines"
        rg_path = f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
        return f"{rg_path}/providers/{kind}/{self.name}"

    @property
    def key(self) -> str:
        return self.id.lower()

    @property
    def os_type(self) -> str:
        return self.image.os_type

    def model(self) -> dict[str, Any]:
        """The VirtualMachine resource as GET/list return it (VirtualMachine_ListBySubscription_* shape)."""
        windows = self.os_type == "Windows"
        patch_settings = {"patchMode": self.patch_mode, "assessmentMode": self.assessment_mode}
        os_profile: dict[str, Any] = {
            "computerName": self.name[:15] if windows else self.name,
            "adminUsername": "azureadmin",
            "secrets": [],
            "allowExtensionOperations": True,
        }
        if windows:
            os_profile["windowsConfiguration"] = {
                "provisionVMAgent": True,
                "enableAutomaticUpdates": True,
                "patchSettings": patch_settings,
            }
        else:
            os_profile["linuxConfiguration"] = {
                "disablePasswordAuthentication": True,
                "provisionVMAgent": True,
                "patchSettings": patch_settings,
            }
        rg_path = f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}/providers"
        return {
            "name": self.name,
            "id": self.id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": self.location,
            "tags": dict(self.tags),
            "properties": {
                "vmId": self.vm_id,
                "hardwareProfile": {"vmSize": self.vm_size},
                "storageProfile": {
                    "imageReference": {
                        "publisher": self.image.publisher,
                        "offer": self.image.offer,
                        "sku": self.image.sku,
                        "version": "latest",
                        "exactVersion": "1.0.0",
                    },
                    "osDisk": {
                        "osType": self.os_type,
                        "name": f"{self.name}_OsDisk_1",
                        "createOption": "FromImage",
                        "caching": "ReadWrite",
                        "managedDisk": {
                            "storageAccountType": "Premium_LRS",
                            "id": f"{rg_path}/Microsoft.Compute/disks/{self.name}_OsDisk_1",
                        },
                        "deleteOption": "Delete",
                        "diskSizeGB": 127 if windows else 30,
                    },
                    "dataDisks": [],
                },
                "osProfile": os_profile,
                "networkProfile": {
                    "networkInterfaces": [
                        {"id": f"{rg_path}/Microsoft.Network/networkInterfaces/{self.name}-nic"}
                    ]
                },
                "provisioningState": "Succeeded",
                "timeCreated": self.time_created.strftime("%Y-%m-%dT%H:%M:%S.%f") + "+00:00",
            },
        }


@dataclass
class Fleet:
    """All VMs and Arc machines, indexed the way ARM resolves them: case-insensitively."""

    subscriptions: list[str]
    resource_groups: dict[str, dict[str, str]]  # sub (lower) -> rg (lower) -> rg (original)
    vms: list[VirtualMachine]
    by_key: dict[str, VirtualMachine] = field(default_factory=dict)
    machines: list[VirtualMachine] = field(default_factory=list)  # Azure Arc-enabled servers

    def __post_init__(self) -> None:
        self.by_key = {vm.key: vm for vm in (*self.vms, *self.machines)}
        # Indexes so a list page or a lookup never scans the fleet (10,000 VMs: docs/simulator.md, at scale).
        self._subs = {sub.lower(): sub for sub in self.subscriptions}
        self._vms_by_sub: dict[str, list[VirtualMachine]] = {}
        self._vms_by_rg: dict[tuple[str, str], list[VirtualMachine]] = {}
        for vm in self.vms:
            self._index(vm)

    def _index(self, vm: VirtualMachine) -> None:
        sub = vm.subscription_id.lower()
        self._vms_by_sub.setdefault(sub, []).append(vm)
        self._vms_by_rg.setdefault((sub, vm.resource_group.lower()), []).append(vm)

    def add_machines(self, machines: list[VirtualMachine]) -> None:
        for machine in machines:
            self.resource_groups.setdefault(machine.subscription_id.lower(), {}).setdefault(
                machine.resource_group.lower(), machine.resource_group
            )
            self.machines.append(machine)
            self.by_key[machine.key] = machine

    def machine(self, sub: str, rg: str, name: str) -> VirtualMachine:
        """An Arc machine, or ARM's 404 for it."""
        rg_name = self.resource_group(sub, rg)
        machine = self.by_key.get(
            f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.hybridcompute/machines/{name}".lower()
        )
        if machine is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.HybridCompute/machines/{name}' under resource group '{rg_name}' was not "
                "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            )
        return machine

    def machines_in_subscription(self, sub: str) -> list[VirtualMachine]:
        known = self.subscription(sub)
        return [m for m in self.machines if m.subscription_id == known]

    def subscription(self, sub: str) -> str:
        known = self._subs.get(sub.lower())
        if known is None:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        return known

    def resource_group(self, sub: str, rg: str) -> str:
        known = self.resource_groups.get(self.subscription(sub).lower(), {}).get(rg.lower())
        if known is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        return known

    def vm(self, sub: str, rg: str, name: str) -> VirtualMachine:
        rg_name = self.resource_group(sub, rg)
        vm = self.by_key.get(
            f"/subscriptions/{sub}/resourcegroups/{rg}/providers/microsoft.compute/virtualmachines/{name}".lower()
        )
        if vm is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
                f"'{rg_name}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return vm

    def add(self, vm: VirtualMachine) -> None:
        if vm.key in self.by_key:
            raise ArmError(409, "Conflict", f"A VM named '{vm.name}' already exists in '{vm.resource_group}'.")
        self.resource_groups.setdefault(vm.subscription_id.lower(), {}).setdefault(
            vm.resource_group.lower(), vm.resource_group
        )
        self.vms.append(vm)
        self.by_key[vm.key] = vm
        self._index(vm)

    def remove(self, vm: VirtualMachine) -> None:
        self.vms.remove(vm)
        del self.by_key[vm.key]
        sub = vm.subscription_id.lower()
        self._vms_by_sub[sub].remove(vm)
        self._vms_by_rg[sub, vm.resource_group.lower()].remove(vm)

    def in_subscription(self, sub: str) -> list[VirtualMachine]:
        """The subscription's VMs in fleet order (the index itself: callers must not modify it)."""
        return self._vms_by_sub.get(self.subscription(sub).lower(), [])

    def in_resource_group(self, sub: str, rg: str) -> list[VirtualMachine]:
        """The resource group's VMs in fleet order (the index itself: callers must not modify it)."""
        return self._vms_by_rg.get((self.subscription(sub).lower(), self.resource_group(sub, rg).lower()), [])


def build_fleet(
    vms: int,
    subscriptions: int,
    seed: int,
    *,
    windows_ratio: float = 0.5,
    stopped_ratio: float = 0.0,
    location: str = "westus",
    ubuntu_other_security_share: float = 0.0,
) -> Fleet:
    """Generate a fleet; the same arguments always give the same fleet."""
    rng = random.Random(f"fleet:{seed}")
    subs = [new_uuid(rng) for _ in range(subscriptions)]
    windows_catalogs = {image.product: windows_catalog(image, rng) for image in WINDOWS_IMAGES}
    linux_catalogs = {
        image.product: updates_pocket(linux_catalog(image, rng), image, ubuntu_other_security_share)
        for image in LINUX_IMAGES
    }

    windows_count = round(vms * windows_ratio)
    os_types = ["Windows"] * windows_count + ["Linux"] * (vms - windows_count)
    rng.shuffle(os_types)
    stopped = set(rng.sample(range(vms), round(vms * stopped_ratio))) if vms else set()

    rg_count = max(1, min(len(RG_NAMES), vms // (8 * subscriptions) + 1))
    resource_groups = {sub.lower(): {rg.lower(): rg for rg in RG_NAMES[:rg_count]} for sub in subs}
    machines: list[VirtualMachine] = []
    counters: dict[str, int] = {}
    for index, os_type in enumerate(os_types):
        sub = subs[index % subscriptions]
        rg = RG_NAMES[(index // subscriptions) % rg_count]
        if os_type == "Windows":
            image = rng.choice(WINDOWS_IMAGES)
            role = rng.choice(WINDOWS_ROLES)
            counters[role] = counters.get(role, 0) + 1
            name = f"WIN-{role}-{counters[role]:02d}"
            catalog = windows_catalogs[image.product]
            pending = list(catalog["core"])
            pending += [p for p in catalog["common"] if rng.random() < 0.75]
            pending += [p for p in catalog["optional"] if rng.random() < 0.3]
            patch_mode = rng.choice(("AutomaticByPlatform", "Manual", "AutomaticByOS"))
        else:
            image = rng.choice(LINUX_IMAGES)
            role = rng.choice(LINUX_ROLES)
            counters[role] = counters.get(role, 0) + 1
            name = f"lnx-{role}-{counters[role]:02d}"
            catalog_l = linux_catalogs[image.product]
            pending = rng.sample(catalog_l, k=rng.randint(min(4, len(catalog_l)), min(10, len(catalog_l))))
            patch_mode = rng.choice(("AutomaticByPlatform", "ImageDefault"))
        pending.sort(key=lambda p: (p.published, p.name))
        power = "running"
        if index in stopped:
            power = rng.choice(("deallocated", "stopped"))
        machines.append(
            VirtualMachine(
                subscription_id=sub,
                resource_group=rg,
                name=name,
                location=location,
                image=image,
                vm_size=rng.choice(VM_SIZES),
                vm_id=new_uuid(rng),
                tags={
                    "environment": "prod"
                    if rg.lower().startswith("rg-prod")
                    else rng.choice(("dev", "test")),
                    "owner": rng.choice(("platform", "payments", "data", "identity")),
                },
                patch_mode=patch_mode,
                assessment_mode=rng.choice(("ImageDefault", "AutomaticByPlatform")),
                power_state=power,
                reboot_pending=rng.random() < 0.1,
                pending=pending,
                time_created=REFERENCE_DATE
                - timedelta(days=rng.randint(30, 900), seconds=rng.randint(0, 86399)),
            )
        )
    return Fleet(subs, resource_groups, machines)


ARC_RESOURCE_GROUP = "rg-arc-onprem"


def build_arc_machines(
    count: int,
    subscriptions: list[str],
    seed: int,
    *,
    windows_ratio: float = 0.5,
    disconnected: int = 0,
    expired: int = 0,
    location: str = "westus",
    ubuntu_other_security_share: float = 0.0,
) -> list[VirtualMachine]:
    """Arc-enabled servers (on-premises Windows and Linux), spread over the subscriptions in one resource group.

    The first `disconnected` machines (after shuffling) report agent status Disconnected, the next `expired`
    Expired (Azure shows a machine Expired after 45 days disconnected; swagger's StatusTypes list Connected,
    Disconnected, Error and AwaitingConnection, so clients must take the status as an open string).
    Generated from their own seed stream, so adding Arc machines never changes the VM fleet.
    """
    rng = random.Random(f"arc:{seed}")
    windows_catalogs = {image.product: windows_catalog(image, rng) for image in WINDOWS_IMAGES}
    linux_catalogs = {
        image.product: updates_pocket(linux_catalog(image, rng), image, ubuntu_other_security_share)
        for image in LINUX_IMAGES
    }
    windows_count = round(count * windows_ratio)
    os_types = ["Windows"] * windows_count + ["Linux"] * (count - windows_count)
    order = list(range(count))
    rng.shuffle(order)
    statuses = {i: "Disconnected" for i in order[:disconnected]}
    statuses.update({i: "Expired" for i in order[disconnected : disconnected + expired]})
    machines = []
    for index, os_type in enumerate(os_types):
        if os_type == "Windows":
            image = rng.choice(WINDOWS_IMAGES)
            catalog = windows_catalogs[image.product]
            pending = list(catalog["core"]) + [p for p in catalog["common"] if rng.random() < 0.75]
            name = f"ARC-WIN-{index + 1:02d}"
        else:
            image = rng.choice(LINUX_IMAGES)
            catalog_l = linux_catalogs[image.product]
            pending = rng.sample(catalog_l, k=rng.randint(min(4, len(catalog_l)), min(10, len(catalog_l))))
            name = f"arc-lnx-{index + 1:02d}"
        pending.sort(key=lambda p: (p.published, p.name))
        status = statuses.get(index, "Connected")
        changed = REFERENCE_DATE - timedelta(days={"Connected": 3, "Disconnected": 2, "Expired": 50}[status])
        machines.append(
            VirtualMachine(
                subscription_id=subscriptions[index % len(subscriptions)],
                resource_group=ARC_RESOURCE_GROUP,
                name=name,
                location=location,
                image=image,
                vm_size="",
                vm_id=new_uuid(rng),
                tags={"environment": "prod", "site": rng.choice(("dc-amsterdam", "dc-dallas"))},
                patch_mode=rng.choice(("AutomaticByPlatform", "Manual")),
                assessment_mode=rng.choice(("ImageDefault", "AutomaticByPlatform")),
                power_state="running",
                reboot_pending=rng.random() < 0.1,
                pending=pending,
                time_created=REFERENCE_DATE - timedelta(days=rng.randint(30, 900)),
                arc=True,
                agent_status=status,
                last_status_change=changed,
            )
        )
    return machines
