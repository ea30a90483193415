"""Typed configuration and the one loader (YAML file + ``IOSWARM_*`` environment + secret files).

YAML keys are camelCase as in the reference config. Every field carries its YAML key and a
one-line doc in its metadata; ``config.example.yaml`` documents the same keys and a unit test
keeps the two in step. Nothing else in ioswarm reads ``os.environ``: callers pass the
environment mapping in.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from ioswarm.configfile import (
    SECTION,
    ConfigNote,
    check_diff_store_path,
    coordinator_section,
    value_notes,
)
from ioswarm.core.address import address_problem, canonical_address
from ioswarm.errors import ConfigError

ENV_PREFIX = "IOSWARM_"
LEVELS = ("L1", "L2", "L3", "L4")
WEI_PER_IOTX = 10**18

T = TypeVar("T")


def _f(
    key: str,
    default: Any,
    doc: str,
    *,
    secret: bool = False,
    check: Callable[[Any], str | None] | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> Any:
    """A config field: YAML key, default, one-line doc, optional secret flag, normaliser (run
    first; a ValueError it raises is the key's error) and check."""
    meta = {"key": key, "doc": doc, "secret": secret, "check": check, "normalize": normalize}
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: Any) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _port(v: Any) -> str | None:
    return None if 0 <= v <= 65535 else "must be a TCP port in 0..65535 (0 picks a free one)"


def _percent(v: Any) -> str | None:
    return None if 0 <= v <= 100 else "must be a percentage in 0..100"


def _level(v: Any) -> str | None:
    return None if v in LEVELS else f"must be one of {', '.join(LEVELS)}"


def _address(v: Any) -> str | None:
    return None if v == "" else address_problem(v)


def _to_0x(v: Any) -> Any:
    """0x or io1 → EIP-55 0x, so an io1 address never reaches the code past the loader."""
    return v if v == "" or not isinstance(v, str) else canonical_address(v)


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v


def _lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else v


def _url(v: Any) -> str | None:
    if v == "" or re.match(r"^https?://[^\s/]+", v):
        return None
    return "must be an http:// or https:// URL"


def _ws_url(v: Any) -> str | None:
    if v in ("", "off") or re.match(r"^wss?://[^\s/]+", v):
        return None
    return 'must be a ws:// or wss:// URL, "" (derived from nodeRpcUrl) or "off"'


def _amount(v: Any) -> str | None:
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        return "must be a decimal amount"
    if d < 0 or d * WEI_PER_IOTX != int(d * WEI_PER_IOTX):
        return "must be >= 0 with at most 18 decimals"
    return None


