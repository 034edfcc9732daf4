"""The strategy conformance kit: it passes a conforming strategy and names what a broken one gets wrong."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
import torch.distributed as dist

from fabric_core.strategies import ParallelStrategy, SingleDeviceStrategy
from fabric_core.testing import (
    CHECK_NAMES,
    ConformanceReport,
    StrategyConformance,
    StrategyConformanceSuite,
    run_together,
)


class TestSingleDeviceConformance(StrategyConformanceSuite):
    """The mixin, on the strategy core ships: one process, run in the test process itself."""

    strategy = "single_device"
    world_size = 1
    tolerance = 1e-6


class SloppyStrategy(ParallelStrategy):
    """A multi-process strategy that gets several parts of the contract wrong on purpose."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="fork", **kwargs)

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = "mean") -> Any:
        if reduce_op == "max":
            return tensor  # forgets to reduce
        return super().reduce(tensor, group, reduce_op)

    def barrier(self, name: str | None = None) -> None:
        pass  # returns at once

    def teardown(self) -> None:
        self._owns_process_group = False  # leaks the process group
        super().teardown()


class DriftingStrategy(ParallelStrategy):
    """Declares an update of its own, but rank 1's replica drifts even when every rank sees the same data."""

    def optimizer_step(self, optimizer: Any, **kwargs: Any) -> Any:
        result = super().optimizer_step(optimizer, **kwargs)
        if self.global_rank == 1:
            with torch.no_grad():
                for group in optimizer.param_groups:
                    for parameter in group["params"]:
                        parameter.mul_(1.01)
        return result


@pytest.fixture(scope="module")
def broken_reports() -> dict[str, ConformanceReport]:
    """The sloppy and the drifting strategy, run in one launch (one after the other in the same processes)."""
    sloppy, drifting = run_together(
        [
            StrategyConformance(
                SloppyStrategy, world_size=2, supports_no_backward_sync=True, skip=["all_gather_sync_grads"]
            ),
            StrategyConformance(
                DriftingStrategy,
                world_size=2,
                update="own",
                supports_no_backward_sync=False,
                skip=["all_gather_sync_grads"],
            ),
        ],
        raise_on_failure=False,
    )
    return {"sloppy": sloppy, "drifting": drifting}


class HangingStrategy(ParallelStrategy):
    """Rank 1 never arrives at the second barrier."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(start_method="fork", **kwargs)

    def barrier(self, name: str | None = None) -> None:
        if name == "conformance" and self.global_rank == 1:
            time.sleep(60)
        super().barrier(name)


def test_a_sloppy_strategy_fails_exactly_the_checks_it_breaks(
    broken_reports: dict[str, ConformanceReport],
) -> None:
    report = broken_reports["sloppy"]

    statuses = {result.name: result.status for result in report.results}
    assert statuses == {
        "pickle": "passed",
        "processes": "passed",
        "all_reduce": "failed",
        "all_gather": "passed",
        "all_gather_sync_grads": "skipped",
        "broadcast": "passed",
        "barrier": "failed",
        "setup": "passed",
        "training": "failed",  # no gradient synchronisation: replicas train on their own shards
        "no_backward_sync": "failed",
        "checkpoint": "failed",  # rank 1's replica differs from the saved rank-0 replica
        "teardown": "failed",
    }, report.summary()
    assert report.launch_error == ""
    assert [p.split(":")[:2] for p in report["all_reduce"].problems] == [
        ["rank 0", " all_reduce(reduce_op='max')"],
        ["rank 1", " all_reduce(reduce_op='max')"],
    ]
    assert "rank 1: barrier returned after" in report["barrier"].problems[0]
    assert "still has a default process group" in report["teardown"].problems[0]
    with pytest.raises(AssertionError) as excinfo:
        report.raise_for_failures()
    message = str(excinfo.value)
    assert message.startswith("strategy 'SloppyStrategy' (world_size=2") and "failed 6 of 12" in message
    assert "  training:\n    rank 0: outputs after 4 steps vs one process on batches of 8" in message


def test_an_own_update_must_keep_the_replicas_in_agreement(
    broken_reports: dict[str, ConformanceReport],
) -> None:
    report = broken_reports["drifting"]

    failed = {result.name for result in report.results if result.status == "failed"}
    assert failed == {"training", "no_backward_sync", "checkpoint"}, report.summary()
    assert report.launch_error == ""
    (problem,) = report["training"].problems
    assert problem.startswith("across ranks: after step 1, rank 1's model gives outputs up to"), problem
    assert problem.endswith("although every rank trained on the same batches: the replicas disagree")
    assert "vs one process" not in report["no_backward_sync"].problems[0], "no reference under update='own'"
    assert "steps after the load vs" in report["checkpoint"].problems[0]


def test_a_hanging_rank_times_out_and_the_run_reports_where() -> None:
    started = time.monotonic()

    unused = ["all_gather_sync_grads", "training", "no_backward_sync", "checkpoint", "teardown"]

    report = StrategyConformance(HangingStrategy, world_size=2, timeout=3, skip=unused).run(
        raise_on_failure=False
    )

    assert time.monotonic() - started < 30
    barrier = report["barrier"]
    assert barrier.status == "failed"
    assert any(p.startswith("rank 1: did not finish within 3 s") for p in barrier.problems), barrier.problems
    assert "exited with code 75" in report.launch_error
    assert report["setup"].status == "failed"
    assert report["setup"].problems[0].startswith("ranks 0, 1: did not run: WorkersFailedError")
    assert [r.status for r in report.results[:6]] == [
        "passed",
        "passed",
        "passed",
        "passed",
        "skipped",
        "passed",
    ]


class UnpicklableStrategy(SingleDeviceStrategy):
    """Holds a lock, which spawned processes could never receive."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lock = threading.Lock()


