"""Process-wide budgets: the open-file limit (raised to the hard limit at start and split
between the listeners), and how large buffers are returned to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import resource

from ioswarm.config import LimitsConfig
from ioswarm.core.connbudget import FdBudget, split_fd_budget

log = logging.getLogger("ioswarm.limits")

_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
LARGE_BUFFER_BYTES = 128 * 1024


def return_large_buffers() -> bool:
    """Serve every allocation of 128 KiB or more from its own mapping, released to the system
    when freed.

    glibc raises this threshold by itself after the first large free, after which large request
    buffers (up to ``maxMessageBytes`` each) come from the heap and stay in the process after a
    refusal. A fixed threshold keeps a burst of large refused requests from raising the
    resident set for good. Returns False where the C library has no ``mallopt``.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a soft limit of 1,024 is common and
    far below what a coordinator with many agents needs); return the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # a container may forbid it; keep what we have
            log.warning("cannot raise open-file limit soft=%d hard=%d: %s", soft, hard, exc)
    return int(soft)


def connection_budget(limits: LimitsConfig) -> FdBudget:
    """The connection budgets this process can afford, after raising its open-file limit."""
    budget = split_fd_budget(
        raise_open_file_limit(),
        limits.fd_reserve,
        limits.grpc_max_connections,
        limits.http_max_connections,
    )
    log.info(
        "connection budget fd_limit=%d grpc=%d http=%d reserve=%d",
        budget.fd_limit,
        budget.grpc,
        budget.http,
        limits.fd_reserve,
    )
    return budget
