"""Process-group plumbing shared by every multi-process strategy."""

from __future__ import annotations

import difflib
import os
from abc import ABC
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.launchers.elastic import ElasticLauncher, StartMethod, attempt_store
from fabric_core.launchers.worker_exit import destroy_process_group_at_exit
from fabric_core.precision.precision import Precision
from fabric_core.strategies.config import StrategyConfig
from fabric_core.strategies.strategy import Strategy
from fabric_core.utilities import collective_watch, collectives
from fabric_core.utilities.apply_func import as_tensor

__all__ = ["DEFAULT_TIMEOUT", "ParallelStrategy"]

_T = TypeVar("_T")

DEFAULT_TIMEOUT = timedelta(minutes=5)
"""How long a collective waits for the other processes on gloo (CPU) before failing.

Short enough that a rank that skipped a collective is named within minutes, long enough for
a rank that saves a checkpoint or evaluates while the others wait in a barrier. Other
backends keep torch's own default (NCCL: 10 minutes). Pass ``timeout=`` to the strategy for
more, e.g. when one rank does long work of its own between two collectives.
"""


class ParallelStrategy(Strategy, ABC):
    """A strategy with one process per device, joined in a ``torch.distributed`` process group.

    It reads ranks from the cluster environment, forms the default process group in
    `setup_environment`, implements the collectives with ``torch.distributed``
    and destroys the group in `teardown`. Subclasses decide how the module is
    wrapped (DDP, FSDP, DeepSpeed, ...).

    Args:
        accelerator: The accelerator; set by the connector when omitted.
        parallel_devices: One device per process on this node; set by the connector when omitted.
        checkpoint_io: How checkpoints are written.
        precision_plugin: The precision plugin.
        cluster_environment: Where ranks come from; detected when omitted.
        process_group_backend: ``"gloo"``, ``"nccl"``, ...; the accelerator's default when omitted.
        timeout: How long collectives wait for the other processes before failing on every rank
            with the ranks that did not arrive (``None``: `DEFAULT_TIMEOUT`, 5 minutes, on
            gloo; torch's default for other backends, 10 minutes for NCCL).
        start_method: How ``fabric.launch()`` starts the processes: ``"popen"`` re-runs the
            script, ``"spawn"`` and ``"fork"`` run ``fabric.launch(fn)``'s function (see
            `ElasticLauncher`).
        precision: Lightning Fabric's name for ``precision_plugin``.

    Everything after ``precision_plugin`` is keyword-only.
    """

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        *,
        cluster_environment: ClusterEnvironment | None = None,
        process_group_backend: str | None = None,
        timeout: timedelta | None = None,
        start_method: StartMethod = "popen",
        precision: Precision | None = None,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            accelerator=accelerator,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            precision=precision,
        )
        self._parallel_devices = parallel_devices
        self._cluster_environment = cluster_environment
        self._process_group_backend = process_group_backend
        self._timeout = timeout
        self._num_nodes = 1
        self._owns_process_group = False
        self._launcher = ElasticLauncher(self, start_method)

    # -- configuration ------------------------------------------------------------------

    def configure(self, config: StrategyConfig) -> None:
        """Adopt devices, node count and cluster environment, refusing contradictions."""
        super().configure(config)
        given = self._parallel_devices
        if given is not None and config.given("devices") and len(given) != len(config.parallel_devices):
            raise ValueError(
                f"The strategy instance was built with {len(given)} parallel_devices, but "
                f"Fabric(devices={config.explicit['devices']!r}) asks for {len(config.parallel_devices)}. "  # type: ignore[index]
                "Pass the devices in one place only."
            )
        if self._parallel_devices is None:
            self._parallel_devices = list(config.parallel_devices)
        if self._cluster_environment is None:
            self._cluster_environment = config.cluster_environment
        self._num_nodes = config.num_nodes
        _check_backend(self._process_group_backend, config.accelerator.device_type)
        self.cluster_environment.validate_settings(len(self._parallel_devices), self._num_nodes)

    @property
    def parallel_devices(self) -> list[torch.device]:
        """One device per process on this node."""
        if self._parallel_devices is None:
            raise RuntimeError(f"{type(self).__name__} has no devices yet; build it through Fabric.")
        return self._parallel_devices

    @property
    def num_processes(self) -> int:
        """The number of processes on each node."""
        return len(self.parallel_devices)

    @property
    def num_nodes(self) -> int:
        """The number of nodes."""
        return self._num_nodes

    @property
    def cluster_environment(self) -> ClusterEnvironment:
        """Where this process learns its ranks."""
        if self._cluster_environment is None:
            from fabric_core.environments.detect import detect_environment

            self._cluster_environment = detect_environment()
        return self._cluster_environment

    @cluster_environment.setter
    def cluster_environment(self, environment: ClusterEnvironment) -> None:
        self._cluster_environment = environment

    @property
    def process_group_backend(self) -> str:
        """The ``torch.distributed`` backend (the accelerator's default unless given)."""
        if self._process_group_backend is None:
            return self.accelerator.default_process_group_backend()
        return self._process_group_backend

    # -- ranks --------------------------------------------------------------------------

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes."""
        return self.cluster_environment.global_rank()

    @property
    def local_rank(self) -> int:
        """This process's rank on its node."""
        return self.cluster_environment.local_rank()

    @property
    def node_rank(self) -> int:
        """The rank of this process's node."""
        return self.cluster_environment.node_rank()

    @property
    def world_size(self) -> int:
        """The number of processes in the job."""
        return self.cluster_environment.world_size()

    @property
    def root_device(self) -> torch.device:
        """The device of this process: ``parallel_devices[local_rank]``."""
        return self.parallel_devices[self.local_rank]

    @property
    def distributed_sampler_kwargs(self) -> dict[str, int]:
        """Shard data by global rank over all processes."""
        return {"num_replicas": self.world_size, "rank": self.global_rank}

    # -- process group ------------------------------------------------------------------

    def setup_environment(self) -> None:
        """Select this process's device, then join the default process group (`setup_distributed`)."""
        super().setup_environment()
        self.setup_distributed()

    def setup_distributed(self) -> None:
        """Form (or join) the default process group: the distributed step of `setup_environment`.

        The default is `setup_process_group`; strategies whose library forms the group
        itself override it.
        """
        self.setup_process_group()

    def setup_process_group(self) -> None:
        """Form the default process group from the cluster environment (once per process).

        Joins an existing group instead when one was already formed (e.g. by the user).

        Raises:
            RuntimeError: An existing group's size disagrees with the expected world size.
        """
        environment = self.cluster_environment
        environment.set_world_size(self.num_nodes * self.num_processes)
        environment.set_global_rank(self.node_rank * self.num_processes + self.local_rank)
        if dist.is_initialized():
            if dist.get_world_size() != self.world_size:
                raise RuntimeError(
                    f"A process group of size {dist.get_world_size()} already exists, but this strategy expects "
                    f"{self.world_size} processes. Destroy it first or make devices x num_nodes match it."
                )
            return
        os.environ["MASTER_ADDR"] = environment.main_address
        os.environ["MASTER_PORT"] = str(environment.main_port)
        backend = self.process_group_backend
        timeout = self._timeout
        if timeout is None and backend.lower() == "gloo":
            timeout = DEFAULT_TIMEOUT
        kwargs: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        store = attempt_store(environment.main_address, environment.main_port, self.world_size, timeout)
        if store is not None:
            kwargs["store"] = store
        dist.init_process_group(backend, rank=self.global_rank, world_size=self.world_size, **kwargs)
        self._owns_process_group = True
        destroy_process_group_at_exit()
        collective_watch.start_watch()

    def teardown(self) -> None:
        """Destroy the process group this strategy formed, then release the other parts."""
        if self._owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
        self._owns_process_group = False
        if self._cluster_environment is not None:
            self._cluster_environment.teardown()
        super().teardown()

    # -- collectives --------------------------------------------------------------------

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: str | None = None) -> Any:
        """All-reduce ``tensor`` (in place) across processes; ``reduce_op=None`` means ``"mean"``.

        A Python or NumPy number is turned into a tensor on the root device first, so a
        value like ``loss.item()`` is reduced too.

        Raises:
            TypeError: ``tensor`` is neither a tensor nor a number.
        """
        value = as_tensor(tensor, self.root_device)
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{type(self).__name__}.reduce() communicates tensors and numbers, got {type(tensor).__name__}. "
                "Use fabric.all_reduce(...) for nested collections, or fabric.broadcast(...) for other objects."
            )
        if not collectives.is_distributed():
            return value
        return collectives.all_reduce(value, group, reduce_op or "mean")

    def all_gather(
        self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False
    ) -> torch.Tensor:
        """Stack ``tensor`` from every process along a new leading dimension.

        With ``sync_grads=True`` the result stays in the autograd graph, so gradients flow
        back to each process's own slice.
        """
        if not collectives.is_distributed():
            return super().all_gather(tensor, group, sync_grads)
        return collectives.all_gather(as_tensor(tensor, self.root_device), group, sync_grads)

    def broadcast(self, tensor: _T, src: int = 0) -> _T:
        """Send ``tensor`` (or any picklable object) from process ``src`` to every process.

        A tensor is broadcast in place and keeps its device; other objects are pickled.
        """
        if not collectives.is_distributed():
            return super().broadcast(tensor, src)
        return collectives.broadcast(tensor, src)

    def barrier(self, name: str | None = None) -> None:
        """Wait for every process (``name`` is for debugging only)."""
        if collectives.is_distributed():
            collectives.barrier()

    def reduce_boolean_decision(self, decision: bool, all: bool = True) -> bool:
        """True when every process (``all=True``) or any process (``all=False``) decided true."""
        if not collectives.is_distributed():
            return super().reduce_boolean_decision(decision, all)
        flag = torch.tensor(int(decision), device=self.root_device)
        collectives.all_reduce(flag, None, "sum")
        return bool(flag == self.world_size) if all else bool(flag > 0)


