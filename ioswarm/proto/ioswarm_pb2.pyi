from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_UNSPECIFIED: _ClassVar[TaskLevel]
    L1: _ClassVar[TaskLevel]
    L2: _ClassVar[TaskLevel]
    L3: _ClassVar[TaskLevel]
    L4: _ClassVar[TaskLevel]

class ExecStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXEC_STATUS_UNSPECIFIED: _ClassVar[ExecStatus]
    EXEC_SUCCESS: _ClassVar[ExecStatus]
    EXEC_REVERT: _ClassVar[ExecStatus]
    EXEC_HALT: _ClassVar[ExecStatus]
LEVEL_UNSPECIFIED: TaskLevel
L1: TaskLevel
L2: TaskLevel
L3: TaskLevel
L4: TaskLevel
EXEC_STATUS_UNSPECIFIED: ExecStatus
EXEC_SUCCESS: ExecStatus
EXEC_REVERT: ExecStatus
EXEC_HALT: ExecStatus

class RegisterRequest(_message.Message):
    __slots__ = ("agent_id", "capability", "region", "version", "wallet_address")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    CAPABILITY_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WALLET_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    capability: TaskLevel
    region: str
    version: str
    wallet_address: str
    def __init__(self, agent_id: _Optional[str] = ..., capability: _Optional[_Union[TaskLevel, str]] = ..., region: _Optional[str] = ..., version: _Optional[str] = ..., wallet_address: _Optional[str] = ...) -> None: ...

class RegisterResponse(_message.Message):
    __slots__ = ("accepted", "reason", "heartbeat_interval_sec", "chain_id")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SEC_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    heartbeat_interval_sec: int
    chain_id: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., heartbeat_interval_sec: _Optional[int] = ..., chain_id: _Optional[int] = ...) -> None: ...

class GetTasksRequest(_message.Message):
    __slots__ = ("agent_id", "max_level", "max_batch_size")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    max_level: TaskLevel
    max_batch_size: int
    def __init__(self, agent_id: _Optional[str] = ..., max_level: _Optional[_Union[TaskLevel, str]] = ..., max_batch_size: _Optional[int] = ...) -> None: ...

class BlockContext(_message.Message):
    __slots__ = ("number", "timestamp", "gas_limit", "base_fee", "coinbase", "prev_randao", "chain_id", "evm_fork", "recent_block_hashes", "blob_base_fee", "absent_accounts_exist")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    BASE_FEE_FIELD_NUMBER: _ClassVar[int]
    COINBASE_FIELD_NUMBER: _ClassVar[int]
    PREV_RANDAO_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    EVM_FORK_FIELD_NUMBER: _ClassVar[int]
    RECENT_BLOCK_HASHES_FIELD_NUMBER: _ClassVar[int]
    BLOB_BASE_FEE_FIELD_NUMBER: _ClassVar[int]
    ABSENT_ACCOUNTS_EXIST_FIELD_NUMBER: _ClassVar[int]
    number: int
    timestamp: int
    gas_limit: int
    base_fee: bytes
    coinbase: bytes
    prev_randao: bytes
    chain_id: int
    evm_fork: str
    recent_block_hashes: _containers.RepeatedCompositeFieldContainer[BlockHash]
    blob_base_fee: bytes
    absent_accounts_exist: bool
    def __init__(self, number: _Optional[int] = ..., timestamp: _Optional[int] = ..., gas_limit: _Optional[int] = ..., base_fee: _Optional[bytes] = ..., coinbase: _Optional[bytes] = ..., prev_randao: _Optional[bytes] = ..., chain_id: _Optional[int] = ..., evm_fork: _Optional[str] = ..., recent_block_hashes: _Optional[_Iterable[_Union[BlockHash, _Mapping]]] = ..., blob_base_fee: _Optional[bytes] = ..., absent_accounts_exist: _Optional[bool] = ...) -> None: ...

class BlockHash(_message.Message):
    __slots__ = ("number", "hash")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    number: int
    hash: bytes
    def __init__(self, number: _Optional[int] = ..., hash: _Optional[bytes] = ...) -> None: ...

class AccountSnapshot(_message.Message):
    __slots__ = ("address", "balance", "nonce", "code_hash")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CODE_HASH_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    balance: bytes
    nonce: int
    code_hash: bytes
    def __init__(self, address: _Optional[bytes] = ..., balance: _Optional[bytes] = ..., nonce: _Optional[int] = ..., code_hash: _Optional[bytes] = ...) -> None: ...

