"""AgentRewardPool on anvil: the reference's end-to-end cases, its fixed defects, and a property
test of exact F1 accounting against an integer model."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from web3 import AsyncHTTPProvider, AsyncWeb3
from web3.contract import AsyncContract
from web3.exceptions import ContractCustomError
from web3.providers.async_base import AsyncBaseProvider
from web3.types import TxParams, Wei

from ioswarm.errors import SettlementError
from ioswarm.rewards.pool import PRECISION, RewardPool, load_artifact
from ioswarm.sim.anvil import AnvilProcess, free_loopback_port

pytestmark = pytest.mark.integration

IOTX = 10**18
EPOCH_REWARD = IOTX // 2  # 0.5 IOTX per epoch, as in the reference tests
DELEGATE_CUT = EPOCH_REWARD // 10  # 10 % kept by the delegate
AGENT_POOL = EPOCH_REWARD - DELEGATE_CUT  # 0.45 IOTX deposited
RECEIVER_ARTIFACT = Path(__file__).resolve().parents[2] / "contracts/test/ClaimReceiver.json"
ACCEPT, REFUSE, REENTER = 0, 1, 2


@dataclass
class Chain:
    """An automining anvil with a web3 client and the coordinator's key."""

    node: AnvilProcess
    w3: AsyncWeb3[AsyncBaseProvider]
    coordinator: LocalAccount

    async def fund(self, address: str, wei: int = 100 * IOTX) -> None:
        """Give ``address`` gas money."""
        await self.node.rpc("anvil_setBalance", [address, hex(wei)])

    async def balance(self, address: str) -> int:
        """Balance of ``address`` in wei."""
        return int(await self.w3.eth.get_balance(AsyncWeb3.to_checksum_address(address)))


def agent_keys(count: int, tag: str = "agent") -> list[LocalAccount]:
    """Deterministic agent wallets that hold nothing until funded."""
    return [Account.from_key(keccak(text=f"{tag}-{i}")) for i in range(count)]


def addresses(accounts: Sequence[LocalAccount]) -> list[str]:
    """The accounts' addresses."""
    return [a.address for a in accounts]


@pytest.fixture
async def chain(anvil_manual: AnvilProcess) -> AsyncIterator[Chain]:
    """Anvil with automine on, so each transaction is mined as it arrives."""
    await anvil_manual.rpc("evm_setAutomine", [True])
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(AsyncHTTPProvider(anvil_manual.url))
    try:
        yield Chain(anvil_manual, w3, Account.from_key(anvil_manual.private_keys[0]))
    finally:
        await w3.provider.disconnect()


@pytest.fixture
async def pool(chain: Chain) -> RewardPool:
    """A fresh pool whose coordinator is anvil's first account."""
    return await RewardPool.deploy(chain.w3, chain.coordinator)


async def deploy_receiver(chain: Chain) -> AsyncContract:
    """A ClaimReceiver wallet contract, deployed by anvil's last (unlocked) account."""
    artifact = json.loads(RECEIVER_ARTIFACT.read_text())
    sender = Account.from_key(chain.node.private_keys[-1]).address
    factory = chain.w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = await factory.constructor().transact({"from": sender})
    receipt = await chain.w3.eth.wait_for_transaction_receipt(tx_hash)
    address = receipt["contractAddress"]
    assert address is not None
    return chain.w3.eth.contract(address=address, abi=artifact["abi"])


async def configure(
    chain: Chain, receiver: AsyncContract, mode: int, target: str, call: bytes
) -> None:
    """Set how ``receiver`` treats its next payment."""
    sender = Account.from_key(chain.node.private_keys[-1]).address
    tx_hash = await receiver.functions.configure(mode, target, call).transact({"from": sender})
    assert (await chain.w3.eth.wait_for_transaction_receipt(tx_hash))["status"] == 1


def calldata(pool: RewardPool, chain: Chain, name: str, *args: Any) -> bytes:
    """ABI-encoded call of pool function ``name``."""
    contract = chain.w3.eth.contract(address=pool.address, abi=load_artifact().abi)
    return bytes.fromhex(contract.encode_abi(name, list(args))[2:])