def _at_least(low: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        return None if v >= low else f"must be >= {low}"

    return check


def _fork(v: Any) -> str | None:
    return None if v in ("cancun", "prague") else "must be cancun or prague"


def _log_format(v: Any) -> str | None:
    return None if v in ("kv", "json") else "must be kv or json"


def _log_level(v: Any) -> str | None:
    ok = ("debug", "info", "warning", "error")
    return None if v in ok else f"must be one of {', '.join(ok)}"


@dataclass(frozen=True)
class RewardConfig:
    """Epoch reward policy (the ``reward:`` block)."""

    delegate_cut_pct: int = _f(
        "delegateCutPct", 10, "Percent of each epoch reward the delegate keeps.", check=_percent
    )
    epoch_blocks: int = _f("epochBlocks", 720, "Blocks per reward epoch.", check=_positive)
    min_tasks_for_reward: int = _f(
        "minTasksForReward",
        10,
        "Agents with fewer tasks in an epoch get weight 0.",
        check=_non_negative,
    )
    bonus_accuracy_pct: float = _f(
        "bonusAccuracyPct", 99.5, "Accuracy at or above which the bonus applies.", check=_percent
    )
    bonus_multiplier: float = _f(
        "bonusMultiplier",
        1.2,
        "Weight multiplier for agents at or above bonusAccuracyPct.",
        check=_positive,
    )
    min_accuracy_pct: float = _f(
        "minAccuracyPct",
        90.0,
        "Accuracy (overall, and on canary tasks) below which an agent gets weight 0 for the epoch.",
        check=_percent,
    )
    min_canaries: int = _f(
        "minCanaries",
        1,
        "Canary tasks an agent must have answered in an epoch to earn; ignored when canaryPct is 0.",
        check=_non_negative,
    )


@dataclass(frozen=True)
class LimitsConfig:
    """What one client may cost the coordinator (the ``limits:`` block)."""

    max_message_bytes: int = _f(
        "maxMessageBytes",
        4 * 1024 * 1024,
        "Largest gRPC message an agent may send (a SubmitResults); larger ones are refused "
        "RESOURCE_EXHAUSTED before they are read whole. Other requests may be at most 64 KiB.",
        check=_at_least(64 * 1024),
    )
    grpc_max_connections: int = _f(
        "grpcMaxConnections",
        1024,
        "Most open agent (gRPC) connections; lowered to fit the open-file limit.",
        check=_positive,
    )
    grpc_max_streams_per_connection: int = _f(
        "grpcMaxStreamsPerConnection",
        16,
        "Most concurrent calls on one gRPC connection (an agent needs about 4).",
        check=_positive,
    )
    grpc_handshake_timeout_sec: int = _f(
        "grpcHandshakeTimeoutSec",
        10,
        "A gRPC connection that has not finished its TLS/HTTP2 handshake by then is closed.",
        check=_positive,
    )
    grpc_idle_timeout_sec: int = _f(
        "grpcIdleTimeoutSec",
        300,
        "A gRPC connection with no call for this long is closed (agents reconnect).",
        check=_positive,
    )
    http_max_connections: int = _f(
        "httpMaxConnections",
        256,
        "Most open HTTP API connections, a quarter of them for newcomers on probation; lowered "
        "to fit the open-file limit. When full, a newcomer that sends a whole request takes the "
        "place of the longest-idle connection.",
        check=_positive,
    )
    http_max_connections_per_ip: int = _f(
        "httpMaxConnectionsPerIp",
        64,
        "Most open HTTP API connections from one address (its own longest-idle one makes room).",
        check=_positive,
    )
    http_idle_timeout_sec: int = _f(
        "httpIdleTimeoutSec",
        15,
        "An HTTP connection without a complete request for this long is closed "
        "(slow or absent headers included).",
        check=_positive,
    )
    http_request_timeout_sec: int = _f(
        "httpRequestTimeoutSec",
        600,
        "An HTTP request (a snapshot download included) still running after this is cut.",
        check=_positive,
    )
    console_max_streams: int = _f(
        "consoleMaxStreams",
        32,
        "Most open operator-console event streams (GET /api/events); more are refused 503. "
        "Each holds one HTTP connection busy until httpRequestTimeoutSec cuts it.",
        check=_positive,
    )
    fd_reserve: int = _f(
        "fdReserve",
        128,
        "Open files kept back from the connection budgets for the node, stores and logs.",
        check=_positive,
    )
    log_repeats_per_min: int = _f(
        "logRepeatsPerMin",
        10,
        "Lines of one kind (logger, level, message template) written per minute; the rest "
        "are counted and summarised in one line, with at most one traceback per kind.",
        check=_positive,
    )


@dataclass(frozen=True)
class CoordinatorConfig:
    """Everything the coordinator sidecar reads at start."""

    enabled: bool = _f(
        "enabled",
        True,
        "false: the coordinator says it is disabled and exits 0 without serving (the Go "
        "coordinator's switch; absent means true).",
    )
    node_rpc_url: str = _f(
        "nodeRpcUrl",
        "http://127.0.0.1:8545",
        "JSON-RPC URL of the EVM node this coordinator runs beside.",
        check=_url,
    )
    node_ws_url: str = _f(
        "nodeWsUrl",
        "",
        'WebSocket URL the node pushes pending txs on (eth_subscribe newPendingTransactions); empty derives it from nodeRpcUrl (ws:// on the same host and port, as anvil and reth serve it), "off" polls only.',
        check=_ws_url,
    )
    chain_id: int = _f(
        "chainId",
        0,
        "Expected chain id; 0 accepts whatever the node reports. Checked at start.",
        check=_non_negative,
    )
    grpc_host: str = _f(
        "grpcHost", "127.0.0.1", "Interface the agent gRPC server binds. Non-loopback requires TLS."
    )
    grpc_port: int = _f("grpcPort", 14689, "Agent gRPC port.", check=_port)
    swarm_api_host: str = _f(
        "swarmApiHost", "127.0.0.1", "Interface the HTTP monitoring API binds."
    )
    swarm_api_port: int = _f(
        "swarmApiPort", 14690, "HTTP monitoring API port (stats, metrics, console).", check=_port
    )
    tls_cert_file: str = _f(
        "tlsCertFile",
        "",
        "PEM server certificate for the gRPC server; empty means plaintext (loopback only).",
    )
    tls_key_file: str = _f("tlsKeyFile", "", "PEM private key matching tlsCertFile.")
    grpc_tls_terminated_by_proxy: bool = _f(
        "grpcTlsTerminatedByProxy",
        False,
        "Opt-in: a trusted proxy (nginx, an ingress) terminates TLS in front of grpcPort, so plaintext gRPC may bind a non-loopback grpcHost; never expose that port itself.",
    )
    max_agents: int = _f(
        "maxAgents",
        100,
        "Most agents registered at once; further registrations are refused.",
        check=_positive,
    )
    task_level: str = _f(
        "taskLevel",
        "L2",
        "Highest level tasks are prepared at (L1..L4, any case): each pending tx becomes one task per level up to this one at which an agent is connected.",
        check=_level,
        normalize=_upper,
    )
    evm_fork: str = _f(
        "evmFork",
        "prague",
        "EVM fork L3/L4 agents execute under (cancun or prague).",
        check=_fork,
        normalize=_lower,
    )
    shadow_mode: bool = _f(
        "shadowMode", True, "Compare every agent answer with what the chain did."
    )
    poll_interval_ms: int = _f(
        "pollIntervalMs", 1000, "Mempool poll period in milliseconds.", check=_positive
    )
    mempool_gap_fill_ms: int = _f(
        "mempoolGapFillMs",
        2000,
        "While the node pushes pending txs, the full txpool_content listing runs this often instead of every pollIntervalMs (it fills what a dropped connection missed).",
        check=_positive,
    )
    proof_check_pct: float = _f(
        "proofCheckPct",
        1.0,
        "Percentage of the addresses of each mempool state read also proven with eth_getProof against the block's state root (a consistency check of the plain reads; 100 proves every one).",
        check=_percent,
    )
    task_timeout_ms: int = _f(
        "taskTimeoutMs",
        2000,
        "Per-task deadline; after it the task goes to another agent.",
        check=_positive,
    )
    task_timeout_per_mgas_ms: int = _f(
        "taskTimeoutPerMgasMs",
        500,
        "Extra deadline of an executing (L3/L4) task per million gas of its gas limit.",
        check=_non_negative,
    )
    max_batch_size: int = _f("maxBatchSize", 64, "Most tasks in one TaskBatch.", check=_positive)
    max_inflight_per_agent: int = _f(
        "maxInflightPerAgent",
        256,
        "Most unanswered tasks one agent may hold (backpressure).",
        check=_positive,
    )
    retry_queue_size: int = _f(
        "retryQueueSize",
        10000,
        "Bound of the queue of tasks waiting for (re)dispatch.",
        check=_positive,
    )
    max_task_attempts: int = _f(
        "maxTaskAttempts", 3, "Dispatch attempts per task before it is dropped.", check=_positive
    )
    heartbeat_interval_sec: int = _f(
        "heartbeatIntervalSec", 10, "Heartbeat period agents are told to use.", check=_positive
    )
    heartbeat_miss_limit: int = _f(
        "heartbeatMissLimit",
        6,
        "Missed heartbeats after which an agent is evicted.",
        check=_positive,
    )
    submit_rate_per_sec: float = _f(
        "submitRatePerSec",
        40.0,
        "Per-agent SubmitResults token-bucket refill rate (agents submit each result as soon as it is ready, within this).",
        check=_positive,
    )
    submit_burst: int = _f(
        "submitBurst", 40, "Per-agent SubmitResults token-bucket capacity.", check=_positive
    )
    canary_pct: float = _f(
        "canaryPct",
        5.0,
        "Percent of tasks that are canaries (known answer, never broadcast); 0 disables.",
        check=_percent,
    )
    decline_max_pct: float = _f(
        "declineMaxPct",
        25.0,
        "Share of an agent's recent answers that may be declines before it is throttled.",
        check=_percent,
    )
    shadow_expiry_blocks: int = _f(
        "shadowExpiryBlocks",
        50,
        "Blocks a result waits for its tx to be included before it expires without a verdict.",
        check=_positive,
    )
    max_tracked_txs: int = _f(
        "maxTrackedTxs",
        100000,
        "Most transactions each per-transaction table remembers (dispatched hashes, mempool nonce slots, verdicts waiting for inclusion, recent chain truth); past it the oldest are forgotten.",
        check=_positive,
    )
    agent_retention_blocks: int = _f(
        "agentRetentionBlocks",
        720,
        "Blocks an evicted agent's history (shadow counts, conduct, throttle, canary countdown) is kept; one that returns within it keeps it. At most maxAgents departed agents are kept.",
        check=_positive,
    )
    sync_max_lag_sec: int = _f(
        "syncMaxLagSec",
        120,
        "Skip polling while the latest block is older than this (node syncing); 0 disables.",
        check=_non_negative,
    )
    master_secret: str = _f(
        "masterSecret",
        "",
        "HMAC secret agent API keys derive from (secret; also masterSecretFile or IOSWARM_MASTER_SECRET).",
        secret=True,
    )
    delegate_address: str = _f(
        "delegateAddress",
        "",
        "Delegate wallet that receives the delegate cut (0x or io1).",
        check=_address,
        normalize=_to_0x,
    )
    epoch_reward_iotx: str = _f(
        "epochRewardIOTX",
        "1",
        "Reward paid per epoch, in IOTX (decimal, up to 18 places).",
        check=_amount,
    )
    reward_contract: str = _f(
        "rewardContract",
        "",
        "AgentRewardPool address (0x or io1); empty disables on-chain settlement.",
        check=_address,
        normalize=_to_0x,
    )
    reward_signer_key: str = _f(
        "rewardSignerKey",
        "",
        "Hex private key that signs settlements (secret; also rewardSignerKeyFile).",
        secret=True,
    )
    reward_rpc_url: str = _f(
        "rewardRpcUrl", "", "JSON-RPC URL for settlements; empty uses nodeRpcUrl.", check=_url
    )
    reward_chain_id: int = _f(
        "rewardChainId", 0, "Chain id of the reward chain; 0 uses the node's.", check=_non_negative
    )
    reward_confirmations: int = _f(
        "rewardConfirmations",
        12,
        "Blocks on a settlement (its own included) before it is final; until then a reorg "
        "that drops it re-sends the same transaction.",
        check=_positive,
    )
    diff_buffer_size: int = _f(
        "diffBufferSize",
        100,
        "State diffs kept in memory for live L4 subscribers.",
        check=_positive,
    )
    diff_store_enabled: bool = _f(
        "diffStoreEnabled",
        False,
        "The L4 switch: keep the state store, persist and stream per-block state diffs.",
    )
    state_store_path: str = _f(
        "stateStorePath", "", "L4 state store (LMDB) directory; empty means <dataDir>/state."
    )
    state_bootstrap_snapshot: str = _f(
        "stateBootstrapSnapshot",
        "",
        "IOSWSNAP file to start an empty state store from; empty reads the node's state.",
    )
    snapshot_base_url: str = _f(
        "snapshotBaseUrl",
        "",
        "URL prefix DownloadSnapshot advertises; empty means this API's /snapshots.",
    )
    snapshot_interval_blocks: int = _f(
        "snapshotIntervalBlocks",
        0,
        "Export a snapshot to <dataDir>/snapshots every N blocks; 0 disables.",
        check=_non_negative,
    )
    diff_store_path: str = _f(
        "diffStorePath", "", "Diff store directory; empty means <dataDir>/diffs."
    )
    diff_retain_height: int = _f(
        "diffRetainHeight",
        10000,
        "Blocks of diffs kept before pruning; 0 keeps all (the disk grows without bound).",
        check=_non_negative,
    )
    data_dir: str = _f("dataDir", "./data", "Directory for ledgers and stores.")
    log_level: str = _f(
        "logLevel",
        "info",
        "debug, info, warning or error (any case).",
        check=_log_level,
        normalize=_lower,
    )
    log_format: str = _f(
        "logFormat",
        "kv",
        "kv (logfmt) or json (one object per line, each key=value of a message its own key).",
        check=_log_format,
        normalize=_lower,
    )
    reward: RewardConfig = _f("reward", RewardConfig, "Epoch reward policy.")  # noqa: RUF009 - _f gives a default_factory for dataclass defaults
    limits: LimitsConfig = _f("limits", LimitsConfig, "Connection, message and log budgets.")  # noqa: RUF009 - as above

    @property
    def epoch_reward_wei(self) -> int:
        """The per-epoch reward in wei (exact, no floats)."""
        return int(Decimal(str(self.epoch_reward_iotx)) * WEI_PER_IOTX)

    @property
    def tls_enabled(self) -> bool:
        return bool(self.tls_cert_file)


def _walk_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.metadata["key"]: f for f in dataclasses.fields(cls)}


