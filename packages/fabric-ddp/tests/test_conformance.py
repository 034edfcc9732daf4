"""fabric-ddp keeps the Strategy contract: the conformance kit of fabric-core, on 2 CPU processes (gloo).

Each class reports every check as its own test. ``ddp`` and the compressed variant share
one launch of the elastic agent (``launch_group``); ``ddp_spawn`` starts its own processes.
"""

from __future__ import annotations

from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import fp16_compress_hook

from fabric_core.testing import StrategyConformanceSuite
from fabric_ddp import DDPStrategy


class TestDDPConformance(StrategyConformanceSuite):
    """``ddp`` re-runs the script to start processes; the kit starts them with the elastic agent instead."""

    strategy = "ddp"
    tolerance = 1e-6
    launch_group = "agent"


class TestDDPSpawnOwnLauncherConformance(StrategyConformanceSuite):
    """``ddp_spawn`` through its own launcher: ``Fabric(...).launch(fn)`` in spawned processes."""

    strategy = "ddp_spawn"
    launch = "fabric"
    tolerance = 1e-6


def fp16_compressed_ddp() -> DDPStrategy:
    """DDP that all-reduces float16 gradients (a module-level factory, so spawned workers can import it)."""
    return DDPStrategy(start_method="spawn", ddp_comm_hook=fp16_compress_hook)


class TestDDPWithCompressedGradientsConformance(StrategyConformanceSuite):
    """A comm hook changes what crosses the wire; float16 gradients need a looser tolerance."""

    strategy = fp16_compressed_ddp
    tolerance = 1e-3
    launch_group = "agent"
