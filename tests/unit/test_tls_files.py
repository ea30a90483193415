"""The coordinator's TLS files are checked before gRPC sees them, with one error naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioswarm.coordinator.servicer import server_credentials
from ioswarm.errors import ConfigError
from tests.integration.swarm import make_test_pki


def test_files_that_are_not_pem_name_tls_cert_file(tmp_path: Path) -> None:
    """A certificate or key that is not PEM raises a ConfigError naming tlsCertFile."""
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as err:
        server_credentials(str(garbage), str(garbage))
    assert err.value.key == "tlsCertFile" and str(garbage) in str(err.value)


def test_a_certificate_and_its_key_pass(tmp_path: Path) -> None:
    """A matching PEM certificate and key give credentials; a key of another pair does not."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, cert, key = make_test_pki(tmp_path / "a")
    assert server_credentials(str(cert), str(key)) is not None
    _, _, other_key = make_test_pki(tmp_path / "b")
    with pytest.raises(ConfigError, match="tlsCertFile"):
        server_credentials(str(cert), str(other_key))
