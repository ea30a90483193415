"""A coordinator as its own OS process, for tests that measure the process itself (its open
files, resident memory, log volume) from outside."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import eventually
from tests.integration.swarm import SECRET

CLI = [sys.executable, "-m", "ioswarm_cli.main"]


@dataclass
class CoordinatorProcess:
    proc: asyncio.subprocess.Process
    log_path: Path
    grpc_port: int = 0
    api_port: int = 0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size

    def rss_kib(self) -> int:
        """Resident set size now, from /proc."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS line")

    def open_fds(self) -> int:
        return len(list(Path(f"/proc/{self.pid}/fd").iterdir()))


# Sets the open-file limit (soft and hard) of the CLI process itself, then runs it.
LIMITED_CLI = (
    "import resource, runpy, sys; n = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)); "
    "runpy.run_module('ioswarm_cli.main', run_name='__main__')"
)


@contextlib.asynccontextmanager
async def coordinator_process(
    workdir: Path, node_url: str, extra_yaml: str = "", open_files: int | None = None
) -> AsyncIterator[CoordinatorProcess]:
    """``ioswarm coordinator`` on free loopback ports, its log in ``workdir/coordinator.log``;
    ``open_files`` caps its RLIMIT_NOFILE (soft and hard)."""
    cfg = workdir / "coordinator.yaml"
    cfg.write_text(
        f"masterSecret: {SECRET}\n"
        f"nodeRpcUrl: {node_url}\n"
        "grpcPort: 0\n"
        "swarmApiPort: 0\n"
        "pollIntervalMs: 200\n"
        f"dataDir: {workdir / 'data'}\n" + extra_yaml
    )
    log_path = workdir / "coordinator.log"
    cli = [sys.executable, "-c", LIMITED_CLI, str(open_files)] if open_files else CLI
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *cli,
            "coordinator",
            "--config",
            str(cfg),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    running = CoordinatorProcess(proc, log_path)
    try:

        def ports() -> bool:
            assert proc.returncode is None, running.log_text()
            text = running.log_text()
            grpc = re.search(r'grpc listening"? port=(\d+)', text)
            api = re.search(r'http api listening"? host=\S+ port=(\d+)', text)
            if grpc and api:
                running.grpc_port, running.api_port = int(grpc[1]), int(api[1])
                return True
            return False

        await eventually(ports, 30, what="coordinator process listening")
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
