"""L3 execution (ioswarm.agent.evm, ioswarm.agent.l3) on hand-built state and real signed txs."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import rlp
from eth_account import Account
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey
from eth_utils.address import to_checksum_address

from ioswarm.agent import evm
from ioswarm.agent.evm import PyEvmEngine
from ioswarm.agent.l3 import L3Validator
from ioswarm.core.execution import AccountChange, AccountInput, BlockInput, Execution, MissingKey
from ioswarm.core.models import Level
from ioswarm.proto import ioswarm_pb2 as pb

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
SENDER = bytes.fromhex(Account.from_key(KEY).address[2:])
ALICE = bytes.fromhex("a11ce0" + "00" * 17)
COINBASE = bytes.fromhex("c0ffee" + "00" * 17)
TOKEN = bytes.fromhex("70ce" + "00" * 18)
CONTRACT = bytes.fromhex("c0de" + "00" * 18)
CHAIN_ID = 31337
GWEI = 10**9
BASE_FEE = GWEI
TIP = 2 * GWEI
ETHER = 10**18
BLOCK = BlockInput(
    number=1_000,
    timestamp=1_700_000_000,
    gas_limit=30_000_000,
    base_fee=BASE_FEE,
    coinbase=COINBASE,
    prev_randao=b"\x42" * 32,
    chain_id=CHAIN_ID,
    block_hashes={999: b"\x99" * 32, 998: b"\x98" * 32},
    blob_base_fee=1,
)
TRANSFER_TOPIC = keccak(b"Transfer(address,address,uint256)")


# --- a tiny assembler ----------------------------------------------------------------------------

OPS = {
    "STOP": 0x00, "ADD": 0x01, "SUB": 0x03, "LT": 0x10, "EQ": 0x14, "SHR": 0x1C, "SHA3": 0x20,
    "BALANCE": 0x31, "CALLER": 0x33, "CALLDATALOAD": 0x35, "CALLDATASIZE": 0x36,
    "CALLDATACOPY": 0x37, "CODECOPY": 0x39, "EXTCODEHASH": 0x3F, "BLOCKHASH": 0x40,
    "COINBASE": 0x41, "TIMESTAMP": 0x42, "NUMBER": 0x43, "CHAINID": 0x46, "BASEFEE": 0x48,
    "POP": 0x50, "MLOAD": 0x51, "MSTORE": 0x52, "SLOAD": 0x54, "SSTORE": 0x55, "JUMP": 0x56,
    "JUMPI": 0x57, "GAS": 0x5A, "JUMPDEST": 0x5B, "TLOAD": 0x5C, "TSTORE": 0x5D, "PUSH0": 0x5F,
    "DUP1": 0x80, "DUP2": 0x81, "DUP3": 0x82, "SWAP1": 0x90, "SWAP2": 0x91, "LOG3": 0xA3,
    "CREATE": 0xF0, "CALL": 0xF1, "RETURN": 0xF3, "CREATE2": 0xF5, "STATICCALL": 0xFA,
    "REVERT": 0xFD, "SELFDESTRUCT": 0xFF,
}  # fmt: skip


class Raw(bytes):
    """Bytes placed into the code as they are (data, not a PUSH)."""


def asm(*items: str | int | bytes) -> bytes:
    """Assemble ops, pushed ints/bytes, ':label' (JUMPDEST), '::label' (data) and '@label'."""

    def encode(labels: dict[str, int]) -> bytes:
        out = bytearray()
        for item in items:
            if isinstance(item, Raw):
                out += item
            elif isinstance(item, bytes):
                out += bytes((0x5F + len(item),)) + item
            elif isinstance(item, int):
                width = max(1, (item.bit_length() + 7) // 8)
                out += bytes((0x5F + width,)) + item.to_bytes(width, "big")
            elif item.startswith(":"):
                labels[item.lstrip(":")] = len(out)
                if not item.startswith("::"):
                    out.append(OPS["JUMPDEST"])
            elif item.startswith("@"):
                out += b"\x61" + labels.get(item[1:], 0).to_bytes(2, "big")
            else:
                out.append(OPS[item])
        return bytes(out)

    labels: dict[str, int] = {}
    encode(labels)  # first pass finds the labels; every item has a fixed size
    return encode(labels)


def initcode(runtime: bytes, constructor: bytes = b"") -> bytes:
    """Creation code that runs ``constructor`` and then deploys ``runtime``."""
    offset = len(constructor) + 10
    copier = asm(len(runtime).to_bytes(2, "big"), "DUP1", offset, "PUSH0", "CODECOPY")
    return constructor + copier + asm("PUSH0", "RETURN") + runtime


# An ERC-20-style transfer(address,uint256): balances in a mapping at slot 0, Transfer event.
TOKEN_CODE = asm(
    "PUSH0", "CALLDATALOAD", 0xE0, "SHR", bytes.fromhex("a9059cbb"), "EQ", "@transfer", "JUMPI",
    "PUSH0", "PUSH0", "REVERT",
    ":transfer",
    "CALLER", "PUSH0", "MSTORE", "PUSH0", 32, "MSTORE", 64, "PUSH0", "SHA3",  # [kf]
    "DUP1", "SLOAD", 0x24, "CALLDATALOAD",  # [kf, bf, amount]
    "DUP1", "DUP3", "LT", "@fail", "JUMPI",
    "DUP1", "SWAP2", "SUB", "DUP3", "SSTORE",  # balances[from] -= amount; [kf, amount]
    4, "CALLDATALOAD", "PUSH0", "MSTORE", 64, "PUSH0", "SHA3",  # [kf, amount, kt]
    "DUP1", "SLOAD", "DUP3", "ADD", "SWAP1", "SSTORE",  # balances[to] += amount
    "PUSH0", "MSTORE",
    4, "CALLDATALOAD", "CALLER", TRANSFER_TOPIC, 32, "PUSH0", "LOG3",
    "POP", 1, "PUSH0", "MSTORE", 32, "PUSH0", "RETURN",
    ":fail", "PUSH0", "PUSH0", "REVERT",
)  # fmt: skip


# --- helpers -----------------------------------------------------------------------------------


def word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def balance_slot(holder: bytes) -> bytes:
    """Storage slot of ``balances[holder]`` in TOKEN_CODE (a mapping at slot 0)."""
    return keccak(holder.rjust(32, b"\x00") + word(0))


def transfer_call(to: bytes, amount: int) -> bytes:
    return bytes.fromhex("a9059cbb") + to.rjust(32, b"\x00") + word(amount)


def sign(to: bytes | None, *, nonce: int = 0, **fields: Any) -> bytes:
    """An EIP-1559 transaction from SENDER (fields override the defaults)."""
    tx: dict[str, Any] = {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "value": 0,
        "gas": 200_000,
        "maxFeePerGas": 10 * GWEI,
        "maxPriorityFeePerGas": TIP,
        "data": b"",
    }
    if to is not None:
        tx["to"] = to_checksum_address(to)
    tx.update(fields)
    return bytes(Account.sign_transaction(tx, KEY).raw_transaction)


def sender(balance: int = ETHER, nonce: int = 0) -> AccountInput:
    return AccountInput(SENDER, balance=balance, nonce=nonce)


def empty(address: bytes) -> AccountInput:
    """How the coordinator gives an account that does not exist on chain."""
    return AccountInput(address)


def contract(address: bytes, code: bytes, slots: dict[bytes, int] | None = None) -> AccountInput:
    storage = {k: word(v) for k, v in (slots or {}).items()}
    return AccountInput(address, nonce=1, code=code, storage=storage)


def run(raw: bytes, *accounts: AccountInput, block: BlockInput = BLOCK) -> Execution:
    return PyEvmEngine().execute(raw, SENDER, {a.address: a for a in accounts}, block)


def change(result: Execution, address: bytes) -> AccountChange:
    return next(c for c in result.account_changes if c.address == address)


def created_address(creator: bytes, nonce: int) -> bytes:
    return keccak(rlp.encode([creator, nonce]))[12:]


# --- plain transfers and rejections ---------------------------------------------------------------


def test_plain_transfer_moves_value_and_pays_fees() -> None:
    """A value transfer uses 21000 gas, moves value, bumps the nonce and credits tip x gas."""
    value = 10**15
    result = run(sign(ALICE, value=value), sender(), empty(ALICE), empty(COINBASE))
    assert result.valid and result.status == "success"
    assert result.gas_used == 21_000
    price = BASE_FEE + TIP
    assert [c.address for c in result.account_changes] == sorted([ALICE, SENDER, COINBASE])
    assert change(result, ALICE) == AccountChange(ALICE, 0, value, 0, 0, b"")
    assert change(result, SENDER) == AccountChange(
        SENDER, ETHER, ETHER - value - 21_000 * price, 0, 1, b""
    )
    assert change(result, COINBASE) == AccountChange(COINBASE, 0, 21_000 * TIP, 0, 0, b"")
    assert result.coinbase_fee == 21_000 * TIP
    assert result.storage_changes == () and result.logs == () and result.context_reads == ()


def test_legacy_and_access_list_transactions_execute() -> None:
    """Legacy (EIP-155) and EIP-2930 transactions pay gasPrice and execute like type 2."""
    legacy = bytes(
        Account.sign_transaction(
            {"chainId": CHAIN_ID, "nonce": 0, "to": to_checksum_address(ALICE), "value": 5,
             "gas": 21_000, "gasPrice": 3 * GWEI, "data": b""},
            KEY,
        ).raw_transaction
    )  # fmt: skip
    result = run(legacy, sender(), empty(ALICE), empty(COINBASE))
    assert result.valid and result.gas_used == 21_000
    assert change(result, SENDER).balance_after == ETHER - 5 - 21_000 * 3 * GWEI
    assert change(result, COINBASE).balance_after == 21_000 * (3 * GWEI - BASE_FEE)

    typed1 = bytes(
        Account.sign_transaction(
            {"type": 1, "chainId": CHAIN_ID, "nonce": 0, "to": to_checksum_address(ALICE),
             "value": 5, "gas": 30_000, "gasPrice": 3 * GWEI, "data": b"",
             "accessList": [{"address": to_checksum_address(ALICE), "storageKeys": []}]},
            KEY,
        ).raw_transaction
    )  # fmt: skip
    result = run(typed1, sender(), empty(ALICE), empty(COINBASE))
    assert result.valid and result.gas_used == 21_000 + 2_400


def test_pre_eip155_and_blob_transactions_execute() -> None:
    """A replay-unprotected legacy tx runs; a blob tx also pays blob gas x blob base fee."""
    pre155 = Account.sign_transaction(
        {"nonce": 0, "to": to_checksum_address(ALICE), "value": 5, "gas": 21_000,
         "gasPrice": 3 * GWEI, "data": b""},
        KEY,
    )  # fmt: skip
    result = run(bytes(pre155.raw_transaction), sender(), empty(ALICE), empty(COINBASE))
    assert result.valid and result.gas_used == 21_000

    # Signed by hand in the block form: eth_account would compute a KZG sidecar for real blobs.
    fields = [CHAIN_ID, 0, TIP, 10 * GWEI, 21_000, ALICE, 5, b"", [], 10, [b"\x01" * 32]]
    signature = PrivateKey(KEY).sign_msg_hash(keccak(b"\x03" + rlp.encode(fields)))
    raw = b"\x03" + rlp.encode([*fields, signature.v, signature.r, signature.s])
    result = run(raw, sender(), empty(ALICE), empty(COINBASE))
    assert result.valid and result.gas_used == 21_000
    blob_fee = 131_072 * BLOCK.blob_base_fee
    assert change(result, SENDER).balance_after == (
        ETHER - 5 - 21_000 * (BASE_FEE + TIP) - blob_fee
    )


def test_set_code_transaction_installs_a_delegation() -> None:
    """EIP-7702: the authority gets the delegation designator as code and its nonce bumped."""
    authority = Account.from_key(b"\x07" * 32)
    authority_address = bytes.fromhex(authority.address[2:])
    auth = authority.sign_authorization({"chainId": CHAIN_ID, "address": TOKEN, "nonce": 0})
    raw = sign(ALICE, type=4, authorizationList=[auth])
    result = run(raw, sender(), empty(ALICE), empty(COINBASE), AccountInput(authority_address, 1))
    assert result.valid and result.status == "success", result
    assert change(result, authority_address) == AccountChange(
        authority_address, 1, 1, 0, 1, b"\xef\x01\x00" + TOKEN
    )
    # Without the authority's account py-evm would skip the authorization silently; the
    # engine reports the missing account instead of executing without the delegation.
    missing = run(raw, sender(), empty(ALICE), empty(COINBASE))
    assert missing.missing == (MissingKey("account", authority_address),)


@pytest.mark.parametrize(
    ("raw", "account", "reason"),
    [
        (sign(ALICE, nonce=3), sender(nonce=2), "nonce_too_high"),
        (sign(ALICE, nonce=1), sender(nonce=2), "nonce_too_low"),
        (sign(ALICE, value=ETHER), sender(balance=ETHER), "insufficient_balance"),
        (sign(ALICE, gas=20_000), sender(), "intrinsic_gas_too_high"),
        (
            sign(ALICE, maxFeePerGas=BASE_FEE // 2, maxPriorityFeePerGas=1),
            sender(),
            "fee_cap_below_base_fee",
        ),
        (
            sign(ALICE, maxFeePerGas=TIP, maxPriorityFeePerGas=TIP + 1),
            sender(),
            "fee_cap_below_tip",
        ),
        (sign(ALICE, gas=40_000_000), sender(balance=10**30), "gas_limit_exceeds_block"),
        (sign(ALICE, data=b"\x01" * 100, gas=22_000), sender(), "intrinsic_gas_too_high"),  # 7623
        (sign(ALICE, chainId=1), sender(), "wrong_chain_id"),
    ],
)
def test_invalid_transactions_are_rejected_with_a_reason(
    raw: bytes, account: AccountInput, reason: str
) -> None:
    """Nonce, balance, gas, calldata floor, fee cap, block gas and chain id rules reject."""
    result = run(raw, account, empty(ALICE), empty(COINBASE))
    assert not result.valid
    assert result.reject_reason == reason
    assert result.account_changes == () and result.status is None


def test_sender_with_code_is_rejected() -> None:
    """EIP-3607: a sender with deployed (non-delegation) code cannot send transactions."""
    result = run(sign(ALICE), AccountInput(SENDER, ETHER, 0, code=b"\x00"), empty(ALICE))
    assert result.reject_reason == "sender_not_eoa"


def test_cancun_fork_executes_without_the_calldata_floor() -> None:
    """Under cancun the EIP-7623 floor does not apply, so cheap calldata needs less gas."""
    raw = sign(ALICE, data=b"\x01" * 100, gas=22_600)
    cancun = BlockInput(**{**_block_fields(), "fork": "cancun"})
    result = run(raw, sender(), empty(ALICE), empty(COINBASE), block=cancun)
    assert result.valid and result.gas_used == 21_000 + 16 * 100
    prague = run(raw, sender(), empty(ALICE), empty(COINBASE))
    assert prague.reject_reason == "intrinsic_gas_too_high"
    unknown = BlockInput(**{**_block_fields(), "fork": "frontier"})
    refused = run(raw, sender(), block=unknown)
    assert (refused.reject_reason, refused.error) == ("unsupported_fork", "frontier")


def _block_fields() -> dict[str, Any]:
    return {f: getattr(BLOCK, f) for f in BlockInput.__dataclass_fields__}


# --- contracts -----------------------------------------------------------------------------------


def test_erc20_transfer_updates_two_slots_and_logs() -> None:
    """A token transfer changes both balance slots, emits Transfer and returns true."""
    from_slot, to_slot = balance_slot(SENDER), balance_slot(ALICE)
    token = contract(TOKEN, TOKEN_CODE, {from_slot: 1_000, to_slot: 5})
    result = run(sign(TOKEN, data=transfer_call(ALICE, 300)), sender(), token, empty(COINBASE))
    assert result.valid and result.status == "success", result
    assert result.return_data == word(1)
    assert sorted(result.storage_changes) == list(result.storage_changes)
    assert {(c.slot, c.old, c.new) for c in result.storage_changes} == {
        (from_slot, word(1_000), word(700)),
        (to_slot, word(5), word(305)),
    }
    assert all(c.address == TOKEN for c in result.storage_changes)
    (log,) = result.logs
    assert log.address == TOKEN
    assert log.topics == (TRANSFER_TOPIC, SENDER.rjust(32, b"\x00"), ALICE.rjust(32, b"\x00"))
    assert log.data == word(300)
    # Only the sender (fees, nonce) and the coinbase change as accounts; the token does not.
    assert [c.address for c in result.account_changes] == sorted([SENDER, COINBASE])
    assert 21_000 < result.gas_used < 200_000
    assert change(result, SENDER).balance_before - change(result, SENDER).balance_after == (
        result.gas_used * (BASE_FEE + TIP)
    )


def test_revert_keeps_reason_bytes_and_undoes_writes() -> None:
    """A REVERT is a valid tx with status revert, its reason bytes, fees paid, writes undone."""
    reason = bytes.fromhex("08c379a0") + word(32) + word(4) + b"nope".ljust(32, b"\x00")
    code = asm(
        1, "PUSH0", "SSTORE",  # written, then undone by the revert
        len(reason), "@data", "PUSH0", "CODECOPY", len(reason), "PUSH0", "REVERT",
        "::data", Raw(reason),
    )  # fmt: skip
    result = run(sign(CONTRACT), sender(), contract(CONTRACT, code, {word(0): 0}), empty(COINBASE))
    assert result.valid and result.status == "revert"
    assert result.return_data == reason
    assert result.error == "Revert"
    assert result.storage_changes == () and result.logs == ()
    assert change(result, SENDER).nonce_after == 1
    assert 21_000 < result.gas_used < 200_000


def test_out_of_gas_halts_and_burns_the_gas_limit() -> None:
    """An endless loop halts with OutOfGas, consuming the whole gas limit."""
    code = asm(":loop", "@loop", "JUMP")
    result = run(sign(CONTRACT, gas=60_000), sender(), contract(CONTRACT, code), empty(COINBASE))
    assert result.valid and result.status == "halt"
    assert result.error == "OutOfGas"
    assert result.gas_used == 60_000
    assert result.return_data == b""
    assert change(result, SENDER).balance_after == ETHER - 60_000 * (BASE_FEE + TIP)


def test_create_transaction_deploys_code_on_fresh_storage() -> None:
    """A creation tx deploys the runtime, sets nonce 1 and its constructor writes fresh slots."""
    runtime = asm("PUSH0", "SLOAD", "PUSH0", "MSTORE", 32, "PUSH0", "RETURN")
    constructor = asm(0x2A, 7, "SSTORE")  # storage[7] = 42, a slot nobody provided
    created = created_address(SENDER, 0)
    result = run(
        sign(None, data=initcode(runtime, constructor), gas=300_000),
        sender(),
        empty(created),
        empty(COINBASE),
    )
    assert result.valid and result.status == "success", result
    assert change(result, created) == AccountChange(created, 0, 0, 0, 1, runtime)
    assert result.storage_changes[0][:2] == (created, word(7))
    assert result.storage_changes[0].new == word(42)


def test_create_and_create2_opcodes_deploy_children() -> None:
    """CREATE and CREATE2 from a factory deploy code at the addresses the rules predict."""
    runtime = asm("PUSH0", "PUSH0", "RETURN")
    child_init = initcode(runtime)
    factory_code = asm(
        "CALLDATASIZE", "PUSH0", "PUSH0", "CALLDATACOPY",
        "CALLDATASIZE", "PUSH0", "PUSH0", "CREATE", "PUSH0", "SSTORE",
        1, "CALLDATASIZE", "PUSH0", "PUSH0", "CREATE2", 1, "SSTORE",
    )  # fmt: skip
    factory = contract(CONTRACT, factory_code, {word(0): 0, word(1): 0})
    by_create = created_address(CONTRACT, 1)
    by_create2 = keccak(b"\xff" + CONTRACT + word(1) + keccak(child_init))[12:]
    result = run(
        sign(CONTRACT, data=child_init, gas=400_000),
        sender(),
        factory,
        empty(by_create),
        empty(by_create2),
        empty(COINBASE),
    )
    assert result.valid and result.status == "success", result
    assert change(result, by_create) == AccountChange(by_create, 0, 0, 0, 1, runtime)
    assert change(result, by_create2) == AccountChange(by_create2, 0, 0, 0, 1, runtime)
    assert change(result, CONTRACT).nonce_after == 3
    assert {c.slot: c.new for c in result.storage_changes} == {
        word(0): by_create.rjust(32, b"\x00"),
        word(1): by_create2.rjust(32, b"\x00"),
    }


def test_selfdestruct_moves_the_balance_but_keeps_the_contract() -> None:
    """EIP-6780: SELFDESTRUCT of an existing contract only sends its balance to the beneficiary."""
    code = asm(ALICE, "SELFDESTRUCT")
    doomed = AccountInput(CONTRACT, balance=777, nonce=1, code=code)
    result = run(sign(CONTRACT), sender(), doomed, empty(ALICE), empty(COINBASE))
    assert result.valid and result.status == "success"
    assert change(result, CONTRACT) == AccountChange(CONTRACT, 777, 0, 1, 1, b"")
    assert change(result, ALICE) == AccountChange(ALICE, 0, 777, 0, 0, b"")


def test_context_reads_are_the_opcodes_the_code_ran() -> None:
    """Only block-context opcodes the code executed are reported, not py-evm's own reads."""
    code = asm(
        "TIMESTAMP", "POP", "NUMBER", "POP", "COINBASE", "POP", "BASEFEE", "POP", "CHAINID", "POP",
        1, "NUMBER", "SUB", "BLOCKHASH", "PUSH0", "SSTORE",
    )  # fmt: skip
    result = run(sign(CONTRACT), sender(), contract(CONTRACT, code, {word(0): 0}), empty(COINBASE))
    assert result.valid and result.status == "success", result
    assert result.context_reads == ("BASEFEE", "BLOCKHASH", "COINBASE", "NUMBER", "TIMESTAMP")
    assert result.storage_changes[0].new == b"\x99" * 32
    # A plain transfer reads base fee and coinbase inside py-evm, which is not a context read.
    plain = run(sign(ALICE, value=1), sender(), empty(ALICE), empty(COINBASE))
    assert plain.context_reads == ()


