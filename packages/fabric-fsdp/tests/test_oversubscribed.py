"""8 ranks on a machine with fewer cores (oversubscribed, gloo) train as one process does.

The conformance kit's checks run with ``world_size=8``: outputs and every step's loss
must equal one process training on the global batch (8 times a rank's batch), with
accumulation under ``no_backward_sync`` and a checkpoint round trip included. Each class
has a launch of its own (8 forked workers, which inherit the imported torch; the launcher
sizes their thread pools to one thread each).
"""

from __future__ import annotations

from fabric_core.testing import StrategyConformanceSuite


class TestDDPOnEightRanks(StrategyConformanceSuite):
    """``ddp`` with 8 processes."""

    strategy = "ddp"
    world_size = 8
    tolerance = 1e-5
    start_method = "fork"
    timeout = 180


class TestFSDPOnEightRanks(TestDDPOnEightRanks):
    """``fsdp`` (``FULL_SHARD``) with 8 processes: every parameter split 8 ways."""

    strategy = "fsdp"
