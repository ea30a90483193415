"""Executed L3/L4 canaries on a real anvil: the node's truth matches honest agents; fakes fail."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from eth_account import Account

from ioswarm.agent.l3 import L3Validator
from ioswarm.agent.l4 import L4Validator
from ioswarm.agent.l4sync import StateFollower
from ioswarm.coordinator.canaries import Canary, CanaryMint
from ioswarm.coordinator.canaryexec import executed_canary
from ioswarm.coordinator.wire import task_to_pb, verdict_from_pb
from ioswarm.core.blockctx import next_base_fee
from ioswarm.core.canary import EXECUTED, judge_executed_canary
from ioswarm.core.execshadow import PredictedContext
from ioswarm.core.models import AccountSnapshot, Level, Task
from ioswarm.core.tx import decode_tx
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.node.canarytruth import CanaryTruthReader
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.protocol import context_to_pb
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.l3calls import CATEGORIES, SETCODE_CATEGORIES
from ioswarm.sim.l3workload import ContractWorkload
from ioswarm.sim.workload import TxKind
from ioswarm.state.bootstrap import AnvilDumpSource
from ioswarm.state.store import StateStore, Write

pytestmark = pytest.mark.integration

FORK = "prague"
COINBASE = bytes.fromhex("c0ffee00000000000000000000000000000c0ffe")
PREV_RANDAO = b"\x42" * 32
KINDS: tuple[TxKind, ...] = ("eip1559", "legacy", "eip2930")
TRANSFER = "plain_transfer"


async def _context(node: JsonRpcNode, *, hashes: bool = True) -> PredictedContext:
    """The next block's context as a batch would carry it (every past hash, when asked)."""
    head = await node.get_block("latest")
    window = {}
    if hashes:
        for n in range(max(0, head.number - 255), head.number + 1):
            window[n] = (await node.get_block(n)).hash
    return PredictedContext(
        number=head.number + 1,
        timestamp=head.timestamp + 12,
        gas_limit=head.gas_limit,
        base_fee=next_base_fee(head.gas_used, head.gas_limit, head.base_fee),
        coinbase=COINBASE,
        prev_randao=PREV_RANDAO,
        blob_base_fee=1,
        block_hashes=window,
    )


async def _template(node: JsonRpcNode, tx_hash: bytes, context: PredictedContext) -> Task:
    """A real pending transaction as the L3 task it would be dispatched as."""
    raw = await node.call("eth_getRawTransactionByHash", ["0x" + tx_hash.hex()])
    assert isinstance(raw, str)
    tx = decode_tx(bytes.fromhex(raw[2:]))
    sender = bytes(20)  # unused by the mint beyond the snapshot's balance
    return Task(
        task_id=1,
        tx_hash=tx_hash,
        raw_tx=tx.raw,
        level=Level.L3,
        sender=sender,
        nonce=tx.nonce,
        block_height=context.number,
        block_gas_limit=context.gas_limit,
        sender_state=AccountSnapshot(sender, 10**19, tx.nonce),
    )


def _batch(canary: Canary, context: PredictedContext, chain_id: int) -> pb.TaskBatch:
    return pb.TaskBatch(
        batch_id="canary",
        tasks=[task_to_pb(canary.task)],
        chain_id=chain_id,
        block_context=context_to_pb(context, chain_id, FORK),
    )


def _judge(canary: Canary, answer: pb.TaskResult, context: PredictedContext) -> str:
    assert canary.executed is not None
    verdict = verdict_from_pb(answer, Level.L3, context.coinbase)
    return judge_executed_canary(canary.executed, verdict)


async def _send_transfer(node: JsonRpcNode, key: str, nonce: int, chain_id: int) -> bytes:
    tx: dict[str, Any] = {
        "chainId": chain_id,
        "nonce": nonce,
        "to": b"\x5e" * 20,
        "value": 12345,
        "gas": 21_000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "type": 2,
    }
    raw = bytes(Account.from_key(key).sign_transaction(tx).raw_transaction)
    return await node.send_raw_transaction(raw)


async def test_executed_canaries_match_honest_agents_per_category(
    anvil_manual: AnvilProcess,
) -> None:
    """Every category's executed canary is judged right for the honest L3 agent, or refused."""
    anvil = anvil_manual
    async with JsonRpcNode(anvil.url) as node:
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=4, seed=3, mine=anvil.mine
        )
        await wl.setup()
        mint = CanaryMint(anvil.chain_id, random.Random(5))
        reader = CanaryTruthReader(node.transport)
        honest = L3Validator()
        outcome: dict[str, Counter[str]] = {}
        context = await _context(node)
        templates: list[tuple[str, bytes]] = []
        for n in range(2):
            templates.append(
                (TRANSFER, await _send_transfer(node, anvil.private_keys[3], n, 31337))
            )
        for i, category in enumerate(CATEGORIES):
            for j, kind in enumerate(KINDS):
                templates.append((category, await wl.send(category, kind, sender=(i + j) % 4)))
        for task_id, (category, tx_hash) in enumerate(templates, start=100):
            template = await _template(node, tx_hash, context)
            counts = outcome.setdefault(category, Counter())
            canary = await executed_canary(
                mint, reader, template, task_id, context, context.base_fee
            )
            if canary is None:
                counts["refused"] += 1
                continue
            assert canary.kind == EXECUTED and canary.task.level == Level.L3
            batch = _batch(canary, context, anvil.chain_id)
            wrong = _judge(canary, honest.validate(batch.tasks[0], batch), context)
            counts["matched" if wrong == "" else f"wrong:{wrong}"] += 1
            assert canary.executed is not None
            counts["success" if canary.executed.effects.success else "failure"] += 1
        print("\nexecuted canaries per category:")
        for category, counts in outcome.items():
            print(f"  {category}: {dict(counts)}")
        print(f"  refusal reasons: {dict(reader.refused)}")
        wrong_any = {c: n for c, n in outcome.items() if any(k.startswith("wrong") for k in n)}
        assert not wrong_any, wrong_any
        refused = {c for c, n in outcome.items() if n["refused"]}
        # Set-code templates are never copied (a traced call carries no authorizations).
        assert refused <= {"ctx_blockhash", *SETCODE_CATEGORIES}, (refused, dict(reader.refused))
        assert all(outcome[c]["matched"] for c in outcome if c not in refused)


