"""Plaintext gRPC on all interfaces only with the explicit TLS-terminating-proxy opt-in."""

from __future__ import annotations

import pytest

from ioswarm.config import parse_config
from ioswarm.errors import ConfigError

SECRET = {"masterSecret": "0123456789abcdef0123"}


def test_plaintext_on_all_interfaces_is_refused_without_the_opt_in() -> None:
    """grpcHost 0.0.0.0 without TLS names grpcHost and points at the proxy opt-in."""
    with pytest.raises(ConfigError) as err:
        parse_config({**SECRET, "grpcHost": "0.0.0.0"})
    assert err.value.key == "grpcHost" and "grpcTlsTerminatedByProxy" in str(err.value)


def test_the_opt_in_allows_plaintext_on_all_interfaces_from_yaml_or_env() -> None:
    """grpcTlsTerminatedByProxy (YAML or IOSWARM_GRPC_TLS_TERMINATED_BY_PROXY) lets it bind."""
    from_yaml = parse_config({**SECRET, "grpcHost": "0.0.0.0", "grpcTlsTerminatedByProxy": True})
    assert from_yaml.grpc_host == "0.0.0.0" and from_yaml.grpc_tls_terminated_by_proxy
    from_env = parse_config(
        {**SECRET, "grpcHost": "0.0.0.0"}, {"IOSWARM_GRPC_TLS_TERMINATED_BY_PROXY": "true"}
    )
    assert from_env.grpc_tls_terminated_by_proxy and not from_env.tls_enabled


def test_the_opt_in_defaults_to_off() -> None:
    """Out of the box the coordinator keeps refusing non-loopback plaintext."""
    assert parse_config(SECRET).grpc_tls_terminated_by_proxy is False
