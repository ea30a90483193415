"""Contract traffic for L3 testing: transactions a validator can only check by running the EVM.

:class:`ContractWorkload` deploys the contracts of ``contracts/workload/`` (compiled by
``contracts/workload/build.py`` into ``ioswarm/sim/contracts/workload.json``), funds a few
sender accounts, mints tokens and seeds storage. After that, :meth:`ContractWorkload.send` sends
one transaction of a category (token transfers, heavy storage writes, cross-contract calls,
CREATE and CREATE2, precompiles, reverts, out-of-gas, transient storage, block context opcodes,
and the account life cycle of :mod:`ioswarm.sim.l3fidelity`: creations, CREATE2 re-deploys after
SELFDESTRUCT, fresh recipients, EXTCODEHASH of absent and empty accounts, EIP-7702 set-code)
as an EIP-1559, legacy or EIP-2930 transaction (set-code categories always as type 4).
:meth:`ContractWorkload.run` sends a weighted random mix. Gas limits are fixed per category, so
reverting and out-of-gas calls are sent without estimation and land with status 0. Nonces are
tracked locally per account.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount

from ioswarm.errors import IoswarmError, NodeError
from ioswarm.node.adapter import NodeClient
from ioswarm.sim.artifacts import (
    WorkloadArtifact,
    load_artifact,
    word,
)
from ioswarm.sim.l3calls import (
    CATEGORIES,
    CONTEXT_CATEGORIES,
    SEED_CELLS,
    Call,
    CallBuilder,
    Category,
)
from ioswarm.sim.l3fidelity import AUTHORITY_FUND_WEI, SetCodeBook
from ioswarm.sim.sending import FeeOracle, Fees, NonceBook, new_account, pending_nonce
from ioswarm.sim.workload import TX_KINDS, TxKind, contract_address

log = logging.getLogger("ioswarm.sim")
_K = TypeVar("_K", bound=str)

FAILING_CATEGORIES: frozenset[Category] = frozenset(
    {"revert_reason", "revert_custom", "out_of_gas"}
)
"""Categories whose transactions are included with status 0."""

DEFAULT_WEIGHTS: Mapping[Category, float] = MappingProxyType(
    {
        **dict.fromkeys(CATEGORIES, 1.0),
        **dict.fromkeys(CONTEXT_CATEGORIES, 0.5),
        "erc20_transfer": 8.0,
        "erc20_transfer_from": 3.0,
        "storage_heavy": 3.0,
        "cross_contract": 3.0,
        "transient": 2.0,
    }
)
DEFAULT_KIND_WEIGHTS: Mapping[TxKind, float] = MappingProxyType(
    {"eip1559": 0.5, "legacy": 0.25, "eip2930": 0.25}
)

DEPLOYED: tuple[str, ...] = (
    "WorkloadToken",
    "StorageHeavy",
    "Vault",
    "VaultClient",
    "Factory",
    "PrecompileCaller",
    "Reverter",
    "GasBurner",
    "TransientLock",
    "ContextReader",
    "PhoenixFactory",
    "Probe",
    "Delegate",
    "DelegateAlt",
)
"""Contracts :meth:`ContractWorkload.setup` deploys, in deployment order."""

TRANSFER_GAS = 21_000
MINT_AMOUNT = 10**30
ALLOWANCE = 10**40  # finite, so every transferFrom also rewrites the allowance slot
CONTEXT_READER_BALANCE = 10**9
_SETUP_GAS_MARGIN = 10_000


def expected_status(category: Category) -> int:
    """Receipt status a transaction of ``category`` gets: 0 for reverts and out-of-gas."""
    return 0 if category in FAILING_CATEGORIES else 1


# ---------------------------------------------------------------------------- the workload


@dataclass
class ContractCounters:
    """Transactions the workload sent, by category."""

    setup: int = 0
    """Setup transactions (funding, deployments, mints, approvals, seeding)."""
    sent: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    """Transactions the node accepted."""
    errors: dict[Category, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    """Sends the node refused or could not take."""

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_errors(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return {"setup": self.setup, "sent": dict(self.sent), "errors": dict(self.errors)}


class ContractWorkload:
    """Deploys the workload contracts, then sends transactions that exercise them."""

    def __init__(
        self,
        node: NodeClient,
        funder_key: str,
        chain_id: int,
        *,
        accounts: int = 4,
        fund_wei: int = 10**19,
        rate: float = 20.0,
        weights: Mapping[Category, float] | None = None,
        kind_weights: Mapping[TxKind, float] | None = None,
        seed: int | None = None,
        tip_wei: int = 10**9,
        artifact: WorkloadArtifact | None = None,
        mine: Callable[[int], Awaitable[Any]] | None = None,
        include_timeout: float = 60.0,
        fresh_recipients: bool = False,
        round_robin: bool = False,
        authorities_per_sender: int = 2,
    ) -> None:
        if accounts < 2:
            raise ValueError("accounts must be >= 2 (transfers go between them)")
        if rate <= 0:
            raise ValueError("rate must be > 0 tx/s")
        self.node = node
        self.chain_id = chain_id
        self.rate = rate
        self.fund_wei = fund_wei
        self.tip_wei = tip_wei
        self.include_timeout = include_timeout
        self.fresh_recipients = fresh_recipients
        self.round_robin = round_robin
        self._turn = -1
        self.weights = _check_weights(weights or DEFAULT_WEIGHTS, CATEGORIES, "weights")
        self.kind_weights = _check_weights(
            kind_weights or DEFAULT_KIND_WEIGHTS, TX_KINDS, "kind_weights"
        )
        self.artifact = artifact or load_artifact()
        self.counters = ContractCounters()
        self.deployed: dict[str, bytes] = {}
        """Address of each contract in :data:`DEPLOYED`, once :meth:`setup` ran."""
        self._mine = mine
        self._rng = random.Random(seed)
        self._funder: LocalAccount = Account.from_key(funder_key)
        self._accounts = [new_account(self._rng) for _ in range(accounts)]
        self._nonce_book = NonceBook(node, [a.address for a in self._accounts])
        self._fee_oracle = FeeOracle(node, tip_wei)
        self.book = SetCodeBook(self._rng, chain_id, accounts, authorities_per_sender)
        self._calls = CallBuilder(
            self.artifact, self._rng, self._accounts, self.address_of, fresh_recipients, self.book
        )

    @property
    def addresses(self) -> list[bytes]:
        """The sender accounts."""
        return [_addr(a) for a in self._accounts]

    @property
    def ready(self) -> bool:
        """Whether :meth:`setup` completed."""
        return len(self.deployed) == len(DEPLOYED)

    def address_of(self, contract: str) -> bytes:
        """Where :meth:`setup` deployed ``contract``."""
        try:
            return self.deployed[contract]
        except KeyError:
            raise RuntimeError(f"{contract} is not deployed: call setup() first") from None

    # ------------------------------------------------------------------------ setup

    async def setup(self) -> None:
        """Fund the senders and deploy every contract, then mint, approve and seed storage.

        Waits until all of it is included; raises NodeError if any setup transaction failed.
        """
        funder = _addr(self._funder)
        nonce = await pending_nonce(self.node, self._funder.address)
        fees = await self._fee_oracle.current(refresh=True)
        sends: list[tuple[LocalAccount, int, Call]] = []
        for addr in self.addresses:
            sends.append((self._funder, nonce, Call(addr, b"", TRANSFER_GAS, self.fund_wei)))
            nonce += 1
        for addr in self.book.funded:
            sends.append((self._funder, nonce, Call(addr, b"", TRANSFER_GAS, AUTHORITY_FUND_WEI)))
            nonce += 1
        planned: dict[str, bytes] = {}
        for name in DEPLOYED:
            args = (planned["Vault"],) if name == "VaultClient" else ()
            value = CONTEXT_READER_BALANCE if name == "ContextReader" else 0
            initcode = self.artifact[name].initcode(*args)
            gas = await self._estimate(funder, None, initcode, value)
            sends.append((self._funder, nonce, Call(None, initcode, gas, value)))
            planned[name] = contract_address(funder, nonce)
            nonce += 1
        await self._send_setup(sends, fees, "deploy")

        token = self.artifact["WorkloadToken"]
        inits = [
            (planned["WorkloadToken"], token.encode_call("mint", a, MINT_AMOUNT))
            for a in self.addresses
        ]
        inits.append(
            (planned["StorageHeavy"], self.artifact["StorageHeavy"].encode_call("seed", SEED_CELLS))
        )
        emptying = self._calls.fidelity.emptying()
        sends = [
            (
                self._funder,
                nonce,
                Call(emptying.to, emptying.data, emptying.gas, set_code=emptying.set_code),
            )
        ]
        nonce += 1
        for to, data in inits:
            gas = await self._estimate(funder, to, data, 0)
            sends.append((self._funder, nonce, Call(to, data, gas)))
            nonce += 1
        # Each account lets the next one spend its tokens: erc20_transfer_from sends as that one.
        for i, acct in enumerate(self._accounts):
            spender = self.addresses[(i + 1) % len(self._accounts)]
            data = token.encode_call("approve", spender, ALLOWANCE)
            gas = await self._estimate(_addr(acct), planned["WorkloadToken"], data, 0)
            sends.append(
                (acct, await self._nonce_book.alloc(i), Call(planned["WorkloadToken"], data, gas))
            )
        await self._send_setup(sends, fees, "initialise")
        self.deployed = planned
        log.info(
            "contract workload ready accounts=%d contracts=%d setup_txs=%d",
            len(self._accounts),
            len(planned),
            self.counters.setup,
        )

    async def _send_setup(
        self, sends: list[tuple[LocalAccount, int, Call]], fees: Fees, step: str
    ) -> None:
        hashes = []
        for acct, nonce, call in sends:
            tx = self._tx("eip1559", nonce, call, fees)
            hashes.append(await self.node.send_raw_transaction(_raw(acct, tx)))
            self.counters.setup += 1
        statuses = await self.wait_included(hashes)
        failed = [h for h in hashes if statuses[h] != 1]
        if failed:
            raise NodeError(
                "eth_getTransactionReceipt",
                f"workload setup step {step}: tx 0x{failed[0].hex()} failed "
                f"({len(failed)} of {len(hashes)})",
            )

    async def _estimate(self, sender: bytes, to: bytes | None, data: bytes, value: int) -> int:
        params: dict[str, str] = {"from": _hex(sender), "data": _hex(data), "value": hex(value)}
        if to is not None:
            params["to"] = _hex(to)
        gas = await self.node.call("eth_estimateGas", [params])
        if not isinstance(gas, str) or not gas.startswith("0x"):
            raise NodeError("eth_estimateGas", f"field result: not a quantity: {gas!r}")
        return int(gas, 16) * 5 // 4 + _SETUP_GAS_MARGIN

    # ------------------------------------------------------------------------ sending

    async def send(
        self, category: Category, kind: TxKind = "eip1559", *, sender: int | None = None
    ) -> bytes:
        """Send one transaction of ``category`` as a ``kind`` transaction; returns its hash."""
        tx_hash, _ = await self._send(category, kind, sender)
        return tx_hash

    async def send_create2(
        self, kind: TxKind = "eip1559", *, sender: int | None = None
    ) -> tuple[bytes, bytes]:
        """Send one CREATE2 deployment; returns its hash and the address it deploys to."""
        tx_hash, created = await self._send("create2", kind, sender)
        assert created is not None
        return tx_hash, created

    async def _send(
        self, category: Category, kind: TxKind, sender: int | None
    ) -> tuple[bytes, bytes | None]:
        if not self.ready:
            raise RuntimeError("call setup() before sending workload transactions")
        if kind not in TX_KINDS:
            raise ValueError(f"kind must be one of {', '.join(TX_KINDS)}")
        i = self._pick_sender(sender)
        call = self._calls.build(category, i)
        try:
            nonce = await self._nonce_book.alloc(i)
            tx = self._tx(kind, nonce, call, await self._fee_oracle.current())
            tx_hash = await self.node.send_raw_transaction(_raw(self._accounts[i], tx))
        except NodeError:
            self.counters.errors[category] += 1
            for authority in call.set_code.authorities if call.set_code else ():
                authority.retired = True
            # The nonce may or may not be used now; ask the node before the next send.
            self._nonce_book.resync(i)
            raise
        self.counters.sent[category] += 1
        log.debug(
            "contract workload sent category=%s kind=%s tx=0x%s", category, kind, tx_hash.hex()
        )
        return tx_hash, call.created

    async def wait_receipts(self, hashes: Iterable[bytes]) -> dict[bytes, Mapping[str, Any]]:
        """Poll ``eth_getTransactionReceipt`` until every one of ``hashes`` has a receipt.

        Raises TimeoutError after ``include_timeout`` seconds.
        """
        pending = list(dict.fromkeys(hashes))
        receipts: dict[bytes, Mapping[str, Any]] = {}
        if self._mine is not None:
            await self._mine(1)
        async with asyncio.timeout(self.include_timeout):
            while pending:
                still = []
                for h in pending:
                    receipt = await self.node.call("eth_getTransactionReceipt", [_hex(h)])
                    if receipt is None:
                        still.append(h)
                    elif isinstance(receipt, dict) and isinstance(receipt.get("status"), str):
                        receipts[h] = receipt
                    else:
                        raise NodeError(
                            "eth_getTransactionReceipt", "field result.status is missing"
                        )
                pending = still
                if pending:
                    await asyncio.sleep(0.1)
        return receipts

    async def wait_included(self, hashes: Iterable[bytes]) -> dict[bytes, int]:
        """Wait for the receipts of ``hashes``; return each one's status (1 ok, 0 failed)."""
        receipts = await self.wait_receipts(hashes)
        return {h: int(r["status"], 16) for h, r in receipts.items()}

    async def run(
        self, *, count: int | None = None, duration: float | None = None, rate: float | None = None
    ) -> ContractCounters:
        """Send a weighted random mix at ``rate`` tx/s until ``count`` sends or ``duration`` s.

        Runs :meth:`setup` first if needed; with neither bound it runs until cancelled. Node
        errors are counted per category and logged.
        """
        if not self.ready:
            await self.setup()
        pace = rate if rate is not None else self.rate
        if pace <= 0:
            raise ValueError("rate must be > 0 tx/s")
        loop = asyncio.get_running_loop()
        start = loop.time()
        tried = 0
        streak = 0
        categories = list(self.weights)
        kinds = list(self.kind_weights)
        while (count is None or tried < count) and (
            duration is None or loop.time() - start < duration
        ):
            # Pace against the start time, so slow steps are caught up instead of drifting.
            wait = start + tried / pace - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            category = self._rng.choices(categories, list(self.weights.values()))[0]
            kind = self._rng.choices(kinds, list(self.kind_weights.values()))[0]
            tried += 1
            try:
                await self.send(category, kind)
            except IoswarmError as exc:
                # One warning per run of failures: a node that is down would flood the log.
                streak += 1
                log.log(
                    logging.WARNING if streak == 1 else logging.DEBUG,
                    "contract workload send failed category=%s kind=%s error=%r",
                    category,
                    kind,
                    str(exc),
                )
            else:
                if streak:
                    log.info("contract workload sending again after failures=%d", streak)
                streak = 0
        return self.counters

    # ------------------------------------------------------------------------ internals

    def _pick_sender(self, sender: int | None) -> int:
        if sender is None and self.round_robin:
            # Many independent users: no sender repeats until every account has sent.
            self._turn = (self._turn + 1) % len(self._accounts)
            return self._turn
        if sender is None:
            return self._rng.randrange(len(self._accounts))
        if not 0 <= sender < len(self._accounts):
            raise ValueError(f"sender must be an account index in 0..{len(self._accounts) - 1}")
        return sender

    def _tx(self, kind: TxKind, nonce: int, call: Call, fees: Fees) -> dict[str, Any]:
        tx: dict[str, Any] = {
            "chainId": self.chain_id,
            "nonce": nonce,
            "value": call.value,
            "gas": call.gas,
            "data": call.data,
        }
        if call.to is not None:
            tx["to"] = call.to
        if call.set_code is not None:
            authorizations = list(call.set_code.authorizations)
            tx.update(type=4, maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.tip)
            tx["authorizationList"] = authorizations
        elif kind == "eip1559":
            tx.update(type=2, maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.tip)
        elif kind == "eip2930":
            access = [
                {"address": _hex(addr), "storageKeys": [_hex(word(k)) for k in keys]}
                for addr, keys in call.access.items()
            ]
            tx.update(type=1, gasPrice=fees.max_fee, accessList=access)
        else:
            tx["gasPrice"] = fees.max_fee
        return tx


def _check_weights(
    weights: Mapping[_K, float], known: tuple[_K, ...], what: str
) -> dict[_K, float]:
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"{what}: weights must be >= 0 and not all zero")
    return {k: float(w) for k, w in weights.items() if w > 0}


def _addr(acct: LocalAccount) -> bytes:
    return bytes.fromhex(acct.address[2:])


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _raw(acct: LocalAccount, tx: dict[str, Any]) -> bytes:
    return bytes(acct.sign_transaction(tx).raw_transaction)