def test_transient_storage_is_not_a_storage_change() -> None:
    """TSTORE/TLOAD values flow through execution but never appear as storage changes."""
    code = asm(0x42, 1, "TSTORE", 1, "TLOAD", "PUSH0", "SSTORE")
    result = run(sign(CONTRACT), sender(), contract(CONTRACT, code, {word(0): 0}), empty(COINBASE))
    assert result.valid and result.status == "success", result
    assert [(c.slot, c.new) for c in result.storage_changes] == [(word(0), word(0x42))]


def test_precompiles_run_without_being_provided() -> None:
    """ecrecover, sha256 and identity answer calls though no precompile account was given."""
    msg_hash = keccak(b"ioswarm")
    signature = PrivateKey(KEY).sign_msg_hash(msg_hash)
    code = asm(
        0x61, "PUSH0", "MSTORE",
        32, 32, 32, "PUSH0", 2, "GAS", "STATICCALL", "POP", 32, "MLOAD", "PUSH0", "SSTORE",
        32, 64, 32, "PUSH0", 4, "GAS", "STATICCALL", "POP", 64, "MLOAD", 1, "SSTORE",
        msg_hash, 128, "MSTORE", signature.v + 27, 160, "MSTORE",
        word(signature.r), 192, "MSTORE", word(signature.s), 224, "MSTORE",
        32, 256, 128, 128, 1, "GAS", "STATICCALL", "POP", 256, "MLOAD", 2, "SSTORE",
    )  # fmt: skip
    target = contract(CONTRACT, code, {word(0): 0, word(1): 0, word(2): 0})
    result = run(sign(CONTRACT), sender(), target, empty(COINBASE))
    assert result.valid and result.status == "success", result
    assert {c.slot: c.new for c in result.storage_changes} == {
        word(0): hashlib.sha256(word(0x61)).digest(),
        word(1): word(0x61),
        word(2): SENDER.rjust(32, b"\x00"),
    }


