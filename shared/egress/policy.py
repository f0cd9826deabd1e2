"""Which addresses PatchPilot's event and hook calls may connect to, and what a hook URL may say.

Pure: nothing here resolves a name. `refusal` judges one IP address (the session in session.py asks
it about every address a host resolves to, at connect time); `check_url` judges what a URL says on
its face (scheme, user info, a literal address), so validating a request never waits on DNS.

Rules, in the order `refusal` applies them, each with its source:
- An IPv6 address that embeds an IPv4 address is judged by the IPv4 address first:
  `::ffff:a.b.c.d` IPv4-mapped (RFC 4291 §2.5.5.2) is how a dual-stack socket names an IPv4 peer and
  is then exactly that address; the translation and tunnel forms are refused even around a public
  IPv4 address (a gateway would connect for us, somewhere we cannot see): `::a.b.c.d` IPv4-compatible
  (RFC 4291 §2.5.5.1, deprecated), `64:ff9b::/96` NAT64 (RFC 6052 §2.1) and `64:ff9b:1::/48`
  (RFC 8215), `2002::/16` 6to4 (RFC 3056, deprecated by RFC 7526), `2001::/32` Teredo (RFC 4380).
- Azure's platform addresses: 168.63.129.16, the WireServer every Azure host reaches
  (https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16; a public
  address, so no property of `ipaddress` catches it) and 169.254.169.254, the Instance Metadata
  Service (https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service).
- `ipaddress` properties (https://docs.python.org/3/library/ipaddress.html), which follow the IANA
  special-purpose address registries (RFC 6890): is_loopback (127/8, ::1; RFC 1122 §3.2.1.3,
  RFC 4291), is_unspecified (0.0.0.0, ::), is_link_local (169.254/16 RFC 3927, fe80::/10),
  is_multicast (224/4 RFC 5771, ff00::/8), is_reserved (240/4 RFC 1112, IPv6 space IANA has not
  allocated), is_private (RFC 1918, fc00::/7 RFC 4193, and the registries' "not globally reachable"
  entries), is_site_local (fec0::/10, RFC 3879), and finally anything not is_global (100.64/10
  shared address space, RFC 6598, is neither private nor global).
- Two ranges older Pythons (before the fix of https://github.com/python/cpython/issues/113171) still
  count as global: 192.88.99.0/24 (6to4 relay anycast, RFC 7526) and 3fff::/20 (documentation,
  RFC 9637).
The local development setting (the ARM simulator on loopback, `ARM_DEV_TOKEN` set) allows loopback
and nothing else: no private network, no platform address.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address

PLATFORM_ADDRESSES = {
    IPv4Address("168.63.129.16"): "Azure's WireServer",
    IPv4Address("169.254.169.254"): "Azure's Instance Metadata Service",
}
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = IPv6Network("64:ff9b:1::/48")
_STILL_GLOBAL_IN_OLD_PYTHONS = (
    (IPv4Network("192.88.99.0/24"), "a 6to4 relay anycast address"),
    (IPv6Network("3fff::/20"), "a documentation address"),
)
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")  # fullmatch: `$` would also take a trailing "\n"


Networks = tuple[IPv4Network | IPv6Network, ...]


def parse_networks(text: str) -> Networks:
    """Comma-separated CIDR ranges (`10.20.0.0/16, fd00::/8`); ValueError naming the bad one. A range that
    holds a platform address (Azure's instance metadata or wire server) is refused: those are never called."""
    networks: list[IPv4Network | IPv6Network] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            network = ipaddress.ip_network(part, strict=True)
        except ValueError as exc:
            raise ValueError(f"{part!r} is not a CIDR range such as 10.20.0.0/16 ({exc})") from None
        if any(address in network for address in PLATFORM_ADDRESSES):
            raise ValueError(f"{part!r} holds an Azure platform address (instance metadata, wire server)")
        networks.append(network)
    return tuple(networks)


def refusal(ip: IPAddress, *, allow_loopback: bool = False, allowed: Networks = ()) -> str | None:
    """Why PatchPilot does not connect to `ip` (a short phrase: "a private address"), or None if it may.

    `allow_loopback` is the local development setting: loopback (also IPv4-mapped) is then allowed.
    `allowed`: private ranges an operator opened (HEALTH_PROBE_NETWORKS, for health probes only); platform
    addresses stay refused whatever is allowed.
    """
    if isinstance(ip, IPv4Address) and ip in PLATFORM_ADDRESSES:
        return PLATFORM_ADDRESSES[ip]
    if any(ip.version == network.version and ip in network for network in allowed):
        return None
    if isinstance(ip, IPv6Address):
        embedded, form = _embedded_ipv4(ip)
        if embedded is not None:
            inner = refusal(embedded, allow_loopback=allow_loopback and form == "IPv4-mapped",
                            allowed=allowed if form == "IPv4-mapped" else ())
            if inner:
                return f"{form} and embeds {embedded}, {inner}"
            return None if form == "IPv4-mapped" else f"{form} (an address translated or tunnelled to IPv4)"
    if isinstance(ip, IPv4Address) and ip in PLATFORM_ADDRESSES:
        return PLATFORM_ADDRESSES[ip]
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    for test, phrase in ((ip.is_unspecified, "the unspecified address"), (ip.is_link_local, "a link-local address"),
                         (ip.is_multicast, "a multicast address"), (ip.is_reserved, "a reserved address"),
                         (ip.is_private, "a private address"),
                         (isinstance(ip, IPv6Address) and ip.is_site_local, "a site-local address")):
        if test:
            return phrase
    for network, phrase in _STILL_GLOBAL_IN_OLD_PYTHONS:
        if ip.version == network.version and ip in network:
            return phrase
    if not ip.is_global:
        return "not a globally reachable address"
    return None


def _embedded_ipv4(ip: IPv6Address) -> tuple[IPv4Address | None, str]:
    """The IPv4 address inside `ip` and the form's name, or (None, "")."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped, "IPv4-mapped"
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # ::/96 minus :: and ::1, which are themselves
        return IPv4Address(int(ip) & 0xFFFFFFFF), "IPv4-compatible (deprecated)"
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF), "NAT64"
    if ip in _NAT64_LOCAL:  # RFC 8215: where the IPv4 sits depends on the operator's prefix length
        return IPv4Address(int(ip) & 0xFFFFFFFF), "local-use NAT64"
    if ip.sixtofour is not None:
        return ip.sixtofour, "6to4"
    if ip.teredo is not None:
        return ip.teredo[1], "Teredo"  # (server, client): the client is where the tunnel ends
    return None, ""


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host spells, or None when it is a name. No DNS.

    IPv4 counts in every spelling the resolver reads as an address (`127.1`, `0x7f.0.0.1`,
    `2130706433`: inet_aton's forms), since those never reach DNS either.
    """
    text = host.strip("[]").split("%")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(text):
        try:
            return IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def is_loopback_name(host: str) -> bool:
    """`localhost`, `*.localhost` (RFC 6761 §6.3) or a literal loopback address."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = literal_address(host)
    return address is not None and address.is_loopback


def check_url(url: str, *, allow_local: bool, allowed: Networks = ()) -> str:
    """`url` without surrounding blanks if PatchPilot may POST to it; ValueError saying why not.

    https only (plain http only to loopback, and only with `allow_local`); no user name or password
    in the URL (they would be sent as Basic credentials to whoever answers); a literal address must
    pass `refusal`. A name is not resolved here: the session checks its addresses at connect time.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
        _ = parts.port  # a malformed port raises here
    except ValueError:
        raise ValueError(f"{url!r} is not a valid URL") from None
    if not host or parts.scheme not in ("https", "http"):
        raise ValueError(f"{url!r} must be an https URL")
    if "@" in parts.netloc:
        raise ValueError(f"{url!r} must not carry a user name or password")
    local = is_loopback_name(host)
    if parts.scheme == "http" and not (allow_local and local):
        raise ValueError(f"{url!r} must be an https URL (plain http only to loopback, against the local simulator)")
    if local and not allow_local:
        raise ValueError(f"{url!r} names this machine (loopback), which PatchPilot does not call")
    address = literal_address(host)
    reason = refusal(address, allow_loopback=allow_local, allowed=allowed) if address is not None else None
    if reason:
        raise ValueError(f"{url!r} names {address}, which is {reason}: PatchPilot calls public addresses only"
                         + (" (a health probe may call private ranges HEALTH_PROBE_NETWORKS opens)"
                            if reason.startswith("a private") else ""))
    return text