async def claim_as(pool: RewardPool, chain: Chain, key: LocalAccount) -> int:
    """The agent claims for itself; returns the amount, checked against its balance change."""
    await chain.fund(key.address)
    before = await chain.balance(key.address)
    receipt = await pool.with_signer(key).claim()
    [payout] = receipt.claimed
    assert payout.agent == key.address
    assert await chain.balance(key.address) == before + payout.amount - receipt.fee
    return payout.amount


# -- the reference's end-to-end cases ------------------------------------------------------


async def test_single_agent_is_paid_every_epoch(chain: Chain, pool: RewardPool) -> None:
    """One agent registered at weight 1 receives both epochs' deposits and claims them all."""
    [agent] = agent_keys(1)
    await pool.deposit_and_settle([agent.address], [1], 0)
    for _ in range(2):
        await pool.deposit_and_settle([agent.address], [1], AGENT_POOL)
    assert await pool.claimable(agent.address) == 2 * AGENT_POOL
    assert await claim_as(pool, chain, agent) == 2 * AGENT_POOL
    assert await pool.claimable(agent.address) == 0
    assert await pool.balance() == 0


async def test_two_agents_split_evenly(chain: Chain, pool: RewardPool) -> None:
    """Two agents of equal weight receive exactly half of every deposit."""
    keys = agent_keys(2)
    await pool.deposit_and_settle(addresses(keys), [1, 1], 0)
    for _ in range(2):
        await pool.deposit_and_settle(addresses(keys), [1, 1], AGENT_POOL)
    for key in keys:
        assert await pool.claimable(key.address) == AGENT_POOL
        assert await claim_as(pool, chain, key) == AGENT_POOL
    assert await pool.balance() == 0


async def test_ten_agents_five_epochs_equal_shares(chain: Chain, pool: RewardPool) -> None:
    """Ten equal agents over five epochs each hold a tenth of the total; three claim theirs."""
    keys = agent_keys(10)
    await pool.deposit_and_settle(addresses(keys), [1] * 10, 0)
    for _ in range(5):
        await pool.deposit_and_settle(addresses(keys), [1] * 10, AGENT_POOL)
    share = 5 * AGENT_POOL // 10
    assert [await pool.claimable(k.address) for k in keys] == [share] * 10
    for index in (0, 4, 9):
        assert await claim_as(pool, chain, keys[index]) == share
    assert await pool.balance() == 7 * share


async def test_dynamic_join_and_leave(chain: Chain, pool: RewardPool) -> None:
    """Leavers keep what they earned and earn nothing more, joiners earn from joining, and the
    pool is empty once everyone has claimed."""
    keys = agent_keys(7)
    agents = addresses(keys)
    await pool.deposit_and_settle(agents, [1, 1, 1, 1, 1, 0, 0], 0)
    for _ in range(2):
        await pool.deposit_and_settle(agents, [1, 1, 1, 1, 1, 0, 0], AGENT_POOL)
    phase_one = 2 * AGENT_POOL // 5
    assert await pool.claimable(agents[2]) == phase_one
    for _ in range(2):
        await pool.deposit_and_settle(agents, [1, 1, 0, 0, 1, 1, 1], AGENT_POOL)
    phase_two = 2 * AGENT_POOL // 5
    expected = [phase_one + phase_two] * 2 + [phase_one] * 2 + [phase_one + phase_two]
    expected += [phase_two] * 2
    assert [await pool.claimable(a) for a in agents] == expected
    assert (await pool.agent(agents[3])).weight == 0
    for key, amount in zip(keys, expected, strict=True):
        assert await claim_as(pool, chain, key) == amount
    assert await pool.balance() == 0
    assert await pool.undistributed_scaled() == 0


async def test_agent_under_min_tasks_gets_nothing(pool: RewardPool) -> None:
    """An agent below the task minimum is settled at weight 0 and earns nothing."""
    active, idle = addresses(agent_keys(2))
    await pool.deposit_and_settle([active, idle], [1, 0], 0)
    await pool.deposit_and_settle([active, idle], [1, 0], AGENT_POOL)
    assert await pool.claimable(active) == AGENT_POOL
    assert await pool.claimable(idle) == 0


