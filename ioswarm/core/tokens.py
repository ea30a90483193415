"""Agent API keys: ``"iosw_" + hex(HMAC-SHA256(masterSecret, agentID))``, constant-time checks."""

from __future__ import annotations

import hashlib
import hmac

TOKEN_PREFIX = "iosw_"  # noqa: S105 - a public prefix, not a secret


def agent_token(master_secret: str | bytes, agent_id: str) -> str:
    """The API key an agent with ``agent_id`` must present."""
    key = master_secret.encode() if isinstance(master_secret, str) else master_secret
    return TOKEN_PREFIX + hmac.new(key, agent_id.encode(), hashlib.sha256).hexdigest()


def verify_token(master_secret: str | bytes, agent_id: str, token: str) -> bool:
    """True when ``token`` is the key of ``agent_id``; constant-time in the token's content."""
    expected = agent_token(master_secret, agent_id).encode()
    return hmac.compare_digest(expected, token.encode("utf-8", "replace"))