class StorageSlot(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class AccountState(_message.Message):
    __slots__ = ("account", "code", "storage", "exists")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    STORAGE_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    account: AccountSnapshot
    code: bytes
    storage: _containers.RepeatedCompositeFieldContainer[StorageSlot]
    exists: bool
    def __init__(self, account: _Optional[_Union[AccountSnapshot, _Mapping]] = ..., code: _Optional[bytes] = ..., storage: _Optional[_Iterable[_Union[StorageSlot, _Mapping]]] = ..., exists: _Optional[bool] = ...) -> None: ...

class TaskPackage(_message.Message):
    __slots__ = ("task_id", "tx_raw", "level", "sender", "receiver", "block_height", "tx_hash", "block_gas_limit", "accounts", "state_height", "deadline_unix_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TX_RAW_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    BLOCK_GAS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    STATE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    tx_raw: bytes
    level: TaskLevel
    sender: AccountSnapshot
    receiver: AccountSnapshot
    block_height: int
    tx_hash: bytes
    block_gas_limit: int
    accounts: _containers.RepeatedCompositeFieldContainer[AccountState]
    state_height: int
    deadline_unix_ms: int
    def __init__(self, task_id: _Optional[int] = ..., tx_raw: _Optional[bytes] = ..., level: _Optional[_Union[TaskLevel, str]] = ..., sender: _Optional[_Union[AccountSnapshot, _Mapping]] = ..., receiver: _Optional[_Union[AccountSnapshot, _Mapping]] = ..., block_height: _Optional[int] = ..., tx_hash: _Optional[bytes] = ..., block_gas_limit: _Optional[int] = ..., accounts: _Optional[_Iterable[_Union[AccountState, _Mapping]]] = ..., state_height: _Optional[int] = ..., deadline_unix_ms: _Optional[int] = ...) -> None: ...

class TaskBatch(_message.Message):
    __slots__ = ("batch_id", "tasks", "timestamp", "block_context", "chain_id")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    BLOCK_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CHAIN_ID_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    tasks: _containers.RepeatedCompositeFieldContainer[TaskPackage]
    timestamp: int
    block_context: BlockContext
    chain_id: int
    def __init__(self, batch_id: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TaskPackage, _Mapping]]] = ..., timestamp: _Optional[int] = ..., block_context: _Optional[_Union[BlockContext, _Mapping]] = ..., chain_id: _Optional[int] = ...) -> None: ...

