"""The one config loader: keys, types, env overrides, secrets, errors that name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ioswarm.config import agent_config, documented_keys, load_config, parse_config
from ioswarm.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = {"masterSecret": "0123456789abcdef0123"}


def test_example_config_loads_and_documents_every_key() -> None:
    """config.example.yaml parses and mentions every key the loader knows."""
    text = (ROOT / "config.example.yaml").read_text()
    cfg = load_config(ROOT / "config.example.yaml", {})
    assert cfg.grpc_port == 14689 and cfg.swarm_api_port == 14690
    for key in documented_keys():
        leaf = key.split(".")[-1]
        assert re.search(rf"^\s*{leaf}:", text, re.M), f"{key} missing from config.example.yaml"


def test_defaults() -> None:
    """Defaults follow the reference config."""
    cfg = parse_config(SECRET)
    assert (cfg.task_timeout_ms, cfg.heartbeat_interval_sec, cfg.heartbeat_miss_limit) == (
        2000,
        10,
        6,
    )
    # Above the reference's 10/s burst 20: agents submit results as soon as they are ready.
    assert (cfg.submit_rate_per_sec, cfg.submit_burst) == (40.0, 40)
    assert cfg.epoch_reward_wei == 10**18


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"grpcPorts": 1}, "grpcPorts"),
        ({"grpcPort": "abc"}, "grpcPort"),
        ({"grpcPort": 70000}, "grpcPort"),
        ({"taskLevel": "L9"}, "taskLevel"),
        ({"shadowMode": "yes"}, "shadowMode"),
        ({"reward": {"delegateCutPct": 150}}, "reward.delegateCutPct"),
        ({"reward": {"bogus": 1}}, "reward.bogus"),
        ({"delegateAddress": "0x12"}, "delegateAddress"),
        ({"epochRewardIOTX": "1.0000000000000000001"}, "epochRewardIOTX"),
        ({"grpcHost": "0.0.0.0"}, "grpcHost"),
        ({"tlsCertFile": "/nonexistent.pem", "tlsKeyFile": "/nonexistent.key"}, "tlsCertFile"),
        ({"rewardSignerKey": "nothex"}, "rewardSignerKey"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], key: str) -> None:
    """Unknown keys, wrong types and bad values raise ConfigError naming the key."""
    with pytest.raises(ConfigError) as err:
        parse_config({**SECRET, **data})
    assert err.value.key == key


def test_master_secret_required_and_never_echoed() -> None:
    """A missing secret is an error; a bad one is not printed back."""
    with pytest.raises(ConfigError, match="masterSecret"):
        parse_config({})
    with pytest.raises(ConfigError) as err:
        parse_config({"masterSecret": "short-secret"})
    assert "short-secret" not in str(err.value)


def test_env_overrides_and_secret_file(tmp_path: Path) -> None:
    """IOSWARM_* env beats YAML; <key>File reads a secret from disk."""
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file-0123456789\n")
    cfg = parse_config(
        {"grpcPort": 1, "masterSecretFile": str(secret_file)},
        {
            "IOSWARM_GRPC_PORT": "2000",
            "IOSWARM_REWARD_EPOCH_BLOCKS": "5",
            "IOSWARM_SHADOW_MODE": "false",
        },
    )
    assert cfg.grpc_port == 2000 and cfg.reward.epoch_blocks == 5 and cfg.shadow_mode is False
    assert cfg.master_secret == "from-a-file-0123456789"
    with pytest.raises(ConfigError, match="IOSWARM_GRPC_PORT"):
        parse_config(SECRET, {"IOSWARM_GRPC_PORT": "x"})


def test_bad_yaml_file_is_named(tmp_path: Path) -> None:
    """An unreadable or non-mapping YAML file is a ConfigError naming the file."""
    bad = tmp_path / "c.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"c\.yaml"):
        load_config(bad, {})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", {})


def test_agent_config_flags_and_env() -> None:
    """Agent flags fall back to IOSWARM_* env; a malformed key names its flag."""
    key = "iosw_" + "ab" * 32
    cfg = agent_config(
        {"coordinator": None, "agent_id": "a1", "level": None, "tls": None},
        {
            "IOSWARM_COORDINATOR": "h:1",
            "IOSWARM_API_KEY": key,
            "IOSWARM_WALLET": "0x" + "11" * 20,
            "IOSWARM_TLS": "false",
            "IOSWARM_LEVEL": "l1",
        },
    )
    assert (cfg.coordinator, cfg.level, cfg.tls) == ("h:1", "L1", False)
    with pytest.raises(ConfigError) as err:
        agent_config(
            {"coordinator": "h:1", "agent_id": "a", "api_key": "nope", "wallet": "0x" + "11" * 20},
            {},
        )
    assert err.value.key == "--api-key"
