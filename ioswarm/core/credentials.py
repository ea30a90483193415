"""An agent's credentials from a call's metadata: exactly one id and exactly one token.

A call that names two agents must not be authenticated as one and served as the other, so
anything but a single value of each key is refused here, before any token is checked. Keys are
compared case-insensitively (gRPC lowercases them on the wire; a transport that did not must
not open a second way in). Pure: the interceptor and the servicer both call
:func:`parse_credentials` over the same metadata, so they agree on the id by construction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ioswarm.core.tokens import verify_token
from ioswarm.errors import AuthError

AGENT_ID_KEY = "x-ioswarm-agent-id"
TOKEN_KEY = "x-ioswarm-token"  # noqa: S105 - a metadata key name, not a secret
MAX_AGENT_ID_LEN = 64
MAX_TOKEN_LEN = 128
"""Far above a real key (``iosw_`` + 64 hex digits); longer is refused before any HMAC."""

Metadata = Iterable[tuple[str, str | bytes]]


class CredentialsRefused(AuthError):
    """The call's credentials are refused; the message says why and never holds a token.

    ``claimed`` lists the agent ids the call named (cut to 64 chars each), for the log line.
    """

    def __init__(self, reason: str, claimed: tuple[str, ...] = ()) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claimed = claimed


@dataclass(frozen=True, slots=True)
class Credentials:
    """The one agent id and the one token a call presented."""

    agent_id: str
    token: str = field(repr=False)


def _values(metadata: Metadata, key: str) -> list[str | bytes]:
    return [v for k, v in metadata if isinstance(k, str) and k.lower() == key]


def _single(values: list[str | bytes], key: str, max_len: int) -> str:
    if not values:
        raise CredentialsRefused(f"missing {key} metadata")
    if len(values) > 1:
        raise CredentialsRefused(f"duplicated {key} metadata: {len(values)} values, exactly 1")
    value = values[0]
    if not isinstance(value, str):
        raise CredentialsRefused(f"{key} metadata is not text")
    if not value:
        raise CredentialsRefused(f"empty {key} metadata")
    if len(value) > max_len:
        raise CredentialsRefused(f"{key} metadata too long: {len(value)} chars, at most {max_len}")
    return value


def parse_credentials(metadata: Metadata) -> Credentials:
    """The single agent id and token in ``metadata`` (``(key, value)`` pairs).

    Raises :class:`CredentialsRefused` when either key is missing, repeated (in any letter
    case), empty, not text, or too long. The token is not checked here.
    """
    pairs = list(metadata)
    ids = _values(pairs, AGENT_ID_KEY)
    claimed = tuple(v[:MAX_AGENT_ID_LEN] for v in ids if isinstance(v, str))
    try:
        agent_id = _single(ids, AGENT_ID_KEY, MAX_AGENT_ID_LEN)
        token = _single(_values(pairs, TOKEN_KEY), TOKEN_KEY, MAX_TOKEN_LEN)
    except CredentialsRefused as exc:
        raise CredentialsRefused(exc.reason, claimed) from None
    return Credentials(agent_id, token)


def authenticate(master_secret: str | bytes, metadata: Metadata) -> str:
    """The agent id of a call whose metadata holds one id and that id's valid token.

    Raises :class:`CredentialsRefused` otherwise.
    """
    creds = parse_credentials(metadata)
    if not verify_token(master_secret, creds.agent_id, creds.token):
        raise CredentialsRefused("invalid token for agent", (creds.agent_id,))
    return creds.agent_id
