"""The egress address policy and the static URL check (shared/egress/policy.py): pure, no DNS."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from shared.egress import check_url, literal_address, refusal

REFUSED = {
    "127.0.0.1": "loopback", "::1": "loopback", "0.0.0.0": "unspecified", "::": "unspecified",
    "10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "fd00::1": "private",
    "169.254.10.10": "link-local", "fe80::1": "link-local", "224.0.0.1": "multicast", "ff02::1": "multicast",
    "240.0.0.1": "reserved", "4000::1": "reserved", "fec0::1": "site-local", "100.64.0.1": "not a globally",
    "192.88.99.1": "6to4 relay", "3fff::1": "documentation",
    "168.63.129.16": "WireServer", "169.254.169.254": "Instance Metadata Service",
    # IPv6 forms that embed an IPv4 address, judged by that address
    "::127.0.0.1": "IPv4-compatible (deprecated) and embeds 127.0.0.1",
    "::ffff:127.0.0.1": "IPv4-mapped and embeds 127.0.0.1",
    "::ffff:169.254.169.254": "IPv4-mapped and embeds 169.254.169.254, Azure's Instance Metadata",
    "::ffff:a83f:8110": "IPv4-mapped and embeds 168.63.129.16, Azure's WireServer",
    "64:ff9b::7f00:1": "NAT64 and embeds 127.0.0.1",
    "64:ff9b:1::a01:203": "local-use NAT64 and embeds 10.1.2.3",
    "2002:7f00:1::": "6to4 and embeds 127.0.0.1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo and embeds 127.0.0.1",  # the client is stored inverted
    # ... and the translated or tunnelled forms refused even around a public address
    "64:ff9b::808:808": "NAT64 (an address translated", "2002:808:808::": "6to4 (an address translated",
    "::8.8.8.8": "IPv4-compatible (deprecated) (an address translated",
}


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_refused_addresses_say_why(address: str, why: str) -> None:
    reason = refusal(ip_address(address))
    assert reason is not None and why in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "20.50.2.10", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ip_address(address)) is None


def test_the_local_development_setting_allows_loopback_and_nothing_else() -> None:
    for address in ("127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"):
        assert refusal(ip_address(address), allow_loopback=True) is None
    for address in ("10.1.2.3", "169.254.169.254", "168.63.129.16", "::127.0.0.1", "64:ff9b::7f00:1",
                    "2002:7f00:1::", "0.0.0.0"):
        assert refusal(ip_address(address), allow_loopback=True) is not None, address


@pytest.mark.parametrize(("host", "address"), [("127.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"),
                                               ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"),
                                               ("[::1]", "::1"), ("[fe80::1%25eth0]", "fe80::1")])
def test_every_spelling_of_a_literal_address_is_read_without_dns(host: str, address: str) -> None:
    assert literal_address(host) == ip_address(address)


@pytest.mark.parametrize("host", ["hooks.example.com", "cafe.de", "decaf"])
def test_names_are_names(host: str) -> None:
    assert literal_address(host) is None


def test_check_url_on_its_face() -> None:
    assert check_url(" https://hooks.example.com/x?a=1 ", allow_local=False) == "https://hooks.example.com/x?a=1"
    assert check_url("https://[2606:4700::1111]:8443/x", allow_local=False)
    assert check_url("http://127.0.0.1:8080/events", allow_local=True)
    assert check_url("http://localhost:8080/events", allow_local=True)
    refused = {"ftp://hooks.example.com/x": "https", "http://hooks.example.com/x": "https",
               "https://u:p@hooks.example.com/x": "user name", "https://u@hooks.example.com/x": "user name",
               "https://127.0.0.1/x": "loopback", "https://localhost/x": "loopback",
               "https://[::ffff:7f00:1]/x": "IPv4-mapped", "https://10.0.0.1/x": "private", "https:///x": "https",
               "https://hooks.example.com:0x50/x": "not a valid URL"}
    for url, why in refused.items():
        with pytest.raises(ValueError, match=why):
            check_url(url, allow_local=False)
    for url in ("http://10.0.0.1/x", "https://169.254.169.254/x", "http://hooks.example.com/x"):
        with pytest.raises(ValueError):
            check_url(url, allow_local=True)  # the development setting opens loopback only
