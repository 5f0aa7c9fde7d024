"""The address rules for any outbound host, without a network (literal IPs and `localhost` only: this
machine has no external DNS): what each address is, what `allow_private` lets through, the plain refusals."""

from __future__ import annotations

import asyncio

import pytest

from export_core.address_guard import (
    LINK_LOCAL,
    PRIVATE,
    SPECIAL,
    UNRESOLVED,
    AddressRefused,
    address_kind,
    allowed_addresses,
    allowed_addresses_async,
    refusal,
)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("8.8.8.8", "public"),
        ("2606:4700:4700::1111", "public"),
        ("::ffff:8.8.8.8", "public"),
        ("127.0.0.1", "private"),
        ("127.8.9.10", "private"),
        ("::1", "private"),
        ("::ffff:127.0.0.1", "private"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.0.1", "private"),
        ("100.64.0.1", "private"),  # CGNAT
        ("100.127.255.254", "private"),
        ("fc00::1", "private"),  # unique local
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("169.254.0.1", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("febf::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped
        ("::169.254.169.254", "link-local"),  # IPv4-compatible
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("0.0.0.0", "special"),  # noqa: S104 (an address to refuse, not to bind)
        ("0.1.2.3", "special"),
        ("::", "special"),
        ("224.0.0.1", "special"),
        ("ff02::1", "special"),
        ("255.255.255.255", "special"),
        ("240.0.0.1", "special"),
    ],
)
def test_every_address_is_classified(address: str, kind: str):
    assert address_kind(address) == kind


def test_private_addresses_are_allowed_only_with_the_setting_and_link_local_never():
    assert refusal("127.0.0.1", allow_private=False) == PRIVATE
    assert refusal("127.0.0.1", allow_private=True) is None
    assert refusal("100.64.0.1", allow_private=True) is None
    assert refusal("8.8.8.8", allow_private=False) is None
    for address in ("169.254.169.254", "fe80::1", "::ffff:169.254.169.254"):
        assert refusal(address, allow_private=True) == LINK_LOCAL
    for address in ("0.0.0.0", "::", "224.0.0.1"):  # noqa: S104
        assert refusal(address, allow_private=True) == SPECIAL


@pytest.mark.parametrize(
    ("host", "allow_private", "addresses"),
    [
        ("8.8.8.8", False, ["8.8.8.8"]),
        ("2606:4700:4700::1111", False, ["2606:4700:4700::1111"]),
        ("127.0.0.1", True, ["127.0.0.1"]),
        ("10.1.2.3", True, ["10.1.2.3"]),
    ],
)
def test_an_allowed_host_gives_the_addresses_to_connect_to(host: str, allow_private: bool, addresses: list[str]):
    assert allowed_addresses(host, 22, allow_private=allow_private) == addresses
    assert asyncio.run(allowed_addresses_async(host, 22, allow_private=allow_private)) == addresses


def test_localhost_resolves_and_each_of_its_addresses_is_checked():
    assert set(allowed_addresses("localhost", 22, allow_private=True)) <= {"127.0.0.1", "::1"}
    with pytest.raises(AddressRefused) as refused:
        allowed_addresses("localhost", 22, allow_private=False)
    assert refused.value.reason == PRIVATE


@pytest.mark.parametrize(
    ("host", "allow_private", "reason", "sentence"),
    [
        ("127.0.0.1", False, PRIVATE, "The host resolves to a loopback, private or shared address; only public"
         " addresses are allowed."),
        ("169.254.169.254", True, LINK_LOCAL, "The host resolves to a link-local address, which is never allowed."),
        ("0.0.0.0", True, SPECIAL, "The host resolves to an address that cannot be connected to."),  # noqa: S104
        ("name.invalid", True, UNRESOLVED, "The host could not be resolved."),
    ],
)  # fmt: skip
def test_a_refused_host_is_one_plain_sentence_that_names_no_host(
    host: str, allow_private: bool, reason: str, sentence: str
):
    for check in (
        lambda: allowed_addresses(host, 22, allow_private=allow_private),
        lambda: asyncio.run(allowed_addresses_async(host, 22, allow_private=allow_private)),
    ):
        with pytest.raises(AddressRefused) as refused:
            check()
        assert (refused.value.reason, str(refused.value)) == (reason, sentence)
