"""XLAFSDPStrategy: torch_xla's FullyShardedDataParallel, one process per XLA device."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, Literal

import torch
from torch import nn
from torch.optim import Optimizer

from fabric_core.accelerators.accelerator import Accelerator
from fabric_core.environments.cluster_environment import ClusterEnvironment
from fabric_core.io.checkpoint_io import CheckpointIO
from fabric_core.precision.precision import Precision
from fabric_core.utilities.checkpoint import apply_checkpoint, collect_state
from fabric_xla._checkpoint import save_from_rank_zero
from fabric_xla._fsdp_state import (
    META_KEY,
    SHARD_FILE_PATTERN,
    gather_full_state_dict,
    is_sharded_state_dict,
    shard_file,
    shard_full_state_dict,
)
from fabric_xla._fsdp_wrapping import check_fsdp_kwargs, wrapping_kwargs
from fabric_xla._runtime import import_torch_xla, sync, to_cpu
from fabric_xla.launcher import XLAStartMethod
from fabric_xla.strategy import XLAStrategy

__all__ = ["XLAFSDPStrategy"]

StateDictType = Literal["full", "sharded"]
_STATE_DICT_TYPES: Final = ("full", "sharded")

_SETUP_ORDER: Final = (
    "XLAFSDPStrategy flattens and shards the parameters when it wraps the model, so the optimizer must be "
    "created afterwards, from the wrapped model's parameters:\n"
    "    model = fabric.setup_module(model)\n"
    "    optimizer = torch.optim.AdamW(model.parameters(), lr=...)\n"
    "    optimizer = fabric.setup_optimizers(optimizer)"
)


class XLAFSDPStrategy(XLAStrategy):
    """Fully sharded data parallel on XLA devices with torch_xla's ``XlaFullyShardedDataParallel``.

    Each process keeps only its shard (``1/world_size``) of every parameter, of its
    gradient and of the optimizer state. In forward and backward each wrapped module
    all-gathers its full parameters just before use and frees them right after; backward
    reduce-scatters the gradients, so each process ends up with the averaged gradient of
    its own shard and steps its own shard. Wrap the repeated blocks of a large model
    (``auto_wrap_policy``) so only one block is unsharded at a time.

    Set up the model first and create the optimizer from the wrapped model's parameters
    (``fabric.setup_module``, then ``fabric.setup_optimizers``): the wrapper replaces the
    parameters. ``optimizer.step()`` steps and runs the graph (``torch_xla.sync()``).

    Checkpoints (``state_dict_type``):

    - ``"sharded"`` (default): a folder with one file per process holding its shards, the
      optimizer state and the shard metadata; loading needs the same number of processes.
      ``fabric checkpoint consolidate`` turns the folder into one full file (model weights
      and plain values; sharded optimizer state has no full form).
    - ``"full"``: the model weights gathered into one file on global rank 0, with the
      unwrapped model's keys, interchangeable with every other strategy. The optimizer
      state is not saved in this form. Full files load into the sharded model.

    ``allows_repeated_setup`` is false: wrapping flattens and shards the model's
    parameters in place, so the same model must not be set up a second time.

    Args:
        accelerator: The XLA accelerator; set by ``Fabric`` when omitted.
        parallel_devices: One device per process on this host; set by ``Fabric`` when omitted.
        checkpoint_io: How checkpoint files are written.
        precision_plugin: The precision plugin; built from ``Fabric(precision=...)`` when omitted.
        auto_wrap_policy: Which submodules get their own FSDP wrapper: a policy callable
            (``torch_xla.distributed.fsdp.wrap.size_based_auto_wrap_policy``, ...) or a set of
            layer classes (each instance is wrapped). ``None`` wraps the root module only.
        cluster_environment: Where ranks come from (the XLA runtime unless given; keyword only,
            as every argument below).
        activation_checkpointing_policy: A set of layer classes whose activations are
            recomputed in backward instead of kept (needs ``auto_wrap_policy`` to wrap them).
        state_dict_type: ``"sharded"`` or ``"full"``, see above.
        debug: Print XLA's compilation and execution analysis.
        start_method: ``"spawn"`` or ``"fork"``, how ``torch_xla.launch`` starts the processes.
        precision: Lightning Fabric's name for ``precision_plugin`` (pass one of the two).
        **kwargs: Passed to ``XlaFullyShardedDataParallel`` (``reshard_after_forward``,
            ``flatten_parameters``, ``compute_dtype``, ``shard_param_on_dim_0``, ...).

    Raises:
        ValueError: ``state_dict_type`` is unknown, activation checkpointing was asked
            for without an ``auto_wrap_policy``, or both ``precision_plugin`` and
            ``precision`` were given.
        TypeError: ``kwargs`` holds a name ``XlaFullyShardedDataParallel`` does not take.
        ModuleNotFoundError: torch_xla is not installed.
    """

    allows_repeated_setup = False
    unsupported_accelerator_hint = (
        "Use accelerator='tpu' (without a TPU, PJRT_DEVICE=CPU runs XLA on the CPU), or on the CPU "
        "strategy='fsdp' with devices=N (pip install fabric-fsdp)."
    )

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        parallel_devices: list[torch.device] | None = None,
        checkpoint_io: CheckpointIO | None = None,
        precision_plugin: Precision | None = None,
        auto_wrap_policy: Callable[..., bool] | Collection[type[nn.Module]] | None = None,
        *,
        cluster_environment: ClusterEnvironment | None = None,
        activation_checkpointing_policy: Collection[type[nn.Module]] | None = None,
        state_dict_type: StateDictType = "sharded",
        debug: bool = False,
        start_method: XLAStartMethod = "spawn",
        precision: Precision | None = None,
        **kwargs: Any,
    ) -> None:
        # The seed's explicit parameters, passed on by name: no **kwargs, so help() and type checkers see them.
        super().__init__(
            sync_module_states=False,
            parallel_devices=parallel_devices,
            cluster_environment=cluster_environment,
            checkpoint_io=checkpoint_io,
            precision_plugin=precision_plugin,
            debug=debug,
            accelerator=accelerator,
            start_method=start_method,
            precision=precision,
        )
        if state_dict_type not in _STATE_DICT_TYPES:
            raise ValueError(
                f"state_dict_type={state_dict_type!r} is not one of {', '.join(map(repr, _STATE_DICT_TYPES))}."
            )
        if activation_checkpointing_policy and auto_wrap_policy is None:
            raise ValueError(
                "activation_checkpointing_policy needs auto_wrap_policy to wrap those layers: pass "
                "auto_wrap_policy={...the same layer classes...} as well."
            )
        import_torch_xla()
        check_fsdp_kwargs(kwargs)
        self._fsdp_kwargs = wrapping_kwargs(kwargs, auto_wrap_policy, activation_checkpointing_policy)
        self._state_dict_type = state_dict_type

    @property
    def state_dict_type(self) -> StateDictType:
        """``"sharded"`` or ``"full"``: how checkpoints are written."""
        return self._state_dict_type

    # -- modules and optimizers ---------------------------------------------------------

    def setup_module_and_optimizers(
        self, module: nn.Module, optimizers: list[Optimizer]
    ) -> tuple[nn.Module, list[Optimizer]]:
        """Refuse: the optimizer must be created from the wrapped model's parameters.

        Raises:
            ValueError: Always, with the order of calls that works.
        """
        raise ValueError(_SETUP_ORDER)

    def module_to_device(self, module: nn.Module) -> None:
        """Leave the module where it is: the wrapper moves each shard to the device as it cuts it."""

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Wrap the module (and, by ``auto_wrap_policy``, its submodules) in ``XlaFullyShardedDataParallel``."""
        from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP

        if isinstance(module, XLAFSDP):
            return module
        kwargs = dict(self._fsdp_kwargs)
        if "auto_wrap_policy" in kwargs and any(isinstance(m, XLAFSDP) for m in module.modules()):
            warnings.warn(
                "Some submodules are wrapped in XlaFullyShardedDataParallel already, so auto_wrap_policy is not "
                "applied; only the root module is wrapped.",
                stacklevel=2,
            )
            kwargs.pop("auto_wrap_policy")
            kwargs.pop("auto_wrapper_callable", None)
        return XLAFSDP(module, **kwargs)

    def setup_optimizer(self, optimizer: Optimizer) -> Optimizer:
        """Check that the optimizer steps the sharded parameters.

        Raises:
            ValueError: The optimizer holds parameters of the model before it was wrapped.
        """
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if parameters and all(getattr(p, "_is_sharded", False) for p in parameters):
            return optimizer
        raise ValueError(
            "The optimizer does not hold the sharded parameters of an XLA FSDP model. " + _SETUP_ORDER
        )

    def _reduce_gradients(self, optimizer: Optimizer) -> None:
        """Nothing to do: backward already reduce-scattered each gradient to its shard."""

    # Same parameters as Strategy.clip_gradients_norm (the contract every strategy keeps); only the body is its own.
    def clip_gradients_norm(
        self,
        module: nn.Module,
        optimizer: Optimizer,
        max_norm: float,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = True,
    ) -> torch.Tensor:
        """Clip the joint norm of all shards' gradients (computed across the processes by the wrapper).

        Raises:
            TypeError: ``module`` is not the model this strategy wrapped.
        """
        from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP

        if not isinstance(module, XLAFSDP):
            raise TypeError(
                f"clip_gradients needs the model set up by XLAFSDPStrategy, got {type(module).__name__}."
            )
        self.precision.unscale_gradients(optimizer)
        return module.clip_grad_norm_(max_norm=max_norm, norm_type=norm_type)  # type: ignore[no-any-return,unused-ignore]

    @contextmanager
    def no_backward_sync(self, module: nn.Module, enabled: bool = True) -> Iterator[None]:
        """Skip the gradient reduce-scatter in backward passes inside the block (gradients accumulate unsharded).

        Raises:
            TypeError: ``module`` is not the model this strategy wrapped.
        """
        from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP

        if not enabled:
            yield
            return
        if not isinstance(module, XLAFSDP):
            raise TypeError(
                f"no_backward_sync needs the model set up by XLAFSDPStrategy, got {type(module).__name__}."
            )
        with module.no_sync():
            yield

    # -- checkpoints --------------------------------------------------------------------

    def get_module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """``"full"``: the gathered state dict on global rank 0 (``{}`` elsewhere); ``"sharded"``: this rank's shards."""
        if not _is_fsdp(module):
            return super().get_module_state_dict(module)
        if self._state_dict_type == "full":
            return gather_full_state_dict(module, keep=self.is_global_zero)
        return module.state_dict()

    def get_optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        """This rank's optimizer state (``"sharded"`` only).

        Raises:
            ValueError: ``state_dict_type="full"``, which has no form for sharded optimizer state.
        """
        if self._state_dict_type == "full":
            raise ValueError(
                "XLAFSDPStrategy(state_dict_type='full') saves the model weights only: the optimizer state belongs "
                "to the flat parameter shards and has no full form. Leave the optimizer out of the saved state, or "
                "use state_dict_type='sharded' to save it."
            )
        return optimizer.state_dict()

    def load_module_state_dict(
        self, module: nn.Module, state_dict: dict[str, Any], strict: bool = True
    ) -> None:
        """Load a sharded state dict as is, or cut this rank's shards from a full one."""
        if not _is_fsdp(module):
            super().load_module_state_dict(module, state_dict, strict)
            return
        if not is_sharded_state_dict(state_dict):
            metadata = module.get_shard_metadata()  # type: ignore[operator]
            state_dict = shard_full_state_dict(state_dict, module.state_dict(), metadata, strict)
        module.load_state_dict(state_dict, strict=strict)

    # Same parameters as Strategy.save_checkpoint (the contract every strategy keeps); only the body is its own.
    def save_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any],
        storage_options: Any | None = None,
        filter: dict[str, Callable[[str, Any], bool]] | None = None,
    ) -> None:
        """Write one full file from global rank 0 (``"full"``), or the folder of per-rank files (``"sharded"``).

        Raises:
            ValueError: ``filter`` names a sharded model (filter full state dicts instead).
        """
        if self._state_dict_type == "full":
            save_from_rank_zero(self, path, state, storage_options, filter)
            return
        modules = {key: obj for key, obj in state.items() if _is_fsdp(obj)}
        if filter and set(filter) & set(modules):
            raise ValueError(
                "filter= selects entries of full state dicts, but state_dict_type='sharded' saves the shards of "
                f"{', '.join(sorted(set(filter) & set(modules)))}. Use XLAFSDPStrategy(state_dict_type='full')."
            )
        sync()
        checkpoint = collect_state(state, self, filter)
        checkpoint[META_KEY] = {
            "world_size": self.world_size,
            "rank": self.global_rank,
            "shard_metadata": {key: module.get_shard_metadata() for key, module in modules.items()},
            "optimizers": [key for key, obj in state.items() if isinstance(obj, Optimizer)],
        }
        target = shard_file(path, self.global_rank, self.world_size)
        self.checkpoint_io.save_checkpoint(to_cpu(checkpoint), target, storage_options=storage_options)

    # Same parameters as Strategy.load_checkpoint (the contract every strategy keeps); only the body is its own.
    def load_checkpoint(
        self,
        path: str | Path,
        state: dict[str, Any] | nn.Module | Optimizer | None = None,
        strict: bool = True,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Load this rank's file of a sharded folder, or a full file (model weights and plain values).

        Raises:
            FileNotFoundError: The folder holds no file for this rank (it was written by a
                different number of processes; the message says how many).
            ValueError: A full file is asked to restore an optimizer.
        """
        path = Path(path)
        if path.is_dir():
            checkpoint = self._read_shard(path, weights_only)
        else:
            checkpoint = self.checkpoint_io.load_checkpoint(path, weights_only=weights_only)
            if isinstance(state, dict):
                _refuse_full_optimizer_state(state, checkpoint, path)
        remainder = apply_checkpoint(state, checkpoint, self, strict, path=path)
        sync()
        return remainder

    def _read_shard(self, folder: Path, weights_only: bool | None) -> dict[str, Any]:
        file = shard_file(folder, self.global_rank, self.world_size)
        if not file.exists():
            written = sorted(p.name for p in folder.glob(SHARD_FILE_PATTERN))
            raise FileNotFoundError(
                f"'{folder}' has no file for rank {self.global_rank} of {self.world_size} ({file.name}); it holds "
                f"{', '.join(written) or 'no rank files'}. A sharded checkpoint loads with the number of processes "
                "that wrote it; `fabric checkpoint consolidate` turns it into one file that loads with any number."
            )
        checkpoint = self.checkpoint_io.load_checkpoint(file, weights_only=weights_only)
        checkpoint.pop(META_KEY, None)
        return checkpoint

    def __repr__(self) -> str:
        return f"XLAFSDPStrategy(state_dict_type={self._state_dict_type!r}, precision={self._precision!r})"


def _is_fsdp(obj: object) -> bool:
    from torch_xla.distributed.fsdp import XlaFullyShardedDataParallel as XLAFSDP

    return isinstance(obj, XLAFSDP)


def _refuse_full_optimizer_state(state: dict[str, Any], checkpoint: dict[str, Any], path: Path) -> None:
    for key, obj in state.items():
        if isinstance(obj, Optimizer) and key in checkpoint:
            raise ValueError(
                f"'{key}' in the single-file checkpoint '{path}' is optimizer state for unsharded parameters, which "
                "XLA FSDP's optimizer over flat shards cannot take. Load the model alone (leave the optimizer out "
                "of the state), or resume from a checkpoint saved with state_dict_type='sharded'."
            )
