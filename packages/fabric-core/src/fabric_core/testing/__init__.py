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

The checks (`CHECK_NAMES`), in run order:

- ``pickle`` (in the launching process, before the launch): the configured strategy
  survives pickling, as processes started with ``spawn`` receive it.
- ``processes``: world size, distinct global ranks, one process per rank, a process group.
- ``all_reduce``, ``all_gather``, ``all_gather_sync_grads``, ``broadcast``, ``barrier``: the
  results ``torch.distributed`` semantics prescribe, for tensors and collections.
- ``setup``: ``fabric.setup`` wraps model and optimizer, places parameters on the device,
  and keeps the model's outputs and state-dict keys.
- ``training``: after a few steps, the model's outputs and the steps' losses match plain
  PyTorch in one process trained on the global batch (what every rank together saw).
- ``no_backward_sync``: micro-batches accumulated inside the block, then one synchronised
  backward and a step, match one process adding up the global micro-batches' gradients.
- ``checkpoint``: a new model and optimizer that ``fabric.load`` what ``fabric.save`` wrote
  give the saved outputs, the plain values, and the continued run's losses and outputs.
- ``teardown``: ``fabric.strategy.teardown()`` destroys the process group.

The checks observe what a training loop observes (outputs on a fixed batch, losses), never
``param.grad``, optimizer state or local shards, so sharded and engine-based strategies are
checked like replicated ones. A strategy that changes the update on purpose (local SGD)
declares ``update="own"``: ``training`` and ``no_backward_sync`` then give every rank the
same batches and require replicas that agree with each other, instead of the reference.

Several strategies can share one launch: `run_together`, or suite classes with the
same ``launch_group``. A plugin's own tests that launch scripts use `run_process`, which
leaves no worker behind when a launch hangs and times out.
"""

from fabric_core.testing._checks import CHECK_NAMES
from fabric_core.testing.conformance import StrategyConformance, StrategySpec, run_together
from fabric_core.testing.processes import ProcessTimeout, run_process
from fabric_core.testing.report import CheckResult, ConformanceReport
from fabric_core.testing.suite import StrategyConformanceSuite

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "ConformanceReport",
    "ProcessTimeout",
    "StrategyConformance",
    "StrategyConformanceSuite",
    "StrategySpec",
    "run_process",
    "run_together",
]
