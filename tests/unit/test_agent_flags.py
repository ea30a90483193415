"""``ioswarm agent`` takes the reference agent's command lines: its flags, Go's flag syntax, its
environment variables, several coordinators, io1 wallets; every bad value names its source."""

from __future__ import annotations

import argparse

import pytest
from ioswarm_cli import agent as agent_cmd
from ioswarm_cli import rewards_cmds
from ioswarm_cli.main import build_parser

from ioswarm.config import AgentConfig, agent_config
from ioswarm.core.address import to_io
from ioswarm.errors import ConfigError

KEY_A = "iosw_" + "a1" * 32
KEY_B = "iosw_" + "b2" * 32
WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
IO_WALLET = to_io(WALLET)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["agent", *argv])


def config(*argv: str, env: dict[str, str] | None = None) -> AgentConfig:
    args = parse(*argv)
    values = {
        name: getattr(args, name)
        for name in (
            "coordinator",
            "agent_id",
            "api_key",
            "wallet",
            "level",
            "tls",
            "ca_cert",
            "region",
            "datadir",
            "snapshot",
        )
    }
    return agent_config(values, env or {})


@pytest.mark.parametrize(
    "argv",
    [
        ["--coordinator=a:1,b:2", "--agent-id=x1", f"--api-key={KEY_A}", f"--wallet={IO_WALLET}"],
        ["-coordinator", "a:1,b:2", "-agent-id", "x1", "-api-key", KEY_A, "-wallet", IO_WALLET],
        ["-coordinator=a:1,b:2", "-agent-id=x1", f"-api-key={KEY_A}", f"-wallet={IO_WALLET}"],
        ["--coordinator", "a:1, b:2", "--agent-id", "x1", "--api-key", KEY_A, "--wallet", WALLET],
    ],
)
def test_go_and_gnu_spellings_give_the_same_config(argv: list[str]) -> None:
    """--flag=value, --flag value, -flag value and -flag=value all mean the same thing, and an
    io1 wallet is the same wallet as its 0x spelling."""
    cfg = config(*argv, "--tls=false")
    assert (cfg.coordinators, cfg.agent_id, cfg.wallet, cfg.tls) == (
        ("a:1", "b:2"),
        "x1",
        WALLET,
        False,
    )


@pytest.mark.parametrize(
    ("argv", "tls"),
    [
        (["--tls=false"], False),
        (["-tls=false"], False),
        (["-tls=0"], False),
        (["--tls=F"], False),
        (["--no-tls"], False),
        (["--tls", "false"], False),
        (["--tls"], True),
        (["-tls"], True),
        (["-tls=true"], True),
        (["--tls=TRUE"], True),
        ([], True),
    ],
)
def test_go_style_booleans(argv: list[str], tls: bool) -> None:
    """Booleans take Go's spellings: bare, =true/=false/=1/=0/=T/=F, any case."""
    assert (
        config(
            "--coordinator=a:1", "-agent-id=x", f"-api-key={KEY_A}", f"-wallet={WALLET}", *argv
        ).tls
        is tls
    )


def test_a_bad_boolean_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    """``--tls=maybe`` is a usage error naming --tls."""
    with pytest.raises(SystemExit) as exit_:
        parse("--tls=maybe")
    assert exit_.value.code == 2 and "--tls" in capsys.readouterr().err


def test_reference_environment_variables() -> None:
    """IOSWARM_COORDINATOR, _AGENT_ID, _API_KEY, _WALLET, _DATADIR, _LEVEL and _TLS are read as
    the reference agent reads them; a flag wins over its variable."""
    env = {
        "IOSWARM_COORDINATOR": "a:1,b:2",
        "IOSWARM_AGENT_ID": "from-env",
        "IOSWARM_API_KEY": f"{KEY_A},{KEY_B}",
        "IOSWARM_WALLET": IO_WALLET,
        "IOSWARM_DATADIR": "/tmp/ioswarm-agent-state",
        "IOSWARM_LEVEL": "l3",
        "IOSWARM_TLS": "false",
    }
    cfg = config(env=env)
    assert (cfg.coordinators, cfg.agent_id, cfg.wallet, cfg.level, cfg.tls, cfg.datadir) == (
        ("a:1", "b:2"),
        "from-env",
        WALLET,
        "L3",
        False,
        "/tmp/ioswarm-agent-state",
    )
    assert config("--agent-id=from-flag", env=env).agent_id == "from-flag"


def test_one_key_for_all_or_one_per_coordinator_in_order() -> None:
    """One --api-key serves every coordinator; a comma-separated list is matched by position."""
    base = ("--coordinator=a:1,b:2", "--agent-id=x", f"--wallet={WALLET}", "--tls=false")
    one = config(*base, f"--api-key={KEY_A}").links()
    assert [(link.coordinator, link.api_key) for link in one] == [("a:1", KEY_A), ("b:2", KEY_A)]
    two = config(*base, f"--api-key={KEY_A},{KEY_B}").links()
    assert [(link.coordinator, link.api_key) for link in two] == [("a:1", KEY_A), ("b:2", KEY_B)]


