"""The state-diff chain's links, checked without a state (ioswarm l4test, the L4 follower)."""

from __future__ import annotations

import pytest

from ioswarm.core.diffchain import DiffChainCheck, DiffLink, LinkKind, state_link_problem


def _h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def chain(n: int, start: int = 100) -> list[DiffLink]:
    """``n`` diffs that follow each other, state hash k after height start + k."""
    return [
        DiffLink(
            height=start + k,
            prev_state_hash=_h(k),
            post_state_hash=_h(k + 1),
            block_hash=b"B" * 31 + bytes([k]),
            parent_hash=b"B" * 31 + bytes([k - 1]) if k else b"",
        )
        for k in range(n)
    ]


def test_a_good_chain_checks_every_link_after_the_anchor() -> None:
    """Five chained diffs: the first anchors, four links are checked, the hash is the last."""
    check = DiffChainCheck()
    assert all(check.feed(link) is None for link in chain(5))
    assert (check.checked, check.height, check.state_hash) == (4, 104, _h(5))


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("height", 104, LinkKind.GAP),
        ("prev_state_hash", _h(99), LinkKind.PREV_STATE_HASH),
        ("post_state_hash", b"", LinkKind.POST_STATE_HASH),
        ("parent_hash", b"X" * 32, LinkKind.BLOCK_HASH),
    ],
)
def test_the_first_broken_link_is_named(field: str, value: object, kind: LinkKind) -> None:
    """A diff that breaks one link is reported with its height and which link broke."""
    links = chain(4)
    bad = DiffLink(**{**links[2].__dict__, field: value})
    check = DiffChainCheck()
    assert check.feed(links[0]) is None and check.feed(links[1]) is None
    broken = check.feed(bad)
    assert broken is not None and broken.kind is kind and broken.height == bad.height
    assert str(bad.height) in str(broken)
    assert check.checked == 1  # the broken diff did not move the chain on


def test_state_link_rule_is_the_followers() -> None:
    """The follower's rule: next height, prev equals the local hash, a 32-byte post hash."""
    assert state_link_problem(7, _h(1), 8, _h(1), _h(2)) is None
    problem = state_link_problem(7, _h(1), 8, _h(3), _h(2))
    assert problem is not None and "prev state hash" in str(problem)
