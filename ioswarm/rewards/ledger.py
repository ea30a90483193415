"""The epoch ledger: what each epoch paid, and where its settlement stands, in LMDB.

One LMDB environment (a directory, usually ``<dataDir>/rewards``) holds::

    epoch    epoch u64 BE                  -> the EpochPlan as JSON, written once
    event    epoch u64 BE | seq u32 BE     -> one settlement transition as JSON, append-only
    agent    blake2b-128(agent id) | epoch -> that agent's row of the epoch (history index)
    pending  epoch u64 BE                  -> b"" while the epoch has something to send
    included epoch u64 BE                  -> b"" while it is mined but not final yet
    meta     b"checkpoint"                 -> tallies of the epoch still open
             b"expected" / b"onchain"      -> wallet weights after every planned / confirmed epoch
             b"chain"                      -> chain id and genesis hash, recorded at first use
    notice   agent id                      -> newest epoch announced to that agent

Settlement state machine, one event per arrow::

    planned --sent(tx, nonce)--> sent --sent(same nonce, higher fee)--> sent   (replacement)
    sent --> confirmed(block, hash, gas) | reverted(reason, retry)
    confirmed --final(confirmations)--> confirmed, final        (deep enough: never re-sent)
    confirmed --reorged(lost block)--> reorged                 (not final; the block is gone)
    reorged --resent(same nonce, same bytes)--> sent | reorged --> confirmed (mined again)
    planned --> skipped (nothing to send) | reverted (the node refused it at estimation)
    reverted(retry) --sent(new nonce)--> sent;  reverted --requeued--> planned

``confirmed`` means *included*: mined in a block the node calls canonical, with
``head - block + 1`` confirmations. It is ``final`` once that reaches the settler's
``confirmations``; only then is nothing about it looked at again. A reorg never takes a new
nonce: the epoch's signed bytes are broadcast again, so at most one of its transactions can ever
be mined.

The current state of an epoch is the fold of its events (:class:`Settlement`); nothing is
overwritten, so the history of every attempt stays readable.

Durability: the environment is opened without per-commit fsync. A commit survives a crash of
the process (LMDB writes go to the OS page cache) but not necessarily of the machine. The
transitions exactly-once depends on (planned, sent, confirmed, reverted, skipped, requeued) are
followed by an explicit ``sync``: a ``sent`` record reaches the disk before its transaction is
broadcast, so a restart always knows the nonce and hashes it might have used. Tally
checkpoints and announcement marks are not synced: losing the last few of them to a power cut
costs a few blocks of tallies or a repeated payout notice, never a double payment.

Every lmdb error is translated into :class:`~ioswarm.errors.StoreError` in
:class:`~ioswarm.rewards.ledgerdb.LedgerDb`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import lmdb

from ioswarm.core.rewards import EpochPlan, EpochTally, Payout, WalletWeight
from ioswarm.errors import StoreError
from ioswarm.rewards.ledgerdb import LedgerDb

DEFAULT_MAP_SIZE = 256 << 20
_EPOCH = b"epoch"
_EVENT = b"event"
_AGENT = b"agent"
_PENDING = b"pending"
_META = b"meta"
_NOTICE = b"notice"
_CHECKPOINT = b"checkpoint"
_EXPECTED = b"expected"
_ONCHAIN = b"onchain"
_INCLUDED = b"included"
_CHAIN = b"chain"

_T = TypeVar("_T")


class SettlementState(StrEnum):
    PLANNED = "planned"
    SENT = "sent"
    CONFIRMED = "confirmed"
    REVERTED = "reverted"
    SKIPPED = "skipped"
    REORGED = "reorged"
    """Was mined, then its block left the canonical chain; its bytes are sent again."""


@dataclass(frozen=True, slots=True)
class SettlementCall:
    """The exact contract call an epoch is settled with."""

    function: str
    """``depositAndSettle`` or ``depositSettleAndClaim``."""
    wallets: tuple[str, ...]
    weights: tuple[int, ...]
    value: int
    claimants: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TxAttempt:
    """One signed transaction; several share a nonce when a stuck one is replaced."""

    tx_hash: str
    nonce: int
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    sent_at: float
    raw: str
    """The signed transaction (0x hex), rebroadcast as is after a restart."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """Where one epoch's settlement stands (the fold of its events)."""

    epoch: int
    state: SettlementState
    nonce: int | None = None
    call: SettlementCall | None = None
    attempts: tuple[TxAttempt, ...] = ()
    """Every transaction signed for the current nonce, oldest first."""
    bindings: int = 0
    """How many nonces the epoch has been bound to (more than one only after a safe retry)."""
    tx_hash: str | None = None
    block: int | None = None
    gas_used: int | None = None
    fee_wei: int | None = None
    reason: str = ""
    retry: bool = False
    """For ``reverted``: the revert is known to be safe to retry with a new nonce."""
    updated_at: float = 0.0
    block_hash: str | None = None
    """For ``confirmed``: the hash of the block it was mined in."""
    final: bool = False
    """For ``confirmed``: deep enough that a reorg is no longer expected."""
    reorgs: int = 0
    """How many times a mined transaction of this epoch left the canonical chain."""

    @property
    def terminal(self) -> bool:
        """Nothing to send for this epoch now (a confirmed one is still watched until final)."""
        if self.state is SettlementState.REVERTED:
            return not self.retry
        return self.state in (SettlementState.CONFIRMED, SettlementState.SKIPPED)

    @property
    def settled(self) -> bool:
        """Nothing will ever be sent or checked again (unless an operator requeues it)."""
        if self.state is SettlementState.CONFIRMED:
            return self.final
        return self.terminal

    @property
    def status(self) -> str:
        """The state as shown to people: sent, re-sent, included, final, reorged, ..."""
        if self.state is SettlementState.CONFIRMED:
            return "final" if self.final else "included"
        if self.state is SettlementState.SENT and self.reorgs:
            return "re-sent"
        return self.state.value


