"""The Go coordinator's operators' habits on a real process: its node config file runs the
coordinator, ``enabled: false`` stops it cleanly, and ``ioswarm l4test`` probes a live
coordinator's state-diff stream."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ioswarm.core.address import to_io
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import SECRET, WALLET, make_test_pki, running_coordinator
from tests.unit.test_config_reference import NODE_SECTIONS, REFERENCE_BLOCK

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "ioswarm_cli.main"]
# The CLI of this checkout, whichever one the environment installed.
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "cmd"), str(ROOT)])}


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=ENV,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def node_config(tmp_path: Path, **section: object) -> Path:
    """An iotex-core config: node sections plus the reference README's ioswarm block, with
    ``section`` overriding its keys."""
    block = yaml.safe_load(REFERENCE_BLOCK)["ioswarm"]
    block.update(section)
    path = tmp_path / "config.yaml"
    path.write_text(NODE_SECTIONS + yaml.safe_dump({"ioswarm": block}))
    return path


async def test_check_accepts_the_reference_config_nested_and_flat(tmp_path: Path) -> None:
    """``coordinator --check`` passes the reference block in a node config (one info line
    names the ignored sections) and flat."""
    code, out, err = await run_cli("coordinator", "--config", str(node_config(tmp_path)), "--check")
    assert code == 0 and out.strip() == "config ok", err
    assert (
        "info: config read the ioswarm section" in err and "sections=api,chain,log,network" in err
    )
    flat = tmp_path / "flat.yaml"
    flat.write_text(yaml.safe_dump(yaml.safe_load(REFERENCE_BLOCK)["ioswarm"]))
    code, out, err = await run_cli("coordinator", "--config", str(flat), "--check")
    assert code == 0 and out.strip() == "config ok", err


async def test_check_names_a_bad_value_inside_the_section(tmp_path: Path) -> None:
    """A mistyped io1 delegateAddress in the node config exits 2 with one line naming it."""
    bad = to_io(WALLET)[:-1] + ("q" if to_io(WALLET)[-1] != "q" else "p")
    path = node_config(tmp_path, delegateAddress=bad)
    code, _, err = await run_cli("coordinator", "--config", str(path), "--check")
    assert code == 2 and err.strip().count("\n") == 0
    assert "config ioswarm.delegateAddress:" in err


async def test_disabled_coordinator_says_so_and_exits_zero(tmp_path: Path) -> None:
    """``enabled: false`` with the Go default empty masterSecret: --check says it will not
    serve, a run logs that it is disabled and exits 0 without listening."""
    path = node_config(tmp_path, enabled=False, masterSecret="")
    code, out, _ = await run_cli("coordinator", "--config", str(path), "--check")
    assert code == 0 and "enabled: false" in out
    code, out, err = await run_cli("coordinator", "--config", str(path))
    assert code == 0 and "coordinator disabled" in out + err
    assert "listening" not in out + err


async def test_reference_node_config_runs(anvil: AnvilProcess, tmp_path: Path) -> None:
    """The reference block in a node config (io1 delegate, ``taskLevel: l4``, a .db
    diffStorePath) starts a serving coordinator; its log names the ignored sections and
    the diff store is a directory."""
    diffs = tmp_path / "statediffs.db"
    path = node_config(
        tmp_path,
        grpcPort=0,
        swarmApiPort=0,
        taskLevel="l4",
        delegateAddress=to_io(WALLET),
        diffStorePath=str(diffs),
        rewardContract="",
        rewardSignerKey="",
        nodeRpcUrl=anvil.url,
        dataDir=str(tmp_path / "data"),
    )
    log_path = tmp_path / "coordinator.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "coordinator",
            "--config",
            str(path),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=ENV,
        )
    try:

        def serving() -> bool:
            assert proc.returncode is None, log_path.read_text()
            return re.search(r"grpc listening\"? port=\d+", log_path.read_text()) is not None

        await eventually(serving, 60, what="coordinator serving")
        text = log_path.read_text()
        assert "other top-level sections ignored" in text and "diffStorePath is a directory" in text
        assert diffs.is_dir()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    assert proc.returncode == 0, log_path.read_text()[-2000:]


async def test_l4test_passes_on_a_live_coordinator(anvil: AnvilProcess) -> None:
    """``ioswarm l4test`` against an L4 coordinator over anvil checks 3 links and prints PASS
    with the state hash the coordinator recorded at that height."""
    async with running_coordinator(anvil.url, taskLevel="L4", diffStoreEnabled=True) as app:
        sync = app.state_sync
        assert sync is not None
        code, out, err = await run_cli(
            "l4test",
            "--coordinator",
            f"127.0.0.1:{app.grpc_port}",
            "--no-tls",
            "--secret",
            SECRET,
            "--agent-id",
            "probe-1",
            "--wallet",
            to_io(WALLET),
            "--blocks",
            "3",
            "--timeout",
            "60",
        )
        assert code == 0, out + err
        verdict = out.strip().splitlines()[-1]
        m = re.fullmatch(r"PASS blocks=3 height=(\d+) state_hash=0x([0-9a-f]{64})", verdict)
        assert m is not None, verdict
        recorded = sync.diffs.get(int(m[1]))
        assert recorded is not None and bytes(recorded.post_state_hash).hex() == m[2]


async def test_l4test_fails_where_l4_is_off(anvil: AnvilProcess) -> None:
    """Against a coordinator without L4 state sync the probe prints FAIL with the refusal and
    exits 1."""
    async with running_coordinator(anvil.url, taskLevel="L2") as app:
        code, out, _ = await run_cli(
            "l4test",
            "--coordinator",
            f"127.0.0.1:{app.grpc_port}",
            "--no-tls",
            "--secret",
            SECRET,
            "--wallet",
            WALLET,
            "--blocks",
            "2",
            "--timeout",
            "30",
        )
    assert code == 1
    verdict = out.strip().splitlines()[-1]
    assert verdict.startswith("FAIL blocks=0") and "FAILED_PRECONDITION" in verdict


async def test_l4test_replays_diffs_on_a_local_state(anvil: AnvilProcess, tmp_path: Path) -> None:
    """With --datadir the probe loads the coordinator's snapshot, streams from its height and
    applies 3 diffs: PASS with state=replayed and the coordinator's hash at that height."""
    async with running_coordinator(
        anvil.url, taskLevel="L4", diffStoreEnabled=True, snapshotIntervalBlocks=2
    ) as app:
        sync = app.state_sync
        assert sync is not None
        await eventually(sync.latest_snapshot, 60, what="a snapshot exported")
        code, out, err = await run_cli(
            "l4test",
            "--coordinator",
            f"127.0.0.1:{app.grpc_port}",
            "--no-tls",
            "--secret",
            SECRET,
            "--wallet",
            WALLET,
            "--blocks",
            "3",
            "--timeout",
            "90",
            "--datadir",
            str(tmp_path / "probe"),
        )
        assert code == 0, out + err
        verdict = out.strip().splitlines()[-1]
        m = re.fullmatch(
            r"PASS blocks=3 height=(\d+) state_hash=0x([0-9a-f]{64}) state=replayed", verdict
        )
        assert m is not None, verdict
        recorded = sync.diffs.get(int(m[1]))
        assert recorded is not None and bytes(recorded.post_state_hash).hex() == m[2]


async def test_l4test_speaks_tls_with_the_agents_options(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """Over TLS with --ca-cert the probe reaches the coordinator and is answered (here: L4 is
    off); without the CA the certificate is not trusted and the verdict says UNAVAILABLE."""
    ca, cert, key = make_test_pki(tmp_path)
    async with running_coordinator(anvil.url, tlsCertFile=str(cert), tlsKeyFile=str(key)) as app:
        base = ["l4test", "--coordinator", f"localhost:{app.grpc_port}", "--secret", SECRET]
        base += ["--wallet", WALLET, "--blocks", "1", "--timeout", "30"]
        code, out, _ = await run_cli(*base, "--ca-cert", str(ca))
        assert code == 1 and "FAILED_PRECONDITION" in out.strip().splitlines()[-1]
        code, out, _ = await run_cli(*base)
        assert code == 1 and "UNAVAILABLE" in out.strip().splitlines()[-1]
