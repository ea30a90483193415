"""``ioswarm agent keygen | addr | service``: wallet keys that match their addresses and are
never overwritten, and a systemd unit that keeps the API key out of the unit file."""

from __future__ import annotations

import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from eth_account import Account
from ioswarm_cli.main import EXIT_CONFIG, EXIT_ERROR, main

from ioswarm.agent.service_unit import AgentService, ServiceInstallError, install
from ioswarm.agent.walletkey import new_wallet_key, parse_wallet_key, read_key_file
from ioswarm.config import agent_config
from ioswarm.core.address import to_io
from ioswarm.errors import ConfigError

API_KEY = "iosw_" + "ab" * 32
WALLET = "0x970Dd0EAA9863bFcD627FcAa8a42e1750A5a3F19"


def test_new_key_address_is_the_one_eth_account_derives() -> None:
    """A generated key's 0x address is what eth_account derives; io1 names the same bytes."""
    key = new_wallet_key()
    assert key.address == Account.from_key(key.private_key).address
    assert key.io_address == to_io(key.address) and key.io_address.startswith("io1")
    assert key.private_key.hex() not in repr(key)


def test_key_text_accepts_the_go_agents_format_and_refuses_junk() -> None:
    """Hex with or without 0x and a newline is a key; other text, or zero, is refused."""
    key = new_wallet_key()
    assert parse_wallet_key(key.file_text(), "k") == key
    assert parse_wallet_key("0x" + key.private_key.hex(), "k") == key
    for junk in ("", "zz" * 32, "00" * 32, key.private_key.hex()[:-2]):
        with pytest.raises(ConfigError):
            parse_wallet_key(junk, "k")


def test_keygen_writes_0600_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """keygen --out creates a 0600 key file and prints both addresses; a second run onto the
    same file exits 2 and leaves it as it was."""
    out = tmp_path / "wallet.key"
    assert main(["agent", "keygen", "--out", str(out), "--addr-out", str(tmp_path / "a")]) == 0
    printed = capsys.readouterr().out.split()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key, shared = read_key_file(out, "--key")
    assert not shared and printed == ["address", key.address, "io1", key.io_address]
    assert (tmp_path / "a").read_text() == key.address + "\n"
    before = out.read_bytes()
    assert main(["agent", "keygen", "--out", str(out)]) == EXIT_CONFIG
    assert "not overwritten" in capsys.readouterr().err and out.read_bytes() == before


