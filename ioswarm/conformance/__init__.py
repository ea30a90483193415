"""Conformance: the Ethereum state tests run through the path an executing agent takes.

:mod:`~ioswarm.conformance.fixtures` reads the filled JSON fixtures,
:mod:`~ioswarm.conformance.runner` runs and judges one case, :mod:`~ioswarm.conformance.known`
is the one list of cases that are known to fail or are skipped (each with its reason), and
:mod:`~ioswarm.conformance.suite` runs a whole fixture tree and summarises it.
"""
