"""State-test fixtures (the standard filled JSON format) as plain cases.

One fixture file holds named tests; each test has a pre-state, an environment, a transaction
template and, per fork, a list of posts. A post picks one data/gas/value combination, carries
the signed transaction (``txbytes``), the expected post-state root (``hash``), the logs hash
(``logs``) and, for an invalid transaction, ``expectException``. One post is one
:class:`StateCase`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "FORKS",
    "PreAccount",
    "StateCase",
    "StateEnv",
    "cases_in",
    "find_fixture_files",
    "load_cases",
]

FORKS: Final = ("Cancun", "Prague")
"""The forks the engine executes (Shanghai and older are unsupported by design)."""


@dataclass(frozen=True, slots=True)
class PreAccount:
    """One account of a test's pre-state (every listed account exists in the trie)."""

    balance: int
    nonce: int
    code: bytes
    storage: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StateEnv:
    """The block a test's transaction runs in."""

    coinbase: bytes
    number: int
    timestamp: int
    gas_limit: int
    base_fee: int
    prev_randao: bytes
    excess_blob_gas: int


@dataclass(frozen=True, slots=True)
class StateCase:
    """One post of one state test: a transaction, its fork and the expected outcome."""

    case_id: str  # "<file>::<test>[<fork>-d<data>g<gas>v<value>]", stable across runs
    fork: str
    chain_id: int
    env: StateEnv
    pre: Mapping[bytes, PreAccount]
    tx_raw: bytes
    post_root: bytes
    logs_hash: bytes
    expect_exception: str  # "" for a valid transaction; alternatives joined by "|"
    blob_update_fraction: int | None = None  # from the fixture's blobSchedule, where given


def _int(value: str) -> int:
    return int(value, 16) if value else 0


def _hex(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def _pre(raw: Mapping[str, Any]) -> dict[bytes, PreAccount]:
    return {
        _hex(address): PreAccount(
            balance=_int(acct.get("balance", "0x0")),
            nonce=_int(acct.get("nonce", "0x0")),
            code=_hex(acct.get("code", "0x")),
            storage={_int(k): _int(v) for k, v in acct.get("storage", {}).items() if _int(v)},
        )
        for address, acct in raw.items()
    }


def _env(raw: Mapping[str, Any]) -> StateEnv:
    randao = raw.get("currentRandom") or raw.get("currentDifficulty") or "0x0"
    return StateEnv(
        coinbase=_hex(raw["currentCoinbase"]),
        number=_int(raw["currentNumber"]),
        timestamp=_int(raw["currentTimestamp"]),
        gas_limit=_int(raw["currentGasLimit"]),
        base_fee=_int(raw.get("currentBaseFee", "0x0")),
        prev_randao=_int(randao).to_bytes(32, "big"),
        excess_blob_gas=_int(raw.get("currentExcessBlobGas", "0x0")),
    )


def cases_in(
    label: str, document: Mapping[str, Any], forks: tuple[str, ...] = FORKS
) -> Iterator[StateCase]:
    """The cases of one parsed fixture file, for ``forks`` only; ``label`` prefixes the ids."""
    for name, test in document.items():
        if not isinstance(test, dict) or "post" not in test:
            continue
        config = test.get("config", {})
        chain_id = _int(config.get("chainid", "0x1"))
        schedule = config.get("blobSchedule", {})
        env = _env(test["env"])
        pre = _pre(test["pre"])
        for fork, posts in test["post"].items():
            if fork not in forks:
                continue
            fraction = schedule.get(fork, {}).get("baseFeeUpdateFraction")
            for post in posts:
                idx = post.get("indexes", {})
                suffix = f"{fork}-d{idx.get('data', 0)}g{idx.get('gas', 0)}v{idx.get('value', 0)}"
                yield StateCase(
                    case_id=f"{label}::{name}[{suffix}]",
                    fork=fork,
                    chain_id=chain_id,
                    env=env,
                    pre=pre,
                    tx_raw=_hex(post["txbytes"]),
                    post_root=_hex(post["hash"]),
                    logs_hash=_hex(post["logs"]),
                    expect_exception=post.get("expectException", ""),
                    blob_update_fraction=_int(fraction) if fraction else None,
                )


def find_fixture_files(root: Path) -> list[Path]:
    """Every fixture file under ``root``, sorted (so runs and ids are stable)."""
    return sorted(p for p in root.rglob("*.json") if p.is_file())


def load_cases(root: Path, forks: tuple[str, ...] = FORKS) -> Iterator[StateCase]:
    """Every case of every fixture file under ``root``; ids are relative to ``root``."""
    for path in find_fixture_files(root):
        with path.open("rb") as handle:
            document = json.load(handle)
        yield from cases_in(path.relative_to(root).as_posix(), document, forks)