def _env_name(path: list[str]) -> str:
    parts = [re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", p).upper() for p in path]
    return ENV_PREFIX + "_".join(parts)


def _coerce(path: str, raw: Any, typ: Any, from_env: bool) -> Any:
    """Turn a YAML or env value into the field's type, or raise ConfigError naming the key."""
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if (
            from_env
            and isinstance(raw, str)
            and raw.lower() in ("1", "true", "yes", "0", "false", "no")
        ):
            return raw.lower() in ("1", "true", "yes")
        raise ConfigError(path, f"must be true or false, got {raw!r}")
    if typ is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if from_env and isinstance(raw, str) and re.fullmatch(r"-?\d+", raw.strip()):
            return int(raw)
        raise ConfigError(path, f"must be an integer, got {raw!r}")
    if typ is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if from_env and isinstance(raw, str):
            try:
                return float(raw)
            except ValueError:
                pass
        raise ConfigError(path, f"must be a number, got {raw!r}")
    if typ is str:
        if isinstance(raw, str):
            return raw
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return str(raw)
        raise ConfigError(path, f"must be a string, got {raw!r}")
    raise ConfigError(path, f"unsupported type {typ!r}")


def _build(cls: type[T], data: Mapping[str, Any], env: Mapping[str, str], prefix: list[str]) -> T:
    fields = _walk_fields(cls)
    hints = get_type_hints(cls)
    for key in data:
        if key not in fields and not (key.endswith("File") and key[: -len("File")] in fields):
            dotted = ".".join([*prefix, str(key)])
            raise ConfigError(dotted, "unknown key (see config.example.yaml for the valid keys)")
    kwargs: dict[str, Any] = {}
    for key, f in fields.items():
        path = [*prefix, key]
        dotted = ".".join(path)
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            sub = data.get(key, {})
            if sub is None:
                sub = {}
            if not isinstance(sub, Mapping):
                raise ConfigError(dotted, "must be a mapping")
            kwargs[f.name] = _build(typ, sub, env, path)  # type: ignore[arg-type]
            continue
        value: Any = f.default
        if key in data and data[key] is not None:
            value = _coerce(dotted, data[key], typ, from_env=False)
        if f.metadata["secret"]:
            file_key = key + "File"
            file_path = env.get(_env_name([*prefix, file_key])) or data.get(file_key)
            if file_path:
                try:
                    value = Path(str(file_path)).read_text().strip()
                except OSError as exc:
                    raise ConfigError(
                        ".".join([*prefix, file_key]), f"cannot read secret file: {exc.strerror}"
                    ) from exc
        env_name = _env_name(path)
        if env_name in env:
            value = _coerce(f"{dotted} (from {env_name})", env[env_name], typ, from_env=True)
        normalize = f.metadata["normalize"]
        if normalize is not None:
            try:
                value = normalize(value)
            except ValueError as exc:
                raise ConfigError(dotted, f"{exc}, got {value!r}") from exc
        check = f.metadata["check"]
        if check is not None:
            problem = check(value)
            if problem:
                shown = "<secret>" if f.metadata["secret"] else repr(value)
                raise ConfigError(dotted, f"{problem}, got {shown}")
        kwargs[f.name] = value
    return cls(**kwargs)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_config(
    data: Mapping[str, Any] | None,
    env: Mapping[str, str] | None = None,
    notes: list[ConfigNote] | None = None,
) -> CoordinatorConfig:
    """Build a validated CoordinatorConfig from parsed YAML (flat keys, or an iotex-core config
    with an ``ioswarm:`` section) and an environment mapping; lines for the operator about the
    file are appended to ``notes``."""
    whole = data or {}
    section, found = coordinator_section(whole)
    try:
        cfg = _build(CoordinatorConfig, section, env or {}, [])
        if cfg.enabled:
            _check_serving(cfg)
    except ConfigError as exc:
        if section is whole:
            raise
        raise ConfigError(f"{SECTION}.{exc.key}", exc.problem) from None
    if notes is not None:
        notes.extend(found + value_notes(section, cfg))
    return cfg


def _check_serving(cfg: CoordinatorConfig) -> None:
    """What a coordinator that serves needs beyond each key's own check."""
    if not cfg.master_secret:
        raise ConfigError(
            "masterSecret",
            "is required: ioswarm always authenticates agents (an empty secret, no auth in the "
            "Go coordinator, would let any agent act as another and take its pay); set it, "
            "masterSecretFile or IOSWARM_MASTER_SECRET",
        )
    if len(cfg.master_secret) < 16:
        raise ConfigError(
            "masterSecret",
            "must be at least 16 characters (an agent knows one key made from it and could "
            "guess a short secret offline)",
        )
    if bool(cfg.tls_cert_file) != bool(cfg.tls_key_file):
        raise ConfigError(
            "tlsKeyFile" if cfg.tls_cert_file else "tlsCertFile",
            "tlsCertFile and tlsKeyFile go together",
        )
    for key, path in (("tlsCertFile", cfg.tls_cert_file), ("tlsKeyFile", cfg.tls_key_file)):
        if path and not Path(path).is_file():
            raise ConfigError(key, f"file not found: {path}")
    if (
        not cfg.tls_enabled
        and not cfg.grpc_tls_terminated_by_proxy
        and not _is_loopback(cfg.grpc_host)
    ):
        raise ConfigError(
            "grpcHost",
            f"{cfg.grpc_host} is not loopback; plaintext gRPC is only allowed on loopback, set tlsCertFile/tlsKeyFile"
            " (or grpcTlsTerminatedByProxy: true when a trusted proxy terminates TLS in front of it)",
        )
    if cfg.reward_signer_key and not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", cfg.reward_signer_key):
        raise ConfigError("rewardSignerKey", "must be a 32-byte hex private key")
    check_diff_store_path(cfg)


def load_config(
    path: str | Path | None,
    env: Mapping[str, str] | None = None,
    notes: list[ConfigNote] | None = None,
) -> CoordinatorConfig:
    """Read the YAML file at ``path`` (if any), apply env overrides and validate; lines for the
    operator about the file are appended to ``notes``."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(str(path), f"cannot read config file: {exc.strerror}") from exc
        import yaml  # noqa: PLC0415 - only a config file needs it; agents start without

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(str(path), f"not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(str(path), "top level must be a mapping of keys")
    return parse_config(data, env, notes)


def documented_keys(cls: type = CoordinatorConfig, prefix: str = "") -> dict[str, str]:
    """Every YAML key (dotted for nested blocks) with its one-line doc."""
    out: dict[str, str] = {}
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.metadata["key"]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(documented_keys(hints[f.name], key + "."))
        else:
            out[key] = f.metadata["doc"]
    return out


@dataclass(frozen=True)
class AgentConfig:
    """What ``ioswarm agent`` runs with (flags, or IOSWARM_* environment equivalents).

    ``coordinator`` may name several coordinators, comma-separated: the agent keeps one
    independent link to each (:meth:`links`). ``api_key`` is then one key for all of them or
    one per coordinator, comma-separated in the same order.
    """

    coordinator: str
    """HOST:PORT of the coordinator's gRPC port, or several comma-separated."""
    agent_id: str
    """This agent's id (the coordinator's API key is made for it)."""
    api_key: str = field(repr=False)
    """iosw_ API key: one for every coordinator, or one per coordinator, comma-separated."""
    wallet: str
    """Wallet that receives rewards (EIP-55 0x; an io1 address is converted)."""
    level: str = "L2"
    """Validation level L1..L4."""
    tls: bool = True
    """TLS to the coordinators (a coordinator on port 443 always gets TLS)."""
    ca_cert: str = ""
    """PEM CA bundle trusted for the coordinators' certificates; empty uses the system's."""
    region: str = ""
    """Free-form region label shown on the dashboard."""
    datadir: str = ""
    """L4: directory of the local state store."""
    snapshot: str = ""
    """L4: IOSWSNAP file or URL an empty store starts from."""
    max_batch_size: int = 64
    """Most tasks asked for in one TaskBatch."""
    reconnect_max_sec: float = 30.0
    """Longest pause between two reconnect attempts to one coordinator."""

    @property
    def coordinators(self) -> tuple[str, ...]:
        """Each coordinator address, in the order given."""
        return tuple(c.strip() for c in self.coordinator.split(","))

    def links(self) -> tuple[AgentConfig, ...]:
        """One single-coordinator config per coordinator: its address and its API key.

        A coordinator on port 443, or any coordinator when ``ca_cert`` is set, gets TLS even
        with ``tls`` off, as with the reference agent (nothing serves plaintext gRPC on 443,
        and a CA is only for TLS).
        """
        addresses = self.coordinators
        keys = [k.strip() for k in self.api_key.split(",")]
        if len(keys) == 1:
            keys *= len(addresses)
        return tuple(
            dataclasses.replace(
                self,
                coordinator=a,
                api_key=k,
                tls=self.tls or bool(self.ca_cert) or a.endswith(":443"),
            )
            for a, k in zip(addresses, keys, strict=True)
        )


AGENT_ENV = {
    "coordinator": "IOSWARM_COORDINATOR",
    "agent_id": "IOSWARM_AGENT_ID",
    "api_key": "IOSWARM_API_KEY",
    "wallet": "IOSWARM_WALLET",
    "level": "IOSWARM_LEVEL",
    "tls": "IOSWARM_TLS",
    "ca_cert": "IOSWARM_CA_CERT",
    "region": "IOSWARM_REGION",
    "datadir": "IOSWARM_DATADIR",
    "snapshot": "IOSWARM_SNAPSHOT",
}

_TRUE = ("1", "t", "true", "y", "yes", "on")
_FALSE = ("0", "f", "false", "n", "no", "off")
_HOST_PORT = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:,\[\]]+):(\d{1,5})")
_API_KEY = re.compile(r"iosw_[0-9a-f]{64}")


