"""The optimizer ``fabric.setup`` returns under DeepSpeed: a torch ``Optimizer`` in front of the engine's.

Vocabulary of this module:

- *client optimizer*: the ``torch.optim`` optimizer the user passed to ``fabric.setup``
  (``engine.basic_optimizer``).
- *DeepSpeed optimizer*: what the engine steps (``engine.optimizer``): a ZeRO optimizer, a
  bf16/fp16 wrapper, or the client optimizer itself (stage 0 in float32). It is not a
  ``torch.optim.Optimizer``, so an LR scheduler refuses it.

The DeepSpeed optimizer steps the client optimizer with the client's own parameter-group
dicts: ZeRO only replaces each group's ``"params"`` with its float32 partition. A learning
rate written into ``client.param_groups[i]["lr"]`` is therefore the one the next
``engine.step()`` uses. `EngineOptimizer` is an ``Optimizer`` whose ``param_groups``
and ``state`` *are* the client's (live, also after a checkpoint load replaces them), whose
``step`` is ``engine.step()``, whose ``zero_grad`` is the DeepSpeed optimizer's, and whose
``state_dict`` is the DeepSpeed optimizer's (partitioned) state. A scheduler built on the
client optimizer before ``fabric.setup`` and one built on the returned optimizer afterwards
drive the same dicts.

Its class also derives from the client's class (``DeepSpeedAdam`` for ``Adam``), so
``isinstance(optimizer, torch.optim.Adam)`` holds as under other strategies; the client
class's own methods are never called on it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import Optimizer

from fabric_deepspeed._clipping import apply_norm_clip_for_step

__all__ = ["EngineOptimizer", "engine_optimizer"]


class EngineOptimizer(Optimizer):
    """A ``torch.optim.Optimizer`` that steps a DeepSpeed engine (see the module docstring).

    Attribute names it does not have are looked up on the DeepSpeed optimizer
    (``optimizer.loss_scale``, ...).

    Args:
        engine: The DeepSpeed engine, built with an optimizer.
    """

    def __init__(self, engine: Any) -> None:
        # Optimizer.__init__ would build new parameter groups; these are the client's own.
        # Plain attribute access throughout: the properties also run with ``self`` being
        # the FabricOptimizer in front of this object, which forwards these names here.
        self._engine = engine
        self._clip_next_step: float | None = None
        self._norm_after_step: torch.Tensor | None = None
        self.defaults = engine.basic_optimizer.defaults

    @property
    def engine(self) -> Any:
        """The DeepSpeed engine this optimizer steps."""
        return self._engine

    @property
    def optimizer(self) -> Any:
        """The DeepSpeed optimizer (``engine.optimizer``)."""
        return self.engine.optimizer

    @property
    def client_optimizer(self) -> Optimizer:
        """The optimizer passed to ``fabric.setup`` (``engine.basic_optimizer``)."""
        return self.engine.basic_optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The client optimizer's parameter groups: their ``"lr"`` is what the next step uses."""
        return self.client_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        self.client_optimizer.param_groups = value

    @property
    def state(self) -> Any:
        """The client optimizer's per-parameter state (of this process's partition under ZeRO)."""
        return self.client_optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        self.client_optimizer.state = value

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Run ``engine.step()``: the (partitioned) update, with a clip that ``fabric.clip_gradients`` asked for.

        Raises:
            TypeError: A closure was passed; DeepSpeed steps without one.
        """
        if closure is not None:
            raise TypeError(
                "DeepSpeed's engine steps without a closure; call optimizer.step() with no arguments."
            )
        max_norm, pending = self._clip_next_step, self._norm_after_step
        self._clip_next_step, self._norm_after_step = None, None
        with apply_norm_clip_for_step(self._engine, max_norm):
            self._engine.step()
        if pending is not None:
            norm = self._engine.get_global_grad_norm()
            pending.fill_(math.nan if norm is None else float(norm))

    def clip_norm_at_next_step(self, max_norm: float, norm: torch.Tensor | None = None) -> None:
        """Clip the gradients to ``max_norm`` in the next `step`, through DeepSpeed's own clipping.

        Args:
            max_norm: The largest total (L2) norm the step may use.
            norm: A tensor to fill with the norm DeepSpeed computes in that step, when the
                norm could not be computed before it.
        """
        self._clip_next_step = max_norm
        self._norm_after_step = norm

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the model's gradients through the DeepSpeed optimizer (the engine also does so after each step)."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The DeepSpeed optimizer's state: this process's partition under ZeRO."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict into the client optimizer (stage 0 in float32 only).

        Raises:
            RuntimeError: The engine partitions or wraps the optimizer state.
        """
        if self.optimizer is not self.client_optimizer:
            raise RuntimeError(
                "DeepSpeed's optimizer state is partitioned across the processes, so it cannot be loaded from one "
                "state dict. Resume from a DeepSpeed checkpoint directory: fabric.load(path, {'model': model, "
                "'optimizer': optimizer, ...})."
            )
        self.client_optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused: DeepSpeed partitions the parameter groups when the engine is built.

        Raises:
            RuntimeError: Always.
        """
        raise RuntimeError(
            "DeepSpeed partitions the optimizer's parameter groups when fabric.setup() builds the engine, so no "
            "group can be added afterwards. Add every group to the optimizer before fabric.setup()."
        )

    def __getattr__(self, name: str) -> Any:
        # Private names are never forwarded (``_opt_called`` of LR schedulers, half-built objects).
        if name.startswith("_"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self._engine.optimizer, name)

    def __del__(self) -> None:  # the client class's finaliser (e.g. DeepSpeedCPUAdam's) is not this object's
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.optimizer).__name__} over {self.client_optimizer!r})"


_CLASSES: dict[type, type[EngineOptimizer]] = {}


def engine_optimizer(engine: Any) -> EngineOptimizer:
    """The `EngineOptimizer` of ``engine``, an instance of the client optimizer's class too."""
    client_class = type(engine.basic_optimizer)
    view_class = _CLASSES.get(client_class)
    if view_class is None:
        if issubclass(client_class, Optimizer) and client_class is not Optimizer:
            view_class = type(
                f"DeepSpeed{client_class.__name__}",
                (EngineOptimizer, client_class),
                {"__doc__": f"The DeepSpeed engine's optimizer, stepping a {client_class.__name__}."},
            )
        else:
            view_class = EngineOptimizer
        _CLASSES[client_class] = view_class
    return view_class(engine)
