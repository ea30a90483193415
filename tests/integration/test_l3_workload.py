"""The contract workload against a real anvil: every category executes as the EVM should."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

import pytest
from eth_abi.abi import decode
from eth_hash.auto import keccak

from ioswarm.errors import NodeError
from ioswarm.node import JsonRpcNode
from ioswarm.sim.anvil import AnvilProcess
from ioswarm.sim.artifacts import mapping_slot, word
from ioswarm.sim.l3calls import CATEGORIES, CONTEXT_READERS, SETCODE_CATEGORIES, Category
from ioswarm.sim.l3workload import ContractWorkload, expected_status
from ioswarm.sim.workload import TX_KINDS, TxKind
from tests.helpers import eventually

pytestmark = pytest.mark.integration

CHAIN_ID = 31337
COINBASE = bytes.fromhex("c0ffee00000000000000000000000000000c0ffe")
# What each context reader stores, as named in eth_getBlockByNumber (BLOCKHASH(n-1) is the
# including block's parent hash, PREVRANDAO its mixHash).
HEADER_FIELDS = {
    "ctx_blockhash": "parentHash",
    "ctx_timestamp": "timestamp",
    "ctx_coinbase": "miner",
    "ctx_basefee": "baseFeePerGas",
    "ctx_prevrandao": "mixHash",
    "ctx_gaslimit": "gasLimit",
}


@pytest.fixture
async def node(anvil: AnvilProcess) -> AsyncIterator[JsonRpcNode]:
    """An adapter on the anvil that mines every second."""
    async with JsonRpcNode(anvil.url) as client:
        yield client


@pytest.fixture
async def workload(anvil: AnvilProcess, node: JsonRpcNode) -> ContractWorkload:
    """A contract workload with every contract deployed, tokens minted and storage seeded."""
    wl = ContractWorkload(node, anvil.private_keys[2], CHAIN_ID, accounts=3, seed=11)
    await wl.setup()
    return wl


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


async def _receipts(node: JsonRpcNode, hashes: Iterable[bytes]) -> dict[bytes, dict[str, Any]]:
    """Poll eth_getTransactionReceipt until every hash has one."""
    wanted = list(hashes)
    out: dict[bytes, dict[str, Any]] = {}

    async def all_included() -> bool:
        for h in wanted:
            if h not in out:
                receipt = await node.call("eth_getTransactionReceipt", [_hex(h)])
                if receipt is not None:
                    out[h] = receipt
        return all(h in out for h in wanted)

    await eventually(all_included, timeout=30, interval=0.1, what="receipts")
    return out


async def _storage(node: JsonRpcNode, address: bytes, slot: int, block: str = "latest") -> int:
    value = await node.call("eth_getStorageAt", [_hex(address), hex(slot), block])
    return int(value, 16)


async def _tx_args(node: JsonRpcNode, tx_hash: bytes, types: list[str]) -> tuple[Any, ...]:
    tx = await node.call("eth_getTransactionByHash", [_hex(tx_hash)])
    return decode(types, bytes.fromhex(tx["input"][2 + 8 :]))


async def test_every_category_lands_with_its_expected_status(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """Each category sent as EIP-1559, legacy and EIP-2930 is included with status 1, except
    reverts and out-of-gas with status 0; out-of-gas uses its whole gas limit, reverts do not."""
    sent: dict[bytes, tuple[Category, TxKind]] = {}
    for n, category in enumerate(CATEGORIES):
        for m, kind in enumerate(TX_KINDS):
            tx_hash = await workload.send(category, kind, sender=(n + m) % 3)
            sent[tx_hash] = (category, kind)
    receipts = await _receipts(node, sent)

    statuses = {sent[h]: int(r["status"], 16) for h, r in receipts.items()}
    assert statuses == {(c, k): expected_status(c) for c in CATEGORIES for k in TX_KINDS}
    for tx_hash, (category, kind) in sent.items():
        gas_used = int(receipts[tx_hash]["gasUsed"], 16)
        tx = await node.call("eth_getTransactionByHash", [_hex(tx_hash)])
        if category in SETCODE_CATEGORIES:
            assert int(tx["type"], 16) == 4 and tx["authorizationList"], category
            continue
        assert int(tx["type"], 16) == {"legacy": 0, "eip2930": 1, "eip1559": 2}[kind]
        if kind == "eip2930" and category != "create_tx":
            assert tx["accessList"], f"{category} sent without an access list"
        if category == "out_of_gas":
            assert gas_used == int(tx["gas"], 16)
        elif category.startswith("revert_"):
            assert gas_used < int(tx["gas"], 16)
    assert workload.counters.sent == dict.fromkeys(CATEGORIES, len(TX_KINDS))
    assert workload.counters.total_errors == 0


async def test_create2_lands_at_the_predicted_address(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """Each CREATE2 child has code at the address computed before sending, and the factory's
    own prediction and the child's storage agree; CREATE children have code too."""
    factory = workload.address_of("Factory")
    child = workload.artifact["Child"]
    created = [await workload.send_create2(kind) for kind in TX_KINDS]
    plain = [await workload.send("create", kind) for kind in TX_KINDS]
    receipts = await _receipts(node, [h for h, _ in created] + plain)
    assert all(r["status"] == "0x1" for r in receipts.values())

    factory_abi = workload.artifact["Factory"]
    for tx_hash, address in created:
        code = await node.call("eth_getCode", [_hex(address), "latest"])
        assert len(code) == len(_hex(child.deployed_bytecode))
        salt, value = await _tx_args(node, tx_hash, ["bytes32", "uint256"])
        answer = await node.call(
            "eth_call",
            [{"to": _hex(factory), "data": _hex(factory_abi.encode_call("predict", salt, value))}],
        )
        assert bytes.fromhex(answer[2:])[12:] == address
        assert await _storage(node, address, child.slot("value")) == value
    created_topic = _hex(keccak(b"Created(address,bool,bytes32)"))
    for tx_hash in plain:
        (log,) = [g for g in receipts[tx_hash]["logs"] if g["topics"][0] == created_topic]
        address = bytes.fromhex(log["topics"][1][2:])[12:]
        assert await node.call("eth_getCode", [_hex(address), "latest"]) != "0x"


