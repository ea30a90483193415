"""``ioswarm agent --level L4`` argument checks (no network)."""

from __future__ import annotations

import pytest
from ioswarm_cli.main import EXIT_CONFIG, main

ARGS = [
    "agent",
    "--coordinator",
    "127.0.0.1:1",
    "--agent-id",
    "a1",
    "--api-key",
    "iosw_" + "00" * 32,
    "--wallet",
    "0x" + "11" * 20,
    "--no-tls",
    "--level",
    "L4",
]


def test_l4_agent_requires_datadir(capsys: pytest.CaptureFixture[str]) -> None:
    """An L4 agent without --datadir is a config error naming the flag."""
    assert main(ARGS) == EXIT_CONFIG
    assert "--datadir" in capsys.readouterr().err


def test_l4_is_listed_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    """The agent help documents L4, --datadir and --snapshot."""
    with pytest.raises(SystemExit):
        main(["agent", "--help"])
    text = capsys.readouterr().out
    assert "L4" in text
    assert "--datadir" in text
    assert "--snapshot" in text
