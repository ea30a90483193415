"""Credentials from call metadata: exactly one agent id and one token, or a named refusal."""

from __future__ import annotations

import pytest

from ioswarm.core.credentials import (
    AGENT_ID_KEY,
    MAX_AGENT_ID_LEN,
    MAX_TOKEN_LEN,
    TOKEN_KEY,
    Credentials,
    CredentialsRefused,
    authenticate,
    parse_credentials,
)
from ioswarm.core.models import Level
from ioswarm.core.registry import AgentRegistry, WalletChange
from ioswarm.core.tokens import agent_token
from ioswarm.errors import AuthError

SECRET = "unit-test-secret"
A = "0x" + "aa" * 20
B = "0x" + "bb" * 20


def tok(agent_id: str) -> str:
    return agent_token(SECRET, agent_id)


def refusal(metadata: list[tuple[str, str | bytes]]) -> CredentialsRefused:
    with pytest.raises(CredentialsRefused) as info:
        parse_credentials(metadata)
    return info.value


def test_one_id_and_one_token_parse_among_other_keys() -> None:
    """One id and one token, among unrelated keys, give exactly those two values."""
    md: list[tuple[str, str | bytes]] = [
        ("user-agent", "grpc-python"),
        (AGENT_ID_KEY, "agent-1"),
        (TOKEN_KEY, tok("agent-1")),
        ("x-other-bin", b"\x00"),
    ]
    assert parse_credentials(md) == Credentials("agent-1", tok("agent-1"))
    assert authenticate(SECRET, md) == "agent-1"


def test_credentials_repr_hides_the_token() -> None:
    """A Credentials value printed by accident shows the id but not the token."""
    creds = parse_credentials([(AGENT_ID_KEY, "agent-1"), (TOKEN_KEY, tok("agent-1"))])
    assert "agent-1" in repr(creds) and tok("agent-1") not in repr(creds)


def test_duplicated_agent_id_is_refused_and_names_both_claims() -> None:
    """Two id values (victim, then attacker) are refused as duplicated, whatever the token."""
    for token in (tok("attacker"), tok("victim")):
        exc = refusal([(AGENT_ID_KEY, "victim"), (AGENT_ID_KEY, "attacker"), (TOKEN_KEY, token)])
        assert f"duplicated {AGENT_ID_KEY}" in exc.reason
        assert exc.claimed == ("victim", "attacker")
        assert token not in str(exc)


def test_duplicated_identical_agent_id_is_still_refused() -> None:
    """Even the same id sent twice is not exactly one value, so it is refused."""
    exc = refusal([(AGENT_ID_KEY, "a"), (AGENT_ID_KEY, "a"), (TOKEN_KEY, tok("a"))])
    assert "duplicated" in exc.reason


def test_duplicated_token_is_refused() -> None:
    """Two token values are refused even when one of them is valid."""
    exc = refusal([(AGENT_ID_KEY, "a"), (TOKEN_KEY, tok("a")), (TOKEN_KEY, tok("b"))])
    assert f"duplicated {TOKEN_KEY}" in exc.reason
    assert tok("a") not in str(exc) and tok("b") not in str(exc)