async def test_context_readers_store_the_including_blocks_header_fields(
    anvil: AnvilProcess, workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """Each context reader's slot, read at the including block, equals that block's header
    field (or the reader's balance for SELFBALANCE), for all three transaction types."""
    # anvil mines to the zero address by default, which would make the coinbase check vacuous.
    await anvil.rpc("anvil_setCoinbase", [_hex(COINBASE)])
    reader = workload.address_of("ContextReader")
    layout = workload.artifact["ContextReader"]
    sent = {
        await workload.send(category, kind): category
        for category in CONTEXT_READERS
        for kind in TX_KINDS
    }
    receipts = await _receipts(node, sent)

    for tx_hash, category in sent.items():
        receipt = receipts[tx_hash]
        assert receipt["status"] == "0x1"
        block = receipt["blockNumber"]
        header: Mapping[str, str] = await node.call("eth_getBlockByNumber", [block, False])
        stored = await _storage(node, reader, layout.slot(CONTEXT_READERS[category][1]), block)
        if category == "ctx_selfbalance":
            expected = await node.call("eth_getBalance", [_hex(reader), block])
        else:
            expected = header[HEADER_FIELDS[category]]
        assert stored == int(expected, 16), category
    coinbase_slot = layout.slot("coinbase")
    assert await _storage(node, reader, coinbase_slot) == int.from_bytes(COINBASE, "big")


async def test_precompile_transient_and_token_results_are_stored(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """ecrecover, sha256, modexp and identity results, the transient lock's counters and the
    token balance slot (as the access lists compute it) hold the values computed here."""
    sender = workload.addresses[0]
    sends = {
        c: await workload.send(c, "eip2930", sender=0)
        for c in (
            "precompile_ecrecover",
            "precompile_sha256",
            "precompile_modexp",
            "precompile_identity",
            "transient",
            "erc20_transfer",
        )
    }
    receipts = await _receipts(node, sends.values())
    assert all(r["status"] == "0x1" for r in receipts.values())

    caller, pc = workload.address_of("PrecompileCaller"), workload.artifact["PrecompileCaller"]
    assert await _storage(node, caller, pc.slot("lastSigner")) == int.from_bytes(sender, "big")
    (data,) = await _tx_args(node, sends["precompile_sha256"], ["bytes"])
    assert (
        word(await _storage(node, caller, pc.slot("lastSha256"))) == hashlib.sha256(data).digest()
    )
    base, exponent, modulus = await _tx_args(
        node, sends["precompile_modexp"], ["uint256", "uint256", "uint256"]
    )
    assert await _storage(node, caller, pc.slot("lastModexp")) == pow(base, exponent, modulus)
    (data,) = await _tx_args(node, sends["precompile_identity"], ["bytes"])
    assert word(await _storage(node, caller, pc.slot("lastIdentity"))) == bytes(keccak(data))
    assert await _storage(node, caller, pc.slot("calls")) == 4

    lock, tl = workload.address_of("TransientLock"), workload.artifact["TransientLock"]
    (amount,) = await _tx_args(node, sends["transient"], ["uint256"])
    assert await _storage(node, lock, tl.slot("blockedReentries")) == 1
    assert await _storage(node, lock, tl.slot("lastScratch")) == amount
    assert await _storage(node, lock, tl.slot("total")) == amount

    token, erc20 = workload.address_of("WorkloadToken"), workload.artifact["WorkloadToken"]
    answer = await node.call(
        "eth_call", [{"to": _hex(token), "data": _hex(erc20.encode_call("balanceOf", sender))}]
    )
    slot = mapping_slot(sender, erc20.slot("balanceOf"))
    assert await _storage(node, token, slot) == int(answer, 16) > 0


async def test_reverts_carry_a_reason_string_and_a_custom_error(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """Calling the reverter returns Error(string) with the reason, and the custom error
    Refused(address,uint256) with the caller."""
    reverter, abi = workload.address_of("Reverter"), workload.artifact["Reverter"]
    caller = _hex(workload.addresses[1])
    call = {"from": caller, "to": _hex(reverter)}

    with pytest.raises(NodeError) as reason:
        await node.call("eth_call", [{**call, "data": _hex(abi.encode_call("failWithReason"))}])
    # The adapter keeps only the start of the revert data; the node decodes the reason.
    assert "Reverter: refused on purpose" in reason.value.detail
    assert "data=" + _hex(bytes(keccak(b"Error(string)"))[:4]) in reason.value.detail

    with pytest.raises(NodeError) as custom:
        await node.call(
            "eth_call", [{**call, "data": _hex(abi.encode_call("failWithCustomError"))}]
        )
    refused = bytes(keccak(b"Refused(address,uint256)"))[:4] + word(workload.addresses[1])
    assert _hex(refused) in custom.value.detail


async def test_run_sends_a_weighted_mix_and_nothing_gets_stuck(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """run(count=...) sends exactly that many transactions, only of weighted categories, and
    every sender's pending nonce is eventually mined."""
    workload.weights = {"erc20_transfer": 3, "storage_heavy": 1, "revert_custom": 1, "create2": 1}
    before = dict(workload.counters.sent)
    counters = await workload.run(count=30, rate=60)

    sent = {c: n - before[c] for c, n in counters.sent.items() if n != before[c]}
    assert sum(sent.values()) == 30
    assert set(sent) <= set(workload.weights)
    assert counters.total_errors == 0

    async def drained() -> bool:
        for address in workload.addresses:
            latest = await node.call("eth_getTransactionCount", [_hex(address), "latest"])
            pending = await node.call("eth_getTransactionCount", [_hex(address), "pending"])
            if latest != pending:
                return False
        return True

    assert await eventually(drained, timeout=30, interval=0.2, what="all sends mined")


async def test_probes_see_absent_empty_and_delegated_accounts_as_the_evm_does(
    workload: ContractWorkload, node: JsonRpcNode
) -> None:
    """EXTCODEHASH is 0 for an absent account, keccak("") for an existing code-less one and the
    designator's hash for a delegated one; EXTCODESIZE 0, 0 and 23; a re-deploy lands at the
    same address each time and leaves nothing behind."""
    await workload.wait_included([await workload.send("setcode_existing", sender=0)])
    delegated = next(a for a in workload.book.pools[0] if a.target is not None)
    sends = [await workload.send(c, sender=0) for c in ("probe_absent", "probe_empty")]
    sends.append(await workload.send("probe_delegated", sender=0))
    sends += [await workload.send("create2_redeploy", sender=1) for _ in range(2)]
    receipts = await _receipts(node, sends)
    assert all(r["status"] == "0x1" for r in receipts.values())

    probe, abi = workload.address_of("Probe"), workload.artifact["Probe"]
    targets = [
        (await _tx_args(node, h, ["address"]))[0] for h in sends[:3]
    ]  # the probed addresses, as sent
    expected = [
        (0, 0),
        (int.from_bytes(keccak(b""), "big"), 0),
        (int.from_bytes(keccak(b"\xef\x01\x00" + (delegated.target or b"")), "big"), 23),
    ]
    for target, (code_hash, size) in zip(targets, expected, strict=True):
        address = bytes.fromhex(target[2:])
        assert await _storage(node, probe, mapping_slot(address, abi.slot("codeHashOf"))) == (
            code_hash
        )
        assert await _storage(node, probe, mapping_slot(address, abi.slot("codeSizeOf"))) == size
    assert bytes.fromhex(targets[2][2:]) == delegated.address

    reborn = bytes(keccak(b"Reborn(address,bytes32,address)"))
    phoenixes = {
        g["topics"][1]
        for h in sends[3:]
        for g in receipts[h]["logs"]
        if bytes.fromhex(g["topics"][0][2:]) == reborn
    }
    assert len(phoenixes) == 1  # the same address both times
    (phoenix,) = phoenixes
    assert await node.call("eth_getCode", ["0x" + phoenix[-40:], "latest"]) == "0x"
