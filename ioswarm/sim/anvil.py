"""A local anvil node for tests, demos and benchmarks; started and always stopped by its owner."""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import functools
import logging
import os
import shutil
import signal
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from eth_account import Account

from ioswarm.errors import ConfigError, IoswarmError, NodeError
from ioswarm.node.rpc import JsonRpcTransport, RetryPolicy

log = logging.getLogger("ioswarm.sim")

ANVIL_BIN_ENV = "IOSWARM_ANVIL_BIN"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ANVIL_BIN = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "anvil"
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_ACCOUNTS = 10
_TAIL_LINES = 40


@functools.lru_cache(maxsize=8)
def dev_private_keys(count: int = DEFAULT_ACCOUNTS) -> tuple[str, ...]:
    """The 0x-hex private keys anvil funds at start (its well-known development mnemonic)."""
    Account.enable_unaudited_hdwallet_features()
    return tuple(
        "0x"
        + bytes(Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{i}").key).hex()
        for i in range(count)
    )


def free_loopback_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Whether nothing listens on 127.0.0.1:``port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As anvil does: connections of a previous run in TIME_WAIT must not count as "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def find_anvil(
    env: Mapping[str, str] | None = None,
    binary: str | Path | None = None,
    *,
    local: Path = DEFAULT_ANVIL_BIN,
) -> Path:
    """The anvil executable: ``binary``, else ``IOSWARM_ANVIL_BIN`` in ``env``, else the
    project's own (``local``, installed by ``make tools``), else ``anvil`` on the ``PATH`` of
    ``env`` (as after ``pip install`` beside a Foundry install)."""
    if binary is not None:
        path, source = Path(binary), "binary"
    elif env is not None and env.get(ANVIL_BIN_ENV):
        path, source = Path(env[ANVIL_BIN_ENV]), ANVIL_BIN_ENV
    elif _executable(local):
        path, source = local, ANVIL_BIN_ENV
    else:
        found = shutil.which("anvil", path=(env or {}).get("PATH", ""))
        if found is None:
            raise ConfigError(
                ANVIL_BIN_ENV,
                f"anvil not found: not set, not at {local} (run `make tools`) and not on PATH "
                "(install Foundry, or set IOSWARM_ANVIL_BIN)",
            )
        path, source = Path(found), "PATH"
    if not _executable(path):
        raise ConfigError(source, f"anvil executable not found at {path} (run `make tools`)")
    return _native_binary(path)


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _native_binary(path: Path) -> Path:
    """The platform binary behind the npm wrapper script, when ``path`` is that wrapper.

    The wrapper forwards SIGTERM and exits at once, orphaning anvil while it shuts down; running
    the binary directly lets :meth:`AnvilProcess.stop` wait for anvil itself.
    """
    real = path.resolve()
    if real.name == "bin.mjs" and real.parent.parent.name == "@foundry-rs":
        for candidate in sorted(real.parent.parent.glob(f"{real.parent.name}-*/bin/anvil")):
            if os.access(candidate, os.X_OK):
                return candidate
    return path


class AnvilError(IoswarmError):
    """anvil could not be started."""


