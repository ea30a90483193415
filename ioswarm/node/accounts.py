"""Account reads at one block: nonce, balance and code hash of many addresses in one batch.

Plain reads (``eth_getBalance``, ``eth_getTransactionCount``, ``eth_getCode``) name the block by
hash where known, so one batch answers from one state; they cost the node O(1) per address,
where ``eth_getProof`` costs it O(state) on some nodes (anvil). Proofs stay as a sampled check:
a share of the addresses is proven against the block's state root as well, and a disagreement
raises.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from dataclasses import replace

from eth_hash.auto import keccak

from ioswarm.core.models import EMPTY_CODE_HASH, AccountSnapshot
from ioswarm.errors import MethodNotSupported, NodeError
from ioswarm.node.fields import (
    BlockId,
    Obj,
    block_param,
    data,
    hexstr,
    proof_matches,
    proof_state_root,
    quantity,
)
from ioswarm.node.rpc import JsonRpcTransport

log = logging.getLogger("ioswarm.node")

_ZERO_HASH = b"\x00" * 32
PROOF_ATTEMPTS = 3  # reads of one block answered with another block's state before giving up


def _keccak(value: bytes) -> bytes:
    return bytes(keccak(value))


class AccountReader:
    """Reads account snapshots over one transport; proves a sampled share of them."""

    def __init__(
        self,
        transport: JsonRpcTransport,
        proof_check_sample: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        """``proof_check_sample`` is the fraction of the addresses of each :meth:`read` that
        are also proven with ``eth_getProof`` against the block's state root (1.0: all)."""
        if not 0.0 <= proof_check_sample <= 1.0:
            raise ValueError("proof_check_sample must be in 0..1")
        self._transport = transport
        self.proof_check_sample = proof_check_sample
        self.proofs_checked = 0
        self.proof_mismatches = 0
        self._rng = rng or random.Random()
        self._proof_ok = True

    async def read(
        self,
        addresses: Iterable[bytes],
        block_number: BlockId,
        block_hash: bytes | None = None,
        code: bool = True,
    ) -> dict[bytes, AccountSnapshot]:
        """Balance, nonce and code hash of each address at a block, in one batch; with
        ``code=False`` the code is not read and every ``code_hash`` is ``EMPTY_CODE_HASH`` (L2
        checks nonce and balance only: a code hash cannot tell EIP-3607 code from an EIP-7702
        delegation, so it decides nothing there).

        The reads name the block by ``block_hash`` when given (EIP-1898). A node may still
        answer them from the state it is building (anvil does while it mines the next block):
        a sampled share of the addresses (``proof_check_sample``) is proven with
        ``eth_getProof`` against the block's state root as well, and on a disagreement the
        whole read is repeated, up to ``PROOF_ATTEMPTS`` times; then NodeError.
        """
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return {}
        pin: str | dict[str, str] = (
            {"blockHash": hexstr(block_hash)}
            if block_hash is not None
            else block_param(block_number)
        )
        block = block_param(block_number)
        problem = ""
        for _ in range(PROOF_ATTEMPTS):
            out = await self._accounts_by_parts(wanted, pin, code)
            sample = [a for a in wanted if self._rng.random() < self.proof_check_sample]
            if not sample or not self._proof_ok:
                return out
            proven = await self._proven(sample, block)
            self.proofs_checked += len(proven)
            wrong = [
                a
                for a, snap in proven.items()
                if (snap if code else replace(snap, code_hash=EMPTY_CODE_HASH)) != out[a]
            ]
            if not wrong:
                return out
            self.proof_mismatches += 1
            a = wrong[0]
            problem = (
                f"account 0x{a.hex()} read as nonce={out[a].nonce} balance={out[a].balance} "
                f"but proven as nonce={proven[a].nonce} balance={proven[a].balance}"
            )
            log.info("account reads disagree with their proof, reading again block=%s", block)
        raise NodeError("eth_getProof", f"block {block}: {problem} ({PROOF_ATTEMPTS} reads)")

    async def proven(
        self, addresses: Iterable[bytes], block_number: BlockId
    ) -> dict[bytes, AccountSnapshot]:
        """Like :meth:`read`, every address proven against the block's state root (falls
        back to plain reads on a node without ``eth_getProof``)."""
        wanted = list(dict.fromkeys(addresses))
        if not wanted:
            return {}
        proven = await self._proven(wanted, block_param(block_number))
        if proven:
            return proven
        return await self._accounts_by_parts(wanted, block_param(block_number))

    async def _proven(self, wanted: list[bytes], block: str) -> dict[bytes, AccountSnapshot]:
        """``eth_getProof`` of each address, checked against the block's state root; {} when
        the node lacks the method (noted once, for good)."""
        if not self._proof_ok:
            return {}
        calls = [("eth_getProof", [hexstr(a), [], block]) for a in wanted]
        for _ in range(PROOF_ATTEMPTS):
            results = await self._transport.batch(
                [("eth_getBlockByNumber", [block, False]), *calls]
            )
            proofs = results[1:]
            if any(isinstance(r.error, MethodNotSupported) for r in proofs):
                break
            # Checked against the block's state root: a node can answer with the state of
            # another block (anvil does while it mines the next one); ask again if so.
            root = proof_state_root(results[0].unwrap(), f"result[{block}]")
            objs = [
                Obj("eth_getProof", r.unwrap(), f"result[{hexstr(a)}]")
                for a, r in zip(wanted, proofs, strict=True)
            ]
            if all(proof_matches(o, root) for o in objs):
                return {a: self._proof_snapshot(a, o) for a, o in zip(wanted, objs, strict=True)}
        else:
            raise NodeError(
                "eth_getProof",
                f"block {block}: answered {PROOF_ATTEMPTS} times with another block's state "
                "(account proof root != stateRoot)",
            )
        self._proof_ok = False
        log.warning(
            "node lacks eth_getProof, account reads are not proof-checked url=%s",
            self._transport.safe_url,
        )
        return {}

    @staticmethod
    def _proof_snapshot(address: bytes, obj: Obj) -> AccountSnapshot:
        method, where = obj.method, obj.where
        if obj.has("address") and obj.fixed("address", 20) != address:
            raise NodeError(method, f"field {where}.address: answer is for another account")
        code_hash = obj.fixed("codeHash", 32)
        return AccountSnapshot(
            address=address,
            balance=obj.quantity("balance"),
            nonce=obj.quantity("nonce"),
            # Some clients report a zero code hash for accounts that do not exist yet.
            code_hash=EMPTY_CODE_HASH if code_hash == _ZERO_HASH else code_hash,
        )

    async def _accounts_by_parts(
        self, wanted: list[bytes], block: str | dict[str, str], code: bool = True
    ) -> dict[bytes, AccountSnapshot]:
        per = 3 if code else 2
        calls = []
        for a in wanted:
            calls += [
                ("eth_getBalance", [hexstr(a), block]),
                ("eth_getTransactionCount", [hexstr(a), block]),
            ]
            if code:
                calls.append(("eth_getCode", [hexstr(a), block]))
        results = await self._transport.batch(calls)
        out: dict[bytes, AccountSnapshot] = {}
        for i, a in enumerate(wanted):
            answers = [r.unwrap() for r in results[per * i : per * i + per]]
            where = f"result[{hexstr(a)}]"
            code_bytes = data("eth_getCode", where, answers[2]) if code else b""
            out[a] = AccountSnapshot(
                address=a,
                balance=quantity("eth_getBalance", where, answers[0]),
                nonce=quantity("eth_getTransactionCount", where, answers[1]),
                code_hash=_keccak(code_bytes) if code_bytes else EMPTY_CODE_HASH,
            )
        return out
