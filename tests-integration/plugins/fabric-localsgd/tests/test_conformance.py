"""LocalSGDStrategy keeps the Strategy contract: fabric-core's conformance kit, on 2 CPU processes.

One launch runs every check; each check is reported as its own test.
"""

from __future__ import annotations

from fabric_core.testing import StrategyConformanceSuite


class TestLocalSGDConformance(StrategyConformanceSuite):
    strategy = "localsgd_spawn"
    world_size = 2
    # Averaging after every step makes SGD with momentum match one process on the global
    # batch, which is what the kit's training check compares with.
    init_args = {"sync_every": 1}
    # Gradients are never all-reduced in backward, so there is no synchronisation to skip:
    # the kit then only checks that the block works.
    supports_no_backward_sync = False
    tolerance = 1e-5