def test_mixed_case_keys_count_as_ours() -> None:
    """A key equal to ours in another letter case is ours: alone it is accepted, beside the
    lowercase one it is a duplicate."""
    upper = [(AGENT_ID_KEY.upper(), "a"), ("X-IoSwarm-Token", tok("a"))]
    assert parse_credentials(upper) == Credentials("a", tok("a"))
    exc = refusal([(AGENT_ID_KEY, "victim"), ("X-IOSWARM-AGENT-ID", "attacker"), *upper[1:]])
    assert "duplicated" in exc.reason
    exc = refusal([(AGENT_ID_KEY, "a"), (TOKEN_KEY, tok("a")), ("X-IOSWARM-TOKEN", tok("a"))])
    assert f"duplicated {TOKEN_KEY}" in exc.reason


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([(TOKEN_KEY, tok("a"))], f"missing {AGENT_ID_KEY}"),
        ([(AGENT_ID_KEY, "a")], f"missing {TOKEN_KEY}"),
        ([], f"missing {AGENT_ID_KEY}"),
        ([(AGENT_ID_KEY, ""), (TOKEN_KEY, tok(""))], f"empty {AGENT_ID_KEY}"),
        ([(AGENT_ID_KEY, "a"), (TOKEN_KEY, "")], f"empty {TOKEN_KEY}"),
        ([(AGENT_ID_KEY, b"a"), (TOKEN_KEY, tok("a"))], f"{AGENT_ID_KEY} metadata is not text"),
        (
            [(AGENT_ID_KEY, "a" * (MAX_AGENT_ID_LEN + 1)), (TOKEN_KEY, tok("a"))],
            f"{AGENT_ID_KEY} metadata too long",
        ),
        (
            [(AGENT_ID_KEY, "a"), (TOKEN_KEY, "x" * (MAX_TOKEN_LEN + 1))],
            f"{TOKEN_KEY} metadata too long",
        ),
    ],
    ids=[
        "missing-id",
        "missing-token",
        "nothing",
        "empty-id",
        "empty-token",
        "binary-id",
        "long-id",
        "long-token",
    ],
)
def test_missing_empty_or_oversized_credentials_are_refused(
    metadata: list[tuple[str, str | bytes]], reason: str
) -> None:
    """Each malformed credential is refused with a reason that names the key and the problem."""
    assert reason in refusal(metadata).reason


def test_longest_allowed_agent_id_is_accepted() -> None:
    """An id of exactly the maximum length passes."""
    agent_id = "a" * MAX_AGENT_ID_LEN
    assert authenticate(SECRET, [(AGENT_ID_KEY, agent_id), (TOKEN_KEY, tok(agent_id))]) == agent_id


def test_wrong_token_is_refused_as_invalid() -> None:
    """Another agent's token for a single id is refused as an invalid token, an AuthError."""
    with pytest.raises(AuthError, match="invalid token") as info:
        authenticate(SECRET, [(AGENT_ID_KEY, "victim"), (TOKEN_KEY, tok("attacker"))])
    assert isinstance(info.value, CredentialsRefused) and info.value.claimed == ("victim",)


def test_new_wallet_waits_for_the_epoch_boundary_when_deferred() -> None:
    """With defer_wallet a known agent's new wallet is pending until apply_pending_wallets."""
    reg = AgentRegistry(4, 5.0, 3)
    rec = reg.register("a", Level.L1, A, "r", "v", 0.0, defer_wallet=True)
    assert (rec.wallet, rec.pending_wallet) == (A, None)  # a first registration: at once
    reg.register("a", Level.L1, B, "r", "v", 1.0, defer_wallet=True)
    assert (rec.wallet, rec.pending_wallet) == (A, B)
    assert reg.apply_pending_wallets() == [WalletChange("a", A, B)]
    assert (rec.wallet, rec.pending_wallet) == (B, None)
    assert reg.apply_pending_wallets() == []


def test_reregistering_the_current_wallet_cancels_a_pending_change() -> None:
    """Asking for the current wallet again withdraws a pending change."""
    reg = AgentRegistry(4, 5.0, 3)
    rec = reg.register("a", Level.L1, A, "r", "v", 0.0, defer_wallet=True)
    reg.register("a", Level.L1, B, "r", "v", 1.0, defer_wallet=True)
    reg.register("a", Level.L1, A, "r", "v", 2.0, defer_wallet=True)
    assert (rec.wallet, rec.pending_wallet) == (A, None)
    assert reg.apply_pending_wallets() == []


def test_wallet_changes_at_once_without_deferral() -> None:
    """Without defer_wallet (rewards off) a re-registration's wallet applies at once."""
    reg = AgentRegistry(4, 5.0, 3)
    rec = reg.register("a", Level.L1, A, "r", "v", 0.0)
    reg.register("a", Level.L1, B, "r", "v", 1.0)
    assert (rec.wallet, rec.pending_wallet) == (B, None)
