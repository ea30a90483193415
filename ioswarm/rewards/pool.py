"""Typed binding over the AgentRewardPool contract.

Async web3 (``AsyncWeb3`` over ``AsyncHTTPProvider``): the coordinator lives on one asyncio loop
and a settlement waits for its receipt; a synchronous ``Web3`` would stall heartbeats and
dispatch for that whole time. Transactions are signed locally by the injected ``LocalAccount``
(the node never holds a key), with an explicit nonce when the caller binds an epoch to one.

Every web3, aiohttp and eth-account failure becomes :class:`~ioswarm.errors.SettlementError` in
:func:`_translated` and nowhere else; a contract revert names the contract's custom error
and is marked not retryable.

Besides the one-call methods (sign, send, wait), the settler uses the steps separately:
:meth:`RewardPool.sign_settlement` (the hash is known before anything is sent, so it can be
recorded first), :meth:`RewardPool.broadcast` (the node's answer classified: accepted, already
known, nonce used, underpriced) and :meth:`RewardPool.outcome` (a receipt, or None).
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import aiohttp
from eth_abi.abi import decode as abi_decode
from eth_account.datastructures import SignedTransaction
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import AsyncWeb3
from web3.contract import AsyncContract
from web3.contract.async_contract import AsyncContractConstructor, AsyncContractFunction
from web3.exceptions import (
    BlockNotFound,
    ContractLogicError,
    TransactionNotFound,
    Web3Exception,
    Web3RPCError,
)
from web3.providers.async_base import AsyncBaseProvider
from web3.types import FilterParams, Nonce, TxParams, TxReceipt, Wei

from ioswarm.errors import SettlementError

ARTIFACT_FILE = "AgentRewardPool.json"
PRECISION = 10**18
"""Scale of ``cumulativeRewardPerWeight`` and of the contract's scaled amounts."""

_CLAIMED_TOPIC = keccak(text="Claimed(address,uint256)")
_CLAIM_FAILED_TOPIC = keccak(text="ClaimFailed(address,uint256)")
_SETTLED_TOPIC = keccak(text="Settled(uint256,uint256)")

_ErrorTypes = dict[bytes, tuple[str, list[str]]]
"""Custom error selector -> (name, argument types)."""


@dataclass(frozen=True, slots=True)
class PoolArtifact:
    """The compiled contract as written by ``contracts/build.py``."""

    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_sha256: str

    @classmethod
    def from_file(cls, path: Path) -> PoolArtifact:
        """Read an artifact JSON file."""
        return cls.from_json(path.read_text(encoding="utf-8"))

    @classmethod
    def from_json(cls, text: str) -> PoolArtifact:
        """Parse artifact JSON text."""
        data = json.loads(text)
        return cls(
            abi=data["abi"],
            bytecode=data["bytecode"],
            deployed_bytecode=data["deployedBytecode"],
            compiler_version=data["compiler"]["version"],
            source_sha256=data["sourceSha256"],
        )


@functools.lru_cache(maxsize=1)
def load_artifact() -> PoolArtifact:
    """The artifact shipped inside the package."""
    text = resources.files(__package__).joinpath(ARTIFACT_FILE).read_text(encoding="utf-8")
    return PoolArtifact.from_json(text)


@dataclass(frozen=True, slots=True)
class AgentPosition:
    """``agents(address)``: weight, cumulative reward per weight at the last settlement, and
    settled-but-unclaimed whole wei."""

    weight: int
    reward_snapshot: int
    pending: int


@dataclass(frozen=True, slots=True)
class Payout:
    """One payout attempt seen in a receipt."""

    agent: ChecksumAddress
    amount: int