# --- missing state -----------------------------------------------------------------------------


def test_withheld_slot_is_missing_state_naming_the_slot() -> None:
    """A token transfer whose recipient slot was not provided is missing_state, not zero."""
    from_slot, to_slot = balance_slot(SENDER), balance_slot(ALICE)
    token = contract(TOKEN, TOKEN_CODE, {from_slot: 1_000})
    result = run(sign(TOKEN, data=transfer_call(ALICE, 300)), sender(), token, empty(COINBASE))
    assert not result.valid
    assert result.reject_reason == "missing_state"
    assert result.missing == (MissingKey("storage", TOKEN, to_slot),)
    assert result.storage_changes == () and result.account_changes == ()


def test_withheld_account_is_missing_state_naming_the_account() -> None:
    """A transfer to an account that was not provided (not even as empty) is missing_state."""
    result = run(sign(ALICE, value=1), sender(), empty(COINBASE))
    assert result.reject_reason == "missing_state"
    assert result.missing == (MissingKey("account", ALICE),)
    assert str(result.missing[0]) == f"account 0x{ALICE.hex()}"


def test_withheld_sender_is_missing_state() -> None:
    """Without the sender's account nothing can be decided: missing_state, not a nonce error."""
    result = run(sign(ALICE), empty(ALICE), empty(COINBASE))
    assert result.missing == (MissingKey("account", SENDER),)


