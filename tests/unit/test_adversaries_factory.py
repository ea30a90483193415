"""The adversary factory: its kinds, its names, and its refusals."""

from __future__ import annotations

import pytest

from ioswarm.errors import ConfigError
from ioswarm.sim.adversaries import KINDS, ResultTap, build_adversaries, parse_kinds


def test_every_kind_builds_with_its_own_id_token_and_wallet() -> None:
    """Each kind in KINDS builds one adversary with that kind, a distinct id, token and wallet."""
    advs = build_adversaries(list(KINDS), 1, "s", 1.0, ResultTap(), victim="honest-l1")
    assert [a.kind for a in advs] == list(KINDS)
    assert len({a.agent_id for a in advs}) == len({a.token for a in advs}) == len(KINDS)
    assert len({a.wallet for a in advs}) == len(KINDS)
    assert all(a.counters == {"sent": {}, "status": {}} for a in advs)


def test_unknown_kind_is_refused_by_name_with_the_valid_kinds() -> None:
    """An unknown kind raises a ConfigError naming it and listing every valid kind."""
    with pytest.raises(ConfigError) as err:
        build_adversaries(["lazy", "sneaky"], 1, "s", 1.0, None)
    assert "'sneaky'" in str(err.value) and all(k in str(err.value) for k in KINDS)
    with pytest.raises(ConfigError, match="sneaky"):
        parse_kinds("lazy,sneaky")


def test_parse_kinds_knows_all_and_none() -> None:
    """``all`` is every kind in order, ``none`` is no adversary, a list keeps its order."""
    assert parse_kinds("all") == list(KINDS)
    assert parse_kinds("none") == []
    assert parse_kinds("late, lazy") == ["late", "lazy"]


def test_replayer_and_impersonator_need_their_targets() -> None:
    """A replayer without a tap and an impersonator without a victim are refused."""
    with pytest.raises(ConfigError, match="tapped"):
        build_adversaries(["replayer"], 1, "s", 1.0, None)
    with pytest.raises(ConfigError, match="victim"):
        build_adversaries(["impersonator"], 1, "s", 1.0, None)
