"""The one place an agent's validator is chosen from its level.

py-evm loads only for executing levels (L3, L4) and LMDB only for L4: the imports of those
validators are deferred to the call that needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ioswarm.agent.validators import L1Validator, L2Validator, Validator
from ioswarm.core.models import Level
from ioswarm.errors import ConfigError

if TYPE_CHECKING:
    from ioswarm.agent.l4 import LocalState

__all__ = ["validator_for"]


def validator_for(
    level: Level,
    *,
    state: LocalState | None = None,
    barrier_wait: float | None = None,
) -> Validator:
    """The validator an agent runs at ``level``.

    L4 needs ``state`` (a ``StateFollower``); ``barrier_wait`` overrides how long an L4 task
    waits for it to reach the task's state height.
    """
    if level is Level.L1:
        return L1Validator()
    if level is Level.L2:
        return L2Validator()
    if level is Level.L3:
        from ioswarm.agent.l3 import L3Validator  # noqa: PLC0415 - py-evm only for executing levels

        return L3Validator()
    if level is Level.L4:
        if state is None:
            raise ConfigError("level", "an L4 validator needs its local state (a StateFollower)")
        from ioswarm.agent.l4 import L4Validator  # noqa: PLC0415 - LMDB only for L4 agents

        if barrier_wait is None:
            return L4Validator(state)
        return L4Validator(state, barrier_wait=barrier_wait)
    raise ConfigError("level", f"{level.name} validation is not available in this version")