def test_keygen_without_out_prints_the_key_and_addresses_apart(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Without --out the key alone is on stdout (for a pipe), the addresses on stderr."""
    assert main(["agent", "keygen"]) == 0
    got = capsys.readouterr()
    key = parse_wallet_key(got.out, "stdout")
    assert key.address in got.err and key.io_address in got.err


def test_addr_of_key_file_and_of_either_spelling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """addr prints 0x then io1 for a key file, a 0x address and an io1 address; a shared key
    file is warned about; a mistyped address exits 2."""
    out = tmp_path / "k"
    key = new_wallet_key()
    out.write_text(key.file_text())
    out.chmod(0o644)
    assert main(["agent", "addr", "--key", str(out)]) == 0
    got = capsys.readouterr()
    assert got.out.split() == [key.address, key.io_address] and "chmod 600" in got.err
    for given in (key.address.lower(), key.io_address):
        assert main(["agent", "addr", given]) == 0
        assert capsys.readouterr().out.split() == [key.address, key.io_address]
    # One letter's case flipped: the same bytes, so only the EIP-55 checksum can catch it.
    i = next(i for i, ch in enumerate(key.address) if i > 1 and ch.isalpha())
    mistyped = key.address[:i] + key.address[i].swapcase() + key.address[i + 1 :]
    assert main(["agent", "addr", mistyped]) == EXIT_CONFIG


def test_api_key_keygen_is_still_the_hmac_one(capsys: pytest.CaptureFixture[str]) -> None:
    """``ioswarm keygen`` (no ``agent``) still derives an API key, not a wallet."""
    assert main(["keygen", "--secret", "s" * 20, "--agent-id", "a1"]) == 0
    assert capsys.readouterr().out.startswith("iosw_")


def service(tmp_path: Path, **values: object) -> AgentService:
    base = {"coordinator": "h.example:443", "agent_id": "a-1", "api_key": API_KEY}
    config = agent_config({**base, "wallet": to_io(WALLET), **values}, {})
    return AgentService(
        name="ioswarm-agent-a-1",
        config=config,
        command=["/opt/ioswarm/bin/ioswarm"],
        env_path=tmp_path / "etc" / "ioswarm-agent-a-1.env",
        datadir="/var/lib/ioswarm-agent/a-1",
    )


def test_unit_keeps_secrets_in_the_env_file(tmp_path: Path) -> None:
    """The unit names the env file and runs the agent; only the env file holds the API key,
    with the wallet as 0x and the region quoted."""
    svc = service(tmp_path, region='eu "west"', level="l4")
    unit, env = svc.unit_text(), svc.env_text()
    assert API_KEY not in unit and f"IOSWARM_API_KEY={API_KEY}\n" in env
    assert f"EnvironmentFile={svc.env_path}\n" in unit
    assert "ExecStart=/opt/ioswarm/bin/ioswarm agent --datadir /var/lib/ioswarm-agent/a-1\n" in unit
    assert f"IOSWARM_WALLET={WALLET}\n" in env and "IOSWARM_LEVEL=L4\n" in env
    assert 'IOSWARM_REGION="eu \\"west\\""\n' in env and "DynamicUser=yes" in unit


def test_unit_refuses_injection(tmp_path: Path) -> None:
    """A newline in a setting, a relative command or a bad name is refused by name."""
    with pytest.raises(ConfigError, match="IOSWARM_REGION"):
        service(tmp_path, region="x\nIOSWARM_API_KEY=stolen").env_text()
    svc = service(tmp_path)
    with pytest.raises(ConfigError, match="--bin"):
        AgentService("n", svc.config, ["ioswarm"], svc.env_path)
    with pytest.raises(ConfigError, match="--name"):
        AgentService("a/b", svc.config, ["/bin/ioswarm"], svc.env_path)
    with pytest.raises(ConfigError, match="--user"):
        AgentService("n", svc.config, ["/bin/ioswarm"], svc.env_path, user="x\nExecStartPre=/x")
    with pytest.raises(ConfigError, match="--datadir"):
        AgentService("n", svc.config, ["/bin/ioswarm"], svc.env_path, datadir="/d\n[Install]")


def test_install_refuses_without_root_or_systemd(tmp_path: Path) -> None:
    """--install says clearly when it is not root or systemd is not running; nothing written."""
    svc = service(tmp_path)
    calls: list[Sequence[str]] = []
    with pytest.raises(ServiceInstallError, match="needs root"):
        install(svc, unit_dir=tmp_path, euid=1000, systemd_running=True, runner=calls.append)
    with pytest.raises(ServiceInstallError, match="systemd is not running"):
        install(svc, unit_dir=tmp_path, euid=0, systemd_running=False, runner=calls.append)
    assert calls == [] and not svc.env_path.exists()


def test_install_writes_reloads_and_enables(tmp_path: Path) -> None:
    """As root on a systemd host: unit 0644 and env 0600 written, then daemon-reload and
    enable; a second install refuses to overwrite."""
    svc = service(tmp_path)
    calls: list[Sequence[str]] = []
    unit = install(svc, unit_dir=tmp_path, euid=0, systemd_running=True, runner=calls.append)
    assert unit == tmp_path / "ioswarm-agent-a-1.service"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(svc.env_path.stat().st_mode) == 0o600
    assert calls == [["daemon-reload"], ["enable", "ioswarm-agent-a-1.service"]]
    with pytest.raises(ConfigError, match="not overwritten"):
        install(svc, unit_dir=tmp_path, euid=0, systemd_running=True, runner=calls.append)


def test_service_cli_writes_files_systemd_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``agent service`` writes a unit that systemd-analyze verify accepts, and --install on
    this host (no systemd as init) exits 1 with one line."""
    args = ["--coordinator", "h:1", "--agent-id", "a-9", "--api-key", API_KEY]
    args += ["--wallet", WALLET, "--bin", "/bin/true"]
    assert main(["agent", "service", *args, "--out-dir", str(tmp_path)]) == 0
    unit = tmp_path / "ioswarm-agent-a-9.service"
    assert stat.S_IMODE((tmp_path / "ioswarm-agent-a-9.env").stat().st_mode) == 0o600
    capsys.readouterr()
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        done = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0 and done.stdout + done.stderr == "", done.stderr
    if not Path("/run/systemd/system").is_dir():
        assert main(["agent", "service", *args, "--install"]) == EXIT_ERROR
        assert "systemd is not running" in capsys.readouterr().err
