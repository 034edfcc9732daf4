"""Run the conformance checks of a strategy in real processes and collect a report.

One run launches ``world_size`` processes once and runs every check in each of them, in
order. Strategies on core's `ElasticLauncher` (``ddp``,
``ddp_spawn``, ...) get their processes from PyTorch's elastic agent
(`fabric_core.launchers.run_agent`, spawned by default): each worker builds its own
``Fabric``, which joins the agent's processes as it would under ``torchrun``. A strategy
with a launcher of its own (XLA's, say) is run with ``Fabric(...).launch(fn)``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fabric_core.testing._checks import CHECK_NAMES, CHECKS
from fabric_core.testing._plan import Plan, SetupMode, UpdateRule
from fabric_core.testing._results import collect_results, finished, run_in_launcher
from fabric_core.testing._worker import agent_main, run_checks
from fabric_core.testing.report import CheckResult, ConformanceReport

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric
    from fabric_core.strategies.strategy import Strategy

__all__ = ["LaunchMode", "StrategyConformance", "StrategySpec", "run_together"]

LaunchMode = Literal["auto", "fabric", "agent"]
_LAUNCH_MODES = ("auto", "fabric", "agent")
_SETUP_MODES = ("together", "separately")
_UPDATE_RULES = ("global_batch", "own")


@dataclass(frozen=True)
class StrategySpec:
    """How to build the strategy and its ``Fabric``; pickled to spawned workers.

    Attributes:
        strategy: A registered name, or a picklable callable returning a ``Strategy``.
        init_args: Keyword arguments for the registered class (overriding its registered
            defaults) or for the callable.
        accelerator: ``Fabric(accelerator=...)``.
        precision: ``Fabric(precision=...)``.
        world_size: ``Fabric(devices=...)``: processes on this one node.
    """

    strategy: str | Callable[..., Strategy]
    init_args: Mapping[str, Any] = field(default_factory=dict)
    accelerator: str = "cpu"
    precision: str = "32-true"
    world_size: int = 2

    def build_strategy(self) -> Strategy:
        """A new strategy instance."""
        if isinstance(self.strategy, str):
            from fabric_core.strategies import STRATEGY_REGISTRY

            return STRATEGY_REGISTRY.build(self.strategy, **self.init_args)
        return self.strategy(**self.init_args)

    def build_fabric(self) -> Fabric:
        """A ``Fabric`` running a new strategy instance."""
        from fabric_core.fabric import Fabric

        return Fabric(
            accelerator=self.accelerator,
            strategy=self.build_strategy(),
            devices=self.world_size,
            precision=self.precision,
        )

    def describe(self) -> str:
        """E.g. ``strategy 'ddp_spawn' (world_size=2, accelerator='cpu', precision='32-true')``."""
        name = (
            self.strategy if isinstance(self.strategy, str) else getattr(self.strategy, "__qualname__", "?")
        )
        args = "".join(f", {key}={value!r}" for key, value in self.init_args.items())
        return (
            f"strategy {name!r} (world_size={self.world_size}, accelerator={self.accelerator!r}, "
            f"precision={self.precision!r}{args})"
        )


class StrategyConformance:
    """Checks that a strategy keeps the ``Strategy`` contract, for real, in ``world_size`` processes.

    Example::

        from fabric_core.testing import StrategyConformance

        def test_my_strategy_conforms():
            StrategyConformance("my_strategy_fork", world_size=2, tolerance=1e-6).run()

    ``run()`` launches the processes once and runs the checks (see `CHECK_NAMES`):
    collectives against ``torch.distributed`` semantics, model and optimizer set-up,
    training against a single-process reference on the same global batch, gradient
    accumulation with ``no_backward_sync``, a save/load round trip and teardown.
    `run_together` runs several strategies' checks in one launch.

    The checks observe what a training loop observes: the model's outputs on a fixed
    batch and the losses of its steps, never ``param.grad``, optimizer state or local
    shards. ``setup``, ``training`` and ``no_backward_sync`` compare those numbers with
    plain PyTorch (``training`` and ``no_backward_sync``: one process on the global batch);
    ``checkpoint`` compares the resumed run with the continued one. A strategy that
    changes the update on purpose declares ``update="own"``.

    Args:
        strategy: A registered strategy name (``"ddp_spawn"``) or a picklable callable that
            returns a new ``Strategy`` (a class, a module-level function, a ``functools.partial``).
        world_size: How many processes (devices on one node).
        accelerator: ``Fabric(accelerator=...)``; ``"cpu"`` runs anywhere.
        precision: ``Fabric(precision=...)``. Reduced precisions need a larger ``tolerance``.
        init_args: Keyword arguments for the strategy (they override a registered name's defaults).
        tolerance: ``rtol`` and ``atol`` when comparing with the single-process reference
            (and, under ``update="own"``, replicas with each other).
        supports_no_backward_sync: Whether ``no_backward_sync`` skips the gradient
            synchronisation. Either way the accumulated update must be right; when true,
            entering the block must not warn (a strategy that cannot skip warns once, and
            declares ``False``; so does one with nothing to skip).
        update: What an optimizer step amounts to. ``"global_batch"`` (data parallel,
            sharded or not): ``training`` and ``no_backward_sync`` compare outputs and
            losses with one process training on the global batch. ``"own"``: the strategy
            changes the update on purpose (local SGD, compressed gradients with error
            feedback, ...); those two checks then give every rank the same batches and
            require that the replicas agree with each other after every step (replica
            consistency) and that training moves the model, instead of comparing with the
            reference. ``setup`` and ``checkpoint`` are the same for both.
        setup: ``"together"`` calls ``fabric.setup(model, optimizer)``; ``"separately"`` sets
            up the model first and builds the optimizer from its parameters (sharding strategies).
        skip: Names of checks not to run (they are reported as skipped).
        launch: How the processes start. ``"fabric"`` calls ``Fabric(...).launch(fn)``: the
            strategy's own launcher, which must run functions (spawn, fork, or a plugin's own
            launcher). ``"agent"`` starts them with the elastic agent, and each builds its own
            ``Fabric`` that joins them, as under ``torchrun``. ``"auto"`` runs one process in
            this one, uses the agent for core's `ElasticLauncher`
            (the machinery that launcher uses itself) and ``"fabric"`` for any other launcher.
        start_method: ``"spawn"`` (default) or ``"fork"``, for the agent. Forking a test process
            that already ran torch code can deadlock the children, so spawn is the safe choice.
        timeout: Seconds one check may take before its rank gives up (so a hang fails the run).
        seed: Seeds the toy model and data.

    Raises:
        ValueError: An argument is out of range or names an unknown check.
    """

    def __init__(
        self,
        strategy: str | Callable[..., Strategy],
        *,
        world_size: int = 2,
        accelerator: str = "cpu",
        precision: str = "32-true",
        init_args: Mapping[str, Any] | None = None,
        tolerance: float = 1e-5,
        supports_no_backward_sync: bool = True,
        update: UpdateRule = "global_batch",
        setup: SetupMode = "together",
        skip: Iterable[str] = (),
        launch: LaunchMode = "auto",
        start_method: Literal["spawn", "fork"] = "spawn",
        timeout: float = 60.0,
        seed: int = 1234,
    ) -> None:
        if not isinstance(strategy, str) and not callable(strategy):
            raise ValueError(
                f"strategy={strategy!r} must be a registered name or a callable returning a Strategy."
            )
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size={world_size!r} must be a positive number of processes.")
        skip = tuple(skip)
        unknown = [name for name in skip if name not in CHECKS]
        if unknown:
            raise ValueError(
                f"skip= names unknown check(s) {unknown}; the checks are: {', '.join(CHECK_NAMES)}."
            )
        if update not in _UPDATE_RULES:
            raise ValueError(f"update={update!r} must be one of {', '.join(map(repr, _UPDATE_RULES))}.")
        if setup not in _SETUP_MODES:
            raise ValueError(f"setup={setup!r} must be one of {', '.join(map(repr, _SETUP_MODES))}.")
        if launch not in _LAUNCH_MODES:
            raise ValueError(f"launch={launch!r} must be one of {', '.join(map(repr, _LAUNCH_MODES))}.")
        if start_method not in ("spawn", "fork"):
            raise ValueError(f"start_method={start_method!r} must be 'spawn' or 'fork'.")
        if tolerance < 0 or timeout <= 0:
            raise ValueError(f"tolerance={tolerance!r} must be >= 0 and timeout={timeout!r} > 0.")
        self.spec = StrategySpec(strategy, dict(init_args or {}), accelerator, precision, world_size)
        self.tolerance = tolerance
        self.supports_no_backward_sync = supports_no_backward_sync
        self.update = update
        self.setup = setup
        self.skip = skip
        self.launch = launch
        self.start_method = start_method
        self.timeout = timeout
        self.seed = seed

    def run(self, *, raise_on_failure: bool = True) -> ConformanceReport:
        """Launch the processes once, run every check, and report.

        Args:
            raise_on_failure: Raise when a check fails instead of only reporting it.

        Returns:
            The report: each check's status and problems, and why the processes stopped
            early if they did.

        Raises:
            AssertionError: A check failed (and ``raise_on_failure`` is true); the message
                lists every failed check with the ranks and values involved.
        """
        return run_together([self], raise_on_failure=raise_on_failure)[0]

    def _plan(self, results_dir: str) -> Plan:
        return Plan(
            checks=tuple(name for name in CHECK_NAMES if name not in self.skip),
            world_size=self.spec.world_size,
            results_dir=results_dir,
            tolerance=self.tolerance,
            timeout=self.timeout,
            supports_no_backward_sync=self.supports_no_backward_sync,
            update=self.update,
            setup=self.setup,
            precision=self.spec.precision,
            seed=self.seed,
            launcher_pid=os.getpid(),
        )

    def _prepare(self, results_dir: str) -> _Run:
        """Build the strategy here, run the launcher-side checks and decide how to launch."""
        from fabric_core.launchers.elastic import ElasticLauncher

        run = _Run(self, self._plan(results_dir), time.perf_counter())
        try:
            fabric = self.spec.build_fabric()
        except Exception as error:
            run.error = f"building the strategy failed: {type(error).__name__}: {error}"
            return run
        for name in run.plan.checks:
            if CHECKS[name].where == "launcher":
                run.launcher_results[name] = run_in_launcher(name, fabric, run.plan)
        if not any(CHECKS[name].where == "ranks" for name in run.plan.checks):
            return run
        launcher = fabric.strategy.launcher
        reruns_script = launcher is not None and launcher.needs_launch and not launcher.requires_function
        mode = self.launch
        if mode == "auto":
            mode = "agent" if isinstance(launcher, ElasticLauncher) else "fabric"
        if mode == "fabric" and reruns_script:
            run.error = (
                f"{type(fabric.strategy).__name__}'s launcher starts processes by re-running the script, which "
                "cannot run the checks; use launch='agent' or 'auto', or a spawn/fork variant of the strategy"
            )
            return run
        run.fabric, run.mode = fabric, mode
        return run


@dataclass
class _Run:
    """One strategy's run while it is prepared, launched and collected."""

    conformance: StrategyConformance
    plan: Plan
    start: float
    launcher_results: dict[str, CheckResult] = field(default_factory=dict)
    error: str = ""
    fabric: Fabric | None = None
    mode: Literal["fabric", "agent"] | None = None

    def launch_with_fabric(self) -> None:
        """Run the checks through ``fabric.launch`` (the strategy's own launcher, or this process)."""
        assert self.fabric is not None
        try:
            self.fabric.launch(run_checks, self.plan)
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"

    def report(self) -> ConformanceReport:
        """The results of every check, merged from the launcher and every rank."""
        conformance = self.conformance
        results = collect_results(self.plan, conformance.skip, self.error, self.launcher_results)
        return ConformanceReport(
            conformance.spec.describe(), results, self.error, time.perf_counter() - self.start
        )


