"""ioswarm: hand EVM transaction validation to a swarm of agents and pay them for correct work."""

__version__ = "0.1.0"