@dataclass(frozen=True, slots=True)
class PoolReceipt:
    """A mined, successful pool transaction."""

    tx_hash: str
    block_number: int
    gas_used: int
    effective_gas_price: int
    claimed: tuple[Payout, ...] = ()
    """Payouts that reached the agent (``Claimed`` events)."""
    failed: tuple[Payout, ...] = ()
    """Payouts the agent refused; the amount stays claimable (``ClaimFailed`` events)."""

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas."""
        return self.gas_used * self.effective_gas_price


@dataclass(frozen=True, slots=True)
class TxOptions:
    """Overrides for one transaction; ``None`` lets the node decide."""

    nonce: int | None = None
    """Sender nonce; pin it to bind an epoch to exactly one transaction."""
    gas: int | None = None
    """Gas limit; default: the node's estimate plus ``gas_margin_pct``."""
    max_fee_per_gas: int | None = None
    """EIP-1559 fee cap in wei (raise it to replace a stuck transaction)."""
    max_priority_fee_per_gas: int | None = None
    """EIP-1559 tip in wei."""


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed, not yet broadcast transaction."""

    tx_hash: str
    raw: bytes
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    value: int


class Broadcast(Enum):
    """How the node took a raw transaction."""

    ACCEPTED = "accepted"
    KNOWN = "known"
    """The node already has this exact transaction."""
    NONCE_USED = "nonce_used"
    """The nonce was consumed by a mined transaction (maybe this one)."""
    UNDERPRICED = "underpriced"
    """Another transaction with this nonce is pending at a fee this one does not beat."""


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """A mined transaction, successful or reverted."""

    tx_hash: str
    success: bool
    block_number: int
    gas_used: int
    effective_gas_price: int
    receipt: PoolReceipt | None
    """Parsed events when it succeeded."""
    block_hash: str = ""
    """Hash of the block it was mined in (a reorg changes or removes it)."""

    @property
    def fee(self) -> int:
        """Wei the sender paid for gas."""
        return self.gas_used * self.effective_gas_price


@dataclass(frozen=True, slots=True)
class SettledEvent:
    """One ``Settled(amount, agentCount)`` event of the pool."""

    tx_hash: str
    block_number: int
    amount: int
    agent_count: int


class PoolReader:
    """What anyone can read of one deployed AgentRewardPool and its chain; no signer needed.

    :class:`RewardPool` adds the signer and everything that sends a transaction.
    """

    def __init__(
        self,
        w3: AsyncWeb3[AsyncBaseProvider],
        address: str,
        *,
        artifact: PoolArtifact | None = None,
    ) -> None:
        self._w3 = w3
        self._artifact = artifact or load_artifact()
        self._contract: AsyncContract = w3.eth.contract(
            address=to_checksum_address(address), abi=self._artifact.abi
        )
        self._error_types = _error_types(self._artifact.abi)

    @property
    def address(self) -> ChecksumAddress:
        """The pool contract's address."""
        return self._contract.address

    async def chain_id(self) -> int:
        """The chain id the RPC endpoint reports."""
        with self._errors("chain id"):
            return int(await self._w3.eth.chain_id)

    async def block_number(self) -> int:
        """The node's newest block number."""
        with self._errors("block number"):
            return int(await self._w3.eth.block_number)

    async def block_hash(self, number: int) -> str | None:
        """Hash of the canonical block ``number``; None when the node has no such block."""
        with self._errors("block"):
            try:
                block = await self._w3.eth.get_block(number)
            except BlockNotFound:
                return None
        raw = block.get("hash")
        return None if raw is None else raw.to_0x_hex()

    async def has_code(self) -> bool:
        """Whether the pool address holds contract code on the node's chain."""
        with self._errors("code"):
            return len(await self._w3.eth.get_code(self.address)) > 0

    async def settled_events(
        self, from_block: int = 0, to_block: int | Literal["latest"] = "latest"
    ) -> list[SettledEvent]:
        """Every ``Settled`` event of the pool in the block range, oldest first."""
        query: FilterParams = {
            "address": self.address,
            "fromBlock": from_block,
            "toBlock": to_block,
            "topics": [_SETTLED_TOPIC],  # type: ignore[list-item]
        }
        with self._errors("logs"):
            logs = await self._w3.eth.get_logs(query)
        out = []
        for entry in logs:
            amount, count = abi_decode(["uint256", "uint256"], bytes(entry["data"]))
            out.append(
                SettledEvent(
                    tx_hash=entry["transactionHash"].to_0x_hex(),
                    block_number=int(entry["blockNumber"]),
                    amount=int(amount),
                    agent_count=int(count),
                )
            )
        return out

    # -- reads -----------------------------------------------------------------------------

    async def claimable(self, agent: str) -> int:
        """Whole wei ``agent`` can claim now."""
        return int(await self._call("claimable", to_checksum_address(agent)))

    async def accrued_scaled(self, agent: str) -> int:
        """What ``agent`` is owed in wei * PRECISION, sub-wei fraction included."""
        return int(await self._call("accruedScaled", to_checksum_address(agent)))

    async def agent(self, agent: str) -> AgentPosition:
        """``agents(address)``."""
        weight, snapshot, pending = await self._call("agents", to_checksum_address(agent))
        return AgentPosition(int(weight), int(snapshot), int(pending))

    async def total_weight(self) -> int:
        """Sum of all agents' weights."""
        return int(await self._call("totalWeight"))

    async def cumulative_reward_per_weight(self) -> int:
        """Reward per unit of weight ever distributed, scaled by PRECISION."""
        return int(await self._call("cumulativeRewardPerWeight"))

    async def undistributed_scaled(self) -> int:
        """Held deposits plus division remainders not yet distributed, in wei * PRECISION."""
        return int(await self._call("undistributedScaled"))

    async def coordinator(self) -> ChecksumAddress:
        """The address allowed to settle."""
        return to_checksum_address(await self._call("coordinator"))

    async def balance(self) -> int:
        """The pool's balance in wei."""
        with self._errors("balance"):
            return int(await self._w3.eth.get_balance(self.address))

    async def _call(self, name: str, *args: Any) -> Any:
        with self._errors(name):
            return await self._contract.functions[name](*args).call()

    def _errors(self, action: str) -> contextlib.AbstractContextManager[None]:
        return _translated(action, self._error_types)