def run_together(
    conformances: Sequence[StrategyConformance], *, raise_on_failure: bool = True
) -> tuple[ConformanceReport, ...]:
    """Run several conformance runs, sharing one launch among those the elastic agent starts.

    Starting processes costs most of a run's time (seconds per launch: the interpreter,
    torch, the strategy's library). The runs that launch with the agent (``launch="agent"``,
    or ``"auto"`` for core's `ElasticLauncher`) and have the
    same ``world_size`` and ``start_method`` share one launch: each worker builds the first
    strategy and runs its checks (its ``teardown`` check destroys the process group), then
    the next, and so on. Other runs launch on their own, as `StrategyConformance.run`
    does. Each run gets its own report, as if it had run alone, except that a rank dying
    (a crash, or a timeout) also stops the runs after it in the same launch: they report
    that they did not run, with the reason.

    Args:
        conformances: The runs, in the order they run in a shared launch.
        raise_on_failure: Raise when a check of any run fails instead of only reporting it.

    Returns:
        One report per run, in the order given.

    Raises:
        AssertionError: A check failed (and ``raise_on_failure`` is true); the message
            lists every failed check of every run.
    """
    from fabric_core.launchers.agent import AgentSettings, run_agent

    directories = [tempfile.mkdtemp(prefix="fabric-conformance-") for _ in conformances]
    try:
        runs = [conformance._prepare(path) for conformance, path in zip(conformances, directories)]
        shared: dict[tuple[int, str], list[_Run]] = {}
        for run in runs:
            if run.mode == "agent":
                key = (run.conformance.spec.world_size, run.conformance.start_method)
                shared.setdefault(key, []).append(run)
            elif run.mode == "fabric":
                run.launch_with_fabric()
        for (world_size, start_method), batch in shared.items():
            settings = AgentSettings(nproc_per_node=world_size, start_method=start_method)
            try:
                run_agent(settings, agent_main, [[(run.conformance.spec, run.plan) for run in batch]])
            except Exception as error:
                message = f"{type(error).__name__}: {error}"
                stopped = [run for run in batch if not finished(run.plan)]
                for index, run in enumerate(stopped):
                    run.error = message
                    if index:
                        run.error += f" (the shared launch ended in the run of {stopped[0].conformance.spec.describe()})"
        reports = tuple(run.report() for run in runs)
    finally:
        for path in directories:
            shutil.rmtree(path, ignore_errors=True)
    if raise_on_failure:
        failures = []
        for report in reports:
            try:
                report.raise_for_failures()
            except AssertionError as failure:
                failures.append(str(failure))
        if failures:
            raise AssertionError("\n\n".join(failures))
    return reports