async def test_delegate_keeps_its_cut(chain: Chain, pool: RewardPool) -> None:
    """The coordinator deposits 90 % of the epoch reward and keeps the other 10 %."""
    [agent] = addresses(agent_keys(1))
    await pool.deposit_and_settle([agent], [1], 0)
    coordinator_before = await chain.balance(chain.coordinator.address)
    pool_before = await pool.balance()
    receipt = await pool.deposit_and_settle([agent], [1], EPOCH_REWARD - DELEGATE_CUT)
    assert await pool.balance() - pool_before == AGENT_POOL
    spent = coordinator_before - await chain.balance(chain.coordinator.address)
    assert spent == AGENT_POOL + receipt.fee
    assert EPOCH_REWARD - (spent - receipt.fee) == DELEGATE_CUT


# -- defects of the reference, fixed -------------------------------------------------------


async def test_deposit_is_split_by_weights_of_the_same_call(pool: RewardPool) -> None:
    """A deposit goes by the weights given in its own call, also on an agent's first call."""
    first, second = addresses(agent_keys(2))
    await pool.deposit_and_settle([first, second], [1, 3], 4 * IOTX)
    assert [await pool.claimable(first), await pool.claimable(second)] == [IOTX, 3 * IOTX]
    await pool.deposit_and_settle([first, second], [3, 1], 4 * IOTX)
    assert [await pool.claimable(first), await pool.claimable(second)] == [4 * IOTX, 4 * IOTX]
    assert await pool.total_weight() == 4


async def test_deposit_at_zero_total_weight_is_held(chain: Chain, pool: RewardPool) -> None:
    """Deposits and plain transfers made while no agent has weight wait for the next split."""
    first, second = addresses(agent_keys(2))
    await pool.deposit_and_settle([], [], IOTX)
    await pool.deposit_and_settle([first, second], [0, 0], IOTX)
    tx_hash = await chain.w3.eth.send_transaction(
        {"from": chain.coordinator.address, "to": pool.address, "value": Wei(IOTX)}
    )
    assert (await chain.w3.eth.wait_for_transaction_receipt(tx_hash))["status"] == 1
    assert await pool.undistributed_scaled() == 3 * IOTX * PRECISION
    assert await pool.claimable(first) == 0
    await pool.deposit_and_settle([first], [1], IOTX)
    assert await pool.claimable(first) == 4 * IOTX
    assert await pool.claimable(second) == 0
    assert await pool.undistributed_scaled() == 0


async def test_claim_works_at_weight_zero(chain: Chain, pool: RewardPool) -> None:
    """Departed agents (weight 0) still claim what they earned, themselves or via claimFor."""
    keys = agent_keys(3)
    agents = addresses(keys)
    await pool.deposit_and_settle(agents, [1, 1, 1], 3 * IOTX)
    await pool.deposit_and_settle(agents, [0, 0, 1], 3 * IOTX)
    assert (await pool.agent(agents[0])).weight == 0
    assert await claim_as(pool, chain, keys[0]) == IOTX
    before = await chain.balance(agents[1])
    receipt = await pool.claim_for(agents[1])
    assert [(p.agent, p.amount) for p in receipt.claimed] == [(agents[1], IOTX)]
    assert await chain.balance(agents[1]) == before + IOTX
    assert await pool.claimable(agents[2]) == 4 * IOTX
    with pytest.raises(SettlementError, match=r"NothingToClaim") as caught:
        await pool.claim_for(agents[0])
    assert caught.value.retryable is False


