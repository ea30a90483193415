"""A systemd unit that runs one agent (``ioswarm agent service``).

Two files: the unit (mode 0644, no secrets) and an environment file (mode 0600) holding the
agent's settings as the ``IOSWARM_*`` variables ``ioswarm agent`` reads, the API key among
them. Hardened like ``deploy/systemd/ioswarm-agent@.service``; without a named user the unit
runs under a dynamic one (``DynamicUser=yes``) with its own state directory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ioswarm.agent.walletkey import write_new_file
from ioswarm.config import AgentConfig
from ioswarm.errors import ConfigError, IoswarmError

SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSTEM_ENV_DIR = Path("/etc/ioswarm")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # sd_booted(3): present when systemd is init

_PLAIN_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,200}")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")

HARDENING = """\
NoNewPrivileges=true
ProtectSystem=strict
ProtectHome=true
PrivateTmp=true
PrivateDevices=true
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
LockPersonality=true
CapabilityBoundingSet=
"""


class ServiceInstallError(IoswarmError):
    """The unit could not be installed (not root, no systemd, systemctl failed)."""


@dataclass(frozen=True)
class AgentService:
    """What the unit runs: the agent's settings, the command, where its files go."""

    name: str
    config: AgentConfig
    command: Sequence[str]
    env_path: Path
    user: str = ""
    datadir: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ConfigError("--name", "must be 1-200 of letters, digits, '_', '.', '@', '-'")
        if self.config.agent_id in (".", ".."):
            raise ConfigError("--agent-id", "cannot name a directory: . and .. are refused")
        if not self.command or not self.command[0].startswith("/"):
            raise ConfigError("--bin", "must be an absolute path (systemd runs no PATH lookup)")
        if self.user and not _USER.fullmatch(self.user):
            raise ConfigError("--user", "must be a user name (lowercase letters, digits, _ -)")
        for flag, value in (
            ("--bin", " ".join(self.command)),
            ("--datadir", self.datadir),
            ("--env-file", str(self.env_path)),
        ):
            if _has_control(value):
                raise ConfigError(flag, "must not contain control characters (newlines included)")

    @property
    def unit_name(self) -> str:
        return f"{self.name}.service"

    @property
    def state_dir(self) -> str:
        return f"ioswarm-agent/{self.config.agent_id}"

    def environment(self) -> dict[str, str]:
        """The agent's settings as the IOSWARM_* variables it reads."""
        c = self.config
        env = {
            "IOSWARM_COORDINATOR": c.coordinator,
            "IOSWARM_AGENT_ID": c.agent_id,
            "IOSWARM_API_KEY": c.api_key,
            "IOSWARM_WALLET": c.wallet,
            "IOSWARM_LEVEL": c.level,
            "IOSWARM_TLS": "true" if c.tls else "false",
        }
        if c.ca_cert:
            env["IOSWARM_CA_CERT"] = c.ca_cert
        if c.region:
            env["IOSWARM_REGION"] = c.region
        return env

    def env_text(self) -> str:
        lines = [f"# Settings of {self.unit_name} (ioswarm agent); keep this file mode 0600."]
        lines += [f"{k}={_env_value(k, v)}" for k, v in self.environment().items()]
        return "\n".join(lines) + "\n"

    def exec_start(self) -> str:
        args = [*self.command, "agent"]
        if self.datadir:
            args += ["--datadir", self.datadir]
        return " ".join(_exec_arg(a) for a in args)

    def unit_text(self) -> str:
        who = f"User={self.user}\nGroup={self.user}\n" if self.user else "DynamicUser=yes\n"
        return (
            f"# ioswarm agent {self.config.agent_id}, written by `ioswarm agent service`.\n"
            f"# Its settings, the API key among them, are in {self.env_path} (mode 0600).\n"
            "[Unit]\n"
            f"Description=ioswarm agent {self.config.agent_id}\n"
            "Wants=network-online.target\n"
            "After=network-online.target\n"
            "\n"
            "[Service]\n"
            "Type=exec\n"
            f"{who}"
            f"StateDirectory={self.state_dir}\n"
            f"EnvironmentFile={_exec_arg(str(self.env_path))}\n"
            f"ExecStart={self.exec_start()}\n"
            "TimeoutStopSec=60\n"
            "Restart=on-failure\n"
            "RestartSec=10\n"
            "\n"
            f"{HARDENING}"
            "\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        )


def _exec_arg(arg: str) -> str:
    """One ExecStart word: quoted when it needs it, with systemd's ``%`` and ``$`` escaped."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN_ARG.fullmatch(escaped):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _has_control(value: str) -> bool:
    return any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


def _env_value(key: str, value: str) -> str:
    if _has_control(value):
        raise ConfigError(key, "must not contain control characters (newlines included)")
    if _PLAIN_ARG.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


Runner = Callable[[Sequence[str]], None]


def run_systemctl(args: Sequence[str]) -> None:
    """Run systemctl; a failure is a ServiceInstallError carrying its message."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        raise ServiceInstallError("--install: systemctl not found (is this a systemd host?)")
    done = subprocess.run(
        [systemctl, *args], capture_output=True, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit {done.returncode}"
        raise ServiceInstallError(f"--install: systemctl {' '.join(args)} failed: {detail}")


def install(
    service: AgentService,
    *,
    unit_dir: Path,
    euid: int,
    systemd_running: bool,
    runner: Runner = run_systemctl,
) -> Path:
    """Write the unit and its environment file, reload systemd and enable the unit; the
    path of the unit written. Refuses clearly when not root or systemd is not running."""
    if euid != 0:
        raise ServiceInstallError(
            "--install: needs root (run it with sudo), or write the files without --install "
            "and install them yourself"
        )
    if not systemd_running:
        raise ServiceInstallError(
            "--install: systemd is not running on this host (no /run/systemd/system); write "
            "the files without --install and use them where it is"
        )
    unit_path = unit_dir / service.unit_name
    service.env_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    write_new_file(service.env_path, service.env_text(), 0o600, "--install")
    write_new_file(unit_path, service.unit_text(), 0o644, "--install")
    runner(["daemon-reload"])
    runner(["enable", service.unit_name])
    return unit_path