def parse_bool(name: str, raw: str) -> bool:
    """A boolean flag or env value: true/false as Go's flag package spells them (1, t, T,
    TRUE, true, True, 0, f, F, ...), plus yes/no/on/off, any case; ConfigError naming
    ``name`` otherwise."""
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(name, f"must be true or false, got {raw!r}")


def parse_level(name: str, raw: str) -> str:
    """``L1``..``L4`` in any case (``l2``, `` L3 ``); ConfigError naming ``name`` otherwise.

    The reference agent maps any unknown spelling to L2; ioswarm refuses it instead, so a typo
    does not silently run the wrong level.
    """
    level = raw.strip().upper()
    if level not in LEVELS:
        raise ConfigError(name, f"must be one of {', '.join(LEVELS)} (any case), got {raw!r}")
    return level


def _coordinators(raw: str) -> list[str]:
    """The comma-separated coordinator list, each checked; errors name --coordinator."""
    out: list[str] = []
    for part in raw.split(","):
        address = part.strip()
        m = _HOST_PORT.fullmatch(address)
        if not m or not 0 < int(m[1]) <= 65535:
            shown = f" in {raw!r}" if "," in raw else ""
            raise ConfigError(
                "--coordinator",
                f"each coordinator must be HOST:PORT (several comma-separated), "
                f"got {address!r}{shown}",
            )
        if address in out:
            raise ConfigError("--coordinator", f"{address} is named twice")
        out.append(address)
    return out


