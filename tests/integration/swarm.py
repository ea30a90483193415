"""Building blocks for integration tests: a coordinator on free ports, in-process agents, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
from eth_account import Account

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig, CoordinatorConfig, parse_config
from ioswarm.coordinator.app import CoordinatorApp
from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import auth_metadata
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually

SECRET = "integration-test-master-secret"
WALLET = "0x" + "42" * 20
GWEI = 10**9
RECIPIENT = "0x" + "77" * 20


def coordinator_config(node_url: str, **overrides: Any) -> CoordinatorConfig:
    data: dict[str, Any] = {
        "nodeRpcUrl": node_url,
        "grpcPort": 0,
        "swarmApiPort": 0,
        "masterSecret": SECRET,
        "pollIntervalMs": 200,
        "taskLevel": "L2",
        # Each coordinator keeps its own reward ledger, never in the working tree.
        "dataDir": tempfile.mkdtemp(prefix="ioswarm-test-"),
    }
    data.update(overrides)
    return parse_config(data, {})


@contextlib.asynccontextmanager
async def running_coordinator(node_url: str, **overrides: Any) -> AsyncIterator[CoordinatorApp]:
    async with CoordinatorApp(coordinator_config(node_url, **overrides)) as app:
        yield app


@dataclass
class RunningAgent:
    agent: Agent
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.agent.shutdown("test")
        await asyncio.wait_for(self.task, 10)

    def kill(self) -> None:
        """Vanish without a goodbye, like a killed process."""
        self.task.cancel()


def start_agent(
    port: int, agent_id: str, level: Level, tls: bool = False, ca_cert: str = ""
) -> RunningAgent:
    cfg = AgentConfig(
        coordinator=f"localhost:{port}" if tls else f"127.0.0.1:{port}",
        agent_id=agent_id,
        api_key=agent_token(SECRET, agent_id),
        wallet=WALLET,
        level=level.name,
        tls=tls,
        ca_cert=ca_cert,
        reconnect_max_sec=1.0,
    )
    agent = Agent(cfg, validator_for(level))
    return RunningAgent(agent, asyncio.create_task(agent.run()))


async def drive_until_compared(anvil: AnvilProcess, app: CoordinatorApp, n: int) -> None:
    """Send transfers until ``n`` verdicts were compared, then wait until nothing is in flight.

    A tx mined before the mempool poll sees it makes no task, so keep sending until enough
    verdicts are in rather than counting on any one tx.
    """
    c = app.coordinator
    key = anvil.private_keys[0]
    sent: list[bytes] = []
    async with JsonRpcNode(anvil.url) as node:

        async def step() -> bool:
            if c.shadow.totals().compared >= n:
                return True
            sent.append(
                await node.send_raw_transaction(signed_transfer(key, c.chain_id, len(sent)))
            )
            return False

        await eventually(step, 60, interval=0.5, what=f"{n} shadow comparisons")

        async def all_included() -> bool:
            for h in sent:
                if await node.call("eth_getTransactionReceipt", ["0x" + h.hex()]) is None:
                    return False
            return True

        await eventually(all_included, 30, what="every sent tx included")
    polls = c.poller.polls
    await eventually(
        lambda: (
            c.poller.polls >= polls + 2 and c.scheduler.open_tasks == 0 and c.shadow.pending == 0
        ),
        30,
        what="no task in flight and no verdict pending",
    )


def metadata(agent_id: str, token: str | None = None) -> tuple[tuple[str, str], ...]:
    return auth_metadata(agent_id, token if token is not None else agent_token(SECRET, agent_id))


def register_request(agent_id: str, level: Level = Level.L2) -> pb.RegisterRequest:
    return pb.RegisterRequest(
        agent_id=agent_id, capability=int(level), region="test", version="t", wallet_address=WALLET
    )


@contextlib.asynccontextmanager
async def stub(port: int) -> AsyncIterator[pb_grpc.IOSwarmStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.IOSwarmStub(channel)


def make_test_pki(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for localhost/127.0.0.1: (ca, cert, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ioswarm test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TcpProxy:
    """A loopback TCP proxy the test can cut and restore, to take a node 'down' and back."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and drop open ones."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for w in list(self._conns):
            w.close()
        self._conns.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._conns.discard(writer)
        self._conns.discard(up_writer)


def signed_transfer(key: str, chain_id: int, nonce: int = 0) -> bytes:
    """A 1-wei EIP-1559 transfer to RECIPIENT, signed by ``key``."""
    tx = {
        "type": 2,
        "chainId": chain_id,
        "nonce": nonce,
        "to": RECIPIENT,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": 50 * GWEI,
        "maxPriorityFeePerGas": 2 * GWEI,
    }
    return bytes(Account.sign_transaction(tx, key).raw_transaction)