def _check_backend(backend: str | None, device_type: str) -> None:
    """Refuse a process-group backend the devices cannot use, before any process starts."""
    if backend is None:
        return
    if not isinstance(backend, str) or not backend:
        raise TypeError(f"process_group_backend={backend!r} must be a backend name such as 'gloo' or 'nccl'.")
    _check_backend_names(backend)
    if backend.lower() == "nccl" and (device_type != "cuda" or not dist.is_nccl_available()):
        where = f"accelerator='{device_type}'" if device_type != "cuda" else "a torch built without NCCL"
        raise ValueError(
            f"process_group_backend='nccl' needs NVIDIA GPUs (CUDA) and a torch built with NCCL, but this run uses "
            f"{where}. On a CPU use process_group_backend='gloo', or leave it unset to get the device's default."
        )


_BUILT_WITH = {"gloo": "is_gloo_available", "nccl": "is_nccl_available", "mpi": "is_mpi_available",
               "ucc": "is_ucc_available", "xccl": "is_xccl_available"}  # fmt: skip


def _check_backend_names(backend: str) -> None:
    """Refuse a backend torch.distributed does not know (``"glo"``) or this torch was built without (``"mpi"``).

    ``backend`` may name one backend per device type, as ``"cpu:gloo,cuda:nccl"``. Backends
    registered with ``torch.distributed.Backend.register_backend`` are known too.
    """
    known = [name for name in dist.Backend.backend_list if name != "undefined"]
    for part in backend.lower().split(","):
        name = part.rpartition(":")[2].strip()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"process_group_backend={backend!r}: {name!r} is not a torch.distributed backend; use one of "
                f"{', '.join(map(repr, known))}, or leave it unset to get the device's default.{hint}"
            )
        probe = getattr(dist, _BUILT_WITH.get(name, ""), None)
        if probe is not None and name != "nccl" and not probe():
            raise ValueError(
                f"process_group_backend={backend!r}: this torch was built without the {name!r} backend. Use 'gloo' "
                "on CPUs and 'nccl' on NVIDIA GPUs, or leave it unset to get the device's default."
            )