def _api_keys(raw: str, coordinators: int) -> list[str]:
    keys = [k.strip() for k in raw.split(",")]
    if len(keys) not in (1, coordinators):
        raise ConfigError(
            "--api-key",
            f"{len(keys)} keys for {coordinators} coordinators: give one key for all of them "
            "or one per coordinator, comma-separated in the same order",
        )
    for i, key in enumerate(keys):
        if not _API_KEY.fullmatch(key):
            which = f"key {i + 1} " if len(keys) > 1 else ""
            raise ConfigError(
                "--api-key", f"{which}must look like iosw_<64 hex> (see ioswarm keygen)"
            )
    return keys


def agent_config(values: Mapping[str, Any], env: Mapping[str, str]) -> AgentConfig:
    """Merge CLI values (None = not given) with IOSWARM_* env and validate; errors name the flag
    (or the environment variable the bad value came from)."""
    merged: dict[str, Any] = {}
    source: dict[str, str] = {}
    for name, env_name in AGENT_ENV.items():
        v = values.get(name)
        flag = "--" + name.replace("_", "-")
        if (v is None or v == "") and env.get(env_name, "") != "":
            v, flag = env[env_name], env_name
        if v is None:
            continue
        if name == "tls" and isinstance(v, str):
            v = parse_bool(flag, v)
        merged[name] = v
        source[name] = flag
    for name in ("coordinator", "agent_id", "api_key", "wallet"):
        if not merged.get(name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(flag, f"is required (or set {AGENT_ENV[name]})")
    try:
        coordinators = _coordinators(merged["coordinator"])
        merged["coordinator"] = ",".join(coordinators)
        merged["api_key"] = ",".join(_api_keys(merged["api_key"], len(coordinators)))
    except ConfigError as exc:
        raise ConfigError(source[exc.key.lstrip("-").replace("-", "_")], exc.problem) from None
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", merged["agent_id"]):
        raise ConfigError(
            source["agent_id"], "must be 1-64 characters of letters, digits, '_', '-', '.'"
        )
    if problem := address_problem(merged["wallet"]):
        raise ConfigError(source["wallet"], problem)
    merged["wallet"] = canonical_address(merged["wallet"])
    level = parse_level(source.get("level", "--level"), str(merged.get("level", "L2")))
    merged["level"] = level
    if merged.get("ca_cert") and not Path(merged["ca_cert"]).is_file():
        raise ConfigError(source["ca_cert"], f"file not found: {merged['ca_cert']}")
    if level == "L4" and len(coordinators) > 1:
        raise ConfigError(
            source["level"],
            f"L4 follows one coordinator's state-diff stream into one local store; for "
            f"{len(coordinators)} coordinators run one L4 agent per coordinator (each with its "
            "own --datadir), or serve them all at L3",
        )
    for k in ("max_batch_size", "reconnect_max_sec"):
        if values.get(k) is not None:
            merged[k] = values[k]
    return AgentConfig(**merged)


CONFORMANCE_FIXTURES_ENV = "IOSWARM_CONFORMANCE_FIXTURES"
DEFAULT_CONFORMANCE_FIXTURES = "../shared/ethereum-tests"


def conformance_fixtures(flag: str | None, env: Mapping[str, str]) -> Path:
    """The state-test fixture tree ``ioswarm conformance`` runs: ``--fixtures``, else
    IOSWARM_CONFORMANCE_FIXTURES, else ../shared/ethereum-tests (beside the checkout)."""
    raw = flag or env.get(CONFORMANCE_FIXTURES_ENV) or DEFAULT_CONFORMANCE_FIXTURES
    path = Path(raw)
    if not path.is_dir():
        name = "--fixtures" if flag else CONFORMANCE_FIXTURES_ENV
        raise ConfigError(name, f"not a directory of state-test fixtures: {raw}")
    return path
