"""A pytest-ready mixin: one test per conformance check, one launch per test class."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from fabric_core.testing._plan import SetupMode, UpdateRule
from fabric_core.testing.conformance import LaunchMode, StrategyConformance, run_together
from fabric_core.testing.report import ConformanceReport

if TYPE_CHECKING:
    from fabric_core.strategies.strategy import Strategy

__all__ = ["StrategyConformanceSuite"]

_REPORTS: dict[type, ConformanceReport] = {}
_GROUPS: dict[tuple[str, str], list[type[StrategyConformanceSuite]]] = {}


class StrategyConformanceSuite:
    """Subclass it in a ``Test*`` class to get one pytest test per conformance check.

    The first test of the class launches the processes once and runs every check; each
    test then reports its own check (failed, passed, or skipped with the reason)::

        from fabric_core.testing import StrategyConformanceSuite


        class TestMyStrategyConformance(StrategyConformanceSuite):
            strategy = "my_strategy_fork"
            world_size = 2
            tolerance = 1e-6

    Set the class attributes below; they are the arguments of `StrategyConformance`.
    Override `conformance` for anything else. ``strategy`` may also be a
    module-level factory function (a class attribute holding a function is read from the
    class, so it is not bound to the test instance).

    Classes of one test module with the same ``launch_group`` share one launch (see
    `run_together`): the first test of any of them runs the
    checks of all of them, class after class, in the same processes, which saves the
    seconds each launch costs. Each class still reports its own tests::

        class TestFullShard(StrategyConformanceSuite):
            strategy = "fsdp"
            init_args = {"sharding_strategy": "FULL_SHARD"}
            launch_group = "fsdp"


        class TestShardGradOp(TestFullShard):
            init_args = {"sharding_strategy": "SHARD_GRAD_OP"}
    """

    strategy: ClassVar[str | Callable[..., Strategy]]
    """A registered name, or a picklable callable returning a new strategy."""
    world_size: ClassVar[int] = 2
    accelerator: ClassVar[str] = "cpu"
    precision: ClassVar[str] = "32-true"
    init_args: ClassVar[dict[str, Any]] = {}
    tolerance: ClassVar[float] = 1e-5
    supports_no_backward_sync: ClassVar[bool] = True
    update: ClassVar[UpdateRule] = "global_batch"
    """``"own"`` for a strategy that changes the update on purpose (see `StrategyConformance`)."""
    setup: ClassVar[SetupMode] = "together"
    skip: ClassVar[tuple[str, ...]] = ()
    launch: ClassVar[LaunchMode] = "auto"
    start_method: ClassVar[Literal["spawn", "fork"]] = "spawn"
    timeout: ClassVar[float] = 60.0
    launch_group: ClassVar[str | None] = None
    """Classes of one module with the same group share one launch; ``None``: a launch of its own."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.launch_group is not None:
            _GROUPS.setdefault((cls.__module__, cls.launch_group), []).append(cls)

    @classmethod
    def conformance(cls) -> StrategyConformance:
        """The conformance run of this class, built from its attributes."""
        strategy = cls.__dict__.get("strategy", getattr(cls, "strategy", None))
        if isinstance(strategy, staticmethod):
            strategy = strategy.__func__
        if strategy is None:
            raise TypeError(f"{cls.__name__} must set the class attribute 'strategy' (a name or a factory).")
        return StrategyConformance(
            strategy,
            world_size=cls.world_size,
            accelerator=cls.accelerator,
            precision=cls.precision,
            init_args=cls.init_args,
            tolerance=cls.tolerance,
            supports_no_backward_sync=cls.supports_no_backward_sync,
            update=cls.update,
            setup=cls.setup,
            skip=cls.skip,
            launch=cls.launch,
            start_method=cls.start_method,
            timeout=cls.timeout,
        )

    @classmethod
    def conformance_report(cls) -> ConformanceReport:
        """The report of this class's run, launched on first use (with its launch group) and then reused."""
        if cls not in _REPORTS:
            members = [cls]
            if cls.launch_group is not None:
                group = _GROUPS.get((cls.__module__, cls.launch_group), [])
                members = [m for m in group if m not in _REPORTS and _has_strategy(m)] or [cls]
            reports = run_together([member.conformance() for member in members], raise_on_failure=False)
            _REPORTS.update(zip(members, reports))
        return _REPORTS[cls]

    def assert_conforms(self, check: str) -> None:
        """Fail with the check's problems, or skip with its reason, or return when it passed."""
        report = self.conformance_report()
        result = report[check]
        if result.status == "skipped":
            import pytest

            pytest.skip("; ".join(result.problems) or f"{check} does not apply")
        if result.status == "failed":
            message = [f"{report.target}: conformance check {check!r} failed:"]
            message += [f"  {problem}" for problem in result.problems]
            if report.launch_error:
                message.append(f"The processes stopped early: {report.launch_error}")
            raise AssertionError("\n".join(message))

    def test_pickle(self) -> None:
        """The configured strategy can be pickled for spawned processes."""
        self.assert_conforms("pickle")

    def test_processes(self) -> None:
        """World size, distinct ranks, one process per rank, a process group."""
        self.assert_conforms("processes")

    def test_all_reduce(self) -> None:
        """``all_reduce`` with sum, mean, max and min."""
        self.assert_conforms("all_reduce")

    def test_all_gather(self) -> None:
        """``all_gather`` of tensors and collections, in rank order."""
        self.assert_conforms("all_gather")

    def test_all_gather_sync_grads(self) -> None:
        """Gradients through ``all_gather(sync_grads=True)``."""
        self.assert_conforms("all_gather_sync_grads")

    def test_broadcast(self) -> None:
        """``broadcast`` of tensors and objects."""
        self.assert_conforms("broadcast")

    def test_barrier(self) -> None:
        """``barrier`` waits for the last rank."""
        self.assert_conforms("barrier")

    def test_setup(self) -> None:
        """Model and optimizer set-up."""
        self.assert_conforms("setup")

    def test_training(self) -> None:
        """Training matches one process on the global batch."""
        self.assert_conforms("training")

    def test_no_backward_sync(self) -> None:
        """Gradient accumulation without synchronisation."""
        self.assert_conforms("no_backward_sync")

    def test_checkpoint(self) -> None:
        """Save and load round trip."""
        self.assert_conforms("checkpoint")

    def test_teardown(self) -> None:
        """Teardown destroys the process group."""
        self.assert_conforms("teardown")


def _has_strategy(cls: type[StrategyConformanceSuite]) -> bool:
    """Whether a suite class names a strategy (a base class of a group may not)."""
    return getattr(cls, "strategy", None) is not None
