"""deploy/nginx/ioswarm.conf with Debian's nginx: agents speak TLS to nginx, nginx plaintext gRPC
to a real coordinator on loopback, and the agents' results are counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from ioswarm.core.models import Level
from ioswarm.sim.anvil import AnvilProcess
from tests.helpers import eventually
from tests.integration.swarm import (
    drive_until_compared,
    make_test_pki,
    running_coordinator,
    start_agent,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "nginx" / "ioswarm.conf"


def nginx_binary() -> str:
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None
    )
    assert found, "nginx is not installed (make debs installs Debian's nginx)"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sub_once(pattern: str, repl: str, text: str) -> str:
    """Replace exactly one occurrence, so the example cannot drift away from what is tested."""
    out, n = re.subn(pattern, repl, text)
    assert n == 1, f"{pattern!r} found {n} times in {EXAMPLE.name}"
    return out


def site_config(tls_dir: Path, listen: int, grpc_port: int, api_port: int) -> str:
    """The example with only its host-specific parts pointed at this test's ports and files."""
    text = EXAMPLE.read_text()
    text = _sub_once(r"listen 443 ssl http2;", f"listen 127.0.0.1:{listen} ssl http2;", text)
    text = _sub_once(r"server coordinator:14689;", f"server 127.0.0.1:{grpc_port};", text)
    text = _sub_once(r"server coordinator:14690;", f"server 127.0.0.1:{api_port};", text)
    return text.replace("/etc/nginx/tls/", f"{tls_dir}/")


def main_config(prefix: Path, site: Path) -> str:
    """A minimal nginx.conf around the site: foreground, files under ``prefix``."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read the temp dirs
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\n"
        f"error_log {prefix}/error.log info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {prefix}/access.log;\n{temps}\n    include {site};\n}}\n"
    )


@contextlib.asynccontextmanager
async def running_nginx(conf: Path, prefix: Path, port: int) -> AsyncIterator[None]:
    binary = nginx_binary()
    test = await asyncio.create_subprocess_exec(
        binary, "-t", "-p", str(prefix), "-c", str(conf), stderr=asyncio.subprocess.PIPE
    )
    _, err = await test.communicate()
    assert test.returncode == 0, err.decode()
    proc = await asyncio.create_subprocess_exec(
        binary, "-p", str(prefix), "-c", str(conf), stderr=asyncio.subprocess.DEVNULL
    )
    try:

        async def listening() -> bool:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return True

        await eventually(listening, 15, what="nginx listening")
        yield
    finally:
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)


async def test_an_agent_through_nginx_tls_gets_its_results_counted(
    anvil: AnvilProcess, tmp_path: Path
) -> None:
    """Two agents that know only nginx's TLS port validate real transfers; the coordinator on
    plaintext loopback counts their results, and nginx logged their gRPC calls."""
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    ca, _, _ = make_test_pki(tls_dir)
    listen = free_port()
    async with running_coordinator(anvil.url, canaryPct=0) as app:
        c = app.coordinator
        site = tmp_path / "ioswarm.conf"
        site.write_text(site_config(tls_dir, listen, app.grpc_port, app.api_port))
        conf = tmp_path / "nginx.conf"
        conf.write_text(main_config(tmp_path, site))
        async with running_nginx(conf, tmp_path, listen):
            agents = [
                start_agent(listen, "nginx-l1", Level.L1, tls=True, ca_cert=str(ca)),
                start_agent(listen, "nginx-l2", Level.L2, tls=True, ca_cert=str(ca)),
            ]
            try:
                await eventually(lambda: c.dispatcher.stream_count() == 2, 30, what="streams")
                await drive_until_compared(anvil, app, 4)  # four verdicts, so four results
                ctx = ssl.create_default_context(cafile=str(ca))
                async with aiohttp.ClientSession() as http:
                    base = f"https://localhost:{listen}"
                    async with http.get(f"{base}/healthz", ssl=ctx) as resp:
                        assert resp.status == 200 and await resp.text() == "ok (2 agents)"
                    async with http.get(f"{base}/readyz", ssl=ctx) as resp:
                        health = await resp.json()
                        assert resp.status == 200 and health["ok"] is True
                    async with http.get(f"{base}/metrics", ssl=ctx) as resp:
                        assert resp.status == 404
            finally:
                for agent in agents:
                    await agent.stop()
        assert {rec.agent_id for rec in c.registry.all()} >= {"nginx-l1", "nginx-l2"}
        assert c.totals.results_accepted >= 4
    access = (tmp_path / "access.log").read_text()
    assert "POST /ioswarm.IOSwarm/SubmitResults HTTP/2.0" in access
    assert "POST /ioswarm.IOSwarm/Register HTTP/2.0" in access