class RewardPool(PoolReader):
    """One deployed AgentRewardPool, used by one signer.

    The coordinator's signer calls :meth:`deposit_and_settle` and
    :meth:`deposit_settle_and_claim`; any signer can claim. Reads need no signer funds.
    """

    def __init__(
        self,
        w3: AsyncWeb3[AsyncBaseProvider],
        address: str,
        signer: LocalAccount,
        *,
        artifact: PoolArtifact | None = None,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.05,
        gas_margin_pct: int = 20,
    ) -> None:
        super().__init__(w3, address, artifact=artifact)
        self._signer = signer
        self._receipt_timeout = receipt_timeout
        self._poll_interval = poll_interval
        self._gas_margin_pct = gas_margin_pct

    @property
    def signer_address(self) -> ChecksumAddress:
        """The address that sends this binding's transactions."""
        return to_checksum_address(self._signer.address)

    def with_signer(self, signer: LocalAccount) -> RewardPool:
        """The same pool, sending as ``signer`` (e.g. an agent claiming for itself)."""
        return self._copy(self.address, signer)

    def at(self, address: str) -> RewardPool:
        """The pool at ``address``, with this binding's signer and settings."""
        return self._copy(address, self._signer)

    def _copy(self, address: str, signer: LocalAccount) -> RewardPool:
        return RewardPool(
            self._w3,
            address,
            signer,
            artifact=self._artifact,
            receipt_timeout=self._receipt_timeout,
            poll_interval=self._poll_interval,
            gas_margin_pct=self._gas_margin_pct,
        )

    @classmethod
    async def deploy(
        cls,
        w3: AsyncWeb3[AsyncBaseProvider],
        signer: LocalAccount,
        *,
        coordinator: str | None = None,
        artifact: PoolArtifact | None = None,
        receipt_timeout: float = 60.0,
        poll_interval: float = 0.05,
        gas_margin_pct: int = 20,
    ) -> RewardPool:
        """Deploy a new pool whose coordinator is ``coordinator`` (default: the signer)."""
        art = artifact or load_artifact()
        factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        ctor = factory.constructor(to_checksum_address(coordinator or signer.address))
        with _translated("deploy", _error_types(art.abi)):
            receipt = await _mine(
                w3, signer, ctor, 0, TxOptions(), gas_margin_pct, receipt_timeout, poll_interval
            )
        address = receipt.get("contractAddress")
        if receipt["status"] != 1 or not address:
            raise SettlementError(
                f"deploy: transaction {receipt['transactionHash'].to_0x_hex()} failed"
            )
        return cls(
            w3,
            address,
            signer,
            artifact=art,
            receipt_timeout=receipt_timeout,
            poll_interval=poll_interval,
            gas_margin_pct=gas_margin_pct,
        )

    # -- transactions ----------------------------------------------------------------------

    async def deposit_and_settle(
        self,
        agents: Sequence[str],
        weights: Sequence[int],
        value: int,
        options: TxOptions | None = None,
    ) -> PoolReceipt:
        """Set the listed agents' weights and split ``value`` wei by the resulting weights."""
        _check_lengths(agents, weights)
        fn = self._contract.functions.depositAndSettle(_addresses(agents), list(weights))
        return await self._send("depositAndSettle", fn, value, options or TxOptions())

    async def deposit_settle_and_claim(
        self,
        agents: Sequence[str],
        weights: Sequence[int],
        claimants: Sequence[str],
        value: int,
        options: TxOptions | None = None,
    ) -> PoolReceipt:
        """:meth:`deposit_and_settle`, then pay ``claimants`` in the same transaction."""
        _check_lengths(agents, weights)
        fn = self._contract.functions.depositSettleAndClaim(
            _addresses(agents), list(weights), _addresses(claimants)
        )
        return await self._send("depositSettleAndClaim", fn, value, options or TxOptions())

    async def claim(self, options: TxOptions | None = None) -> PoolReceipt:
        """Pay the signer what it can claim; fails when that is nothing."""
        fn = self._contract.functions.claim()
        return await self._send("claim", fn, 0, options or TxOptions())

    async def claim_for(self, agent: str, options: TxOptions | None = None) -> PoolReceipt:
        """Pay ``agent`` what it can claim; fails when that is nothing."""
        fn = self._contract.functions.claimFor(to_checksum_address(agent))
        return await self._send("claimFor", fn, 0, options or TxOptions())

    async def batch_claim_for(
        self, agents: Sequence[str], options: TxOptions | None = None
    ) -> PoolReceipt:
        """Pay each agent; refused payouts are listed in ``failed`` and stay claimable."""
        fn = self._contract.functions.batchClaimFor(_addresses(agents))
        return await self._send("batchClaimFor", fn, 0, options or TxOptions())

    async def set_coordinator(
        self, coordinator: str, options: TxOptions | None = None
    ) -> PoolReceipt:
        """Hand the coordinator role to ``coordinator``."""
        fn = self._contract.functions.setCoordinator(to_checksum_address(coordinator))
        return await self._send("setCoordinator", fn, 0, options or TxOptions())

    # -- settlement in steps (sign, record, broadcast, poll) ----------------------------------

    async def sign_settlement(
        self,
        agents: Sequence[str],
        weights: Sequence[int],
        value: int,
        options: TxOptions,
        *,
        claimants: Sequence[str] | None = None,
        gas_margin_pct: int | None = None,
    ) -> SignedTx:
        """Build and sign ``depositAndSettle`` (or ``depositSettleAndClaim`` when ``claimants``
        is given) without sending it. Without ``options.gas`` the node estimates it (a call
        that would revert fails here, not retryable) and ``gas_margin_pct`` is added."""
        _check_lengths(agents, weights)
        if claimants is None:
            action = "depositAndSettle"
            fn = self._contract.functions.depositAndSettle(_addresses(agents), list(weights))
        else:
            action = "depositSettleAndClaim"
            fn = self._contract.functions.depositSettleAndClaim(
                _addresses(agents), list(weights), _addresses(claimants)
            )
        margin = self._gas_margin_pct if gas_margin_pct is None else gas_margin_pct
        with self._errors(action):
            tx, signed = await _sign(self._w3, self._signer, fn, value, options, margin)
        return SignedTx(
            tx_hash=signed.hash.to_0x_hex(),
            raw=bytes(signed.raw_transaction),
            nonce=int(tx["nonce"]),
            gas=int(tx["gas"]),
            max_fee_per_gas=int(tx.get("maxFeePerGas", 0)),
            max_priority_fee_per_gas=int(tx.get("maxPriorityFeePerGas", 0)),
            value=value,
        )

    async def broadcast(self, raw: bytes) -> Broadcast:
        """Send a signed transaction; the node's refusals that a caller acts on are results."""
        with self._errors("broadcast"):
            try:
                await self._w3.eth.send_raw_transaction(raw)
            except Web3RPCError as exc:
                kind = _send_refusal(str(exc))
                if kind is None:
                    raise
                return kind
        return Broadcast.ACCEPTED

    async def outcome(self, tx_hash: str) -> TxOutcome | None:
        """The mined result of ``tx_hash``, or None while it is pending or unknown."""
        with self._errors("receipt"):
            try:
                receipt = await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
        if receipt.get("blockNumber") is None:
            return None
        success = receipt["status"] == 1
        return TxOutcome(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            success=success,
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            receipt=self._parse(receipt) if success else None,
            block_hash=receipt["blockHash"].to_0x_hex() if receipt.get("blockHash") else "",
        )

    async def nonce(self, block: Literal["latest", "pending"] = "latest") -> int:
        """The signer's transaction count at ``block``: mined only, or mined plus mempool."""
        with self._errors("nonce"):
            return int(await self._w3.eth.get_transaction_count(self.signer_address, block))

    async def suggest_fees(self) -> tuple[int, int]:
        """EIP-1559 ``(max_fee_per_gas, max_priority_fee_per_gas)``: twice the latest base fee
        plus the node's suggested tip, so the cap survives six full blocks of base-fee rises."""
        with self._errors("fees"):
            tip = int(await self._w3.eth.max_priority_fee)
            block = await self._w3.eth.get_block("latest")
        base = int(block.get("baseFeePerGas", 0))
        return 2 * base + tip, tip

    async def revert_reason(
        self,
        agents: Sequence[str],
        weights: Sequence[int],
        value: int,
        block: int,
        claimants: Sequence[str] | None = None,
    ) -> str | None:
        """Replay a settlement call on the state of ``block``: the revert reason, or None when
        it would succeed there."""
        if claimants is None:
            fn = self._contract.functions.depositAndSettle(_addresses(agents), list(weights))
        else:
            fn = self._contract.functions.depositSettleAndClaim(
                _addresses(agents), list(weights), _addresses(claimants)
            )
        params: TxParams = {"from": self.signer_address, "value": Wei(value)}
        with self._errors("replay"):
            try:
                await fn.call(params, block_identifier=block)
            except ContractLogicError as exc:
                return _revert_reason(exc, self._error_types)
        return None

    # -- plumbing --------------------------------------------------------------------------

    async def _send(
        self,
        action: str,
        fn: AsyncContractFunction,
        value: int,
        options: TxOptions,
    ) -> PoolReceipt:
        with self._errors(action):
            receipt = await _mine(
                self._w3,
                self._signer,
                fn,
                value,
                options,
                self._gas_margin_pct,
                self._receipt_timeout,
                self._poll_interval,
            )
        if receipt["status"] != 1:
            tx_hash = receipt["transactionHash"].to_0x_hex()
            raise SettlementError(f"{action}: transaction {tx_hash} reverted")
        return self._parse(receipt)

    def _parse(self, receipt: TxReceipt) -> PoolReceipt:
        claimed: list[Payout] = []
        failed: list[Payout] = []
        for entry in receipt["logs"]:
            if entry["address"] != self.address or not entry["topics"]:
                continue
            topic = bytes(entry["topics"][0])
            if topic in (_CLAIMED_TOPIC, _CLAIM_FAILED_TOPIC):
                payout = Payout(
                    to_checksum_address(bytes(entry["topics"][1])[-20:]),
                    int.from_bytes(bytes(entry["data"]), "big"),
                )
                (claimed if topic == _CLAIMED_TOPIC else failed).append(payout)
        return PoolReceipt(
            tx_hash=receipt["transactionHash"].to_0x_hex(),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
            claimed=tuple(claimed),
            failed=tuple(failed),
        )


