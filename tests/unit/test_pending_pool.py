"""The mempool book: each tx taken in once, forgotten when it leaves, never resurrected by a
late push or a listing older than its leaving."""

from __future__ import annotations

from ioswarm.core.mempool import PendingPool
from ioswarm.core.models import PendingTx


def tx(i: int, nonce: int, sender: int = 1) -> PendingTx:
    return PendingTx(i.to_bytes(32, "big"), bytes([sender]) * 20, nonce, None, 0, 21_000, 1)


def test_taken_in_once_with_its_first_seen_time() -> None:
    pool = PendingPool(100, lambda h: None)
    assert pool.add(tx(1, 0), now=1.0)
    assert not pool.add(tx(1, 0), now=2.0)  # pushed, then listed: one tx
    assert pool.seen_at(tx(1, 0).tx_hash) == 1.0
    assert [t.tx_hash for t in pool.waiting()] == [tx(1, 0).tx_hash]
    assert pool.wants_raw(tx(1, 0).tx_hash)
    pool.raw[tx(1, 0).tx_hash] = b"signed"
    assert not pool.wants_raw(tx(1, 0).tx_hash)
    pool.dispatched([tx(1, 0).tx_hash])
    assert not pool.wants_raw(tx(1, 0).tx_hash) and pool.raw == {}
    assert pool.waiting() == [] and pool.was_dispatched(tx(1, 0).tx_hash)


def test_a_replacement_retires_its_predecessor_and_it_stays_retired() -> None:
    replaced: list[bytes] = []
    pool = PendingPool(100, replaced.append)
    pool.add(tx(1, 0), now=1.0)
    pool.add(tx(2, 0), now=2.0)  # same sender and nonce
    assert replaced == [tx(1, 0).tx_hash]
    assert [t.tx_hash for t in pool.waiting()] == [tx(2, 0).tx_hash]
    assert pool.chains([tx(2, 0).sender]) == [tx(2, 0)]
    # A listing asked before the replacement still shows the old tx: it does not come back.
    pool.absorb_listing([tx(1, 0)], asked_at=1.5, now=3.0)
    assert [t.tx_hash for t in pool.waiting()] == [tx(2, 0).tx_hash]
    assert replaced == [tx(1, 0).tx_hash]


def test_listings_drop_what_left_but_not_what_arrived_after_they_were_asked() -> None:
    pool = PendingPool(100, lambda h: None)
    pool.add(tx(1, 0), now=1.0)
    pool.add(tx(2, 1), now=5.0)  # pushed while the listing below was on its way
    pool.absorb_listing([], asked_at=4.0, now=6.0)
    assert [t.tx_hash for t in pool.waiting()] == [tx(2, 1).tx_hash]


def test_an_included_tx_is_not_taken_in_by_a_late_push() -> None:
    pool = PendingPool(100, lambda h: None)
    pool.drop(tx(1, 0).tx_hash, now=1.0)  # included before its push was read
    assert not pool.add(tx(1, 0), now=2.0)
    # A listing asked after it left and still showing it (a reorg put it back) is believed.
    assert pool.absorb_listing([tx(1, 0)], asked_at=3.0, now=3.5) == 1


def test_every_table_is_bounded() -> None:
    pool = PendingPool(3, lambda h: None)
    for i in range(10):
        pool.add(tx(i, i, sender=i), now=float(i))
    for i in range(10):
        pool.drop(tx(100 + i, 0).tx_hash, now=20.0)
    sizes = pool.tables()
    assert all(s.entries <= 3 for s in sizes.values()), sizes
    assert [t.nonce for t in pool.waiting()] == [7, 8, 9]  # the oldest went first