async def test_refused_payout_in_a_batch_stays_claimable(chain: Chain, pool: RewardPool) -> None:
    """A wallet that refuses a batch payout keeps its balance; the rest of the batch is paid."""
    receiver = await deploy_receiver(chain)
    wallet = receiver.address
    [agent] = addresses(agent_keys(1))
    await configure(chain, receiver, REFUSE, pool.address, b"")
    await pool.deposit_and_settle([wallet, agent], [1, 1], 2 * IOTX)

    receipt = await pool.batch_claim_for([wallet, agent])
    assert [(p.agent, p.amount) for p in receipt.claimed] == [(agent, IOTX)]
    assert [(p.agent, p.amount) for p in receipt.failed] == [(wallet, IOTX)]
    assert await pool.claimable(wallet) == IOTX

    receipt = await pool.deposit_settle_and_claim(
        [wallet, agent], [1, 1], [wallet, agent], 2 * IOTX
    )
    assert [(p.agent, p.amount) for p in receipt.failed] == [(wallet, 2 * IOTX)]
    assert await pool.claimable(wallet) == 2 * IOTX
    with pytest.raises(SettlementError, match=r"TransferFailed"):
        await pool.claim_for(wallet)
    assert await pool.claimable(wallet) == 2 * IOTX

    await configure(chain, receiver, ACCEPT, pool.address, b"")
    receipt = await pool.claim_for(wallet)
    assert [(p.agent, p.amount) for p in receipt.claimed] == [(wallet, 2 * IOTX)]
    assert await receiver.functions.received().call() == 2 * IOTX
    assert await pool.balance() == 0


@pytest.mark.parametrize("reentry", ["claim", "claimFor", "batchClaimFor"])
async def test_reentrant_claim_is_refused(chain: Chain, pool: RewardPool, reentry: str) -> None:
    """A wallet that calls back into the pool from its receive hook is refused and is paid
    exactly once."""
    receiver = await deploy_receiver(chain)
    wallet = receiver.address
    args: dict[str, tuple[Any, ...]] = {
        "claim": (),
        "claimFor": (wallet,),
        "batchClaimFor": ([wallet],),
    }
    await configure(
        chain, receiver, REENTER, pool.address, calldata(pool, chain, reentry, *args[reentry])
    )
    await pool.deposit_and_settle([wallet], [1], IOTX)
    await pool.deposit_and_settle([wallet], [1], IOTX)
    receipt = await pool.claim_for(wallet)
    assert [(p.agent, p.amount) for p in receipt.claimed] == [(wallet, 2 * IOTX)]
    assert await receiver.functions.reentryAttempted().call() is True
    assert await receiver.functions.reentrySucceeded().call() is False
    reentrancy = keccak(text="Reentrancy()")[:4]
    assert await receiver.functions.reentryError().call() == reentrancy
    assert await receiver.functions.received().call() == 2 * IOTX
    assert await pool.balance() == 0


async def test_reentry_from_the_agents_own_claim_is_refused(chain: Chain, pool: RewardPool) -> None:
    """claim() sent by a contract wallet cannot be re-entered from that wallet's receive hook."""
    receiver = await deploy_receiver(chain)
    wallet = receiver.address
    claim = calldata(pool, chain, "claim")
    await configure(chain, receiver, REENTER, pool.address, claim)
    await pool.deposit_and_settle([wallet], [1], IOTX)
    sender = Account.from_key(chain.node.private_keys[-1]).address
    tx_hash = await receiver.functions.poke(claim).transact({"from": sender})
    assert (await chain.w3.eth.wait_for_transaction_receipt(tx_hash))["status"] == 1
    assert await receiver.functions.reentrySucceeded().call() is False
    assert await receiver.functions.received().call() == IOTX
    assert await pool.balance() == 0


async def test_only_the_coordinator_settles(chain: Chain, pool: RewardPool) -> None:
    """Settling is refused to others, and setCoordinator hands the role over."""
    [agent] = addresses(agent_keys(1))
    other = Account.from_key(chain.node.private_keys[1])
    with pytest.raises(SettlementError, match=r"NotCoordinator"):
        await pool.with_signer(other).deposit_and_settle([agent], [1], IOTX)
    await pool.set_coordinator(other.address)
    assert await pool.coordinator() == other.address
    with pytest.raises(SettlementError, match=r"NotCoordinator"):
        await pool.deposit_and_settle([agent], [1], IOTX)
    await pool.with_signer(other).deposit_and_settle([agent], [1], IOTX)
    assert await pool.claimable(agent) == IOTX


