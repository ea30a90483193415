"""The L3 validator: L1 sender recovery, then execution on the state the task carries."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager

from ioswarm.agent.evm import EvmEngine
from ioswarm.agent.executing import ExecutingValidator, Unavailable
from ioswarm.agent.validators import L2Validator, Validator
from ioswarm.core.execution import AccountInput
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import account_inputs

__all__ = ["L3Validator", "TaskState"]


class TaskState:
    """Exactly the accounts the task carries (:func:`ioswarm.protocol.account_inputs`).

    A read of anything else is missing state: the engine answers it ``declined`` with reason
    ``missing_state`` and the missing key in ``exec_error``.
    """

    def accounts(
        self, task: pb.TaskPackage, sender: bytes
    ) -> AbstractContextManager[Mapping[bytes, AccountInput] | Unavailable]:
        return contextlib.nullcontext(account_inputs(task))


class L3Validator(ExecutingValidator):
    """L1 recovery, then py-evm execution on exactly the state and block the task carries.

    Tasks below L3 go to the L2 validator.
    """

    level = Level.L3

    def __init__(self, engine: EvmEngine | None = None, fallback: Validator | None = None) -> None:
        super().__init__(TaskState(), engine, fallback if fallback is not None else L2Validator())
