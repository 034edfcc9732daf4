"""What the launching process tells every rank: which checks to run and how strictly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Plan", "SetupMode", "UpdateRule"]

SetupMode = Literal["together", "separately"]

UpdateRule = Literal["global_batch", "own"]
"""What one optimizer step of a strategy amounts to, as the numeric checks compare it.

``"global_batch"``: one process stepping on every rank's batch together (data parallel,
sharded or not). ``"own"``: the strategy changes the update on purpose (local SGD,
compressed gradients, ...), so the checks compare the replicas with each other instead.
"""


@dataclass(frozen=True)
class Plan:
    """The settings of one conformance run, pickled to every rank.

    Attributes:
        checks: The names of the checks to run, in order.
        world_size: The number of processes the run is expected to have.
        results_dir: A directory every rank can write to; rank ``r`` records its results in
            ``rank-<r>.json`` there and checkpoints go to its ``checkpoint`` entry.
        tolerance: ``rtol`` and ``atol`` for comparisons with the single-process reference.
        timeout: Seconds one check may take on a rank before that rank gives up and exits.
        supports_no_backward_sync: Whether ``no_backward_sync`` skips the synchronisation
            of gradients (then the block must not warn that it cannot).
        update: What an optimizer step amounts to (see `UpdateRule`).
        setup: ``"together"`` sets up model and optimizer with one ``fabric.setup(model,
            optimizer)`` call; ``"separately"`` uses ``fabric.setup_module(model)`` and builds
            the optimizer from the set-up model's parameters (what sharding strategies need).
        precision: The ``Fabric(precision=...)`` string; the reference runs in float64 for
            ``"64-true"`` and in float32 otherwise.
        seed: Seeds the toy model and data, identically on every rank.
        launcher_pid: The process that started the run; a rank running in it (a run with no
            launcher) never exits on a timeout.
    """

    checks: tuple[str, ...]
    world_size: int
    results_dir: str
    tolerance: float
    timeout: float
    supports_no_backward_sync: bool
    update: UpdateRule
    setup: SetupMode
    precision: str
    seed: int
    launcher_pid: int