@dataclass(frozen=True, slots=True)
class AgentEpoch:
    """One agent's row of one epoch, with the epoch's settlement state."""

    epoch: int
    payout: Payout
    total_agents: int
    state: SettlementState
    tx_hash: str | None


@dataclass
class OpenEpoch:
    """The epoch being counted: its number and the tallies so far."""

    epoch: int
    tallies: dict[str, EpochTally] = field(default_factory=dict)


def _u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def _agent_prefix(agent_id: str) -> bytes:
    # A fixed-size digest: agent ids are free text of any length, LMDB keys are <= 511 bytes.
    return hashlib.blake2b(agent_id.encode(), digest_size=16).digest()


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _plan_doc(plan: EpochPlan, planned_at: float) -> dict[str, Any]:
    return {
        "epoch": plan.epoch,
        "reward_wei": plan.reward_wei,
        "agents_wei": plan.agents_wei,
        "delegate_wei": plan.delegate_wei,
        "deposit_wei": plan.deposit_wei,
        "payouts": [asdict(p) for p in plan.payouts],
        "wallets": [[w.wallet, w.weight] for w in plan.wallets],
        "planned_at": planned_at,
    }


def _plan_from(doc: Mapping[str, Any]) -> EpochPlan:
    return EpochPlan(
        epoch=doc["epoch"],
        reward_wei=doc["reward_wei"],
        agents_wei=doc["agents_wei"],
        delegate_wei=doc["delegate_wei"],
        deposit_wei=doc["deposit_wei"],
        payouts=tuple(Payout(**p) for p in doc["payouts"]),
        wallets=tuple(WalletWeight(w, int(n)) for w, n in doc["wallets"]),
    )


def _call_doc(call: SettlementCall) -> dict[str, Any]:
    return {
        "function": call.function,
        "wallets": list(call.wallets),
        "weights": list(call.weights),
        "value": call.value,
        "claimants": list(call.claimants),
    }


def _call_from(doc: Mapping[str, Any]) -> SettlementCall:
    return SettlementCall(
        function=doc["function"],
        wallets=tuple(doc["wallets"]),
        weights=tuple(int(w) for w in doc["weights"]),
        value=int(doc["value"]),
        claimants=tuple(doc.get("claimants", ())),
    )


