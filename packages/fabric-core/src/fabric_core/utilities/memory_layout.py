"""The arithmetic of memory estimates: the result type, and the accounting strategies share.

Each strategy's `estimate_memory` builds a
`MemoryEstimate` from these helpers; `fabric_core.utilities.memory` is the entry
point that builds the strategy and the model. This module imports neither, so a strategy
can use it without an import circle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final

import torch
from torch import nn

if TYPE_CHECKING:
    from fabric_core.precision.precision import Precision
    from fabric_core.strategies.strategy import Strategy

__all__ = [
    "OPTIMIZER_KINDS",
    "STEP_BYTES",
    "ByteTally",
    "MemoryEstimate",
    "check_optimizer_kind",
    "default_dtype_of",
    "format_bytes",
    "optimizer_state_bytes",
    "parameter_dtype",
    "planned_world_size",
    "replicated_estimate",
    "trainable",
]

OPTIMIZER_KINDS: Final[dict[str, int]] = {"sgd": 0, "sgd-momentum": 1, "adam": 2, "adamw": 2}
"""Each optimizer kind and the state tensors it keeps per parameter, each the parameter's shape and dtype."""

STEP_BYTES: Final = 4
"""torch's Adam and AdamW keep ``state["step"]`` as a float32 scalar tensor per parameter."""


@dataclass(frozen=True)
class MemoryEstimate:
    """The training state one rank holds under a strategy, in bytes.

    Attributes:
        strategy: The strategy's name (or class name).
        world_size: The number of processes (``devices x num_nodes``).
        precision: The precision string of the run.
        optimizer: The optimizer kind (``"sgd"``, ``"sgd-momentum"``, ``"adam"``, ``"adamw"``).
        parameter_bytes: Parameters on this rank.
        gradient_bytes: Gradients kept after backward on this rank.
        optimizer_bytes: Optimizer state (and master weights) on this rank.
        notes: What the figures assume and what they leave out.
    """

    strategy: str
    world_size: int
    precision: str
    optimizer: str
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    notes: tuple[str, ...] = field(default=())

    @property
    def total_bytes(self) -> int:
        """Parameters + gradients + optimizer state on one rank."""
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes

    def as_dict(self) -> dict[str, Any]:
        """The estimate as plain JSON-ready values, ``total_bytes`` included."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["total_bytes"] = self.total_bytes
        return data

    def table(self) -> str:
        """A text table: one row per kind of state, bytes and a human-readable size, then the notes."""
        rows = [
            ("parameters", self.parameter_bytes),
            ("gradients", self.gradient_bytes),
            ("optimizer state", self.optimizer_bytes),
            ("total", self.total_bytes),
        ]
        header = (
            f"strategy={self.strategy} world_size={self.world_size} precision={self.precision} "
            f"optimizer={self.optimizer} (per rank)"
        )
        lines = [header, f"{'STATE':<16} {'BYTES':>16} {'SIZE':>10}"]
        lines += [f"{name:<16} {value:>16,} {format_bytes(value):>10}" for name, value in rows]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)


@dataclass
class ByteTally:
    """Running per-rank totals of parameter, gradient and optimizer-state bytes, for one optimizer kind."""

    optimizer: str
    parameter: int = 0
    gradient: int = 0
    state: int = 0

    def add(self, numel: int, itemsize: int, requires_grad: bool = True) -> None:
        """Count a tensor of ``numel`` elements this rank holds; with a gradient and optimizer state if trained."""
        self.parameter += numel * itemsize
        if requires_grad:
            self.gradient += numel * itemsize
            self.state += optimizer_state_bytes(self.optimizer, numel, itemsize, 1)

    def estimate(self, strategy: Strategy, world_size: int, notes: Iterable[str] = ()) -> MemoryEstimate:
        """The totals as ``strategy``'s `MemoryEstimate` over ``world_size`` processes."""
        return MemoryEstimate(
            strategy=type(strategy).__name__,
            world_size=world_size,
            precision=repr(strategy.precision),
            optimizer=self.optimizer,
            parameter_bytes=self.parameter,
            gradient_bytes=self.gradient,
            optimizer_bytes=self.state,
            notes=tuple(notes),
        )


