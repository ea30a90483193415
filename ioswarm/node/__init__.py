"""Everything that talks to the chain node over JSON-RPC."""

from ioswarm.node.adapter import BlockWithTxs, IncludedTxInfo, JsonRpcNode, NodeClient, Receipt
from ioswarm.node.fields import BlockId, block_param
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
