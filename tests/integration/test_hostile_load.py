"""Hostile load against a coordinator process: floods of idle connections and oversized bodies
cost bounded descriptors, memory and log, while agents keep working."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import grpc
import grpc.aio
import pytest

from ioswarm.core.models import Level
from ioswarm.core.tokens import agent_token
from ioswarm.node.adapter import JsonRpcNode
from ioswarm.proto import ioswarm_pb2 as pb
from ioswarm.proto import ioswarm_pb2_grpc as pb_grpc
from ioswarm.protocol import auth_metadata
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.coordproc import CoordinatorProcess, coordinator_process
from tests.integration.swarm import SECRET, register_request, signed_transfer, start_agent

pytestmark = pytest.mark.integration

OPEN_FILES = 400  # the coordinator's whole descriptor budget in the flood test
FLOOD = 600  # idle HTTP connections the attacker holds open: more than OPEN_FILES
LOG_BOUND = 1024 * 1024
HEALTHZ_TIMEOUT = 5.0
MESSAGE_LIMIT = 4 * 1024 * 1024  # limits.maxMessageBytes (the default)


@pytest.fixture(autouse=True)
def _room_for_the_attacker() -> None:
    """The attacking test process itself needs more than 1,024 descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(hard, 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))


class IdleFlood:
    """Holds ``count`` connections open on a port, sending a partial request line and then
    nothing; reopens whatever the server closes (bounded in opens)."""

    def __init__(self, port: int, count: int, max_opens: int = 50_000) -> None:
        self.port, self.count, self.max_opens = port, count, max_opens
        self.opens = self.closed_by_server = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._stop = asyncio.Event()

    async def _hold(self) -> None:
        while not self._stop.is_set() and self.opens < self.max_opens:
            self.opens += 1
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            self._writers.add(writer)
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
                stop = asyncio.ensure_future(self._stop.wait())
                eof = asyncio.ensure_future(reader.read())
                await asyncio.wait({stop, eof}, return_when=asyncio.FIRST_COMPLETED)
                if eof.done():
                    self.closed_by_server += 1
                for fut in (stop, eof):
                    fut.cancel()
            except OSError:
                self.closed_by_server += 1
            finally:
                self._writers.discard(writer)
                writer.transport.abort()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[IdleFlood]:
        tasks = [asyncio.create_task(self._hold()) for _ in range(self.count)]
        try:
            yield self
        finally:
            self._stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def holding(self) -> int:
        return len(self._writers)


# A health prober as monitoring runs one: its own process, one request, a 5 s socket timeout.
PROBE = """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=float(sys.argv[2]))
s.sendall(b"GET /readyz HTTP/1.1\\r\\nHost: probe\\r\\nConnection: close\\r\\n\\r\\n")
data = b""
while chunk := s.recv(65536):
    data += chunk
print(data.split(b" ")[1].decode())
"""


