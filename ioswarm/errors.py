"""The one exception tree of ioswarm.

::

    IoswarmError                 base; the CLI catches only this
    ├── ConfigError              bad or missing configuration; names the key
    ├── NodeError                the chain node failed or answered nonsense (retryable)
    │   ├── NodeUnreachable      connection refused / timed out
    │   └── MethodNotSupported   the node does not implement a JSON-RPC method
    ├── AuthError                bad agent credentials
    ├── ProtocolError            a peer sent something the wire protocol forbids
    │   └── RequestRefused       refused with a precise gRPC status (rate limit, foreign task ...)
    ├── ValidationError          a transaction could not be decoded or validated
    ├── SettlementError          an on-chain reward settlement failed
    ├── StoreError               a local store (LMDB, files) failed
    │   └── HashMismatch         a state diff does not hash to its post state hash
    ├── SnapshotFormatError      an IOSWSNAP file is malformed
    └── LoopFailed               a supervised loop crashed past its restart limit (fatal)

Errors from libraries underneath (aiohttp, grpc, web3, lmdb) are translated into this tree in
exactly one place per adapter with ``raise X(...) from exc``.
"""

from __future__ import annotations


class IoswarmError(Exception):
    """Base of every error ioswarm raises on purpose."""

    retryable: bool = False


class ConfigError(IoswarmError):
    """Configuration is invalid; the message names the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config {key}: {problem}")
        self.key = key
        self.problem = problem


class NodeError(IoswarmError):
    """The chain node returned an error or an answer that makes no sense."""

    retryable = True

    def __init__(self, method: str, message: str, code: int | None = None) -> None:
        suffix = f" (code {code})" if code is not None else ""
        super().__init__(f"node {method}: {message}{suffix}")
        self.method = method
        self.code = code
        self.detail = message


class NodeUnreachable(NodeError):
    """The node could not be reached at all."""


class MethodNotSupported(NodeError):
    """The node does not implement a JSON-RPC method; callers switch to another one."""

    retryable = False


class AuthError(IoswarmError):
    """Agent credentials are missing or wrong."""


class ProtocolError(IoswarmError):
    """A peer sent something the wire protocol does not allow."""


class RequestRefused(ProtocolError):
    """A well-formed request the coordinator refuses; ``status`` is the gRPC status name."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class ValidationError(IoswarmError):
    """A transaction could not be decoded or failed a structural check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SettlementError(IoswarmError):
    """An on-chain settlement failed."""

    retryable = True


class StoreError(IoswarmError):
    """A local store failed."""


class HashMismatch(StoreError):
    """A diff of a group does not hash to the state hash it claims (the group is rolled back).

    ``height`` is the diff that failed; the diffs of the group before it were consistent.
    """

    def __init__(self, message: str, height: int) -> None:
        super().__init__(message)
        self.height = height


class SnapshotFormatError(IoswarmError):
    """An IOSWSNAP snapshot is malformed."""


class LoopFailed(IoswarmError):
    """A supervised loop crashed more often than its restart policy allows; the process ends."""

    def __init__(self, loop: str, crashes: int, window_sec: float, cause: BaseException) -> None:
        super().__init__(
            f"loop {loop} failed {crashes} times in {window_sec:g}s, giving up: "
            f"{type(cause).__name__}: {cause}"
        )
        self.loop = loop
        self.cause = cause
