"""Typed addresses: EIP-55 checksums checked, single-case addresses accepted as written."""

from __future__ import annotations

import pytest

from ioswarm.config import agent_config, parse_config
from ioswarm.core.address import address_problem, canonical_address, to_checksum, to_io
from ioswarm.core.tokens import agent_token
from ioswarm.errors import ConfigError

# The test vectors of EIP-55 itself.
EIP55 = (
    "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
    "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
    "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
)
# The first vector with one letter's case flipped.
BAD = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"


@pytest.mark.parametrize("address", EIP55)
def test_eip55_vectors_pass_and_round_trip(address: str) -> None:
    """Each EIP-55 vector is accepted, and checksumming its lowercase form gives it back."""
    assert address_problem(address) is None
    assert to_checksum(address.lower()) == address


def test_single_case_addresses_carry_no_checksum() -> None:
    """All-lowercase and all-uppercase hex are accepted as written."""
    assert address_problem(EIP55[0].lower()) is None
    assert address_problem("0x" + EIP55[0][2:].upper()) is None


def test_a_flipped_case_is_refused_and_malformed_input_named() -> None:
    """A mixed-case address with one wrong case fails; short or non-hex input says what it is."""
    problem = address_problem(BAD)
    assert problem is not None and "EIP-55" in problem and BAD in problem
    assert "20-byte hex" in (address_problem("0x1234") or "")
    assert "20-byte hex" in (address_problem(12) or "")


def test_config_address_keys_name_the_key() -> None:
    """A bad checksum in delegateAddress is a ConfigError naming that key."""
    with pytest.raises(ConfigError) as err:
        parse_config({"masterSecret": "0123456789abcdef0", "delegateAddress": BAD}, {})
    assert err.value.key == "delegateAddress" and "EIP-55" in str(err.value)
    assert (
        parse_config(
            {"masterSecret": "0123456789abcdef0", "delegateAddress": EIP55[1]}, {}
        ).delegate_address
        == EIP55[1]
    )


def test_agent_wallet_checksum_names_the_flag() -> None:
    """``--wallet`` (or IOSWARM_WALLET) with a bad checksum names --wallet."""
    values = {
        "coordinator": "127.0.0.1:1",
        "agent_id": "a",
        "api_key": agent_token("s", "a"),
        "wallet": BAD,
    }
    with pytest.raises(ConfigError) as err:
        agent_config(values, {})
    assert err.value.key == "--wallet" and "EIP-55" in str(err.value)
    assert agent_config({**values, "wallet": EIP55[2]}, {}).wallet == EIP55[2]


# The IoTeX zero address, and an address from iotex-core's own test data with its 0x bytes.
IO_ZERO = "io1qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqd39ym7"
IO_SAMPLE = (
    "io10a298zmzvrt4guq79a9f4x7qedj59y7ery84he",
    "0x7f54538b6260d754701e2f4a9a9bc0cb654293d9",
)


def test_io1_round_trips_to_the_same_bytes() -> None:
    """io1 and 0x name the same 20 bytes; both spellings canonicalise to EIP-55 0x."""
    assert canonical_address(IO_ZERO) == "0x" + "00" * 20
    io, hexaddr = IO_SAMPLE
    assert canonical_address(io) == to_checksum(hexaddr)
    assert to_io(hexaddr) == io
    assert to_io(io.upper()) == io


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("io10a298zmzvrt4guq79a9f4x7qedj59y7ery84hf", "checksum"),
        ("io10a298zmzvrt4guq79a9f4x7qedj59y7ery84h", "38 bech32"),
        ("io10a298zmzvrt4guq79a9f4x7qedj59y7ery84bE", "mixes"),
        ("io10a298zmzvrt4guq79a9f4x7qedj59y7ery84hb", "38 bech32"),
        ("io10a298zmzvrt4guq79a9f4x7qedj59y7ery84ha", "checksum"),
    ],
)
def test_bad_io1_is_named(value: str, problem: str) -> None:
    """A mistyped io1 address is refused with the reason, never silently decoded."""
    reason = address_problem(value)
    assert reason is not None and problem in reason
    with pytest.raises(ValueError, match=problem):
        canonical_address(value)


def test_agent_wallet_may_be_io1() -> None:
    """An agent's io1 wallet is taken and kept as its 0x form."""
    io, hexaddr = IO_SAMPLE
    cfg = agent_config(
        {
            "coordinator": "127.0.0.1:1",
            "agent_id": "a1",
            "api_key": "iosw_" + "0" * 64,
            "wallet": io,
        },
        {},
    )
    assert cfg.wallet == to_checksum(hexaddr)
