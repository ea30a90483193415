"""``ioswarm demo`` finds anvil: the env variable, the project's own, then PATH."""

from __future__ import annotations

from pathlib import Path

import pytest

from ioswarm.errors import ConfigError
from ioswarm.sim.anvil import find_anvil


def _fake_anvil(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "anvil"
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


def test_anvil_on_path_is_found_when_nothing_else_is(tmp_path: Path) -> None:
    """With IOSWARM_ANVIL_BIN unset and no project-local anvil, the one on PATH is used."""
    on_path = _fake_anvil(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'empty'}:{tmp_path / 'bin'}"}
    assert find_anvil(env, local=tmp_path / "missing" / "anvil") == on_path


def test_the_env_variable_and_the_local_one_come_first(tmp_path: Path) -> None:
    """IOSWARM_ANVIL_BIN beats the project-local anvil, which beats PATH."""
    on_path = _fake_anvil(tmp_path / "bin")
    local = _fake_anvil(tmp_path / "local")
    chosen = _fake_anvil(tmp_path / "chosen")
    env = {"PATH": str(on_path.parent)}
    assert find_anvil(env, local=local) == local
    assert find_anvil({**env, "IOSWARM_ANVIL_BIN": str(chosen)}, local=local) == chosen


def test_no_anvil_anywhere_is_one_clear_error(tmp_path: Path) -> None:
    """Without any anvil the error names IOSWARM_ANVIL_BIN and says where it looked."""
    with pytest.raises(ConfigError) as err:
        find_anvil({"PATH": str(tmp_path)}, local=tmp_path / "anvil")
    assert err.value.key == "IOSWARM_ANVIL_BIN" and "PATH" in str(err.value)
