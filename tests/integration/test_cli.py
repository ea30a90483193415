"""The ioswarm command as operators run it: one-line errors, exit codes, clean SIGTERM."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import pytest

from ioswarm.core.tokens import agent_token
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import SECRET, WALLET, running_coordinator

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "ioswarm_cli.main"]


async def run_cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_keygen_from_flag_and_stdin() -> None:
    """keygen prints the HMAC key, from --secret or from stdin."""
    code, out, _ = await run_cli("keygen", "--secret", "abc", "--agent-id", "a-1")
    assert code == 0 and out.strip() == agent_token("abc", "a-1")
    code, out, _ = await run_cli("keygen", "--agent-id", "a-1", stdin=b"abc\n")
    assert code == 0 and out.strip() == agent_token("abc", "a-1")


async def test_bad_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    """A bad config exits 2 with one stderr line that names the key."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("masterSecret: 0123456789abcdef0\ngrpcPort: banana\n")
    code, _, err = await run_cli("coordinator", "--config", str(cfg), "--check")
    assert code == 2
    assert err.strip().count("\n") == 0 and "grpcPort" in err
    cfg.write_text("masterSecret: 0123456789abcdef0\n")
    code, out, _ = await run_cli("coordinator", "--config", str(cfg), "--check")
    assert code == 0 and "config ok" in out


async def test_agent_flag_errors_name_the_flag() -> None:
    """A malformed agent flag exits 2 naming the flag."""
    code, _, err = await run_cli(
        "agent",
        "--coordinator",
        "nohostport",
        "--agent-id",
        "a",
        "--api-key",
        "x",
        "--wallet",
        WALLET,
    )
    assert code == 2 and "--coordinator" in err


async def test_agent_process_exits_cleanly_on_sigterm(anvil_manual: AnvilProcess) -> None:
    """A real agent process registers, streams, and exits 0 on SIGTERM."""
    async with running_coordinator(anvil_manual.url) as app:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "agent",
            "--coordinator",
            f"127.0.0.1:{app.grpc_port}",
            "--agent-id",
            "proc-1",
            "--api-key",
            agent_token(SECRET, "proc-1"),
            "--wallet",
            WALLET,
            "--level",
            "L1",
            "--no-tls",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 1, 60)
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()[-2000:]
        assert SECRET not in err.decode() and agent_token(SECRET, "proc-1") not in err.decode()
        await eventually(lambda: app.coordinator.dispatcher.stream_count() == 0, 20)


async def test_http_port_in_use_is_one_line_naming_swarm_api_port(
    anvil_manual: AnvilProcess, tmp_path: Path
) -> None:
    """``ioswarm coordinator`` with swarmApiPort already taken exits 2 with one stderr line
    naming the key and the address, and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(
            f"masterSecret: {SECRET}\n"
            f"nodeRpcUrl: {anvil_manual.url}\n"
            "grpcHost: 127.0.0.1\n"
            "grpcPort: 0\n"
            "swarmApiHost: 127.0.0.1\n"
            f"swarmApiPort: {port}\n"
            f"dataDir: {tmp_path / 'data'}\n"
            "logLevel: error\n"
        )
        code, _, err = await run_cli("coordinator", "--config", str(cfg))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "swarmApiPort" in lines[0] and f"127.0.0.1:{port}" in lines[0]
    assert "Traceback" not in err


BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"  # EIP-55 vector, last case flipped


async def test_fund_refuses_a_bad_checksum_before_sending() -> None:
    """``fund --to`` with a mistyped-case address exits 2 with one line naming --to; no
    node is needed because nothing is sent."""
    code, out, err = await run_cli(
        "fund",
        "--rpc",
        "http://127.0.0.1:9",
        "--key",
        "0x" + "11" * 32,
        "--to",
        BAD_CHECKSUM,
        "--amount",
        "0.1",
    )
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "--to" in err and "EIP-55" in err


async def test_agent_wallet_with_a_bad_checksum_names_the_flag() -> None:
    """``agent --wallet`` with a bad EIP-55 checksum exits 2 naming --wallet."""
    code, _, err = await run_cli(
        "agent",
        "--coordinator",
        "127.0.0.1:9",
        "--agent-id",
        "a",
        "--api-key",
        agent_token(SECRET, "a"),
        "--wallet",
        BAD_CHECKSUM,
        "--no-tls",
    )
    assert code == 2 and err.strip().count("\n") == 0
    assert "--wallet" in err and "EIP-55" in err


async def test_workload_reports_progress_on_stderr(anvil: AnvilProcess) -> None:
    """``ioswarm workload`` says what it funds, ends with a 'done' progress line on stderr,
    and prints only the JSON counters on stdout."""
    code, out, err = await run_cli(
        "workload",
        "--rpc-url",
        anvil.url,
        "--funder-key",
        anvil.private_keys[0],
        "--accounts",
        "2",
        "--count",
        "6",
        "--rate",
        "50",
        "--progress-every",
        "0",
    )
    assert code == 0, err
    counters = json.loads(out)
    assert "workload: funding 2 accounts" in err
    done = [line for line in err.splitlines() if line.startswith("workload done: ")]
    assert len(done) == 1 and f"{counters['sent']}/6 tx sent" in done[0]
