"""Workload transactions whose state is hard to prefetch and easy to get subtly wrong.

Accounts that come into being or leave within one transaction, and accounts whose code is an
EIP-7702 delegation: contract creation by a top-level transaction, CREATE2 of a contract that
SELFDESTRUCTs in the same transaction (so since Cancun it is deleted, and the same salt deploys
at the same address again), a CREATE2 that collides with a standing contract, value sent to
addresses never seen (directly and from a contract), EXTCODEHASH / EXTCODESIZE / BALANCE of an
absent account, of an existing code-less one and of a delegated one, and type-4 set-code
transactions for fresh and existing authorities, re-delegation, clearing, and calls into the
delegated accounts.

:class:`SetCodeBook` keeps each authority's nonce and delegation as the workload plans them.
Every authority belongs to one sender, so its authorizations land in the sender's nonce order
and the planned nonce is the real one; an authority whose transaction the node refused is
retired (whether its nonce moved is unknown).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from eth_account import Account
from eth_account.datastructures import SignedSetCodeAuthorization
from eth_account.signers.local import LocalAccount

from ioswarm.sim.artifacts import WorkloadArtifact, create2_address, create2_salt
from ioswarm.sim.sending import new_account

ZERO_ADDRESS = bytes(20)
SETCODE_GAS = 200_000
PHOENIX_GAS = 300_000
COLLISION_GAS = 200_000
CREATE_TX_GAS = 300_000
PROBE_GAS = 150_000
VALUE_GAS = 30_000  # room for an EIP-2930 entry of the recipient
PAY_GAS = 80_000
AUTHORITY_FUND_WEI = 10**15
"""What each existing authority holds before its first authorization (so it has a balance)."""


@dataclass
class Authority:
    """An EOA that signs EIP-7702 authorizations, as the workload plans it."""

    account: LocalAccount
    nonce: int = 0
    target: bytes | None = None
    """The contract its code delegates to after the planned transactions; None: no code."""
    retired: bool = False

    @property
    def address(self) -> bytes:
        return bytes.fromhex(self.account.address[2:])


@dataclass(frozen=True, slots=True)
class SetCode:
    """The set-code part of a call: the authorizations to send and who signed them."""

    authorizations: tuple[SignedSetCodeAuthorization, ...]
    authorities: tuple[Authority, ...] = ()
    """Authorities of the book among the signers (retired if the send fails)."""


class SetCodeBook:
    """Authorities per sender (``per_sender`` each, funded at setup), plus the emptied accounts
    (nonce 1, no code, no balance: an authorization to the zero address made them exist)."""

    def __init__(self, rng: random.Random, chain_id: int, senders: int, per_sender: int) -> None:
        self.chain_id = chain_id
        self._rng = rng
        self.pools = [
            [Authority(new_account(rng)) for _ in range(per_sender)] for _ in range(senders)
        ]
        self.emptied = [Authority(new_account(rng)) for _ in range(senders)]

    @property
    def funded(self) -> list[bytes]:
        """Authorities the setup funds with :data:`AUTHORITY_FUND_WEI`."""
        return [a.address for pool in self.pools for a in pool]

    def sign(self, authority: Authority, target: bytes) -> SignedSetCodeAuthorization:
        """An authorization of ``authority`` at its planned nonce (which it then uses up)."""
        signed: SignedSetCodeAuthorization = Account.sign_authorization(
            {"chainId": self.chain_id, "address": target, "nonce": authority.nonce},
            authority.account.key,
        )
        authority.nonce += 1
        authority.target = None if target == ZERO_ADDRESS else target
        return signed

    def pick(self, sender: int, delegated: bool | None) -> Authority | None:
        """One live authority of ``sender``: delegated or not as asked (None: any)."""
        live = [
            a
            for a in self.pools[sender]
            if not a.retired and (delegated is None or (a.target is not None) == delegated)
        ]
        return self._rng.choice(live) if live else None

    def fresh(self) -> Authority:
        """An authority never seen on chain: nonce 0, no balance."""
        return Authority(new_account(self._rng))


@dataclass(frozen=True, slots=True)
class FidelityCall:
    """What :class:`FidelityCalls` builds; the caller wraps it as a workload call."""

    to: bytes | None
    data: bytes
    gas: int
    value: int = 0
    access: dict[bytes, tuple[int, ...]] | None = None
    set_code: SetCode | None = None


class FidelityCalls:
    """Builds the calls of the categories in :data:`ioswarm.sim.l3calls.FIDELITY_CATEGORIES`."""

    def __init__(
        self,
        artifact: WorkloadArtifact,
        rng: random.Random,
        senders: Sequence[bytes],
        address_of: Callable[[str], bytes],
        book: SetCodeBook,
    ) -> None:
        self._artifact = artifact
        self._rng = rng
        self._senders = senders
        self._address_of = address_of
        self.book = book
        self._destroyed = 0

    def create_tx(self, i: int) -> FidelityCall:
        """A top-level contract creation (the address follows from the sender's nonce)."""
        initcode = self._artifact["Child"].initcode(self._rng.randrange(1, 2**64))
        return FidelityCall(None, initcode, CREATE_TX_GAS)

    def phoenix(self, i: int, *, redeploy: bool) -> FidelityCall:
        """CREATE2 and SELFDESTRUCT in one transaction, paying a fresh beneficiary; with
        ``redeploy`` the salt is the sender's one, so every call deploys at the same address."""
        factory = self._address_of("PhoenixFactory")
        abi = self._artifact["PhoenixFactory"]
        if redeploy:
            salt = create2_salt(self._senders[i], 0)
        else:
            self._destroyed += 1
            salt = create2_salt(self._senders[i], 1_000_000 + self._destroyed)
        beneficiary = self._rng.randbytes(20)
        phoenix = create2_address(factory, salt, self._artifact["Phoenix"].initcode())
        return FidelityCall(
            factory,
            abi.encode_call("createAndDestroy", salt, beneficiary),
            PHOENIX_GAS,
            value=self._rng.randrange(1, 10**6),
            access={factory: tuple(v.slot for v in abi.storage), phoenix: (0,), beneficiary: ()},
        )

    def collision(self, i: int) -> FidelityCall:
        """CREATE2 at the sender's standing Phoenix: the first deploys, the rest collide."""
        factory = self._address_of("PhoenixFactory")
        abi = self._artifact["PhoenixFactory"]
        salt = create2_salt(self._senders[i], 2_000_000)
        return FidelityCall(factory, abi.encode_call("deploy", salt), COLLISION_GAS)

    def value_fresh(self, i: int) -> FidelityCall:
        """Value to an address never seen: the transfer creates the account."""
        to = self._rng.randbytes(20)
        return FidelityCall(to, b"", VALUE_GAS, value=self._rng.randrange(1, 10**9))

    def value_fresh_call(self, i: int) -> FidelityCall:
        """Value to an address never seen, sent on by a contract (an internal CALL)."""
        probe = self._address_of("Probe")
        to = self._rng.randbytes(20)
        data = self._artifact["Probe"].encode_call("pay", to)
        return FidelityCall(probe, data, PAY_GAS, value=self._rng.randrange(1, 10**9))

    def probe(self, i: int, what: str) -> FidelityCall:
        """EXTCODEHASH, EXTCODESIZE and BALANCE of an absent, an emptied or a delegated account."""
        if what == "absent":
            target = self._rng.randbytes(20)
        elif what == "empty":
            target = self.book.emptied[i].address
        else:
            found = self.book.pick(i, True) or self.book.pick(i, None)
            target = found.address if found is not None else self.book.emptied[i].address
        data = self._artifact["Probe"].encode_call("probe", target)
        return FidelityCall(self._address_of("Probe"), data, PROBE_GAS)

    def set_code(self, i: int, how: str) -> FidelityCall:
        """A type-4 transaction: ``fresh``, ``existing`` (not delegated yet, or any),
        ``redelegate`` (to the other target) or ``clear`` (to the zero address); all but
        ``clear`` call the authority's new code in the same transaction."""
        delegate, alt = self._address_of("Delegate"), self._address_of("DelegateAlt")
        authority: Authority | None
        if how == "fresh":
            authority, owned = self.book.fresh(), False
        else:
            want = {"existing": False, "redelegate": True, "clear": True}[how]
            authority = self.book.pick(i, want) or self.book.pick(i, None)
            owned = True
        if authority is None:  # every authority of this sender retired
            authority, owned = self.book.fresh(), False
        if how == "clear":
            target = ZERO_ADDRESS
        elif authority.target == delegate:
            target = alt
        elif authority.target == alt or how == "redelegate":
            target = delegate
        else:
            target = self._rng.choice((delegate, alt))
        signed = self.book.sign(authority, target)
        data = b"" if target == ZERO_ADDRESS else self._bump()
        return FidelityCall(
            authority.address,
            data,
            SETCODE_GAS,
            set_code=SetCode((signed,), (authority,) if owned else ()),
        )

    def delegated_call(self, i: int) -> FidelityCall:
        """A plain call into a delegated account (its code runs on its own storage)."""
        authority = self.book.pick(i, True) or self.book.pick(i, None)
        to = authority.address if authority is not None else self.book.emptied[i].address
        return FidelityCall(to, self._bump(), SETCODE_GAS)

    def emptying(self) -> FidelityCall:
        """The setup transaction that makes every emptied account exist: each authorizes the
        zero address at nonce 0, which raises its nonce and leaves it code-less and unfunded."""
        signed = tuple(self.book.sign(a, ZERO_ADDRESS) for a in self.book.emptied)
        # Call one of them (code-less: a plain call) so the transaction has a recipient.
        to = self.book.emptied[0].address
        return FidelityCall(to, b"", 50_000 + 30_000 * len(signed), set_code=SetCode(signed))

    def _bump(self) -> bytes:
        return self._artifact["Delegate"].encode_call("bump", self._rng.randrange(1, 2**32))
