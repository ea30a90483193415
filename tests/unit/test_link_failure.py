"""The agent tells permanent link failures (credentials, registration, TLS) from transient ones,
and logs every payout notice, epoch 0 included."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ioswarm.agent.levels import validator_for
from ioswarm.agent.runtime import Agent
from ioswarm.config import AgentConfig
from ioswarm.core.linkfailure import FailureKind, permanent_failure
from ioswarm.core.models import Level
from ioswarm.errors import ConfigError
from ioswarm.proto import ioswarm_pb2 as pb

WRONG_CA = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Tls handshake "
    "failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:1a000064:ECDSA routines:"
    "OPENSSL_internal:BAD_SIGNATURE: certificate signature failure: OK"
)


def test_refused_credentials_are_permanent_on_any_call() -> None:
    """UNAUTHENTICATED stops the agent whether it answered Register or a later call."""
    for registering in (True, False):
        failure = permanent_failure("UNAUTHENTICATED", "bad token", registering=registering)
        assert failure is not None and failure.kind is FailureKind.CREDENTIALS
        assert "--api-key" in failure.reason and "bad token" in failure.reason


def test_a_tls_verification_error_is_permanent_and_trimmed() -> None:
    """A handshake that fails with SSL_ERROR_SSL names TLS and keeps only gRPC's last error."""
    failure = permanent_failure("UNAVAILABLE", WRONG_CA, registering=True)
    assert failure is not None and failure.kind is FailureKind.TLS
    assert "--ca-cert" in failure.reason and "failed to connect" not in failure.reason
    assert "BAD_SIGNATURE" in failure.reason


@pytest.mark.parametrize(
    ("status", "detail"),
    [
        ("UNAVAILABLE", "failed to connect to all addresses; last error: Connection refused"),
        ("UNAVAILABLE", "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SYSCALL"),
        ("UNAVAILABLE", "Socket closed"),
        ("DEADLINE_EXCEEDED", "Deadline Exceeded"),
        ("RESOURCE_EXHAUSTED", "registry full"),
    ],
)
def test_network_trouble_is_transient(status: str, detail: str) -> None:
    """Refused or reset connections, timeouts and a full registry are retried."""
    assert permanent_failure(status, detail, registering=True) is None


def test_register_refusals_are_permanent_only_for_register() -> None:
    """INVALID_ARGUMENT on Register stops the agent; on another call it is no reason to."""
    failure = permanent_failure("INVALID_ARGUMENT", "unknown level", registering=True)
    assert failure is not None and failure.kind is FailureKind.REGISTRATION
    assert permanent_failure("PERMISSION_DENIED", "not yours", registering=False) is None


def test_a_payout_of_epoch_zero_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A heartbeat's payout notice for epoch 0 is logged with its amount and rank."""
    agent = Agent(
        AgentConfig(coordinator="127.0.0.1:1", agent_id="a-0", api_key="k", wallet="0x" + "1" * 40),
        validator_for(Level.L1),
    )
    resp = pb.HeartbeatResponse(alive=True)
    resp.payout.CopyFrom(
        pb.PayoutInfo(
            epoch=0, amount_iotx=0.25, amount_wei=str(25 * 10**16), rank=1, total_agents=3
        )
    )
    with caplog.at_level(logging.INFO, logger="ioswarm.agent"):
        agent.links[0].note_payout(pb.HeartbeatResponse(alive=True))
        agent.links[0].note_payout(resp)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "payout agent_id=a-0 coordinator=127.0.0.1:1 epoch=0 amount_iotx=0.25 rank=1/3 tx=-"
    ]


def test_a_ca_file_without_a_certificate_is_a_config_error(tmp_path: Path) -> None:
    """A --ca-cert file that holds no PEM certificate is refused before any connection."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    agent = Agent(
        AgentConfig(
            coordinator="localhost:1",
            agent_id="a-0",
            api_key="k",
            wallet="0x" + "1" * 40,
            ca_cert=str(bundle),
        ),
        validator_for(Level.L1),
    )
    with pytest.raises(ConfigError) as err:
        agent._channel()
    assert err.value.key == "--ca-cert" and "no PEM certificate" in str(err.value)
