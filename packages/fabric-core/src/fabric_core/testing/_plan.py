"""What the launching process tells every rank: which checks to run and how strictly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Plan", "SetupMode"]

SetupMode = Literal["together", "separately"]


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
        supports_no_backward_sync: Whether the strategy all-reduces gradients in backward
            and ``no_backward_sync`` skips that.
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
    setup: SetupMode
    precision: str
    seed: int
    launcher_pid: int
