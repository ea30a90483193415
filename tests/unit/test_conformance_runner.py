"""The state-test runner's own parts: fixture parsing, roots, reasons, applying changes."""

from __future__ import annotations

import pytest

from ioswarm.conformance import suite
from ioswarm.conformance.fixtures import cases_in
from ioswarm.conformance.known import KNOWN, Listing, listing_for
from ioswarm.conformance.runner import CaseOutcome, blob_base_fee, post_state, reason_matches
from ioswarm.conformance.stateroot import PostAccount, logs_hash, state_root
from ioswarm.conformance.suite import SuiteReport
from ioswarm.proto import ioswarm_pb2 as pb

A, B = b"\xaa" * 20, b"\xbb" * 20


def _document(post: dict[str, object]) -> dict[str, object]:
    return {
        "t": {
            "env": {
                "currentCoinbase": "0x" + "cc" * 20,
                "currentNumber": "0x01",
                "currentTimestamp": "0x03e8",
                "currentGasLimit": "0x989680",
                "currentBaseFee": "0x07",
                "currentRandom": "0x" + "00" * 32,
                "currentExcessBlobGas": "0x00",
            },
            "pre": {
                "0x" + A.hex(): {"balance": "0x10", "nonce": "0x01", "code": "0x", "storage": {}},
                "0x" + B.hex(): {
                    "balance": "0x00",
                    "nonce": "0x00",
                    "code": "0xef0100" + "cc" * 20,
                    "storage": {"0x01": "0x02", "0x02": "0x00"},
                },
            },
            "transaction": {},
            "post": {"Shanghai": [post], "Prague": [post, {**post, "indexes": {"data": 1}}]},
            "config": {"chainid": "0x01"},
        }
    }


def test_fixture_posts_become_cases_of_the_wanted_forks_only() -> None:
    """Each Cancun/Prague post is one case with a stable id; zero slots are dropped."""
    post = {"hash": "0x" + "11" * 32, "logs": "0x" + "22" * 32, "txbytes": "0x02", "indexes": {}}
    cases = list(cases_in("dir/f.json", _document(post)))
    assert [c.case_id for c in cases] == [
        "dir/f.json::t[Prague-d0g0v0]",
        "dir/f.json::t[Prague-d1g0v0]",
    ]
    assert cases[0].pre[B].storage == {1: 2}
    assert cases[0].env.base_fee == 7 and cases[0].chain_id == 1


def test_roots_of_nothing_are_the_well_known_empty_values() -> None:
    """An empty state has the empty trie root; no logs hash to keccak(rlp([]))."""
    assert state_root({}).hex().startswith("56e81f171bcc55a6")
    assert logs_hash([]).hex().startswith("1dcc4de8dec75d7a")
    assert state_root({A: PostAccount(1)}) != state_root({A: PostAccount(2)})


def test_expected_exceptions_match_their_reject_reasons() -> None:
    """Fixture exception names map to ioswarm reasons; alternatives joined by | each count."""
    both = (
        "TransactionException.INSUFFICIENT_ACCOUNT_FUNDS|TransactionException.INTRINSIC_GAS_TOO_LOW"
    )
    assert reason_matches(both, "intrinsic_gas_too_high")
    assert reason_matches(both, "insufficient_balance")
    assert not reason_matches(both, "nonce_too_low")
    assert reason_matches("TransactionException.RLP_INVALID_VALUE", "bad_field:to")
    assert reason_matches("TransactionException.TYPE_3_TX_BLOB_COUNT_EXCEEDED", "too_many_blobs")


def test_blob_base_fee_follows_the_fake_exponential() -> None:
    """1 wei at zero excess; the EIP-4844 reference value one update fraction up is e."""
    assert blob_base_fee(0, 3_338_477) == 1
    assert blob_base_fee(3_338_477 * 10, 3_338_477) == 22_026  # floor(e ** 10)


def test_reported_changes_apply_to_the_pre_state() -> None:
    """Balances, nonces, created and cleared code, slots and deletions land in the post-state."""
    post = {"hash": "0x" + "11" * 32, "logs": "0x" + "22" * 32, "txbytes": "0x02", "indexes": {}}
    (case, _) = cases_in("f.json", _document(post))
    result = pb.TaskResult(
        valid=True,
        account_changes=[
            pb.AccountChange(address=A, balance_after=b"\x05", nonce_after=2, deleted=False),
            pb.AccountChange(address=B, code_cleared=True),
        ],
        state_changes=[
            pb.StorageChange(address=B, slot=(1).to_bytes(32, "big"), new_value=b"\x00" * 32),
            pb.StorageChange(
                address=B, slot=(3).to_bytes(32, "big"), new_value=b"\x00" * 31 + b"\x09"
            ),
        ],
    )
    state = post_state(case, result)
    assert (state[A].balance, state[A].nonce) == (5, 2)
    assert state[B].code == b"" and state[B].storage == {3: 9}
    gone = pb.TaskResult(valid=True, account_changes=[pb.AccountChange(address=B, deleted=True)])
    assert B not in post_state(case, gone)


def test_the_report_counts_and_lists_failures_with_their_listing() -> None:
    """Pass rate over all cases; an unlisted failure is flagged, a listed one shows its reason."""
    report = SuiteReport(passed=8)
    report.failed = [CaseOutcome("x", "fail", "state root differs"), CaseOutcome("y", "fail", "d")]
    report.listed_failures = {"y": Listing("fail", "py-evm limitation")}
    report.skipped = [("z", Listing("slow", "minutes in py-evm"))]
    assert report.pass_rate == 8 / 11
    assert [o.case_id for o in report.unlisted_failures] == ["x"]
    text = "\n".join(report.lines())
    assert "8 passed, 2 failed, 1 skipped" in text and "[NOT LISTED]" in text
    assert "py-evm limitation" in text and "minutes in py-evm" in text


def test_the_known_list_gives_a_reason_for_every_entry() -> None:
    """Every listed case says why; lookups match exact ids and patterns."""
    assert all(listing.reason for listing in KNOWN.values())
    assert listing_for("no/such.json::case[Prague-d0g0v0]") is None


def test_a_case_over_its_budget_fails_as_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The budget interrupts a case the engine is still running, and the next case runs."""
    post = {"hash": "0x" + "11" * 32, "logs": "0x" + "22" * 32, "txbytes": "0x02", "indexes": {}}
    (case, _) = cases_in("f.json", _document(post))

    def endless(_: object) -> CaseOutcome:
        while True:
            pass

    monkeypatch.setattr(suite, "run_case", endless)
    outcome = suite.run_within(case, 0.05)
    assert (outcome.verdict, outcome.detail.split(":")[0]) == ("fail", "timeout")
    monkeypatch.setattr(suite, "run_case", lambda c: CaseOutcome(c.case_id, "pass"))
    assert suite.run_within(case, 0.05).verdict == "pass"