class LogEntry(_message.Message):
    __slots__ = ("address", "topics", "data")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOPICS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    topics: _containers.RepeatedScalarFieldContainer[bytes]
    data: bytes
    def __init__(self, address: _Optional[bytes] = ..., topics: _Optional[_Iterable[bytes]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StorageChange(_message.Message):
    __slots__ = ("address", "slot", "old_value", "new_value")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    slot: bytes
    old_value: bytes
    new_value: bytes
    def __init__(self, address: _Optional[bytes] = ..., slot: _Optional[bytes] = ..., old_value: _Optional[bytes] = ..., new_value: _Optional[bytes] = ...) -> None: ...

class AccountChange(_message.Message):
    __slots__ = ("address", "balance_before", "balance_after", "nonce_before", "nonce_after", "created_code", "code_cleared", "deleted")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    BALANCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    NONCE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    NONCE_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_CLEARED_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    address: bytes
    balance_before: bytes
    balance_after: bytes
    nonce_before: int
    nonce_after: int
    created_code: bytes
    code_cleared: bool
    deleted: bool
    def __init__(self, address: _Optional[bytes] = ..., balance_before: _Optional[bytes] = ..., balance_after: _Optional[bytes] = ..., nonce_before: _Optional[int] = ..., nonce_after: _Optional[int] = ..., created_code: _Optional[bytes] = ..., code_cleared: _Optional[bool] = ..., deleted: _Optional[bool] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "valid", "reject_reason", "gas_estimate", "latency_us", "gas_used", "status", "return_data", "logs", "state_changes", "account_changes", "context_reads", "exec_error", "sender", "declined")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    REJECT_REASON_FIELD_NUMBER: _ClassVar[int]
    GAS_ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    GAS_USED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RETURN_DATA_FIELD_NUMBER: _ClassVar[int]
    LOGS_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CHANGES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_READS_FIELD_NUMBER: _ClassVar[int]
    EXEC_ERROR_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    task_id: int
    valid: bool
    reject_reason: str
    gas_estimate: int
    latency_us: int
    gas_used: int
    status: ExecStatus
    return_data: bytes
    logs: _containers.RepeatedCompositeFieldContainer[LogEntry]
    state_changes: _containers.RepeatedCompositeFieldContainer[StorageChange]
    account_changes: _containers.RepeatedCompositeFieldContainer[AccountChange]
    context_reads: _containers.RepeatedScalarFieldContainer[str]
    exec_error: str
    sender: bytes
    declined: bool
    def __init__(self, task_id: _Optional[int] = ..., valid: _Optional[bool] = ..., reject_reason: _Optional[str] = ..., gas_estimate: _Optional[int] = ..., latency_us: _Optional[int] = ..., gas_used: _Optional[int] = ..., status: _Optional[_Union[ExecStatus, str]] = ..., return_data: _Optional[bytes] = ..., logs: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., state_changes: _Optional[_Iterable[_Union[StorageChange, _Mapping]]] = ..., account_changes: _Optional[_Iterable[_Union[AccountChange, _Mapping]]] = ..., context_reads: _Optional[_Iterable[str]] = ..., exec_error: _Optional[str] = ..., sender: _Optional[bytes] = ..., declined: _Optional[bool] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("agent_id", "batch_id", "results", "timestamp")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    batch_id: str
    results: _containers.RepeatedCompositeFieldContainer[TaskResult]
    timestamp: int
    def __init__(self, agent_id: _Optional[str] = ..., batch_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., timestamp: _Optional[int] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("accepted", "reason", "accepted_count")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    accepted_count: int
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., accepted_count: _Optional[int] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("agent_id", "tasks_processed", "tasks_pending", "cpu_usage", "mem_usage", "state_height", "state_hash")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASKS_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    TASKS_PENDING_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_FIELD_NUMBER: _ClassVar[int]
    MEM_USAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tasks_processed: int
    tasks_pending: int
    cpu_usage: float
    mem_usage: float
    state_height: int
    state_hash: bytes
    def __init__(self, agent_id: _Optional[str] = ..., tasks_processed: _Optional[int] = ..., tasks_pending: _Optional[int] = ..., cpu_usage: _Optional[float] = ..., mem_usage: _Optional[float] = ..., state_height: _Optional[int] = ..., state_hash: _Optional[bytes] = ...) -> None: ...

class PayoutInfo(_message.Message):
    __slots__ = ("epoch", "amount_iotx", "rank", "total_agents", "amount_wei", "tx_hash")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_IOTX_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    TOTAL_AGENTS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_WEI_FIELD_NUMBER: _ClassVar[int]
    TX_HASH_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    amount_iotx: float
    rank: int
    total_agents: int
    amount_wei: str
    tx_hash: str
    def __init__(self, epoch: _Optional[int] = ..., amount_iotx: _Optional[float] = ..., rank: _Optional[int] = ..., total_agents: _Optional[int] = ..., amount_wei: _Optional[str] = ..., tx_hash: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("alive", "directive", "payout")
    ALIVE_FIELD_NUMBER: _ClassVar[int]
    DIRECTIVE_FIELD_NUMBER: _ClassVar[int]
    PAYOUT_FIELD_NUMBER: _ClassVar[int]
    alive: bool
    directive: str
    payout: PayoutInfo
    def __init__(self, alive: _Optional[bool] = ..., directive: _Optional[str] = ..., payout: _Optional[_Union[PayoutInfo, _Mapping]] = ...) -> None: ...

class StreamStateDiffsRequest(_message.Message):
    __slots__ = ("agent_id", "from_height")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    from_height: int
    def __init__(self, agent_id: _Optional[str] = ..., from_height: _Optional[int] = ...) -> None: ...

class StateDiffEntry(_message.Message):
    __slots__ = ("op", "namespace", "key", "value")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[StateDiffEntry.Op]
        DELETE: _ClassVar[StateDiffEntry.Op]
    PUT: StateDiffEntry.Op
    DELETE: StateDiffEntry.Op
    OP_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    op: StateDiffEntry.Op
    namespace: str
    key: bytes
    value: bytes
    def __init__(self, op: _Optional[_Union[StateDiffEntry.Op, str]] = ..., namespace: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class StateDiff(_message.Message):
    __slots__ = ("height", "entries", "prev_state_hash", "post_state_hash", "block_context", "block_hash")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PREV_STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    POST_STATE_HASH_FIELD_NUMBER: _ClassVar[int]
    BLOCK_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    BLOCK_HASH_FIELD_NUMBER: _ClassVar[int]
    height: int
    entries: _containers.RepeatedCompositeFieldContainer[StateDiffEntry]
    prev_state_hash: bytes
    post_state_hash: bytes
    block_context: BlockContext
    block_hash: bytes
    def __init__(self, height: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[StateDiffEntry, _Mapping]]] = ..., prev_state_hash: _Optional[bytes] = ..., post_state_hash: _Optional[bytes] = ..., block_context: _Optional[_Union[BlockContext, _Mapping]] = ..., block_hash: _Optional[bytes] = ...) -> None: ...

class DownloadSnapshotRequest(_message.Message):
    __slots__ = ("agent_id",)
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    def __init__(self, agent_id: _Optional[str] = ...) -> None: ...

class DownloadSnapshotResponse(_message.Message):
    __slots__ = ("url", "height", "sha256", "size")
    URL_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    url: str
    height: int
    sha256: bytes
    size: int
    def __init__(self, url: _Optional[str] = ..., height: _Optional[int] = ..., sha256: _Optional[bytes] = ..., size: _Optional[int] = ...) -> None: ...
