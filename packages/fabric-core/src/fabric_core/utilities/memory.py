"""A dry run of a strategy's memory: per-rank bytes of parameters, gradients and optimizer state.

`estimate_memory` answers "will this fit?" before any process starts. It builds the
strategy the way ``Fabric(...)`` does (the connector, without launching or joining a
process group), builds the model on the meta device (nothing is allocated), and asks the
strategy how it lays that model out: `Strategy.estimate_memory`. The default is
replication (every rank holds everything); sharded strategies override it.

Glossary:

- *parameter bytes*: the storage of the model's parameters on one rank (a shard where
  the strategy shards them).
- *gradient bytes*: the gradients kept after a backward pass (one per trainable
  parameter, in the parameter's dtype unless the strategy keeps them otherwise).
- *optimizer bytes*: the optimizer's state after its first step: momentum buffers, Adam's
  two moments and step counters, and float32 master weights where a strategy keeps them.

Not counted: activations, temporary buffers (all-gathered parameters, communication
buckets), buffers of the model (``register_buffer``), and allocator fragmentation.
Figures are for the rank that holds the most (rank 0 where shards are uneven).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import nn

from fabric_core.utilities.memory_layout import OPTIMIZER_KINDS, MemoryEstimate, check_optimizer_kind

if TYPE_CHECKING:
    from fabric_core.precision.precision import Precision
    from fabric_core.strategies.strategy import Strategy

__all__ = [
    "OPTIMIZER_KINDS",
    "MemoryEstimate",
    "build_on_meta",
    "estimate_memory",
    "load_function",
    "load_model_factory",
]


SAME_SIZE_ON_CPU: Final[dict[str, str]] = {"16-mixed": "bf16-mixed", "16-true": "bf16-true"}
"""float16 precisions and the bfloat16 ones of the same size that every strategy can configure on the CPU."""


# -- the model ---------------------------------------------------------------------------

ModelSource = nn.Module | Callable[[], nn.Module] | str


def load_model_factory(spec: str) -> Callable[[], nn.Module]:
    """The factory named by ``spec``: ``"package.module:function"`` or ``"path/to/script.py:function"``.

    Raises:
        ValueError: ``spec`` has no ``:function`` part, or the module or file does not exist,
            or it has no such attribute, or the attribute is not callable.
    """
    return load_function(spec, "Model spec", "builds the model")


def load_function(spec: str, label: str, role: str) -> Callable[..., Any]:
    """The callable ``spec`` names (``"package.module:function"`` or ``"path/to/script.py:function"``).

    A script is imported once per path, so a model factory and a ``parallelize_fn`` taken
    from the same file share its classes. ``label`` and ``role`` word the errors
    (``"Model spec"``, ``"builds the model"``).

    Raises:
        ValueError: As `load_model_factory`.
    """
    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise ValueError(
            f"{label} {spec!r} must name a function that {role}: 'package.module:function' or "
            "'path/to/script.py:function' (e.g. 'mypkg.models:build')."
        )
    module = (
        _import_script(spec, source, label) if source.endswith(".py") else _import_module(spec, source, label)
    )
    function = getattr(module, name, None)
    if function is None:
        raise ValueError(f"{label} {spec!r}: {source} defines no {name!r}.")
    if not callable(function):
        raise ValueError(
            f"{label} {spec!r}: {source}.{name} is a {type(function).__name__}, not a function that {role}."
        )
    return function


def _import_script(spec: str, source: str, label: str) -> Any:
    path = Path(source).resolve()
    if not path.is_file():
        raise ValueError(f"{label} {spec!r}: the file {source} does not exist.")
    name = f"_fabric_estimate_{abs(hash(str(path)))}_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:  # pragma: no cover - a .py file always loads
        raise ValueError(f"{label} {spec!r}: {source} cannot be imported as a Python file.")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _import_module(spec: str, source: str, label: str) -> Any:
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as error:
        if error.name is None or not source.startswith(error.name):
            raise
        raise ValueError(
            f"{label} {spec!r}: no module named {source!r} (is it installed, or on PYTHONPATH?). For a file, "
            "pass its path: 'path/to/script.py:function'."
        ) from None


def build_on_meta(model: ModelSource, precision: Precision) -> nn.Module:
    """The model, built on the meta device when given as a factory or a spec (nothing is allocated).

    Raises:
        TypeError: ``model`` is neither a module, a callable nor a spec, or the factory
            returned something other than an ``nn.Module``.
    """
    if isinstance(model, nn.Module):
        return model
    factory = load_model_factory(model) if isinstance(model, str) else model
    if not callable(factory):
        raise TypeError(
            f"estimate_memory(model={model!r}) needs an nn.Module, a function that returns one, or a spec "
            "'package.module:function'."
        )
    with torch.device("meta"), precision.module_init_context():
        built = factory()
    if not isinstance(built, nn.Module):
        name = getattr(factory, "__qualname__", repr(factory))
        raise TypeError(
            f"The model factory {name} returned {type(built).__name__}, not an nn.Module. Make it return the "
            "model (it is called without arguments, on the meta device)."
        )
    return built


# -- the entry point ---------------------------------------------------------------------


def build_strategy(
    strategy: str | Strategy,
    devices: int,
    num_nodes: int,
    precision: str,
    accelerator: str,
    strategy_kwargs: dict[str, Any],
) -> Strategy:
    """The strategy as ``Fabric(...)`` would configure it, without launching or joining a process group."""
    from fabric_core._registries import STRATEGY_REGISTRY
    from fabric_core.connector import connect
    from fabric_core.strategies.strategy import Strategy

    if strategy_kwargs:
        if not isinstance(strategy, str) or strategy == "auto":
            raise ValueError(
                f"Strategy settings {sorted(strategy_kwargs)} need a strategy name (e.g. strategy='fsdp'), not "
                f"strategy={strategy!r}."
            )
        strategy = STRATEGY_REGISTRY.build(strategy, **strategy_kwargs)
    explicit: dict[str, object] = {"devices": devices, "num_nodes": num_nodes, "precision": precision}
    if isinstance(strategy, Strategy):
        explicit.pop("precision")  # a strategy instance may carry its own precision plugin
    return connect(
        accelerator=accelerator,
        strategy=strategy,
        devices=devices,
        num_nodes=num_nodes,
        precision=precision,
        explicit=explicit,
    )


def estimate_memory(
    model: ModelSource,
    strategy: str | Strategy = "auto",
    devices: int = 1,
    num_nodes: int = 1,
    precision: str = "32-true",
    optimizer: str = "adam",
    accelerator: str = "cpu",
    **strategy_kwargs: Any,
) -> MemoryEstimate:
    """Per-rank bytes of parameters, gradients and optimizer state, before any process starts.

    Args:
        model: An ``nn.Module``, a function that builds one (called on the meta device, so
            nothing is allocated), or a spec ``"package.module:function"`` /
            ``"path/to/script.py:function"``.
        strategy: A strategy name (``"ddp"``, ``"fsdp"``, ``"deepspeed_stage_3"``, ...) or instance.
        devices: Processes per node.
        num_nodes: Nodes.
        precision: As ``Fabric(precision=...)``; decides the parameters' dtype.
        optimizer: ``"sgd"``, ``"sgd-momentum"``, ``"adam"`` or ``"adamw"``.
        accelerator: The accelerator the strategy is configured for. The layout does not
            depend on it, and ``"cpu"`` can be configured for any number of devices on any
            machine, so the default is ``"cpu"``.
        **strategy_kwargs: Arguments of the strategy class (``tensor_parallel_size=2``,
            ``sharding_strategy="HYBRID_SHARD"``, ``stage=3``, ...).

    Returns:
        The estimate for one rank (the rank holding the most).

    Raises:
        ValueError: An unknown optimizer kind, a malformed model spec, or settings the
            strategy refuses (the strategy's own message).
        TypeError: ``model`` is not a module, factory or spec, or the factory does not
            return an ``nn.Module``.

    Example::

        estimate = estimate_memory("mypkg.models:build", strategy="fsdp", devices=8, precision="bf16-mixed")
        print(estimate.table())
    """
    check_optimizer_kind(optimizer)
    configured = precision
    notes: tuple[str, ...] = ()
    if accelerator == "cpu" and precision in SAME_SIZE_ON_CPU:
        configured = SAME_SIZE_ON_CPU[precision]
        notes = (
            f"precision={precision!r} counted as {configured!r} (same size; float16 is configured for GPUs)",
        )
    strategy_obj = build_strategy(strategy, devices, num_nodes, configured, accelerator, strategy_kwargs)
    module = build_on_meta(model, strategy_obj.precision)
    estimate = strategy_obj.estimate_memory(module, optimizer)
    name = strategy if isinstance(strategy, str) else type(strategy).__name__
    return dataclasses.replace(estimate, strategy=name, precision=precision, notes=(*estimate.notes, *notes))