async def _mine(
    w3: AsyncWeb3[AsyncBaseProvider],
    signer: LocalAccount,
    fn: AsyncContractFunction | AsyncContractConstructor,
    value: int,
    options: TxOptions,
    gas_margin_pct: int,
    receipt_timeout: float,
    poll_interval: float,
) -> TxReceipt:
    """Build, sign locally, send and wait for one transaction; library errors pass through."""
    _, signed = await _sign(w3, signer, fn, value, options, gas_margin_pct)
    tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
    return await w3.eth.wait_for_transaction_receipt(
        tx_hash, timeout=receipt_timeout, poll_latency=poll_interval
    )


async def _sign(
    w3: AsyncWeb3[AsyncBaseProvider],
    signer: LocalAccount,
    fn: AsyncContractFunction | AsyncContractConstructor,
    value: int,
    options: TxOptions,
    gas_margin_pct: int,
) -> tuple[TxParams, SignedTransaction]:
    """Build and sign one transaction locally; library errors pass through."""
    sender = to_checksum_address(signer.address)
    params: TxParams = {"from": sender, "value": Wei(value)}
    if options.nonce is not None:
        params["nonce"] = Nonce(options.nonce)
    else:
        params["nonce"] = await w3.eth.get_transaction_count(sender, "pending")
    if options.gas is not None:
        params["gas"] = options.gas
    if options.max_fee_per_gas is not None:
        params["maxFeePerGas"] = Wei(options.max_fee_per_gas)
    if options.max_priority_fee_per_gas is not None:
        params["maxPriorityFeePerGas"] = Wei(options.max_priority_fee_per_gas)
    tx = await fn.build_transaction(params)
    if options.gas is None:
        # Headroom for state that changes between estimate and inclusion (e.g. a claim).
        tx["gas"] = int(tx["gas"]) * (100 + gas_margin_pct) // 100
    return tx, signer.sign_transaction(tx)  # type: ignore[arg-type]