def test_an_unpicklable_strategy_fails_the_pickle_check_before_any_launch() -> None:
    ranks_only = [name for name in CHECK_NAMES if name != "pickle"]

    report = StrategyConformance(UnpicklableStrategy, world_size=1, skip=ranks_only).run(
        raise_on_failure=False
    )

    (problem,) = report["pickle"].problems
    assert problem.startswith(
        "in the launching process: the configured UnpicklableStrategy cannot be pickled"
    )
    assert (
        "TypeError: cannot pickle '_thread.lock' object. Leave such attributes out in __getstate__" in problem
    )


def test_a_strategy_that_cannot_be_built_is_reported_as_such() -> None:
    report = StrategyConformance("no_such_strategy", world_size=2).run(raise_on_failure=False)

    assert "building the strategy failed: UnknownNameError: Unknown strategy 'no_such_strategy'" in (
        report.launch_error
    )
    assert [r.status for r in report.results] == ["failed"] * len(CHECK_NAMES)


def test_the_in_process_run_releases_nothing_it_did_not_take() -> None:
    StrategyConformance("single_device", world_size=1, skip=["teardown"]).run()

    assert not dist.is_initialized()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"world_size": 0}, "world_size=0 must be a positive number of processes"),
        (
            {"skip": ["colectives"]},
            "skip= names unknown check(s) ['colectives']; the checks are: pickle, processes",
        ),
        ({"setup": "later"}, "setup='later' must be one of 'together', 'separately'"),
        ({"update": "local"}, "update='local' must be one of 'global_batch', 'own'"),
        ({"launch": "torchrun"}, "launch='torchrun' must be one of 'auto', 'fabric', 'agent'"),
        ({"tolerance": -1.0}, "tolerance=-1.0 must be >= 0"),
    ],
)
def test_arguments_are_validated_with_the_fix_in_the_message(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        StrategyConformance("single_device", **kwargs)

    assert message in str(excinfo.value)


def test_report_lookup_of_an_unknown_check_lists_the_checks() -> None:
    report = StrategyConformance("single_device", world_size=1, skip=list(CHECK_NAMES)).run()

    assert all(result.status == "skipped" for result in report.results)
    with pytest.raises(KeyError, match="did not include the check 'nope'"):
        report["nope"]
