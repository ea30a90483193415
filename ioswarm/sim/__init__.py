"""Simulation helpers: a local anvil node and a realistic transaction workload."""

from ioswarm.sim.anvil import (
    DEV_MNEMONIC,
    AnvilError,
    AnvilProcess,
    dev_private_keys,
    find_anvil,
    free_loopback_port,
    port_is_free,
)
from ioswarm.sim.workload import TxKind, Workload, WorkloadCounters, WorkloadMix

__all__ = [
    "DEV_MNEMONIC",
    "AnvilError",
    "AnvilProcess",
    "TxKind",
    "Workload",
    "WorkloadCounters",
    "WorkloadMix",
    "dev_private_keys",
    "find_anvil",
    "free_loopback_port",
    "port_is_free",
]