async def transfer(
    w3: AsyncWeb3[AsyncBaseProvider],
    signer: LocalAccount,
    to: str,
    value: int,
    *,
    receipt_timeout: float = 60.0,
    poll_interval: float = 0.05,
    gas_margin_pct: int = 20,
) -> PoolReceipt:
    """Send ``value`` wei from ``signer`` to ``to`` (a wallet, or a pool: held for the next
    settlement) and wait for it to be mined."""
    sender = to_checksum_address(signer.address)
    target = to_checksum_address(to)
    with _translated("transfer", {}):
        params: TxParams = {"from": sender, "to": target, "value": Wei(value)}
        gas = await w3.eth.estimate_gas(params)
        tip = await w3.eth.max_priority_fee
        base = int((await w3.eth.get_block("latest")).get("baseFeePerGas", 0))
        tx: TxParams = {
            **params,
            "nonce": await w3.eth.get_transaction_count(sender, "pending"),
            "gas": int(gas) * (100 + gas_margin_pct) // 100,
            "maxFeePerGas": Wei(2 * base + int(tip)),
            "maxPriorityFeePerGas": tip,
            "chainId": await w3.eth.chain_id,
        }
        signed = signer.sign_transaction(tx)  # type: ignore[arg-type]
        tx_hash = await w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = await w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=receipt_timeout, poll_latency=poll_interval
        )
    if receipt["status"] != 1:
        raise SettlementError(f"transfer: transaction {tx_hash.to_0x_hex()} reverted")
    return PoolReceipt(
        tx_hash=receipt["transactionHash"].to_0x_hex(),
        block_number=int(receipt["blockNumber"]),
        gas_used=int(receipt["gasUsed"]),
        effective_gas_price=int(receipt.get("effectiveGasPrice", 0)),
    )


