"""Which failures of the agent's link to its coordinator are permanent.

A permanent failure will fail the same way on every retry: the coordinator refused the
agent's credentials, refused what it registers with, or TLS cannot be set up with the CA the
agent trusts. The agent stops with the reason instead of retrying forever; everything else
(connection refused, reset, timeouts, a coordinator restarting) is transient and retried.
gRPC status names and details come in as strings: this module imports no gRPC.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class FailureKind(Enum):
    CREDENTIALS = "credentials"
    REGISTRATION = "registration"
    TLS = "tls"


@dataclass(frozen=True)
class PermanentFailure:
    """Why the agent stops: a kind (what to fix) and one line for the operator."""

    kind: FailureKind
    reason: str


# An SSL_ERROR_SSL is a TLS protocol or verification error (wrong CA, bad signature, a TLS
# client talking to a plaintext port); an SSL_ERROR_SYSCALL or a closed socket mid-handshake
# is a network hiccup and stays transient.
_TLS_MARKERS = (
    "CERTIFICATE_VERIFY_FAILED",
    "certificate verify failed",
    "handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL",
    "Failed to create security handshaker",
)
_REGISTER_REFUSALS = ("PERMISSION_DENIED", "INVALID_ARGUMENT")


def permanent_failure(status: str, detail: str, *, registering: bool) -> PermanentFailure | None:
    """The permanent failure behind a gRPC error (``status`` is the code's name), or None.

    ``registering`` says the error answered Register, the first call of a connection.
    """
    if status == "UNAUTHENTICATED":
        return PermanentFailure(
            FailureKind.CREDENTIALS,
            "the coordinator refused this agent's credentials (check --agent-id and --api-key,"
            f" made by `ioswarm keygen` from the coordinator's masterSecret): {detail}",
        )
    if status == "UNAVAILABLE" and any(m.lower() in detail.lower() for m in _TLS_MARKERS):
        return PermanentFailure(
            FailureKind.TLS,
            "TLS with the coordinator failed (check --ca-cert against the coordinator's "
            f"certificate, and that the coordinator serves TLS): {_last_error(detail)}",
        )
    if registering and status in _REGISTER_REFUSALS:
        return PermanentFailure(
            FailureKind.REGISTRATION, f"the coordinator refused registration: {status}: {detail}"
        )
    return None


def _last_error(detail: str) -> str:
    """gRPC's ``failed to connect ...; last error: X`` trimmed to X."""
    marker = "last error: "
    at = detail.rfind(marker)
    return detail[at + len(marker) :] if at >= 0 else detail