def fold_settlement(epoch: int, events: Sequence[Mapping[str, Any]]) -> Settlement:
    """The current settlement of an epoch from its events, oldest first."""
    s = Settlement(epoch, SettlementState.PLANNED)
    for ev in events:
        kind = ev["state"]
        at = float(ev.get("at", 0.0))
        if kind in ("planned", "requeued"):
            s = Settlement(
                epoch, SettlementState.PLANNED, bindings=s.bindings, reorgs=s.reorgs, updated_at=at
            )
        elif kind == "final":
            s = replace(s, final=True, updated_at=at)
        elif kind == "reorged":
            s = replace(
                s,
                state=SettlementState.REORGED,
                tx_hash=None,
                block=None,
                block_hash=None,
                gas_used=None,
                fee_wei=None,
                reason=ev.get("reason", ""),
                reorgs=s.reorgs + 1,
                updated_at=at,
            )
        elif kind == "resent":
            s = replace(s, state=SettlementState.SENT, reason="", updated_at=at)
        elif kind == "sent":
            attempt = TxAttempt(**ev["attempt"])
            if s.state is SettlementState.SENT and s.nonce == attempt.nonce:
                attempts = (*s.attempts, attempt)
                bindings = s.bindings
            else:
                attempts, bindings = (attempt,), s.bindings + 1
            s = Settlement(
                epoch,
                SettlementState.SENT,
                nonce=attempt.nonce,
                call=_call_from(ev["call"]),
                attempts=attempts,
                bindings=bindings,
                reorgs=s.reorgs,
                updated_at=at,
            )
        elif kind in ("confirmed", "reverted", "skipped"):
            s = Settlement(
                epoch,
                SettlementState(kind),
                nonce=s.nonce,
                call=s.call,
                attempts=s.attempts,
                bindings=s.bindings,
                tx_hash=ev.get("tx_hash"),
                block=ev.get("block"),
                gas_used=ev.get("gas_used"),
                fee_wei=ev.get("fee_wei"),
                reason=ev.get("reason", ""),
                retry=bool(ev.get("retry", False)),
                updated_at=at,
                block_hash=ev.get("block_hash"),
                reorgs=s.reorgs,
            )
        else:
            raise StoreError(f"epoch {epoch}: unknown ledger event {kind!r}")
    return s