async def test_fake_and_lazy_answers_fail_and_blockhash_without_window_is_refused(
    anvil_manual: AnvilProcess,
) -> None:
    """A faked or unexecuted answer is judged wrong; BLOCKHASH without the window gives None."""
    anvil = anvil_manual
    async with JsonRpcNode(anvil.url) as node:
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=2, seed=4, mine=anvil.mine
        )
        await wl.setup()
        mint = CanaryMint(anvil.chain_id, random.Random(6))
        reader = CanaryTruthReader(node.transport)
        context = await _context(node)
        # Writes storage and logs an event, from any sender: a success with effects to fake.
        template = await _template(node, await wl.send("storage_heavy", sender=0), context)
        canary = await executed_canary(mint, reader, template, 7, context, context.base_fee)
        assert canary is not None and canary.executed is not None
        batch = _batch(canary, context, anvil.chain_id)
        assert _judge(canary, L3Validator().validate(batch.tasks[0], batch), context) == ""

        sender = canary.executed.sender
        truth = canary.executed.effects
        assert truth.success and truth.logs and truth.storage
        fake = pb.TaskResult(
            task_id=7, valid=True, sender=sender, status=pb.EXEC_SUCCESS, gas_used=51_234
        )
        assert _judge(canary, fake, context) == "gas_used"
        faked_gas = pb.TaskResult(
            task_id=7, valid=True, sender=sender, status=pb.EXEC_SUCCESS, gas_used=truth.gas_used
        )
        assert _judge(canary, faked_gas, context) == "logs"
        lazy = pb.TaskResult(task_id=7, valid=True, sender=sender)
        assert _judge(canary, lazy, context) == "status"
        declined = pb.TaskResult(task_id=7, valid=False, declined=True, sender=sender)
        assert _judge(canary, declined, context) == "valid"

        bare = await _context(node, hashes=False)
        ctx_template = await _template(node, await wl.send("ctx_blockhash", sender=1), bare)
        assert await executed_canary(mint, reader, ctx_template, 8, bare, bare.base_fee) is None
        assert reader.refused["opcode:BLOCKHASH"] == 1


class _StoreAt:
    """What an L4 validator reads of its follower: a store, its height, the barrier."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    @property
    def height(self) -> int:
        return self.store.height

    async def wait_for_height(self, target: int, timeout: float) -> bool:  # noqa: ASYNC109 - the follower's signature
        return self.store.height >= target


async def test_executed_canaries_at_l4_match_an_agent_on_its_own_state(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """An L4 agent whose store holds the node's state executes an executed canary (sender
    snapshot overlaid, no state shipped) exactly as the node traced it."""
    anvil = anvil_manual
    async with JsonRpcNode(anvil.url) as node:
        wl = ContractWorkload(
            node, anvil.private_keys[1], anvil.chain_id, accounts=2, seed=8, mine=anvil.mine
        )
        await wl.setup()
        context = await _context(node)
        height, entries = await AnvilDumpSource(node).dump()
        assert height == context.number - 1  # the store holds exactly the traced state
        sent = [
            (category, await wl.send(category, kind, sender=i % 2))
            for i, (category, kind) in enumerate(
                [("storage_heavy", "eip1559"), ("cross_contract", "legacy"),
                 ("erc20_transfer", "eip2930"), ("create2", "eip1559")]
            )
        ]  # fmt: skip
        mint = CanaryMint(anvil.chain_id, random.Random(9))
        reader = CanaryTruthReader(node.transport)
        with StateStore(tmp_path / "l4", map_size=1 << 30) as store:
            store.apply_diff(1, [Write.put(ns, key, value) for ns, key, value in entries])
            validator = L4Validator(cast(StateFollower, _StoreAt(store)))
            matched = 0
            for task_id, (category, tx_hash) in enumerate(sent, start=200):
                l3 = await _template(node, tx_hash, context)
                template = replace(l3, level=Level.L4, state_height=1)
                canary = await executed_canary(
                    mint, reader, template, task_id, context, context.base_fee
                )
                assert canary is not None, (category, dict(reader.refused))
                assert canary.task.level == Level.L4 and canary.task.accounts == ()
                assert canary.task.sender_state is not None
                batch = _batch(canary, context, anvil.chain_id)
                answer = validator.validate(batch.tasks[0], batch)
                assert not answer.declined, (category, answer.reject_reason, answer.exec_error)
                assert canary.executed is not None
                verdict = verdict_from_pb(answer, Level.L4, context.coinbase)
                assert judge_executed_canary(canary.executed, verdict) == "", category
                matched += 1
        assert matched == len(sent)
