"""The links of the state-diff chain a coordinator streams to L4 followers.

Diff ``h`` follows diff ``h - 1``: its height is one more, its ``prev_state_hash`` is the
state hash after ``h - 1`` (``post_state_hash``), and its ``post_state_hash`` is 32 bytes.
Where a diff carries its block context, the hash it gives for block ``h - 1`` is the
``block_hash`` diff ``h - 1`` carried. The L4 agent's follower checks the state links before
it applies a diff; ``ioswarm l4test`` checks every link of a live stream without a state.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ioswarm.core.statehash import ZERO_HASH


class LinkKind(Enum):
    """Which link of the chain broke."""

    GAP = "gap"
    PREV_STATE_HASH = "prev_state_hash"
    POST_STATE_HASH = "post_state_hash"
    BLOCK_HASH = "block_hash"


@dataclass(frozen=True)
class BrokenLink:
    """The first link that does not hold, at the diff of ``height``."""

    height: int
    kind: LinkKind
    detail: str

    def __str__(self) -> str:
        return self.detail


def _hex(value: bytes) -> str:
    return "0x" + value.hex() if value else "-"


def state_link_problem(
    local_height: int, local_hash: bytes, height: int, prev_hash: bytes, post_hash: bytes
) -> BrokenLink | None:
    """Why the diff of ``height`` does not follow a state at (``local_height``,
    ``local_hash``), or None when it does."""
    if height != local_height + 1:
        return BrokenLink(
            height, LinkKind.GAP, f"state diff gap: local height {local_height}, got {height}"
        )
    if prev_hash != local_hash:
        return BrokenLink(
            height,
            LinkKind.PREV_STATE_HASH,
            f"state diff {height}: prev state hash {prev_hash.hex() or '-'} is not the local "
            f"{local_hash.hex()}",
        )
    if len(post_hash) != 32:
        return BrokenLink(
            height, LinkKind.POST_STATE_HASH, f"state diff {height}: no post state hash"
        )
    return None


@dataclass(frozen=True)
class DiffLink:
    """What one streamed diff says about its place in the chain."""

    height: int
    prev_state_hash: bytes
    post_state_hash: bytes
    block_hash: bytes = b""
    parent_hash: bytes = b""
    """The hash the diff's block context gives for block ``height - 1`` (empty: none)."""


class DiffChainCheck:
    """Checks a stream of diffs link by link, from a known state or from the first diff."""

    def __init__(self, height: int | None = None, state_hash: bytes = ZERO_HASH) -> None:
        """Start from a known state (``height``, ``state_hash``), or let the first diff
        anchor the chain."""
        self.height = height
        self.state_hash = state_hash
        self.block_hash = b""
        self.checked = 0

    def feed(self, link: DiffLink) -> BrokenLink | None:
        """Take the next diff; the broken link it shows, or None when it follows."""
        if self.height is not None:
            problem = state_link_problem(
                self.height,
                self.state_hash,
                link.height,
                link.prev_state_hash,
                link.post_state_hash,
            )
            if problem is not None:
                return problem
            if link.parent_hash and self.block_hash and link.parent_hash != self.block_hash:
                return BrokenLink(
                    link.height,
                    LinkKind.BLOCK_HASH,
                    f"state diff {link.height}: block {link.height - 1} hash "
                    f"{_hex(link.parent_hash)} is not the streamed {_hex(self.block_hash)}",
                )
            self.checked += 1
        elif len(link.post_state_hash) != 32:
            return BrokenLink(
                link.height,
                LinkKind.POST_STATE_HASH,
                f"state diff {link.height}: no post state hash",
            )
        self.height = link.height
        self.state_hash = link.post_state_hash
        self.block_hash = link.block_hash
        return None