class EpochLedger:
    """Append-only per-epoch records and their settlement, in one LMDB environment.

    Single-threaded use (the coordinator's event loop); reopen the same path to read back.
    """

    def __init__(self, path: str | Path, *, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = Path(path)
        names = (_EPOCH, _EVENT, _AGENT, _PENDING, _META, _NOTICE, _INCLUDED)
        self._db = LedgerDb(self.path, names, map_size=map_size)
        self._dbs = self._db.dbs

    def close(self) -> None:
        """Flush and close; further use raises StoreError."""
        self._db.close()

    def __enter__(self) -> EpochLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------

    def _events(self, txn: lmdb.Transaction, epoch: int) -> list[dict[str, Any]]:
        prefix = _u64(epoch)
        out: list[dict[str, Any]] = []
        cur = txn.cursor(self._dbs[_EVENT])
        if cur.set_range(prefix):
            for key, value in cur:
                if not bytes(key).startswith(prefix):
                    break
                out.append(json.loads(bytes(value)))
        return out

    def _append_event(self, txn: lmdb.Transaction, epoch: int, doc: Mapping[str, Any]) -> None:
        seq = len(self._events(txn, epoch))
        key = _u64(epoch) + seq.to_bytes(4, "big")
        if not txn.put(key, _dumps(doc), db=self._dbs[_EVENT], overwrite=False):
            raise StoreError(f"epoch {epoch}: event {seq} already written")

    def _settlement(self, txn: lmdb.Transaction, epoch: int) -> Settlement | None:
        events = self._events(txn, epoch)
        return fold_settlement(epoch, events) if events else None

    def _transition(
        self,
        epoch: int,
        doc: dict[str, Any],
        allowed: Callable[[Settlement], bool],
        after: Callable[[lmdb.Transaction, Settlement], None] | None = None,
    ) -> Settlement:
        def run(txn: lmdb.Transaction) -> Settlement:
            current = self._settlement(txn, epoch)
            if current is None:
                raise StoreError(f"epoch {epoch}: not in the ledger")
            if not allowed(current):
                raise StoreError(
                    f"epoch {epoch}: cannot record {doc['state']} in state {current.state}"
                )
            self._append_event(txn, epoch, doc)
            new = self._settlement(txn, epoch)
            assert new is not None
            pending_db = self._dbs[_PENDING]
            if new.terminal:
                txn.delete(_u64(epoch), db=pending_db)
            else:
                txn.put(_u64(epoch), b"", db=pending_db)
            if new.state is SettlementState.CONFIRMED and not new.final:
                txn.put(_u64(epoch), b"", db=self._dbs[_INCLUDED])
            else:
                txn.delete(_u64(epoch), db=self._dbs[_INCLUDED])
            if after is not None:
                after(txn, new)
            return new

        return self._db.write(f"epoch {epoch} {doc['state']}", run, durable=True)

    # -- planning --------------------------------------------------------------------------

    def plan(self, plan: EpochPlan, at: float, next_open: OpenEpoch | None = None) -> bool:
        """Append a closed epoch (state ``planned``) and, atomically, the next checkpoint.

        Returns False, writing nothing, when the epoch is already in the ledger.
        """

        def run(txn: lmdb.Transaction) -> bool:
            key = _u64(plan.epoch)
            if not txn.put(key, _dumps(_plan_doc(plan, at)), db=self._dbs[_EPOCH], overwrite=False):
                return False
            self._append_event(txn, plan.epoch, {"state": "planned", "at": at})
            txn.put(key, b"", db=self._dbs[_PENDING])
            total = plan.total_agents
            for p in plan.payouts:
                row = {"payout": asdict(p), "total_agents": total}
                txn.put(_agent_prefix(p.agent_id) + key, _dumps(row), db=self._dbs[_AGENT])
            expected = dict(self._db.get_json(txn, _META, _EXPECTED) or {})
            _apply(expected, plan.wallets)
            txn.put(_EXPECTED, _dumps(expected), db=self._dbs[_META])
            if next_open is not None:
                txn.put(_CHECKPOINT, _dumps(_open_doc(next_open)), db=self._dbs[_META])
            return True

        return self._db.write(f"plan epoch {plan.epoch}", run, durable=True)

    def save_checkpoint(self, open_epoch: OpenEpoch) -> None:
        """Remember the open epoch's tallies (not synced; see the module doc)."""

        def run(txn: lmdb.Transaction) -> None:
            txn.put(_CHECKPOINT, _dumps(_open_doc(open_epoch)), db=self._dbs[_META])

        self._db.write("checkpoint", run, durable=False)

    def load_checkpoint(self) -> OpenEpoch | None:
        """The open epoch's tallies as last saved."""
        doc = self._db.read("checkpoint", lambda txn: self._db.get_json(txn, _META, _CHECKPOINT))
        if doc is None:
            return None
        tallies = {t["agent_id"]: EpochTally(**t) for t in doc["tallies"]}
        return OpenEpoch(int(doc["epoch"]), tallies)

    # -- settlement transitions ------------------------------------------------------------

    def record_sent(
        self, epoch: int, call: SettlementCall, attempt: TxAttempt, at: float
    ) -> Settlement:
        """Bind the epoch to ``attempt.nonce`` (or add a replacement for that nonce); synced."""

        def allowed(s: Settlement) -> bool:
            if s.state is SettlementState.SENT:
                return s.nonce == attempt.nonce and s.call == call
            return s.state is SettlementState.PLANNED or (
                s.state is SettlementState.REVERTED and s.retry
            )

        doc = {"state": "sent", "at": at, "call": _call_doc(call), "attempt": asdict(attempt)}
        return self._transition(epoch, doc, allowed)

    def record_confirmed(
        self,
        epoch: int,
        tx_hash: str | None,
        block: int | None,
        gas_used: int | None,
        fee_wei: int | None,
        at: float,
        reason: str = "",
        block_hash: str | None = None,
    ) -> Settlement:
        """The settlement is mined and succeeded (included, not final yet); the on-chain
        weights now match its call."""

        def after(txn: lmdb.Transaction, s: Settlement) -> None:
            if s.call is not None:
                onchain = dict(self._db.get_json(txn, _META, _ONCHAIN) or {})
                pairs = zip(s.call.wallets, s.call.weights, strict=True)
                _apply(onchain, [WalletWeight(w, n) for w, n in pairs])
                txn.put(_ONCHAIN, _dumps(onchain), db=self._dbs[_META])

        doc = {
            "state": "confirmed",
            "at": at,
            "tx_hash": tx_hash,
            "block": block,
            "gas_used": gas_used,
            "fee_wei": fee_wei,
            "reason": reason,
            "block_hash": block_hash,
        }
        included_from = (SettlementState.SENT, SettlementState.REORGED)
        return self._transition(epoch, doc, lambda s: s.state in included_from, after)

    def record_final(self, epoch: int, confirmations: int, at: float) -> Settlement:
        """The included settlement has ``confirmations`` blocks on it: final; synced."""
        doc = {"state": "final", "at": at, "confirmations": confirmations}
        return self._transition(
            epoch, doc, lambda s: s.state is SettlementState.CONFIRMED and not s.final
        )

    def record_reorged(
        self, epoch: int, reason: str, at: float, head: int | None = None
    ) -> Settlement:
        """The included, not final settlement left the canonical chain; synced.

        Its nonce and signed transactions stay bound: only those bytes are ever sent again.
        """

        def allowed(s: Settlement) -> bool:
            return s.state is SettlementState.CONFIRMED and not s.final and s.tx_hash is not None

        current = self.settlement(epoch)
        doc = {
            "state": "reorged",
            "at": at,
            "reason": reason,
            "head": head,
            "lost_tx_hash": current.tx_hash if current else None,
            "lost_block": current.block if current else None,
            "lost_block_hash": current.block_hash if current else None,
        }
        return self._transition(epoch, doc, allowed)

    def record_resent(self, epoch: int, tx_hash: str, at: float) -> Settlement:
        """The reorged epoch's recorded transaction ``tx_hash`` was broadcast again; synced."""
        doc = {"state": "resent", "at": at, "tx_hash": tx_hash}
        return self._transition(epoch, doc, lambda s: s.state is SettlementState.REORGED)

    def record_reverted(
        self,
        epoch: int,
        reason: str,
        retry: bool,
        at: float,
        tx_hash: str | None = None,
        block: int | None = None,
        gas_used: int | None = None,
        fee_wei: int | None = None,
    ) -> Settlement:
        """The settlement failed: mined with status 0, or refused at estimation (no tx)."""
        doc = {
            "state": "reverted",
            "at": at,
            "reason": reason,
            "retry": retry,
            "tx_hash": tx_hash,
            "block": block,
            "gas_used": gas_used,
            "fee_wei": fee_wei,
        }
        return self._transition(epoch, doc, lambda s: not s.terminal)

    def record_skipped(self, epoch: int, reason: str, at: float) -> Settlement:
        """Nothing to send for this epoch (no weights to change and nothing to deposit)."""
        doc = {"state": "skipped", "at": at, "reason": reason}
        return self._transition(epoch, doc, lambda s: s.state is SettlementState.PLANNED)

    def requeue(self, epoch: int, at: float) -> Settlement:
        """Operator action: settle a reverted epoch again (with a new nonce)."""
        doc = {"state": "requeued", "at": at}
        return self._transition(epoch, doc, lambda s: s.state is SettlementState.REVERTED)

    # -- reads -----------------------------------------------------------------------------

    def epoch(self, epoch: int) -> EpochPlan | None:
        """The plan of ``epoch``."""
        doc = self._db.read("epoch", lambda txn: self._db.get_json(txn, _EPOCH, _u64(epoch)))
        return None if doc is None else _plan_from(doc)

    def planned_at(self, epoch: int) -> float | None:
        """Wall-clock time the epoch was closed."""
        doc = self._db.read("epoch", lambda txn: self._db.get_json(txn, _EPOCH, _u64(epoch)))
        return None if doc is None else float(doc["planned_at"])

    def settlement(self, epoch: int) -> Settlement | None:
        """The current settlement state of ``epoch``."""
        return self._db.read("settlement", lambda txn: self._settlement(txn, epoch))

    def events(self, epoch: int) -> list[dict[str, Any]]:
        """The raw transitions of ``epoch``, oldest first."""
        return self._db.read("events", lambda txn: self._events(txn, epoch))

    def unsettled(self) -> list[int]:
        """Epochs still to be settled, oldest first."""

        def run(txn: lmdb.Transaction) -> list[int]:
            cur = txn.cursor(self._dbs[_PENDING])
            return [int.from_bytes(bytes(k), "big") for k in cur.iternext(values=False)]

        return self._db.read("unsettled", run)

    def included(self) -> list[int]:
        """Epochs mined but not final yet (watched for reorgs), oldest first."""

        def run(txn: lmdb.Transaction) -> list[int]:
            cur = txn.cursor(self._dbs[_INCLUDED])
            return [int.from_bytes(bytes(k), "big") for k in cur.iternext(values=False)]

        return self._db.read("included", run)

    def chain_identity(self) -> tuple[int, str] | None:
        """``(chain id, genesis hash)`` recorded at first use, or None."""
        doc = self._db.read("chain", lambda t: self._db.get_json(t, _META, _CHAIN))
        return None if doc is None else (int(doc["chain_id"]), str(doc["genesis"]))

    def record_chain_identity(self, chain_id: int, genesis: str) -> None:
        """Remember the chain settlements go to; written once, synced."""

        def run(txn: lmdb.Transaction) -> None:
            doc = _dumps({"chain_id": chain_id, "genesis": genesis})
            if not txn.put(_CHAIN, doc, db=self._dbs[_META], overwrite=False):
                raise StoreError("chain identity already recorded")

        self._db.write("chain identity", run, durable=True)

    def latest_epoch(self) -> int | None:
        """The newest planned epoch."""

        def run(txn: lmdb.Transaction) -> int | None:
            cur = txn.cursor(self._dbs[_EPOCH])
            return int.from_bytes(bytes(cur.key()), "big") if cur.last() else None

        return self._db.read("latest epoch", run)

    def recent(self, limit: int) -> list[Settlement]:
        """The settlements of the newest ``limit`` epochs, newest first."""

        def run(txn: lmdb.Transaction) -> list[Settlement]:
            out: list[Settlement] = []
            cur = txn.cursor(self._dbs[_EPOCH])
            if not cur.last():
                return out
            for key in cur.iterprev(values=False):
                if len(out) >= limit:
                    break
                s = self._settlement(txn, int.from_bytes(bytes(key), "big"))
                if s is not None:
                    out.append(s)
            return out

        return self._db.read("recent", run)

    def agent_history(self, agent_id: str, limit: int | None = None) -> list[AgentEpoch]:
        """The agent's epochs, newest first, with each epoch's settlement state."""
        prefix = _agent_prefix(agent_id)

        def run(txn: lmdb.Transaction) -> list[AgentEpoch]:
            out: list[AgentEpoch] = []
            cur = txn.cursor(self._dbs[_AGENT])
            # Newest first: start at the last key carrying the prefix and walk back.
            end = prefix + b"\xff" * 8
            if cur.set_range(end):
                if bytes(cur.key()) != end and not cur.prev():
                    return out
            elif not cur.last():
                return out
            while (limit is None or len(out) < limit) and bytes(cur.key()).startswith(prefix):
                epoch = int.from_bytes(bytes(cur.key())[len(prefix) :], "big")
                row = json.loads(bytes(cur.value()))
                s = self._settlement(txn, epoch)
                out.append(
                    AgentEpoch(
                        epoch=epoch,
                        payout=Payout(**row["payout"]),
                        total_agents=int(row["total_agents"]),
                        state=s.state if s else SettlementState.PLANNED,
                        tx_hash=s.tx_hash if s else None,
                    )
                )
                if not cur.prev():
                    break
            return out

        return self._db.read("agent history", run)

    def expected_weights(self) -> dict[str, int]:
        """Wallet -> weight on chain once every planned epoch is settled (non-zero only)."""
        return dict(
            self._db.read("weights", lambda t: self._db.get_json(t, _META, _EXPECTED)) or {}
        )

    def onchain_weights(self) -> dict[str, int]:
        """Wallet -> weight on chain after the confirmed settlements (non-zero only)."""
        return dict(self._db.read("weights", lambda t: self._db.get_json(t, _META, _ONCHAIN)) or {})

    def last_announced(self, agent_id: str) -> int:
        """Newest epoch whose payout the agent has heard about; -1 for none."""
        raw = self._db.read("notice", lambda t: t.get(agent_id.encode(), db=self._dbs[_NOTICE]))
        return -1 if raw is None else int(bytes(raw))

    def mark_announced(self, agent_id: str, epoch: int) -> None:
        """Remember that the agent heard about ``epoch`` (not synced)."""

        def run(txn: lmdb.Transaction) -> None:
            txn.put(agent_id.encode(), str(epoch).encode(), db=self._dbs[_NOTICE])

        self._db.write("notice", run, durable=False)


def _apply(weights: dict[str, int], updates: Sequence[WalletWeight]) -> None:
    for w in updates:
        if w.weight:
            weights[w.wallet] = w.weight
        else:
            weights.pop(w.wallet, None)


def _open_doc(open_epoch: OpenEpoch) -> dict[str, Any]:
    return {
        "epoch": open_epoch.epoch,
        "tallies": [asdict(t) for t in open_epoch.tallies.values()],
    }
