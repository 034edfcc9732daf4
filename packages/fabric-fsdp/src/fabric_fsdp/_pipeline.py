"""Pipeline parallelism for ModelParallelStrategy: one stage of the model per pipeline rank.

The model is cut into consecutive stages, either at the names of the modules where each
stage after the first begins, or by the user's own function. Each process keeps only its
stage's modules, under the model's own class and parameter names, so checkpoints name
every parameter as the whole model does and load at any other layout. A schedule of
``torch.distributed.pipelining`` (1F1B or GPipe) runs a step: the batch is split into
micro-batches, the first stage reads the inputs, activations and their gradients pass
between neighbouring stages, and the last stage computes the loss against the targets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["SCHEDULES", "PipelineRunner", "PipelineSplit", "check_pipeline_options", "keep_stage"]

SCHEDULES = ("1F1B", "GPipe")
"""The pipeline schedules by name (``torch.distributed.pipelining.Schedule1F1B`` / ``ScheduleGPipe``)."""

PipelineSplit = Sequence[str] | Callable[[nn.Module, int, int], nn.Module]
"""Where stages begin (module names), or ``(model, stage_index, num_stages) -> stage module``."""

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def check_pipeline_options(
    size: int, split: PipelineSplit | None, schedule: str, microbatches: int | None
) -> None:
    """Check the pipeline options of ``ModelParallelStrategy`` before any process starts.

    Raises:
        ValueError, TypeError: A size, split, schedule or micro-batch count that cannot work;
            the message says what to pass.
    """
    call = "ModelParallelStrategy"
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(
            f"{call}(pipeline_parallel_size={size!r}) must be a positive integer (1: no pipeline)."
        )
    if schedule not in SCHEDULES:
        raise ValueError(
            f"{call}(pipeline_schedule={schedule!r}) is not a schedule; choose one of {SCHEDULES}."
        )
    if microbatches is not None and (
        isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 1
    ):
        raise ValueError(
            f"{call}(pipeline_microbatches={microbatches!r}) must be a positive integer or None."
        )
    if size == 1:
        if split is not None:
            raise ValueError(
                f"{call}(pipeline_split=...) was given without a pipeline. Pass pipeline_parallel_size=N "
                "(the number of stages) as well, or leave pipeline_split out."
            )
        return
    if split is None:
        raise ValueError(
            f"{call}(pipeline_parallel_size={size}) needs pipeline_split: the names of the {size - 1} modules "
            "where the stages after the first begin (e.g. pipeline_split=['layers.4']), or a function "
            "(model, stage_index, num_stages) -> stage module."
        )
    if callable(split):
        return
    if isinstance(split, str) or not all(isinstance(name, str) for name in split):
        raise TypeError(
            f"{call}(pipeline_split={split!r}) must be a list of module names, e.g. ['layers.4'], or a function."
        )
    if len(split) != size - 1:
        raise ValueError(
            f"{call}(pipeline_parallel_size={size}, pipeline_split={list(split)!r}): {size} stages need "
            f"{size - 1} split points (the first module of each stage after the first), got {len(split)}."
        )


def keep_stage(model: nn.Module, stage_index: int, num_stages: int, split: PipelineSplit) -> nn.Module:
    """Reduce ``model`` to the modules of stage ``stage_index`` (in place) and return it.

    With names, the model is read as a sequence: its children in registration order, where
    a child that is an ``nn.Sequential``, ``nn.ModuleList`` or ``nn.ModuleDict`` and holds a
    split point counts as its entries. Entries of those containers that belong to other
    stages are removed (the others keep their names); other children of other stages are
    set to ``None``, so the model's ``forward`` must skip a ``None`` child (an
    ``nn.Sequential`` does).

    Raises:
        ValueError: A split point names no module of the sequence, or the points are out
            of order.
        TypeError: A split function returned something other than a module.
    """
    if callable(split):
        stage = split(model, stage_index, num_stages)
        if not isinstance(stage, nn.Module):
            raise TypeError(
                f"pipeline_split returned {type(stage).__name__} for stage {stage_index}; it must return the "
                "stage's module (end the function with `return model` after removing the other stages' modules)."
            )
        return stage
    entries = _sequence(model, "", tuple(split))
    names = [name for _, _, name in entries]
    starts = [0]
    for point in split:
        if point not in names:
            raise ValueError(
                f"pipeline_split names {point!r}, which is not a module of the model's sequence. The sequence "
                f"is {names}; a point may also name an entry of an nn.Sequential / nn.ModuleList / nn.ModuleDict "
                "child (e.g. 'layers.4')."
            )
        starts.append(names.index(point))
    if starts != sorted(starts) or len(set(starts)) != len(starts):
        raise ValueError(
            f"pipeline_split={list(split)!r} must name modules in the order they run, after the first one, "
            f"each once (the sequence is {names})."
        )
    starts.append(len(entries))
    keep = range(starts[stage_index], starts[stage_index + 1])
    for index, (owner, child, _) in enumerate(entries):
        if index in keep:
            continue
        if isinstance(owner, _CONTAINERS):
            del owner._modules[child]  # not `del owner[i]`: that would renumber the others
        else:
            setattr(owner, child, None)
    return model


def _sequence(module: nn.Module, prefix: str, points: tuple[str, ...]) -> list[tuple[nn.Module, str, str]]:
    entries: list[tuple[nn.Module, str, str]] = []
    for name, child in module._modules.items():
        qualified = prefix + name
        if isinstance(child, _CONTAINERS) and any(point.startswith(qualified + ".") for point in points):
            entries += _sequence(child, qualified + ".", points)
        else:
            entries.append((module, name, qualified))
    return entries


class PipelineRunner:
    """Runs training steps of one pipeline stage with a ``torch.distributed.pipelining`` schedule.

    Args:
        stage_module: This process's stage (already sharded or parallelised, if at all).
        stage_index: Its position in the pipeline.
        num_stages: The number of stages (the pipeline-parallel size).
        device: Where the stage runs.
        group: The process group of this pipeline (one process per stage).
        schedule: ``"1F1B"`` or ``"GPipe"``.
        microbatches: How many micro-batches each batch is split into.
    """

    def __init__(
        self,
        stage_module: nn.Module,
        stage_index: int,
        num_stages: int,
        device: torch.device,
        group: dist.ProcessGroup,
        schedule: str,
        microbatches: int,
    ) -> None:
        from torch.distributed.pipelining import PipelineStage

        self.module = stage_module
        self.stage_index = stage_index
        self.num_stages = num_stages
        self._stage = PipelineStage(stage_module, stage_index, num_stages, device, group=group)
        self._group = group
        self._last_rank = dist.get_global_rank(group, num_stages - 1)
        self._schedule_name = schedule
        self._microbatches = microbatches
        self._schedule: Any = None
        self._loss_fn: Callable[..., torch.Tensor] | None = None
        self._running = False
        stage_module.register_forward_pre_hook(self._refuse_outside_the_schedule, prepend=True)

    def _refuse_outside_the_schedule(self, module: nn.Module, args: Any) -> None:
        if not self._running:
            raise RuntimeError(
                f"This process holds stage {self.stage_index} of a {self.num_stages}-stage pipeline, so calling the "
                "model runs only that stage. Train with loss = fabric.forward_backward(model, x, target=y, "
                "loss_fn=...); evaluate the whole model by loading its checkpoint in a run without a pipeline."
            )

    def step(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        target: Any,
        loss_fn: Callable[..., torch.Tensor],
        forward_context: AbstractContextManager[Any],
    ) -> torch.Tensor:
        """Forward and backward of one batch through the pipeline; the mean micro-batch loss on every stage.

        Gradients accumulate into the stage's parameters, scaled so that they equal those
        of the whole batch's mean loss (the schedule divides by the number of micro-batches).
        """
        schedule = self._schedule_for(loss_fn)
        losses: list[torch.Tensor] = []
        self._running = True
        try:
            with forward_context:
                if self.stage_index == 0:
                    schedule.step(*args, **kwargs)
                elif self.stage_index == self.num_stages - 1:
                    schedule.step(target=target, losses=losses, return_outputs=False)
                else:
                    schedule.step()
        finally:
            self._running = False
        if losses:
            loss = torch.stack([value.detach().float() for value in losses]).mean()
        else:
            loss = torch.zeros((), device=self._stage.device)
        dist.broadcast(loss, src=self._last_rank, group=self._group)
        return loss

    def _schedule_for(self, loss_fn: Callable[..., torch.Tensor]) -> Any:
        if self._schedule is None or loss_fn is not self._loss_fn:
            from torch.distributed.pipelining import Schedule1F1B, ScheduleGPipe

            kind = Schedule1F1B if self._schedule_name == "1F1B" else ScheduleGPipe
            self._schedule = kind(self._stage, n_microbatches=self._microbatches, loss_fn=loss_fn)
            self._loss_fn = loss_fn
        return self._schedule