async def test_malformed_settlements_are_refused(chain: Chain, pool: RewardPool) -> None:
    """Mismatched lists, the zero address and oversized weights revert on chain."""
    [agent] = addresses(agent_keys(1))
    raw = chain.w3.eth.contract(address=pool.address, abi=load_artifact().abi)
    sender: TxParams = {"from": chain.coordinator.address}
    with pytest.raises(ContractCustomError):
        await raw.functions.depositAndSettle([agent], []).call(sender)
    with pytest.raises(SettlementError, match=r"ZeroAddress"):
        await pool.deposit_and_settle(["0x" + "00" * 20], [1], IOTX)
    with pytest.raises(SettlementError, match=r"WeightTooLarge"):
        await pool.deposit_and_settle([agent], [2**96], IOTX)
    with pytest.raises(SettlementError, match=r"agents but"):
        await pool.deposit_and_settle([agent], [], IOTX)


async def test_unreachable_node_is_a_settlement_error() -> None:
    """A node that cannot be reached surfaces as a retryable SettlementError."""
    url = f"http://127.0.0.1:{free_loopback_port()}"
    w3: AsyncWeb3[AsyncBaseProvider] = AsyncWeb3(
        AsyncHTTPProvider(url, exception_retry_configuration=None)
    )
    try:
        pool = RewardPool(w3, "0x" + "11" * 20, agent_keys(1)[0])
        with pytest.raises(SettlementError) as caught:
            await pool.claimable(pool.signer_address)
        assert caught.value.retryable is True
        with pytest.raises(SettlementError):
            await pool.claim()
    finally:
        await w3.provider.disconnect()


# -- property: exact accounting against an integer model -----------------------------------


@dataclass
class PoolModel:
    """The contract's integer math in Python, plus the exact rational share of every agent."""

    agents: int
    cumulative: int = 0
    total: int = 0
    undistributed: int = 0
    last_total: int = 0
    deposited: int = 0
    unassigned: int = 0
    weight: list[int] = field(default_factory=list)
    snapshot: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    paid: list[int] = field(default_factory=list)
    ideal: list[Fraction] = field(default_factory=list)
    bound: list[Fraction] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("weight", "snapshot", "pending", "paid"):
            setattr(self, name, [0] * self.agents)
        self.ideal = [Fraction(0)] * self.agents
        self.bound = [Fraction(0)] * self.agents

    def accrued(self, i: int) -> int:
        """Scaled amount agent ``i`` is owed now."""
        return self.pending[i] + self.weight[i] * (self.cumulative - self.snapshot[i])

    def settle(self, weights: list[tuple[int, int]], value: int) -> None:
        """depositAndSettle: weights first (in list order), then split everything held by the
        new weights."""
        for i, weight in weights:
            self.pending[i] = self.accrued(i)
            self.snapshot[i] = self.cumulative
            self.total += weight - self.weight[i]
            self.weight[i] = weight
        self.deposited += value
        self.unassigned += value
        pool = self.undistributed + value * PRECISION
        if self.total and pool:
            increment = pool // self.total
            self.undistributed = pool - increment * self.total
            self.cumulative += increment
            for i in range(self.agents):
                self.ideal[i] += Fraction(self.unassigned * self.weight[i], self.total)
                # Rounding error of this step: under w * max(1, W_prev / W) scaled units.
                self.bound[i] += self.weight[i] * max(
                    Fraction(1), Fraction(self.last_total, self.total)
                )
            self.unassigned = 0
            self.last_total = self.total
        else:
            self.undistributed = pool

    def take(self, i: int) -> int:
        """Claim for agent ``i``: whole wei out, the sub-wei fraction stays."""
        owed = self.accrued(i)
        self.snapshot[i] = self.cumulative
        amount = owed // PRECISION
        self.pending[i] = owed - amount * PRECISION
        self.paid[i] += amount
        return amount