class AnvilProcess:
    """An anvil child process on a loopback port, stopped on exit even when the body fails.

    ``block_time=None`` starts anvil with ``--no-mining``: blocks appear only through
    :meth:`mine`. Use as ``async with AnvilProcess(env=os.environ) as anvil: ...``.
    """

    def __init__(
        self,
        *,
        env: Mapping[str, str] | None = None,
        binary: str | Path | None = None,
        chain_id: int = 31337,
        block_time: float | None = 1.0,
        accounts: int | None = None,
        balance_eth: int | None = None,
        hardfork: str = "prague",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.binary = find_anvil(env, binary)
        self.chain_id = chain_id
        self.block_time = block_time
        self.accounts = accounts
        self.balance_eth = balance_eth
        self.hardfork = hardfork
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._fixed_port = port
        self.port = port or 0
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._listening = asyncio.Event()
        self._rpc: JsonRpcTransport | None = None
        self._served = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def private_keys(self) -> tuple[str, ...]:
        """Private keys of the funded development accounts, in anvil's order."""
        return dev_private_keys(self.accounts or DEFAULT_ACCOUNTS)

    @property
    def output_tail(self) -> str:
        """The last lines anvil printed (for failure messages)."""
        return "\n".join(self._tail)

    def args(self) -> list[str]:
        """The command line for the current port."""
        args = [
            str(self.binary),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--hardfork",
            self.hardfork,
            "--chain-id",
            str(self.chain_id),
        ]
        if self.block_time is None:
            args.append("--no-mining")
        else:
            args += ["--block-time", f"{self.block_time:g}"]
        if self.accounts is not None:
            args += ["--accounts", str(self.accounts)]
        if self.balance_eth is not None:
            args += ["--balance", str(self.balance_eth)]
        return args + list(self.extra_args)

    async def __aenter__(self) -> AnvilProcess:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start anvil and wait until it answers; a stopped instance restarts on its port."""
        if self.running:
            return
        # A port picked here can be taken by someone else before anvil binds it; pick again then.
        tries = 1 if self._fixed_port else 3
        for attempt in range(1, tries + 1):
            if not self._fixed_port and (attempt > 1 or not self.port):
                self.port = free_loopback_port()
            try:
                await self._start_once()
                return
            except AnvilError:
                await self.stop()
                if attempt == tries or "in use" not in self.output_tail.lower():
                    raise
            except BaseException:
                # Cancelled or failed mid-start: __aexit__ will not run, so stop it here.
                await self.stop()
                raise

    async def _start_once(self) -> None:
        self._tail.clear()
        self._served = False
        self._listening.clear()
        if not port_is_free(self.port):
            # Without this, another node on the port would answer the readiness probe.
            self._tail.append(f"port {self.port} already in use")
            raise AnvilError(f"port {self.port} is already in use on 127.0.0.1")
        self._proc = await asyncio.create_subprocess_exec(
            *self.args(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Own process group: if the binary is a wrapper script, its children stop with it.
            start_new_session=True,
        )
        atexit.register(self._kill_now)
        assert self._proc.stdout is not None
        self._readers = [asyncio.create_task(self._drain(self._proc.stdout))]
        self._rpc = JsonRpcTransport(
            self.url, timeout=2.0, retry=RetryPolicy(attempts=1), log_reachability=False
        )
        await self._wait_ready()
        self._served = True
        log.info(
            "anvil started url=%s pid=%d block_time=%s", self.url, self._proc.pid, self.block_time
        )

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        # anvil logs every request; an unread pipe would fill up and stall it.
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._tail.append(text)
            if text.startswith("Listening on "):
                self._listening.set()

    async def _wait_ready(self) -> None:
        assert self._proc is not None and self._rpc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.startup_timeout
        while True:
            if self._proc.returncode is not None:
                await asyncio.gather(*self._readers, return_exceptions=True)
                raise AnvilError(f"anvil exited with {self._proc.returncode}: {self.output_tail}")
            try:
                answer = await self._rpc.call("eth_chainId")
            except NodeError:
                answer = None
            # Only an answer after our anvil said it listens is from our anvil (--silent hides it).
            ours = self._listening.is_set() or "--silent" in self.extra_args
            if answer is not None and ours and self._proc.returncode is None:
                if answer != hex(self.chain_id):
                    raise AnvilError(f"anvil reports chain id {answer}, wanted {self.chain_id}")
                return
            if loop.time() > deadline:
                raise AnvilError(f"anvil did not answer within {self.startup_timeout}s")
            await asyncio.sleep(0.05)

    async def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` blocks now (``anvil_mine``)."""
        await self.rpc("anvil_mine", [hex(blocks)])

    async def rpc(self, method: str, params: Sequence[object] = ()) -> object:
        """A raw JSON-RPC call to this anvil (for anvil_* and evm_* methods)."""
        if self._rpc is None or not self.running:
            raise AnvilError("anvil is not running")
        return await self._rpc.call(method, params)

    async def stop(self) -> None:
        """Stop anvil: SIGTERM to its process group, SIGKILL after ``stop_timeout``."""
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self._kill_now)
        if proc.returncode is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.stop_timeout)
            except TimeoutError:
                log.warning("anvil ignored SIGTERM, killing it pid=%d", proc.pid)
                _signal_group(proc.pid, signal.SIGKILL)
                await proc.wait()
        # A wrapper script may exit before the anvil it started; wait for the port to close so
        # a restart on the same port works, killing the rest of the group if it lingers.
        served, self._served = self._served, False
        if served and not await self._port_closed_within(self.stop_timeout):
            _signal_group(proc.pid, signal.SIGKILL)
            await self._port_closed_within(self.stop_timeout)
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        self._readers = []
        log.info("anvil stopped url=%s", self.url)

    async def _port_closed_within(self, seconds: float) -> bool:
        try:
            async with asyncio.timeout(seconds):
                while True:
                    try:
                        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                    except OSError:
                        return True
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
                    await asyncio.sleep(0.02)
        except TimeoutError:
            return False

    def _kill_now(self) -> None:
        """Last resort at interpreter exit when :meth:`stop` was never awaited."""
        if self._proc is not None and self._proc.returncode is None:
            _signal_group(self._proc.pid, signal.SIGKILL)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