async def healthz(port: int) -> int:
    """/readyz's status (what probes ask) as a separate prober process sees it (it fails on a
    5 s timeout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        str(port),
        str(HEALTHZ_TIMEOUT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return int(out)


async def agent_rows(session: aiohttp.ClientSession, port: int) -> dict[str, int]:
    async with session.get(f"http://127.0.0.1:{port}/swarm/agents") as resp:
        body = await resp.json()
    return {row["agent_id"]: int(row["results_accepted"]) for row in body["agents"]}


async def metric(session: aiohttp.ClientSession, port: int, prefix: str) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def test_idle_http_flood_beyond_the_fd_limit_leaves_agents_and_healthz_working(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """600 idle HTTP connections against a coordinator allowed 400 open files: agents still
    register and submit over gRPC, /readyz answers in time, and the log stays under 1 MB."""
    extra = "taskLevel: L1\ncanaryPct: 0\nlimits:\n  fdReserve: 64\n  httpIdleTimeoutSec: 5\n"
    async with (
        coordinator_process(tmp_path, anvil_manual.url, extra, open_files=OPEN_FILES) as coord,
        aiohttp.ClientSession() as session,
        JsonRpcNode(anvil_manual.url) as node,
    ):
        chain_id = await node.chain_id()
        flood = IdleFlood(coord.api_port, FLOOD)
        async with flood.running():
            await eventually(lambda: flood.opens >= FLOOD, 60, what="flood opened")
            agents = [start_agent(coord.grpc_port, f"siege-{i}", Level.L1) for i in range(3)]
            try:
                for nonce in range(6):
                    raw = signed_transfer(anvil_manual.private_keys[1], chain_id, nonce)
                    await node.send_raw_transaction(raw)
                statuses = [await healthz(coord.api_port) for _ in range(5)]

                async def all_submitted() -> bool:
                    rows = await agent_rows(session, coord.api_port)
                    return all(rows.get(f"siege-{i}", 0) > 0 for i in range(3))

                await eventually(all_submitted, 60, interval=0.5, what="agents submit results")
                statuses.append(await healthz(coord.api_port))
                fds_during = coord.open_fds()
            finally:
                for agent in agents:
                    await agent.stop()
            evicted = await metric(session, coord.api_port, "ioswarm_http_connections_closed_total")
        print(
            f"flood opens={flood.opens} closed_by_server={flood.closed_by_server} "
            f"budget_closes={evicted} fds={fds_during}/{OPEN_FILES} log={coord.log_bytes()}B"
        )
        assert statuses == [200] * 6
        assert flood.closed_by_server > 0 and evicted > 0
        assert fds_during < OPEN_FILES
        assert coord.proc.returncode is None
        assert coord.log_bytes() < LOG_BOUND
        assert "Too many open files" not in coord.log_text()


async def test_grpc_connection_flood_is_cut_and_http_keeps_answering(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """Raw connections that never finish the gRPC handshake are closed after its timeout;
    meanwhile /readyz answers and a real agent registers."""
    extra = "limits:\n  grpcHandshakeTimeoutSec: 2\n  grpcMaxConnections: 64\n"
    async with (
        coordinator_process(tmp_path, anvil_manual.url, extra) as coord,
    ):
        flood = IdleFlood(coord.grpc_port, 200, max_opens=2000)
        async with flood.running():
            await eventually(lambda: flood.closed_by_server >= 200, 60, what="handshakes cut")
            assert await healthz(coord.api_port) == 200
            async with grpc.aio.insecure_channel(f"127.0.0.1:{coord.grpc_port}") as channel:
                stub = pb_grpc.IOSwarmStub(channel)

                async def registered() -> bool:
                    md = auth_metadata("after-flood", agent_token(SECRET, "after-flood"))
                    resp = await stub.Register(register_request("after-flood"), metadata=md)
                    return bool(resp.accepted)

                assert await eventually(registered, 30, interval=0.5, what="register")
        assert coord.proc.returncode is None


async def oversized_eight(stub: pb_grpc.IOSwarmStub, body: bytes, token: str) -> set[str]:
    async def one() -> str:
        try:
            await stub.SubmitResults(
                pb.BatchResult.FromString(body), metadata=auth_metadata("big", token), timeout=60
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return "OK"

    return set(await asyncio.gather(*[one() for _ in range(8)]))


def empty_results(n_bytes: int) -> bytes:
    """A BatchResult of empty results, ~``n_bytes`` long: cheap to send, costly to decode."""
    return pb.BatchResult(
        agent_id="big", results=[pb.TaskResult() for _ in range(n_bytes // 2)]
    ).SerializeToString()


async def settled_rss(coord: CoordinatorProcess) -> int:
    await asyncio.sleep(1.0)  # let refused calls finish freeing on the server side
    return coord.rss_kib()


async def test_eight_oversized_submissions_cost_less_than_the_message_limit(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """Eight 6 MB SubmitResults at once, with and without a valid token, are refused and raise
    the resident set by less than maxMessageBytes; eight at the limit with a million results
    each are refused before decoding."""
    async with coordinator_process(tmp_path, anvil_manual.url) as coord:
        options = [("grpc.max_send_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(
            f"127.0.0.1:{coord.grpc_port}", options=options
        ) as channel:
            stub = pb_grpc.IOSwarmStub(channel)
            good = agent_token(SECRET, "big")
            await stub.Register(register_request("big"), metadata=auth_metadata("big", good))
            before = await settled_rss(coord)
            big = empty_results(6_000_000)
            for token in (good, "0" * 64):
                codes = await oversized_eight(stub, big, token)
                assert codes <= {"UNAUTHENTICATED", "RESOURCE_EXHAUSTED", "INVALID_ARGUMENT"}
            after_oversized = await settled_rss(coord)
            at_limit = empty_results(MESSAGE_LIMIT - 1024)
            assert await oversized_eight(stub, at_limit, good) == {"INVALID_ARGUMENT"}
            after_at_limit = await settled_rss(coord)
            beat = await stub.Heartbeat(
                pb.HeartbeatRequest(agent_id="big"), metadata=auth_metadata("big", good)
            )
        print(f"rss KiB before={before} oversized={after_oversized} at_limit={after_at_limit}")
        assert (after_oversized - before) * 1024 < MESSAGE_LIMIT
        # Each body at the limit is held while it is counted, never decoded: eight of them
        # cost less than eight limits (before counting they cost gigabytes).
        assert (after_at_limit - before) * 1024 < 8 * MESSAGE_LIMIT
        assert beat is not None and coord.proc.returncode is None