_REFUSALS = (
    (("already known", "already imported", "known transaction", "alreadyknown"), Broadcast.KNOWN),
    (("nonce too low", "nonce is too low", "oldnonce"), Broadcast.NONCE_USED),
    (("underpriced", "fee too low", "feetoolow"), Broadcast.UNDERPRICED),
)


def _send_refusal(message: str) -> Broadcast | None:
    """Classify a node's refusal of ``eth_sendRawTransaction`` (wording differs per client)."""
    text = message.lower()
    for needles, kind in _REFUSALS:
        if any(n in text for n in needles):
            return kind
    return None


@contextlib.contextmanager
def _translated(action: str, error_types: _ErrorTypes) -> Iterator[None]:
    """The one place where library errors become :class:`SettlementError`."""
    try:
        yield
    except SettlementError:
        raise
    except ContractLogicError as exc:
        error = SettlementError(f"{action} reverted: {_revert_reason(exc, error_types)}")
        # The same call on the same state reverts again; the caller must change something.
        error.retryable = False
        raise error from exc
    except (Web3Exception, aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        raise SettlementError(f"{action}: {type(exc).__name__}: {exc}") from exc


def _addresses(agents: Sequence[str]) -> list[ChecksumAddress]:
    return [to_checksum_address(agent) for agent in agents]


def _check_lengths(agents: Sequence[str], weights: Sequence[int]) -> None:
    if len(agents) != len(weights):
        raise SettlementError(f"{len(agents)} agents but {len(weights)} weights")


def _error_types(abi: list[dict[str, Any]]) -> _ErrorTypes:
    """Custom error selector -> (name, argument types)."""
    found: dict[bytes, tuple[str, list[str]]] = {}
    for entry in abi:
        if entry.get("type") == "error":
            types = [arg["type"] for arg in entry.get("inputs", [])]
            found[keccak(text=f"{entry['name']}({','.join(types)})")[:4]] = (entry["name"], types)
    return found


def _revert_reason(exc: ContractLogicError, errors: _ErrorTypes) -> str:
    """``Name(arg, ...)`` for a custom error of the pool, else web3's message."""
    data = exc.data if isinstance(exc.data, str) else None
    if data and data.startswith("0x") and len(data) >= 10:
        raw = bytes.fromhex(data[2:])
        known = errors.get(raw[:4])
        if known is not None:
            name, types = known
            try:
                values = abi_decode(types, raw[4:])
            except Exception:  # a malformed payload still names the error
                return f"{name}(?)"
            return f"{name}({', '.join(str(v) for v in values)})"
    return str(exc.message or exc)
