"""The transaction of each contract workload category, as a call to build and sign.

:class:`CallBuilder` turns a category and a sender into a :class:`Call` (target, calldata,
fixed gas limit, value, and the EIP-2930 access list of the storage it touches) for
:class:`~ioswarm.sim.l3workload.ContractWorkload` to sign and send.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, get_args

from eth_account.signers.local import LocalAccount
from eth_typing import Hash32

from ioswarm.sim.artifacts import (
    WorkloadArtifact,
    create2_address,
    create2_salt,
    mapping_slot,
    word,
)
from ioswarm.sim.l3fidelity import FidelityCall, FidelityCalls, SetCode, SetCodeBook

Category = Literal[
    "erc20_transfer",
    "erc20_transfer_from",
    "storage_heavy",
    "cross_contract",
    "create",
    "create2",
    "precompile_ecrecover",
    "precompile_sha256",
    "precompile_modexp",
    "precompile_identity",
    "revert_reason",
    "revert_custom",
    "out_of_gas",
    "transient",
    "ctx_selfbalance",
    "ctx_blockhash",
    "ctx_timestamp",
    "ctx_coinbase",
    "ctx_basefee",
    "ctx_prevrandao",
    "ctx_gaslimit",
    "create_tx",
    "create2_redeploy",
    "selfdestruct_fresh",
    "create2_collision",
    "value_fresh",
    "value_fresh_call",
    "probe_absent",
    "probe_empty",
    "probe_delegated",
    "setcode_fresh",
    "setcode_existing",
    "setcode_redelegate",
    "setcode_clear",
    "delegated_call",
]
CATEGORIES: tuple[Category, ...] = get_args(Category)
FIDELITY_CATEGORIES: tuple[Category, ...] = CATEGORIES[CATEGORIES.index("create_tx") :]
"""Categories of :mod:`ioswarm.sim.l3fidelity`: accounts created, destroyed, delegated."""
SETCODE_CATEGORIES: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.startswith("setcode_"))
"""Categories sent as type-4 (set-code) transactions whatever kind was asked for."""
CONTEXT_CATEGORIES: tuple[Category, ...] = tuple(c for c in CATEGORIES if c.startswith("ctx_"))
# Gas limits with room for an access list; the out-of-gas limit is far below what burn() needs.
_GAS: Mapping[Category, int] = MappingProxyType(
    {
        **dict.fromkeys(CATEGORIES, 90_000),
        **dict.fromkeys(CONTEXT_CATEGORIES, 70_000),
        "erc20_transfer_from": 110_000,
        "storage_heavy": 600_000,
        "cross_contract": 200_000,
        "create": 300_000,
        "create2": 300_000,
        "precompile_modexp": 100_000,
        "out_of_gas": 60_000,
        "transient": 200_000,
    }
)
# Context category -> (ContextReader function, the state variable it writes).
CONTEXT_READERS: Mapping[Category, tuple[str, str]] = MappingProxyType(
    {
        "ctx_selfbalance": ("storeSelfBalance", "selfBalance"),
        "ctx_blockhash": ("storeBlockhash", "parentHash"),
        "ctx_timestamp": ("storeTimestamp", "timestamp"),
        "ctx_coinbase": ("storeCoinbase", "coinbase"),
        "ctx_basefee": ("storeBasefee", "basefee"),
        "ctx_prevrandao": ("storePrevrandao", "prevrandao"),
        "ctx_gaslimit": ("storeGaslimit", "gaslimit"),
    }
)
# Precompile categories that send random bytes -> (PrecompileCaller function, its result slot).
PRECOMPILE_CALLS: Mapping[Category, tuple[str, str]] = MappingProxyType(
    {
        "precompile_sha256": ("hashSha256", "lastSha256"),
        "precompile_identity": ("identity", "lastIdentity"),
    }
)
BURN_ROUNDS = 100_000
SEED_CELLS = 32
CHURN_WRITES = 8


@dataclass(frozen=True, slots=True)
class Call:
    """One workload transaction's target, calldata, gas limit, value and access list."""

    to: bytes | None
    data: bytes
    gas: int
    value: int = 0
    access: Mapping[bytes, tuple[int, ...]] = field(default_factory=dict)
    """EIP-2930 access list: address -> storage slots the call touches."""
    created: bytes | None = None
    """The CREATE2 address the call deploys to."""
    set_code: SetCode | None = None
    """EIP-7702 authorizations: the call goes out as a type-4 transaction."""