def test_balance_of_an_unprovided_precompile_is_missing_state() -> None:
    """A precompile's code is known, but its balance is state and must be provided."""
    code = asm(2, "BALANCE", "PUSH0", "SSTORE")
    target = contract(CONTRACT, code, {word(0): 0})
    result = run(sign(CONTRACT), sender(), target, empty(COINBASE))
    assert result.missing == (MissingKey("account", bytes(19) + b"\x02"),)
    provided = run(sign(CONTRACT), sender(), target, empty(COINBASE), empty(bytes(19) + b"\x02"))
    assert provided.valid and provided.storage_changes == ()


def test_withheld_block_hash_is_missing_state() -> None:
    """BLOCKHASH of a recent block whose hash was not given is missing, never zero."""
    code = asm(990, "BLOCKHASH", "PUSH0", "SSTORE")
    target = contract(CONTRACT, code, {word(0): 0})
    result = run(sign(CONTRACT), sender(), target, empty(COINBASE))
    assert result.missing == (MissingKey("block_hash", number=990),)


def test_unprovided_coinbase_gets_the_fee_but_no_account_change() -> None:
    """A coinbase left out of the input still earns the fee, reported only as coinbase_fee."""
    result = run(sign(ALICE, value=1), sender(), empty(ALICE))
    assert result.valid
    assert COINBASE not in {c.address for c in result.account_changes}
    assert result.coinbase_fee == 21_000 * TIP


