"""``ioswarm agent keygen | addr | service``: an agent operator's tools, as the Go agent has them.

``agent keygen`` makes a *wallet* key pair (the address rewards are paid to). It is not
``ioswarm keygen``, which derives an agent's *API key* from the coordinator's master secret.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ioswarm.agent.service_unit import (
    SYSTEM_ENV_DIR,
    SYSTEM_UNIT_DIR,
    SYSTEMD_RUNNING,
    AgentService,
    install,
)
from ioswarm.agent.walletkey import new_wallet_key, read_key_file, write_new_file
from ioswarm.config import agent_config
from ioswarm.core.address import canonical_address, to_io
from ioswarm.errors import ConfigError

TOOLS = ("keygen", "addr", "service")


def describe_in(agent_parser: argparse.ArgumentParser) -> None:
    """List the tools in ``ioswarm agent --help``."""
    agent_parser.epilog = (
        "operator tools: 'ioswarm agent keygen' (new wallet key pair), 'ioswarm agent addr' "
        "(0x and io1 forms of a key file's or an address), 'ioswarm agent service' (systemd "
        "unit); each has --help."
    )


def tool_parser(argv: Sequence[str]) -> argparse.ArgumentParser | None:
    """The parser of ``ioswarm agent TOOL ...`` when ``argv`` names a tool, else None."""
    if len(argv) < 2 or argv[0] != "agent" or argv[1] not in TOOLS:
        return None
    parser = argparse.ArgumentParser(prog="ioswarm agent")
    sub = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    _add_keygen(sub)
    _add_addr(sub)
    _add_service(sub)
    return parser


def _add_keygen(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "keygen",
        help="make a new wallet key pair (the address rewards are paid to)",
        description="Make a new secp256k1 wallet key pair and print its 0x and io1 "
        "addresses. With --out the private key goes to that file (mode 0600, never "
        "overwritten) and the addresses to stdout; without it the key is printed on stdout "
        "and the addresses on stderr. This is not an API key: those come from the "
        "coordinator operator ('ioswarm keygen').",
    )
    p.add_argument("--out", help="file to create for the private key (hex)")
    p.add_argument("--addr-out", help="file to create for the 0x address")
    p.set_defaults(run=run_keygen, command="agent keygen")


def _add_addr(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "addr",
        help="print the 0x and io1 forms of a wallet address",
        description="Print the EIP-55 0x address and the io1 address of a key file's key "
        "(--key) or of an address given in either form, one per line.",
    )
    p.add_argument("address", nargs="?", help="a 0x or io1 address")
    p.add_argument("--key", help="private key file (as written by 'ioswarm agent keygen')")
    p.set_defaults(run=run_addr, command="agent addr")


def _add_service(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "service",
        help="write (and with --install, install) a systemd unit for this agent",
        description="Write NAME.service and NAME.env (the agent's IOSWARM_* settings, API "
        "key included, mode 0600) for the agent described by the flags or their IOSWARM_* "
        "environment variables. With --install (root, systemd host) they go to "
        "/etc/systemd/system and /etc/ioswarm, then systemctl daemon-reload and enable. "
        "Existing files are never overwritten.",
    )
    p.add_argument("--coordinator", help="coordinator gRPC address HOST:PORT")
    p.add_argument("--agent-id", help="this agent's id")
    p.add_argument("--api-key", help="iosw_ API key from the coordinator operator")
    p.add_argument("--wallet", help="0x or io1 address that receives rewards")
    p.add_argument("--level", help="validation level L1..L4 (default L2)")
    p.add_argument("--region", help="free-form region label")
    p.add_argument("--tls", dest="tls", action="store_true", default=None, help="TLS (default)")
    p.add_argument("--no-tls", dest="tls", action="store_false", help="plaintext (loopback)")
    p.add_argument("--ca-cert", help="PEM CA bundle (outside /home: the unit cannot read it)")
    p.add_argument("--datadir", help="L4 state directory (default the unit's state directory)")
    p.add_argument("--name", help="unit name (default ioswarm-agent-<agent id>)")
    p.add_argument("--user", help="run as this existing user (default a dynamic user)")
    p.add_argument("--bin", help="absolute path of the ioswarm command (default: found)")
    p.add_argument(
        "--env-file", help="where the unit reads its settings (default /etc/ioswarm/NAME.env)"
    )
    p.add_argument("--out-dir", default=".", help="where to write the files (default .)")
    p.add_argument("--install", action="store_true", help="install and enable (root)")
    p.set_defaults(run=run_service, command="agent service")


async def run_keygen(args: argparse.Namespace, env: dict[str, str]) -> int:
    key = new_wallet_key()
    if args.out:
        write_new_file(Path(args.out), key.file_text(), 0o600, "--out")
    else:
        sys.stdout.write(key.file_text())
    if args.addr_out:
        write_new_file(Path(args.addr_out), key.address + "\n", 0o644, "--addr-out")
    shown = sys.stdout if args.out else sys.stderr
    print(f"address {key.address}\nio1     {key.io_address}", file=shown)
    return 0


async def run_addr(args: argparse.Namespace, env: dict[str, str]) -> int:
    if bool(args.key) == bool(args.address):
        raise ConfigError("--key", "give a key file (--key FILE) or an address, one of them")
    if args.key:
        key, readable = read_key_file(Path(args.key), "--key")
        if readable:
            print(f"warning: {args.key} is readable by others; chmod 600 it", file=sys.stderr)
        address = key.address
    else:
        try:
            address = canonical_address(args.address)
        except ValueError as exc:
            raise ConfigError("address", str(exc)) from None
    print(f"{address}\n{to_io(address)}")
    return 0


def _command(flag: str | None) -> list[str]:
    if flag:
        return [flag]
    found = shutil.which("ioswarm") or str(Path(sys.executable).with_name("ioswarm"))
    if Path(found).is_file():
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "ioswarm_cli.main"]


async def run_service(args: argparse.Namespace, env: dict[str, str]) -> int:
    values = {
        "coordinator": args.coordinator,
        "agent_id": args.agent_id,
        "api_key": args.api_key,
        "wallet": args.wallet,
        "level": args.level,
        "tls": args.tls,
        "ca_cert": args.ca_cert,
        "region": args.region,
    }
    config = agent_config(values, env)
    name = args.name or f"ioswarm-agent-{config.agent_id}"
    datadir = args.datadir or (
        f"/var/lib/ioswarm-agent/{config.agent_id}" if config.level == "L4" else ""
    )
    service = AgentService(
        name=name,
        config=config,
        command=_command(args.bin),
        env_path=Path(args.env_file or SYSTEM_ENV_DIR / f"{name}.env"),
        user=args.user or "",
        datadir=datadir,
    )
    if args.install:
        unit = install(
            service,
            unit_dir=SYSTEM_UNIT_DIR,
            euid=os.geteuid(),
            systemd_running=SYSTEMD_RUNNING.is_dir(),
        )
        print(f"installed {unit} and {service.env_path}; start it: systemctl start {name}")
        return 0
    out = Path(args.out_dir)
    env_out, unit_out = out / f"{name}.env", out / service.unit_name
    write_new_file(env_out, service.env_text(), 0o600, "--out-dir")
    write_new_file(unit_out, service.unit_text(), 0o644, "--out-dir")
    print(
        f"wrote {unit_out} and {env_out}; to install:\n"
        f"  install -m 0600 {env_out} {service.env_path}\n"
        f"  install -m 0644 {unit_out} {SYSTEM_UNIT_DIR}/\n"
        f"  systemctl daemon-reload && systemctl enable --now {name}"
    )
    return 0