SETTLE = st.tuples(
    st.just("settle"),
    # Repeated agents are allowed: the last weight given wins.
    st.lists(
        st.tuples(
            st.integers(0, 4), st.one_of(st.just(0), st.integers(1, 10), st.integers(1, 2**40))
        ),
        max_size=6,
    ),
    st.one_of(st.integers(0, 1_000), st.integers(0, 10 * IOTX)),
    st.one_of(st.none(), st.lists(st.integers(0, 4), max_size=5)),
)
CLAIM = st.tuples(st.just("claim"), st.integers(0, 4))
BATCH = st.tuples(st.just("batch"), st.lists(st.integers(0, 4), min_size=1, max_size=5))
TOPUP = st.tuples(st.just("topup"), st.integers(1, 10 * IOTX))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(st.one_of(SETTLE, SETTLE, CLAIM, BATCH, TOPUP), min_size=1, max_size=12))
async def test_accounting_is_exact_under_random_sequences(
    chain: Chain, pool: RewardPool, steps: list[tuple[Any, ...]]
) -> None:
    """Random settle/claim/join/leave sequences keep deposited == claimed + balance to the wei,
    match the integer model exactly, and stay within the documented dust bound of each agent's
    exact share."""
    snapshot = await chain.node.rpc("evm_snapshot")
    try:
        await _run_steps(chain, pool, steps)
    finally:
        assert await chain.node.rpc("evm_revert", [snapshot]) is True


async def _run_steps(chain: Chain, pool: RewardPool, steps: list[tuple[Any, ...]]) -> None:
    agents = addresses(agent_keys(5, "prop"))
    model = PoolModel(len(agents))
    starting = [await chain.balance(a) for a in agents]
    for step in steps:
        paid: list[tuple[str, int]] = []
        if step[0] == "settle":
            _, weights, value, claimants = step
            args = ([agents[i] for i, _ in weights], [w for _, w in weights])
            model.settle(weights, value)
            if claimants is None:
                await pool.deposit_and_settle(*args, value)
            else:
                receipt = await pool.deposit_settle_and_claim(
                    *args, [agents[i] for i in claimants], value
                )
                paid = [(p.agent, p.amount) for p in receipt.claimed]
                assert paid == _batch(model, agents, claimants)
        elif step[0] == "claim":
            index = step[1]
            if model.accrued(index) < PRECISION:
                with pytest.raises(SettlementError, match=r"NothingToClaim"):
                    await pool.claim_for(agents[index])
            else:
                receipt = await pool.claim_for(agents[index])
                paid = [(p.agent, p.amount) for p in receipt.claimed]
                assert paid == [(agents[index], model.take(index))]
        elif step[0] == "batch":
            receipt = await pool.batch_claim_for([agents[i] for i in step[1]])
            assert [(p.agent, p.amount) for p in receipt.claimed] == _batch(model, agents, step[1])
        else:
            tx_hash = await chain.w3.eth.send_transaction(
                {"from": chain.coordinator.address, "to": pool.address, "value": Wei(step[1])}
            )
            assert (await chain.w3.eth.wait_for_transaction_receipt(tx_hash))["status"] == 1
            model.deposited += step[1]
            model.unassigned += step[1]
            model.undistributed += step[1] * PRECISION
        await _check(chain, pool, model, agents, starting)


def _batch(model: PoolModel, agents: list[str], indices: list[int]) -> list[tuple[str, int]]:
    paid = []
    for i in indices:
        amount = model.take(i)
        if amount:
            paid.append((agents[i], amount))
    return paid


async def _check(
    chain: Chain, pool: RewardPool, model: PoolModel, agents: list[str], starting: list[int]
) -> None:
    balance = await pool.balance()
    assert model.deposited == sum(model.paid) + balance
    assert await pool.undistributed_scaled() == model.undistributed
    assert await pool.total_weight() == model.total
    assert await pool.cumulative_reward_per_weight() == model.cumulative
    owed = 0
    for i, agent in enumerate(agents):
        accrued = await pool.accrued_scaled(agent)
        assert accrued == model.accrued(i)
        assert await pool.claimable(agent) == accrued // PRECISION
        assert await chain.balance(agent) == starting[i] + model.paid[i]
        credited = model.paid[i] * PRECISION + accrued
        error = credited - model.ideal[i] * PRECISION
        assert error == 0 or abs(error) < model.bound[i]
        owed += accrued
    assert balance * PRECISION == model.undistributed + owed
