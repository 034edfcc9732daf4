"""The launcher of multi-process strategies, built on PyTorch's elastic agent."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Literal

from fabric_core.launchers.agent import (
    AgentSettings,
    WorkersFailedError,
    WorkersStoppedError,
    fit_thread_pools,
    run_agent,
)
from fabric_core.launchers.launcher import Launcher
from fabric_core.launchers.worker_exit import install_worker_exit

if TYPE_CHECKING:
    from fabric_core.strategies.parallel import ParallelStrategy

__all__ = ["START_METHODS", "ElasticLauncher", "StartMethod", "attempt_store", "is_interactive"]

StartMethod = Literal["popen", "spawn", "fork"]
START_METHODS: Final = ("popen", "spawn", "fork")

_NOT_INTERACTIVE: Final = {
    "popen": (
        "This strategy starts its processes by re-running your script, which an interactive session "
        "(a notebook or the REPL) does not have. Use strategy='ddp_notebook' (forked processes) with "
        "fabric.launch(train_function), or run a script with `fabric run`."
    ),
    "spawn": (
        "strategy='ddp_spawn' starts fresh interpreters that must import your function, which a function "
        "defined in a notebook or the REPL cannot be. Use strategy='ddp_notebook' (forked processes) instead."
    ),
}


class ElasticLauncher(Launcher):
    """Starts one worker per device under the elastic agent, or joins existing workers.

    - ``"popen"`` (``ddp``): re-runs the script's own command line in each worker, the way
      ``torchrun`` would have started it; the launching process waits and then exits with
      the workers' status.
    - ``"spawn"`` (``ddp_spawn``): runs ``fabric.launch(fn)``'s function in fresh
      interpreters (the function and its arguments must be picklable).
    - ``"fork"`` (``ddp_fork``, ``ddp_notebook``): runs the function in forked copies of
      this process; the only method that works from a notebook.

    When the processes already exist (``fabric run``, ``torchrun``, ``srun``, ...) the
    launcher joins them instead: the script runs unchanged either way. In each worker it
    installs `worker_exit`, so an error reaches the agent and
    the exit status survives the interpreter's teardown.

    Args:
        strategy: The strategy whose processes are launched.
        start_method: ``"popen"``, ``"spawn"`` or ``"fork"``.
        max_restarts: How often the agent restarts the workers after a failure.
    """

    def __init__(
        self, strategy: ParallelStrategy, start_method: StartMethod = "popen", max_restarts: int = 0
    ) -> None:
        if start_method not in START_METHODS:
            raise ValueError(f"start_method={start_method!r} is not one of {', '.join(START_METHODS)}.")
        self._strategy = strategy
        self.start_method = start_method
        self.max_restarts = max_restarts

    @property
    def is_interactive_compatible(self) -> bool:
        """Only forking works from a notebook or the REPL."""
        return self.start_method == "fork"

    @property
    def needs_launch(self) -> bool:
        """Whether processes are missing: several are needed and nothing external started them."""
        strategy = self._strategy
        externally = strategy.cluster_environment.creates_processes_externally
        return not externally and strategy.num_processes * strategy.num_nodes > 1

    @property
    def requires_function(self) -> bool:
        """Spawned and forked workers run a function, not the rest of the script."""
        return self.start_method != "popen" and self.needs_launch

    def launch(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Start the workers and run ``function(*args, **kwargs)`` in each.

        Returns:
            ``function``'s return value on global rank 0 (``None`` on other nodes).

        Raises:
            RuntimeError: A script launcher was asked for from an interactive session.
            WorkersFailedError: A worker of a function launch failed.
        """
        if not self.needs_launch:
            # This process is a worker already (or the only process).
            install_worker_exit()
            return function(*args, **kwargs)
        if not self.is_interactive_compatible and is_interactive():
            raise RuntimeError(_NOT_INTERACTIVE[self.start_method])
        if self.start_method == "popen":
            self._run_script_workers()
        results = run_agent(self._settings(), _run_worker, [self._strategy, function, args, kwargs])
        return results.get(0)

    def _settings(self) -> AgentSettings:
        strategy = self._strategy
        environment = strategy.cluster_environment
        port = os.environ.get("MASTER_PORT")
        return AgentSettings(
            nproc_per_node=strategy.num_processes,
            num_nodes=strategy.num_nodes,
            node_rank=environment.node_rank(),
            main_address=environment.main_address,
            main_port=int(port) if port else None,
            max_restarts=self.max_restarts,
            start_method="spawn" if self.start_method == "popen" else self.start_method,
        )

    def _run_script_workers(self) -> None:
        command = [*sys.orig_argv[1:]]
        try:
            run_agent(self._settings(), sys.executable, command)
        except (WorkersFailedError, WorkersStoppedError) as error:
            print(f"fabric: {error}", file=sys.stderr, flush=True)
            sys.exit(error.exitcode)
        # The workers ran the whole script; this process only launched them.
        sys.exit(0)


def attempt_store(address: str, port: int, world_size: int, timeout: timedelta | None) -> Any:
    """Under the elastic agent, a store for the process group that only this attempt's workers use.

    The static rendezvous (``fabric run``, the ``ddp`` launchers) keeps one agent store for
    the whole job, restarts included, and torch's ``env://`` rendezvous no longer separates
    the attempts: the workers of a restarted attempt could read the addresses the previous
    attempt's processes published and fail with "Connection refused". This client of the
    agent's store prefixes every key with the attempt (``TORCHELASTIC_RESTART_COUNT``), as
    torch once did itself. Outside the agent's store it returns ``None`` (torch's default).
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    import torch.distributed as dist

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    client = dist.TCPStore(
        address, port, world_size, is_master=False, timeout=timeout or timedelta(minutes=30)
    )
    return dist.PrefixStore(f"/worker/attempt_{attempt}", client)


def is_interactive() -> bool:
    """Whether this interpreter is a REPL or a notebook kernel (no script to re-run)."""
    if hasattr(sys, "ps1") or sys.flags.interactive:
        return True
    main = sys.modules.get("__main__")
    return not hasattr(main, "__file__") and "-c" not in sys.orig_argv


def _run_worker(strategy: ParallelStrategy, function: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    from fabric_core.environments.torchelastic import TorchElasticEnvironment

    install_worker_exit()
    fit_thread_pools()
    # The agent exported this worker's ranks; read them from there.
    strategy.cluster_environment = TorchElasticEnvironment()
    return function(*args, **kwargs)