def format_bytes(value: int) -> str:
    """``value`` in binary units (``1.5 GiB``)."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def check_optimizer_kind(optimizer: str) -> str:
    """``optimizer`` if it is a known kind.

    Raises:
        ValueError: An unknown kind; the message lists the known ones.
    """
    if optimizer not in OPTIMIZER_KINDS:
        raise ValueError(
            f"optimizer={optimizer!r} is not an optimizer kind the estimate knows. Choose one of: "
            f"{', '.join(OPTIMIZER_KINDS)} (the state a torch optimizer of that kind keeps)."
        )
    return optimizer


def optimizer_state_bytes(optimizer: str, numel: int, element_size: int, tensors: int) -> int:
    """Bytes of ``optimizer``'s state over ``tensors`` parameter tensors of ``numel`` elements in all.

    Args:
        optimizer: The optimizer kind.
        numel: The elements of the parameters it steps (on this rank).
        element_size: Bytes per element of the state (the parameters' dtype).
        tensors: How many parameter tensors those elements are in (Adam keeps a step
            counter per tensor).
    """
    slots = OPTIMIZER_KINDS[check_optimizer_kind(optimizer)]
    steps = tensors * STEP_BYTES if optimizer in ("adam", "adamw") else 0
    return slots * numel * element_size + steps


def parameter_dtype(precision: Precision, dtype: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a floating parameter of ``dtype`` has after ``precision.convert_module``.

    Found by converting a one-weight module on the meta device, so any precision plugin
    answers for itself (``bf16-true`` gives bfloat16, ``bf16-mixed`` keeps float32).
    """
    probe = nn.Linear(1, 1, bias=False, device="meta", dtype=dtype)
    converted = precision.convert_module(probe)
    weight = (converted if isinstance(converted, nn.Module) else probe).weight
    return weight.dtype if isinstance(weight, torch.Tensor) else dtype


def trainable(module: nn.Module) -> list[nn.Parameter]:
    """The distinct parameters of ``module`` (a tied parameter counts once)."""
    return list(dict.fromkeys(module.parameters()))


def replicated_estimate(strategy: Strategy, module: nn.Module, optimizer: str) -> MemoryEstimate:
    """Every rank holds every parameter, its gradient and its optimizer state, in the precision's dtype.

    ``module`` may be on the meta device: only shapes and dtypes are read.
    """
    check_optimizer_kind(optimizer)
    dtype_of = default_dtype_of(strategy.precision)
    tally = ByteTally(optimizer)
    for param in trainable(module):
        tally.add(param.numel(), dtype_of(param).itemsize, param.requires_grad)
    notes = ("every rank holds all parameters, gradients and optimizer state (replicated)",)
    return tally.estimate(strategy, planned_world_size(strategy), notes)


def default_dtype_of(precision: Precision) -> Callable[[torch.Tensor], torch.dtype]:
    """The dtype a parameter has under ``precision``: floating parameters take the precision's dtype."""
    floating = {dtype: parameter_dtype(precision, dtype) for dtype in (torch.float32, torch.float64)}

    def dtype_of(param: torch.Tensor) -> torch.dtype:
        return floating.get(param.dtype, param.dtype)

    return dtype_of


def planned_world_size(strategy: Strategy) -> int:
    """The number of processes ``strategy`` will run (``num_nodes x num_processes``), known before launch."""
    nodes = getattr(strategy, "num_nodes", None)
    processes = getattr(strategy, "num_processes", None)
    if isinstance(nodes, int) and isinstance(processes, int):
        return nodes * processes
    return strategy.world_size