# --- the L3 validator ----------------------------------------------------------------------------


def _u256(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _state(account: AccountInput) -> pb.AccountState:
    code_hash = keccak(account.code)
    return pb.AccountState(
        account=pb.AccountSnapshot(
            address=account.address,
            balance=_u256(account.balance),
            nonce=account.nonce,
            code_hash=code_hash,
        ),
        code=account.code,
        storage=[pb.StorageSlot(key=k, value=v) for k, v in account.storage.items()],
    )


def _batch(*tasks: pb.TaskPackage) -> pb.TaskBatch:
    context = pb.BlockContext(
        number=BLOCK.number,
        timestamp=BLOCK.timestamp,
        gas_limit=BLOCK.gas_limit,
        base_fee=_u256(BLOCK.base_fee),
        coinbase=COINBASE,
        prev_randao=BLOCK.prev_randao,
        chain_id=CHAIN_ID,
        evm_fork="prague",
        recent_block_hashes=[pb.BlockHash(number=n, hash=h) for n, h in BLOCK.block_hashes.items()],
        blob_base_fee=_u256(1),
    )
    return pb.TaskBatch(batch_id="b1", tasks=tasks, chain_id=CHAIN_ID, block_context=context)


def _task(raw: bytes, *accounts: AccountInput) -> pb.TaskPackage:
    return pb.TaskPackage(
        task_id=7, tx_raw=raw, level=pb.L3, accounts=[_state(a) for a in accounts]
    )


def test_l3_validator_reports_the_execution() -> None:
    """L3Validator fills status, gas, logs, state and account changes and the sender."""
    from_slot, to_slot = balance_slot(SENDER), balance_slot(ALICE)
    token = contract(TOKEN, TOKEN_CODE, {from_slot: 1_000, to_slot: 0})
    task = _task(sign(TOKEN, data=transfer_call(ALICE, 300)), sender(), token, empty(COINBASE))
    result = L3Validator().validate(task, _batch(task))
    assert result.task_id == 7 and result.valid and not result.declined
    assert result.status == pb.EXEC_SUCCESS
    assert result.sender == SENDER
    assert result.gas_used > 21_000 and result.gas_estimate > 21_000
    assert result.return_data == word(1)
    assert len(result.logs) == 1 and result.logs[0].topics[0] == TRANSFER_TOPIC
    assert {(c.slot, c.new_value) for c in result.state_changes} == {
        (from_slot, word(700)),
        (to_slot, word(300)),
    }
    coinbase = next(c for c in result.account_changes if c.address == COINBASE)
    assert int.from_bytes(coinbase.balance_after, "big") == result.gas_used * TIP
    assert list(result.context_reads) == []
    assert result.latency_us > 0


def test_l3_validator_rejects_a_bad_signature_before_executing() -> None:
    """A transaction whose signature does not recover is rejected at L1, without execution."""
    raw = bytearray(sign(ALICE))
    raw[-1] ^= 0xFF  # corrupt s
    task = _task(bytes(raw), sender(), empty(ALICE), empty(COINBASE))
    result = L3Validator().validate(task, _batch(task))
    assert not result.valid and result.reject_reason
    assert result.status == pb.EXEC_STATUS_UNSPECIFIED and not result.account_changes


def test_l3_validator_declines_on_missing_state() -> None:
    """Missing state is reported as declined with missing_state and the missing key."""
    task = _task(sign(ALICE, value=1), sender(), empty(COINBASE))
    result = L3Validator().validate(task, _batch(task))
    assert not result.valid and result.declined
    assert result.reject_reason == "missing_state"
    assert ALICE.hex() in result.exec_error


def test_l3_validator_treats_code_it_was_not_sent_as_missing() -> None:
    """An account whose code hash promises code the task does not carry is never run as empty."""
    task = _task(sign(CONTRACT), sender(), empty(COINBASE))
    task.accounts.append(
        pb.AccountState(
            account=pb.AccountSnapshot(address=CONTRACT, nonce=1, code_hash=keccak(b"\x00"))
        )
    )
    result = L3Validator().validate(task, _batch(task))
    assert result.declined and result.reject_reason == "missing_state"
    assert CONTRACT.hex() in result.exec_error


def test_l3_validator_falls_back_to_l2_for_lower_levels() -> None:
    """A task below L3 is validated by the L2 rules, not executed."""
    task = pb.TaskPackage(
        task_id=1,
        tx_raw=sign(ALICE, value=1),
        level=pb.L2,
        block_gas_limit=30_000_000,
        sender=pb.AccountSnapshot(address=SENDER, balance=_u256(ETHER), nonce=0),
    )
    result = L3Validator().validate(task, _batch(task))
    assert result.valid and result.sender == SENDER
    assert result.status == pb.EXEC_STATUS_UNSPECIFIED
    assert L3Validator.level is Level.L3


def _blob_tx(value: int) -> bytes:
    """A blob tx from SENDER (block form, one blob, fee cap 10 gwei, blob fee cap 10)."""
    fields = [CHAIN_ID, 0, TIP, 10 * GWEI, 21_000, ALICE, value, b"", [], 10, [b"\x01" * 32]]
    signature = PrivateKey(KEY).sign_msg_hash(keccak(b"\x03" + rlp.encode(fields)))
    return b"\x03" + rlp.encode([*fields, signature.v, signature.r, signature.s])


@pytest.mark.parametrize(
    "balance",
    [
        # Pays gas at the effective price and the blob gas, not the value: py-evm raised
        # InsufficientFunds out of execute() here, which stopped the agent.
        ETHER + 21_000 * (BASE_FEE + TIP),
        ETHER + 21_000 * (BASE_FEE + TIP) + 131_072 * BLOCK.blob_base_fee - 1,
        # Covers value + gas x fee cap but not the blob gas x blob fee cap (the L2 rule).
        ETHER + 21_000 * 10 * GWEI + 131_072 * 10 - 1,
    ],
)
def test_blob_tx_the_sender_cannot_fully_pay_is_rejected_not_raised(balance: int) -> None:
    """The L2 balance rule, blob gas included, holds at L3: a rejection, never an exception."""
    result = run(_blob_tx(ETHER), sender(balance), empty(ALICE), empty(COINBASE))
    assert (result.valid, result.reject_reason) == (False, "insufficient_balance")
    enough = run(_blob_tx(ETHER), sender(ETHER + 21_000 * 10 * GWEI + 131_072 * 10), empty(ALICE))
    assert enough.valid


def test_an_engine_failure_is_declared_and_declined(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever py-evm raises becomes an engine_error decline; the validator serves on."""
    real = evm.provided_state

    def broken(*args: Any, **kwargs: Any) -> Any:
        state = real(*args, **kwargs)

        def explode(tx: Any) -> Any:
            raise ZeroDivisionError("a bug somewhere in the VM")

        state.apply_transaction = explode
        return state

    monkeypatch.setattr(evm, "provided_state", broken)
    raw = sign(ALICE, value=5, gas=21_000)
    result = run(raw, sender(), empty(ALICE), empty(COINBASE))
    assert (result.valid, result.reject_reason, result.error) == (
        False,
        "engine_error",
        "ZeroDivisionError",
    )
    assert result.declined
    task = _task(raw, sender(), empty(ALICE), empty(COINBASE))
    answer = L3Validator().validate(task, _batch(task))
    assert answer.declined and answer.reject_reason == "engine_error"
