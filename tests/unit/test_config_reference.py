"""The Go coordinator's config accepted as it stands: its ``ioswarm:`` section inside an
iotex-core config file or its keys flat, io1 addresses, any-case levels, ``enabled``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from ioswarm.config import documented_keys, load_config, parse_config
from ioswarm.configfile import ConfigNote
from ioswarm.core.address import to_io
from ioswarm.errors import ConfigError

# The reference README's example ``ioswarm:`` block as published, with its two placeholders
# ("<your-secret>", "<hex-key>") given real values, as an operator does.
REFERENCE_BLOCK = """\
ioswarm:
  enabled: true
  grpcPort: 14689                # agent gRPC connections
  swarmApiPort: 14690            # HTTP monitoring API (0 to disable)
  maxAgents: 100
  taskLevel: "L4"                # L1, L2, L3, or L4
  shadowMode: true               # compare agent results vs on-chain (recommended)
  pollIntervalMs: 1000           # actpool poll interval
  masterSecret: "6f0c3e1b9a2d4c5e8f7a6b5c4d3e2f1a"  # HMAC master secret for agent auth (hex string)
  delegateAddress: ""            # delegate address (auto-detected if empty)
  epochRewardIOTX: 0.5           # IOTX reward per epoch

  # On-chain reward settlement (optional — omit to run without rewards)
  rewardContract: "0x236CBF52125E68Db8fA88b893CcaFB2EE542F2d9"
  rewardSignerKey: "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"

  # State diff for L4 agents
  diffStoreEnabled: true
  diffStorePath: "/var/data/statediffs.db"

  # Reward parameters
  reward:
    delegateCutPct: 10           # delegate keeps 10% of epoch reward
    epochBlocks: 1               # 1 block per epoch (= 10s at IoTeX 10s block time)
    minTasksForReward: 1         # minimum tasks to qualify for reward
    bonusAccuracyPct: 99.5       # accuracy threshold for bonus multiplier
    bonusMultiplier: 1.2         # weight multiplier for high-accuracy agents
"""

# Other sections of an iotex-core node config, which belong to the node.
NODE_SECTIONS = """\
network:
  bootstrapNodes:
    - /dns4/bootnode-1.mainnet.iotex.one/tcp/4689/ipfs/12D3KooWPfQDF8ASjd4r7jS9e7F1wn6z
  externalHost: 203.0.113.7
chain:
  producerPrivKey: "0000000000000000000000000000000000000000000000000000000000000001"
  chainDBPath: /var/data/chain.db
api:
  port: 14014
log:
  zap:
    level: info
"""

DELEGATE_0X = "0x236CBF52125E68Db8fA88b893CcaFB2EE542F2d9"


def _flat() -> dict[str, Any]:
    block: dict[str, Any] = yaml.safe_load(REFERENCE_BLOCK)["ioswarm"]
    return block


def test_reference_block_nested_in_a_node_config_loads(tmp_path: Path) -> None:
    """The reference README's block inside an iotex-core config loads; other sections are
    ignored and named in one info note."""
    path = tmp_path / "config.yaml"
    path.write_text(NODE_SECTIONS + REFERENCE_BLOCK)
    notes: list[ConfigNote] = []
    cfg = load_config(path, {}, notes)
    assert cfg.enabled and cfg.task_level == "L4" and cfg.diff_store_enabled
    assert cfg.epoch_reward_wei == 5 * 10**17 and cfg.reward.epoch_blocks == 1
    assert cfg.reward_contract == DELEGATE_0X
    ignored = [n for n in notes if "ignored" in n.message]
    assert len(ignored) == 1 and ignored[0].level == logging.INFO
    assert "sections=api,chain,log,network" in ignored[0].message


def test_reference_block_flat_loads(tmp_path: Path) -> None:
    """The same keys written flat (no ioswarm: section) load to the same config."""
    path = tmp_path / "flat.yaml"
    path.write_text(yaml.safe_dump(_flat()))
    nested = tmp_path / "nested.yaml"
    nested.write_text(REFERENCE_BLOCK)
    notes: list[ConfigNote] = []
    assert load_config(path, {}, notes) == load_config(nested, {})
    assert not [n for n in notes if "ignored" in n.message]


def test_io1_addresses_are_stored_as_0x() -> None:
    """An io1 delegateAddress or rewardContract is kept as its EIP-55 0x form."""
    io1 = to_io(DELEGATE_0X)
    cfg = parse_config({**_flat(), "delegateAddress": io1, "rewardContract": io1})
    assert cfg.delegate_address == DELEGATE_0X and cfg.reward_contract == DELEGATE_0X
    lower = parse_config({**_flat(), "delegateAddress": DELEGATE_0X.lower()})
    assert lower.delegate_address == DELEGATE_0X


@pytest.mark.parametrize(
    ("key", "raw", "attr", "want"),
    [
        ("taskLevel", "l2", "task_level", "L2"),
        ("taskLevel", "l4", "task_level", "L4"),
        ("logLevel", "DEBUG", "log_level", "debug"),
        ("evmFork", "Cancun", "evm_fork", "cancun"),
    ],
)
def test_levels_and_names_in_any_case(key: str, raw: str, attr: str, want: str) -> None:
    """Levels and other named choices are read in any case and kept in ioswarm's spelling."""
    assert getattr(parse_config({**_flat(), key: raw}), attr) == want


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"taskLevel": "l9"}, "ioswarm.taskLevel", "L1, L2, L3, L4"),
        ({"delegateAddress": "io1qqqq"}, "ioswarm.delegateAddress", "io1"),
        # a checksum-breaking case flip in the last letter
        ({"rewardContract": DELEGATE_0X[:-1] + "D"}, "ioswarm.rewardContract", "EIP-55"),
        ({"grpcPort": "x"}, "ioswarm.grpcPort", "integer"),
        ({"masterSecret": ""}, "ioswarm.masterSecret", "always authenticates"),
        ({"masterSecret": "short"}, "ioswarm.masterSecret", "16 characters"),
        ({"bogus": 1}, "ioswarm.bogus", "unknown key"),
    ],
)
def test_bad_values_in_a_node_config_name_the_key(
    data: dict[str, Any], key: str, words: str
) -> None:
    """A bad value inside the ioswarm: section is named with its section and the reason."""
    with pytest.raises(ConfigError) as err:
        parse_config({"chain": {}, "ioswarm": {**_flat(), **data}})
    assert err.value.key == key and words in err.value.problem


