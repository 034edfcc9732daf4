"""A conformance kit for strategies: check the ``Strategy`` contract for real, in real processes.

A plugin that adds a strategy proves it behaves like every other strategy with one test
class (one launch of ``world_size`` processes runs every check)::

    from fabric_core.testing import StrategyConformanceSuite


    class TestMyStrategyConformance(StrategyConformanceSuite):
        strategy = "my_strategy_fork"  # a registered name, or a factory function
        world_size = 2

or with one call that raises an ``AssertionError`` listing the failed checks::

    from fabric_core.testing import StrategyConformance

    report = StrategyConformance("my_strategy_fork", world_size=2).run()
    print(report)

The checks (:data:`CHECK_NAMES`), in run order:

- ``pickle`` (in the launching process, before the launch): the configured strategy
  survives pickling, as processes started with ``spawn`` receive it.
- ``processes``: world size, distinct global ranks, one process per rank, a process group.
- ``all_reduce``, ``all_gather``, ``all_gather_sync_grads``, ``broadcast``, ``barrier``: the
  results ``torch.distributed`` semantics prescribe, for tensors and collections.
- ``setup``: ``fabric.setup`` wraps model and optimizer, places parameters on the device,
  and keeps the model's outputs and state-dict keys.
- ``training``: after a few steps, the model matches plain PyTorch in one process trained on
  the global batch (what every rank together saw).
- ``no_backward_sync``: inside the block gradients are each rank's own; the next backward
  averages the accumulated sums.
- ``checkpoint``: ``fabric.save`` then ``fabric.load`` restores parameters, optimizer state
  and plain values, and training resumes identically.
- ``teardown``: ``fabric.strategy.teardown()`` destroys the process group.
"""

from fabric_core.testing._checks import CHECK_NAMES
from fabric_core.testing.conformance import StrategyConformance, StrategySpec
from fabric_core.testing.report import CheckResult, ConformanceReport
from fabric_core.testing.suite import StrategyConformanceSuite

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "ConformanceReport",
    "StrategyConformance",
    "StrategyConformanceSuite",
    "StrategySpec",
]