class CallBuilder:
    """Builds each category's call for sender account ``i`` (randomness from ``rng``)."""

    def __init__(
        self,
        artifact: WorkloadArtifact,
        rng: random.Random,
        accounts: Sequence[LocalAccount],
        address_of: Callable[[str], bytes],
        fresh_recipients: bool = False,
        book: SetCodeBook | None = None,
    ) -> None:
        self._artifact = artifact
        self._rng = rng
        self._accounts = accounts
        self._address_of = address_of
        self._fresh_recipients = fresh_recipients
        self._create2_count = 0
        self._builders: dict[Category, Callable[[int], Call]] = {
            "erc20_transfer": self._erc20_transfer,
            "erc20_transfer_from": self._erc20_transfer_from,
            "storage_heavy": self._storage_heavy,
            "cross_contract": self._cross_contract,
            "create": self._create,
            "create2": self._create2,
            **{c: functools.partial(self._precompile, c) for c in CATEGORIES if "precompile" in c},
            "revert_reason": functools.partial(self._revert, "failWithReason"),
            "revert_custom": functools.partial(self._revert, "failWithCustomError"),
            "out_of_gas": self._out_of_gas,
            "transient": self._transient,
            **{c: functools.partial(self._context, c) for c in CONTEXT_READERS},
        }
        senders = [bytes.fromhex(a.address[2:]) for a in accounts]
        self.book = book or SetCodeBook(rng, 0, len(accounts), 2)
        f = FidelityCalls(artifact, rng, senders, address_of, self.book)
        fidelity: dict[Category, Callable[[int], FidelityCall]] = {
            "create_tx": f.create_tx,
            "create2_redeploy": functools.partial(f.phoenix, redeploy=True),
            "selfdestruct_fresh": functools.partial(f.phoenix, redeploy=False),
            "create2_collision": f.collision,
            "value_fresh": f.value_fresh,
            "value_fresh_call": f.value_fresh_call,
            "probe_absent": functools.partial(f.probe, what="absent"),
            "probe_empty": functools.partial(f.probe, what="empty"),
            "probe_delegated": functools.partial(f.probe, what="delegated"),
            "setcode_fresh": functools.partial(f.set_code, how="fresh"),
            "setcode_existing": functools.partial(f.set_code, how="existing"),
            "setcode_redelegate": functools.partial(f.set_code, how="redelegate"),
            "setcode_clear": functools.partial(f.set_code, how="clear"),
            "delegated_call": f.delegated_call,
        }
        for category, build in fidelity.items():
            self._builders[category] = functools.partial(_wrap, build)
        self.fidelity = f

    @property
    def _addresses(self) -> list[bytes]:
        return [bytes.fromhex(a.address[2:]) for a in self._accounts]

    def build(self, category: Category, i: int) -> Call:
        """The call of ``category`` sent by account ``i``."""
        return self._builders[category](i)

    def _erc20_transfer(self, i: int) -> Call:
        token = self._artifact["WorkloadToken"]
        sender, to = self._addresses[i], self._recipient(i)
        amount = self._rng.randrange(1, 10**18)
        balances = token.slot("balanceOf")
        return self._call(
            "WorkloadToken",
            token.encode_call("transfer", to, amount),
            "erc20_transfer",
            [mapping_slot(sender, balances), mapping_slot(to, balances)],
        )

    def _erc20_transfer_from(self, i: int) -> Call:
        token = self._artifact["WorkloadToken"]
        # Account i-1 approved account i during setup.
        owner, spender = self._addresses[i - 1], self._addresses[i]
        to = self._recipient(i)
        amount = self._rng.randrange(1, 10**18)
        balances = token.slot("balanceOf")
        allowance = mapping_slot(spender, mapping_slot(owner, token.slot("allowance")))
        return self._call(
            "WorkloadToken",
            token.encode_call("transferFrom", owner, to, amount),
            "erc20_transfer_from",
            [mapping_slot(owner, balances), mapping_slot(to, balances), allowance],
        )

    def _storage_heavy(self, i: int) -> Call:
        c = self._artifact["StorageHeavy"]
        # Bases across and beyond the seeded cells: some writes overwrite, others are fresh.
        base = self._rng.randrange(2 * SEED_CELLS)
        cells = c.slot("cells")
        entries = c.var("entries")
        entry = mapping_slot(self._addresses[i], entries.slot)
        keys = [c.slot("rounds"), c.slot("history")]
        keys += [mapping_slot(base + k, cells) for k in range(CHURN_WRITES + 1)]
        keys += [entry + k for k in range(((entries.value_size or 32) + 31) // 32)]
        keys.append(mapping_slot(self._addresses[i], c.slot("trails")))
        return self._call(
            "StorageHeavy", c.encode_call("churn", base, CHURN_WRITES), "storage_heavy", keys
        )

    def _cross_contract(self, i: int) -> Call:
        client, vault = self._artifact["VaultClient"], self._artifact["Vault"]
        amount = self._rng.randrange(1, 10**6)
        return Call(
            self._address_of("VaultClient"),
            client.encode_call("forward", amount),
            _GAS["cross_contract"],
            access={
                self._address_of("VaultClient"): tuple(v.slot for v in client.storage),
                self._address_of("Vault"): (
                    vault.slot("total"),
                    vault.slot("updates"),
                    mapping_slot(self._addresses[i], vault.slot("deposits")),
                ),
            },
        )

    def _create(self, i: int) -> Call:
        c = self._artifact["Factory"]
        data = c.encode_call("create", self._rng.randrange(1, 2**64))
        return self._call("Factory", data, "create", [v.slot for v in c.storage])

    def _create2(self, i: int) -> Call:
        c = self._artifact["Factory"]
        factory = self._address_of("Factory")
        salt = create2_salt(self._addresses[i], self._create2_count)
        self._create2_count += 1
        value = self._rng.randrange(1, 2**64)
        child = create2_address(factory, salt, self._artifact["Child"].initcode(value))
        return Call(
            factory,
            c.encode_call("create2", salt, value),
            _GAS["create2"],
            access={
                factory: tuple(v.slot for v in c.storage),
                child: (self._artifact["Child"].slot("value"),),
            },
            created=child,
        )

    def _precompile(self, category: Category, i: int) -> Call:
        c, rng = self._artifact["PrecompileCaller"], self._rng
        args: tuple[Any, ...]
        if category == "precompile_ecrecover":
            digest = rng.randbytes(32)
            sig = self._accounts[i].unsafe_sign_hash(Hash32(digest))
            function, label, args = (
                "recover",
                "lastSigner",
                (digest, sig.v, word(sig.r), word(sig.s)),
            )
        elif category == "precompile_modexp":
            modulus = rng.getrandbits(256) | (1 << 255) | 1
            args = (rng.getrandbits(256), rng.getrandbits(256), modulus)
            function, label = "modexp", "lastModexp"
        else:
            function, label = PRECOMPILE_CALLS[category]
            args = (rng.randbytes(rng.randrange(1, 200)),)
        # Precompiles are always warm (EIP-2929): listing them would only cost gas.
        keys = [c.slot(label), c.slot("calls")]
        return self._call("PrecompileCaller", c.encode_call(function, *args), category, keys)

    def _revert(self, function: str, i: int) -> Call:
        c = self._artifact["Reverter"]
        category: Category = "revert_reason" if function == "failWithReason" else "revert_custom"
        return self._call("Reverter", c.encode_call(function), category, [c.slot("attempts")])

    def _out_of_gas(self, i: int) -> Call:
        c = self._artifact["GasBurner"]
        sink = c.slot("sink")
        keys = [c.slot("burned"), *(mapping_slot(k, sink) for k in range(4))]
        return self._call("GasBurner", c.encode_call("burn", BURN_ROUNDS), "out_of_gas", keys)

    def _transient(self, i: int) -> Call:
        c = self._artifact["TransientLock"]
        data = c.encode_call("bump", self._rng.randrange(1, 2**32))
        return self._call("TransientLock", data, "transient", [v.slot for v in c.storage])

    def _context(self, category: Category, i: int) -> Call:
        c = self._artifact["ContextReader"]
        function, label = CONTEXT_READERS[category]
        value = self._rng.randrange(1, 1000) if category == "ctx_selfbalance" else 0
        call = self._call("ContextReader", c.encode_call(function), category, [c.slot(label)])
        return dataclasses.replace(call, value=value)

    def _call(self, contract: str, data: bytes, category: Category, keys: Iterable[int]) -> Call:
        to = self._address_of(contract)
        return Call(to, data, _GAS[category], access={to: tuple(dict.fromkeys(keys))})

    def _recipient(self, sender: int) -> bytes:
        if self._fresh_recipients:
            # Payments to many distinct addresses: the recipient is nobody else's sender.
            return self._rng.randbytes(20)
        others = [a for j, a in enumerate(self._addresses) if j != sender]
        return self._rng.choice(others)


def _wrap(build: Callable[[int], FidelityCall], i: int) -> Call:
    f = build(i)
    access = f.access if f.access is not None else ({f.to: ()} if f.to is not None else {})
    return Call(f.to, f.data, f.gas, f.value, access=access, set_code=f.set_code)