def test_empty_master_secret_refusal_says_why() -> None:
    """The Go coordinator's empty masterSecret (no auth) is refused in one line naming the key
    and the reason, flat as nested."""
    with pytest.raises(ConfigError) as err:
        parse_config({**_flat(), "masterSecret": ""})
    assert err.value.key == "masterSecret"
    assert "\n" not in str(err.value) and "act as another" in str(err.value)


def test_disabled_config_skips_serving_requirements() -> None:
    """enabled: false loads without a secret (nothing will serve) but still checks each key."""
    cfg = parse_config({"ioswarm": {"enabled": False, "masterSecret": ""}})
    assert cfg.enabled is False
    with pytest.raises(ConfigError, match="taskLevel"):
        parse_config({"ioswarm": {"enabled": False, "taskLevel": "L7"}})
    assert parse_config({"masterSecret": "0123456789abcdef"}).enabled is True


def test_ioswarm_section_must_be_a_mapping() -> None:
    """An ioswarm: key that is not a mapping is named; an empty one means all defaults."""
    with pytest.raises(ConfigError) as err:
        parse_config({"ioswarm": "yes"})
    assert err.value.key == "ioswarm"
    cfg = parse_config({"ioswarm": None}, {"IOSWARM_MASTER_SECRET": "0123456789abcdef"})
    assert cfg.grpc_port == 14689


def test_env_overrides_apply_to_a_nested_section() -> None:
    """IOSWARM_* names stay unprefixed when the keys sit under ioswarm:."""
    cfg = parse_config({"ioswarm": _flat()}, {"IOSWARM_GRPC_PORT": "15000"})
    assert cfg.grpc_port == 15000


def test_reference_values_with_another_meaning_are_noted(tmp_path: Path) -> None:
    """swarmApiPort 0 and a .db diffStorePath load, each with a note saying what they mean
    here; diffRetainHeight 0 keeps all as in the reference."""
    notes: list[ConfigNote] = []
    cfg = parse_config({**_flat(), "swarmApiPort": 0, "diffRetainHeight": 0}, {}, notes)
    assert cfg.swarm_api_port == 0 and cfg.diff_retain_height == 0
    text = " | ".join(n.message for n in notes)
    assert "swarmApiPort=0 picks a free port" in text
    assert "diffStorePath is a directory" in text


def test_a_bbolt_file_as_diff_store_path_is_refused(tmp_path: Path) -> None:
    """An existing file at diffStorePath (the Go coordinator's bbolt store) is refused by name."""
    bolt = tmp_path / "statediffs.db"
    bolt.write_bytes(b"\x00" * 32)
    with pytest.raises(ConfigError) as err:
        parse_config({**_flat(), "diffStorePath": str(bolt)})
    assert err.value.key == "diffStorePath" and "bbolt" in err.value.problem


# Every yaml key of the Go coordinator's Config and RewardConfig (iotex-core ioswarm/config.go
# and ioswarm/reward.go, branch ioswarm-v2.3.5).
GO_KEYS = [
    "enabled",
    "grpcPort",
    "swarmApiPort",
    "maxAgents",
    "taskLevel",
    "shadowMode",
    "pollIntervalMs",
    "masterSecret",
    "delegateAddress",
    "epochRewardIOTX",
    "rewardContract",
    "rewardSignerKey",
    "rewardRpcUrl",
    "rewardChainId",
    "diffBufferSize",
    "diffStoreEnabled",
    "diffStorePath",
    "diffRetainHeight",
    "reward.delegateCutPct",
    "reward.epochBlocks",
    "reward.minTasksForReward",
    "reward.bonusAccuracyPct",
    "reward.bonusMultiplier",
]


def test_every_go_coordinator_key_is_implemented() -> None:
    """No key of the Go coordinator's config is unknown here, so none needs a warning."""
    assert set(GO_KEYS) <= set(documented_keys())


def test_go_defaults_that_differ_are_the_documented_ones() -> None:
    """The defaults the migration table lists as different are the loader's defaults."""
    cfg = parse_config({"masterSecret": "0123456789abcdef"})
    assert cfg.enabled is True and cfg.epoch_reward_wei == 10**18
    assert cfg.diff_store_enabled is False and cfg.reward.epoch_blocks == 720
    assert (cfg.reward_rpc_url, cfg.reward_chain_id) == ("", 0)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Migrating from the Go coordinator", 1)[1].split("\n## ", 1)[0]
    for key in (
        "enabled",
        "masterSecret",
        "epochRewardIOTX",
        "diffStoreEnabled",
        "reward.epochBlocks",
        "rewardRpcUrl",
        "rewardChainId",
        "diffStorePath",
    ):
        assert f"| `{key}` |" in table, key
