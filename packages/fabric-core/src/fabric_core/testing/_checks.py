"""The conformance checks by name, in the order one run executes them."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from fabric_core.testing import _collective_checks as collective
from fabric_core.testing import _training_checks as training
from fabric_core.testing._plan import Plan

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["CHECKS", "CHECK_NAMES", "Check", "check_pickle"]


@dataclass(frozen=True)
class Check:
    """One conformance check.

    Attributes:
        name: How reports and ``skip=`` refer to it.
        run: Runs on every rank; raises ``AssertionError`` for a violation and may return
            JSON-ready observations for `verify`.
        verify: Runs in the launching process on every rank's observations and returns
            the problems it finds across ranks.
        summary: One line saying what the check establishes.
        where: ``"ranks"`` runs in every launched process; ``"launcher"`` runs once in the
            launching process, on the configured strategy, before the launch.
    """

    name: str
    run: Callable[[Fabric, Plan], dict[str, Any] | None]
    verify: Callable[[dict[int, dict[str, Any]], Plan], list[str]] | None = None
    summary: str = ""
    where: Literal["ranks", "launcher"] = "ranks"


def check_pickle(fabric: Fabric, plan: Plan) -> None:
    """The configured strategy survives pickling, as spawned processes receive it."""
    strategy = fabric.strategy
    try:
        clone = pickle.loads(pickle.dumps(strategy))
    except Exception as error:
        raise AssertionError(
            f"the configured {type(strategy).__name__} cannot be pickled, so fabric.launch(fn) cannot send it to "
            f"spawned processes: {type(error).__name__}: {error}. Leave such attributes out in __getstate__"
        ) from None
    if type(clone) is not type(strategy):
        raise AssertionError(f"unpickling a {type(strategy).__name__} gave a {type(clone).__name__}")


def _checks(*checks: Check) -> dict[str, Check]:
    return {check.name: check for check in checks}


CHECKS: Final = _checks(
    Check(
        "pickle",
        check_pickle,
        None,
        "the configured strategy can be pickled (what spawned processes receive)",
        where="launcher",
    ),
    Check(
        "processes",
        collective.check_processes,
        collective.verify_processes,
        "world size, distinct global ranks, one process each, a process group when there are several",
    ),
    Check("all_reduce", collective.check_all_reduce, None, "sum, mean, max and min of every rank's tensor"),
    Check("all_gather", collective.check_all_gather, None, "every rank's tensor stacked in rank order"),
    Check(
        "all_gather_sync_grads",
        collective.check_all_gather_sync_grads,
        None,
        "gradients flow back through all_gather(sync_grads=True), summed over ranks",
    ),
    Check("broadcast", collective.check_broadcast, None, "tensors and objects from the source rank"),
    Check("barrier", collective.check_barrier, None, "no rank passes until every rank arrives"),
    Check(
        "setup",
        training.check_setup,
        None,
        "wrapped model and optimizer, device, outputs and state-dict keys",
    ),
    Check(
        "training",
        training.check_training,
        training.verify_replicas,
        "the outputs and losses of a few steps match one process training on the global batch",
    ),
    Check(
        "no_backward_sync",
        training.check_no_backward_sync,
        training.verify_replicas,
        "micro-batches accumulated inside the block, then one step, match one process on the global batch",
    ),
    Check(
        "checkpoint",
        training.check_checkpoint,
        training.verify_checkpoint,
        "a new model and optimizer loading a checkpoint give the saved outputs and resume training identically",
    ),
    Check("teardown", training.check_teardown, None, "strategy.teardown() destroys the process group"),
)
"""Every check, in run order (``pickle`` before the launch, ``teardown`` last: it ends the process group)."""

CHECK_NAMES: Final = tuple(CHECKS)
"""The names of the checks, in run order; use them with ``skip=`` or to parametrize tests."""