def test_port_443_and_a_ca_always_use_tls() -> None:
    """As with the reference agent, a coordinator on port 443 gets TLS even with --tls=false, and
    so does every coordinator when a CA is given (--tls-cert)."""
    cfg = config(
        "--coordinator=a:1,b:443",
        "--agent-id=x",
        f"--api-key={KEY_A}",
        f"--wallet={WALLET}",
        "--tls=false",
    )
    assert [link.tls for link in cfg.links()] == [False, True]


@pytest.mark.parametrize(
    ("argv", "env", "named", "says"),
    [
        (["--coordinator=a:1,,b:2"], {}, "--coordinator", "HOST:PORT"),
        (["--coordinator=a:1,a:1"], {}, "--coordinator", "named twice"),
        (["--coordinator=a:99999"], {}, "--coordinator", "HOST:PORT"),
        ([], {"IOSWARM_COORDINATOR": "nohostport"}, "IOSWARM_COORDINATOR", "HOST:PORT"),
        ([f"--api-key={KEY_A},{KEY_B},{KEY_A}"], {}, "--api-key", "3 keys for 2 coordinators"),
        ([f"--api-key={KEY_A},nope"], {}, "--api-key", "key 2 must look like"),
        (["--level=L5"], {}, "--level", "L1, L2, L3, L4"),
        ([], {"IOSWARM_LEVEL": "high"}, "IOSWARM_LEVEL", "L1, L2, L3, L4"),
        ([], {"IOSWARM_TLS": "maybe"}, "IOSWARM_TLS", "true or false"),
        (["--wallet=io1notanaddress"], {}, "--wallet", ""),
        ([], {"IOSWARM_AGENT_ID": "has space"}, "IOSWARM_AGENT_ID", "1-64 characters"),
        (["--level=l4", "--datadir=/tmp/x"], {}, "--level", "one coordinator's state-diff"),
    ],
)
def test_every_bad_value_names_its_flag_or_variable(
    argv: list[str], env: dict[str, str], named: str, says: str
) -> None:
    """A bad flag or environment value is a ConfigError naming where it came from and why."""
    base = {
        "--coordinator": "--coordinator=a:1,b:2",
        "--api-key": f"--api-key={KEY_A}",
        "--wallet": f"--wallet={WALLET}",
        "--agent-id": "--agent-id=x",
    }
    given = {a.split("=", 1)[0] for a in argv}
    full = [
        v
        for k, v in base.items()
        if k not in given
        and k.lstrip("-").replace("-", "_").upper() not in {e.removeprefix("IOSWARM_") for e in env}
    ]
    with pytest.raises(ConfigError) as err:
        config(*full, *argv, env=env)
    assert err.value.key == named and says in err.value.problem


def test_reference_only_flags_warn_or_refuse() -> None:
    """--mode=both and --llm-port are accepted with a warning naming them; --mode=llm and an
    unknown mode are refused naming --mode."""
    assert agent_cmd.reference_only(parse("-mode=validator")) == []
    warnings = agent_cmd.reference_only(parse("--mode=both", "--llm-port=8082"))
    assert any("--mode=both" in w for w in warnings) and any("--llm-port" in w for w in warnings)
    for mode in ("llm", "proxy"):
        with pytest.raises(ConfigError) as err:
            agent_cmd.reference_only(parse(f"--mode={mode}"))
        assert err.value.key == "--mode"


def test_abbreviated_flags_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """As in Go, a flag is spelled out whole: ``--coord`` is not ``--coordinator``."""
    with pytest.raises(SystemExit):
        build_parser().parse_args(["agent", "--coord=a:1"])
    assert "--coord=a:1" in capsys.readouterr().err


def test_ioswarm_agent_is_the_reference_command_name(capsys: pytest.CaptureFixture[str]) -> None:
    """``ioswarm-agent FLAGS`` is ``ioswarm agent FLAGS``: a bad flag exits 2 naming it."""
    code = agent_cmd.reference_main(
        ["--coordinator=nohostport", "--agent-id=x", f"--api-key={KEY_A}", f"--wallet={WALLET}"]
    )
    assert code == 2 and "--coordinator" in capsys.readouterr().err


def test_the_wallet_key_may_come_from_the_reference_variable() -> None:
    """The wallet key (``claim``) is read from IOSWARM_PRIVATE_KEY, the reference's name, when
    IOSWARM_WALLET_KEY is not set."""
    key = "0x" + "5a" * 32
    args = argparse.Namespace(key=None, key_file=None)
    account = rewards_cmds._key(
        args,
        {"IOSWARM_PRIVATE_KEY": key},
        rewards_cmds.WALLET_KEY_ENV,
        alias=rewards_cmds.REFERENCE_KEY_ENV,
    )
    assert account.key.hex().removeprefix("0x") == "5a" * 32


def test_ioswarm_agent_runs_the_agent_tools_too(capsys: pytest.CaptureFixture[str]) -> None:
    """``ioswarm-agent addr ADDRESS`` is ``ioswarm agent addr``, as the reference's ``addr``."""
    assert agent_cmd.reference_main(["addr", WALLET]) == 0
    assert capsys.readouterr().out.split() == [WALLET, IO_WALLET]
