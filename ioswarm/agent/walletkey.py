"""An agent operator's wallet key pair: the secp256k1 key whose address receives rewards.

Not to be confused with an agent's API key (``iosw_...``), which the coordinator's operator
derives from the master secret (``ioswarm keygen``). The key file holds the private key as 64
hex characters and a newline, as the Go agent writes it (a ``0x`` prefix is accepted when
read); it is created mode 0600 and never overwritten.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from ioswarm.core.address import to_checksum, to_io
from ioswarm.errors import ConfigError

_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HEX_KEY = re.compile(r"(0x)?([0-9a-fA-F]{64})")


@dataclass(frozen=True)
class WalletKey:
    """A private key and the addresses it controls."""

    private_key: bytes

    def __repr__(self) -> str:  # never print the key by accident
        return f"WalletKey({self.address})"

    @property
    def address(self) -> str:
        """The EIP-55 0x address."""
        # eth_keys loads when a wallet key is used, not with every agent start.
        from eth_keys.datatypes import PrivateKey  # noqa: PLC0415

        raw = PrivateKey(self.private_key).public_key.to_canonical_address()
        return to_checksum("0x" + raw.hex())

    @property
    def io_address(self) -> str:
        """The same address in IoTeX's io1 spelling."""
        return to_io(self.address)

    def file_text(self) -> str:
        return self.private_key.hex() + "\n"


def new_wallet_key() -> WalletKey:
    """A fresh key from the operating system's randomness."""
    while True:
        raw = secrets.token_bytes(32)
        if 0 < int.from_bytes(raw, "big") < _SECP256K1_N:
            return WalletKey(raw)


def parse_wallet_key(text: str, source: str) -> WalletKey:
    """A key from a key file's text; ConfigError naming ``source`` when it is not one."""
    m = _HEX_KEY.fullmatch(text.strip())
    if m is None or not 0 < int(m[2], 16) < _SECP256K1_N:
        raise ConfigError(source, "is not a private key (64 hex characters, 0x optional)")
    return WalletKey(bytes.fromhex(m[2]))


def read_key_file(path: Path, flag: str) -> tuple[WalletKey, bool]:
    """The key in ``path``, and whether others than its owner may read the file; errors
    name ``flag``."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(flag, f"cannot read key file {path}: {exc.strerror}") from exc
    key = parse_wallet_key(text, f"{flag} {path}")
    return key, bool(mode & (stat.S_IRWXG | stat.S_IRWXO))


def write_new_file(path: Path, text: str, mode: int, flag: str) -> None:
    """Create ``path`` with ``mode`` and write ``text``; an existing file is never touched.
    Errors name ``flag``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(
            flag, f"{path} already exists; not overwritten (move it away first)"
        ) from None
    except OSError as exc:
        raise ConfigError(flag, f"cannot create {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)  # the umask may have narrowed it; never widened past mode
