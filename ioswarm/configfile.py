"""The shapes a coordinator config file may take, and what the loader tells the operator.

A config is either ioswarm's flat keys or an iotex-core node config whose ``ioswarm:`` section
holds them (the Go coordinator's home): the rest of such a file belongs to the node and is
ignored. Where a reference value means something else here, the loader says so in a
:class:`ConfigNote`, logged once at start and printed by ``--check``; where ioswarm refuses a
value on purpose the error names the key and the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ioswarm.errors import ConfigError

if TYPE_CHECKING:
    from ioswarm.config import CoordinatorConfig

SECTION = "ioswarm"


@dataclass(frozen=True)
class ConfigNote:
    """One line about the config for the operator: a logfmt message and its log level."""

    level: int
    message: str

    @property
    def level_name(self) -> str:
        return logging.getLevelName(self.level).lower()


def coordinator_section(data: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[ConfigNote]]:
    """The coordinator keys of a parsed file: its ``ioswarm:`` section when it has one (every
    other top-level key ignored, named in one note), else the file itself."""
    if SECTION not in data:
        return data, []
    section = data[SECTION]
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(SECTION, "must be a mapping of coordinator keys")
    others = sorted(str(k) for k in data if k != SECTION)
    notes = []
    if others:
        notes.append(
            ConfigNote(
                logging.INFO,
                "config read the ioswarm section; other top-level sections ignored "
                f"sections={','.join(others)}",
            )
        )
    return section, notes


def value_notes(section: Mapping[str, Any], cfg: CoordinatorConfig) -> list[ConfigNote]:
    """Notes on reference values that mean something else here."""
    notes = []
    if section.get("swarmApiPort") == 0:
        notes.append(
            ConfigNote(
                logging.INFO,
                "config swarmApiPort=0 picks a free port; the HTTP API cannot be turned off "
                "(it serves /metrics and health), keep swarmApiHost on loopback to hide it",
            )
        )
    if cfg.diff_store_enabled and cfg.diff_store_path.endswith(".db"):
        notes.append(
            ConfigNote(
                logging.INFO,
                "config diffStorePath is a directory of LMDB files here, not a bbolt file "
                f"path={cfg.diff_store_path}",
            )
        )
    return notes


def check_diff_store_path(cfg: CoordinatorConfig) -> None:
    """Refuse a diffStorePath that is a file: the Go coordinator's bbolt ``statediffs.db``
    cannot be read, and writing a directory over it is not possible."""
    if cfg.diff_store_enabled and cfg.diff_store_path and Path(cfg.diff_store_path).is_file():
        raise ConfigError(
            "diffStorePath",
            f"{cfg.diff_store_path} is a file (a Go coordinator's bbolt store?); ioswarm keeps "
            "diffs in a directory and rebuilds them itself: name a new directory",
        )
