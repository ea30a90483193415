"""Everything that talks to the chain node over JSON-RPC."""

from ioswarm.node.adapter import (
    BlockId,
    BlockWithTxs,
    IncludedTxInfo,
    JsonRpcNode,
    NodeClient,
    Receipt,
    block_param,
)
from ioswarm.node.rpc import JsonRpcTransport, RetryPolicy, RpcResult, backoff_delay, redact_url

__all__ = [
    "BlockId",
    "BlockWithTxs",
    "IncludedTxInfo",
    "JsonRpcNode",
    "JsonRpcTransport",
    "NodeClient",
    "Receipt",
    "RetryPolicy",
    "RpcResult",
    "backoff_delay",
    "block_param",
    "redact_url",
]
