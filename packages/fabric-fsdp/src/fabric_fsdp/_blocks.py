"""Activation checkpointing and regional compile per block, in the one order that composes with FSDP2.

Glossary: a *block* is a submodule that gets its own ``fully_shard`` (FSDPStrategy's
auto-wrap policy, ModelParallelStrategy's `default_units`),
typically a transformer layer, repeated many times.

The order, per block, and why (measured; see ``docs/guide/fsdp.md``, "Activation
checkpointing and compile: the order"):

1. **Activation checkpointing**: the block's ``forward`` becomes
   ``torch.utils.checkpoint.checkpoint(forward, use_reentrant=False)``, set on the
   instance. Names, the module tree and state-dict keys stay as they are (no
   ``checkpoint_wrapper`` prefix). It comes first so that compile traces it: dynamo turns
   the checkpoint into a higher-order op and the partitioner saves only the block's
   inputs, recomputing the rest inside the compiled backward. The composable
   ``torch.distributed._composable.checkpoint`` works through forward hooks and
   saved-tensor hooks instead; compile traces through those and the checkpointing is
   silently lost (the compiled forward saves every activation).
2. **Regional compile**: ``block.compile(**kwargs)`` (``nn.Module.compile``, in place), so
   parameters keep their names and ``fully_shard`` can still change the block's class.
   Blocks of one class share their compiled graphs (parameters are graph inputs, not
   guards): 2 graphs for 6 or 12 blocks, the first block's input being the one that needs
   no gradient; nothing recompiles after the first step.
3. **fully_shard** (the caller's step): FSDP2's hooks run around the compiled forward,
   outside the graph (dynamo skips FSDP hooks), so all-gathers and reduce-scatters are
   issued exactly as in eager mode.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "BlockOptions",
    "LayerClasses",
    "apply_in_order",
    "check_selects",
    "checkpoint_block",
    "compile_parameters",
    "is_checkpointed",
    "is_compiled",
    "keeps_whole_model_compile",
    "prepare_blocks",
    "resolve_block_options",
    "resolve_compile_blocks",
    "whole_model_compile_message",
]

_CHECKPOINTED = "_fabric_checkpointed_forward"

LayerClasses = bool | type[nn.Module] | Iterable[type[nn.Module]]
"""What an ``activation_checkpointing=`` option takes: ``True``/``False``, a layer class or several."""


@dataclass(frozen=True)
class BlockOptions:
    """A strategy's per-block options, checked: what to checkpoint and the compile keywords."""

    checkpoint: bool | tuple[type[nn.Module], ...] = False
    """``True``: every block; layer classes: their instances; ``False``: nothing."""
    compile_kwargs: dict[str, Any] | None = None
    """``torch.compile`` keywords for each block; ``None``: no regional compile."""


def resolve_block_options(
    checkpoint: Any, compile_blocks: Any, owner: str, custom: bool = False
) -> BlockOptions:
    """Check ``activation_checkpointing`` / ``compile_blocks`` of a strategy whose blocks are found for it.

    Args:
        checkpoint: ``True``, ``False``, a layer class or a set/list/tuple of them.
        compile_blocks: See `resolve_compile_blocks`.
        owner: The strategy's name, for messages.
        custom: The user shards the model (``parallelize_fn``), so the strategy cannot
            apply either option; asking for one is refused with the helper to call.

    Raises:
        TypeError: A value of the wrong kind.
        ValueError: An option was given together with ``custom``.
    """
    compile_kwargs = resolve_compile_blocks(compile_blocks, owner)
    if checkpoint is True or checkpoint is False:
        resolved: bool | tuple[type[nn.Module], ...] = checkpoint
    else:
        classes = _classes(checkpoint)
        if classes is None:
            raise TypeError(
                f"{owner}(activation_checkpointing={checkpoint!r}) must be True (every block), False, or a layer "
                "class or a set of them, e.g. activation_checkpointing={Block}."
            )
        resolved = classes
    if custom and (resolved is not False or compile_kwargs is not None):
        raise ValueError(
            f"{owner}(parallelize_fn=..., activation_checkpointing=..., compile_blocks=...): with your own "
            "parallelize_fn the strategy does not pick the blocks. Call "
            "fabric_fsdp.prepare_blocks(model, Block, checkpoint=True, compile=True) in parallelize_fn before "
            "fully_shard, and drop these options."
        )
    return BlockOptions(resolved, compile_kwargs)


def keeps_whole_model_compile(compile_kwargs: dict[str, Any] | None, owner: str) -> bool:
    """Whether a strategy keeps the whole-model compile of ``fabric.setup(torch.compile(model))``.

    ``False`` when blocks are compiled (``compile_kwargs`` is not ``None``), with a warning
    said once: compiling the whole model around compiled, sharded blocks retraces them,
    with a graph break at FSDP's hooks, and measured 19% slower per step than the blocks
    alone (see the guide). ``True`` otherwise (today's behaviour).
    """
    if compile_kwargs is None:
        return True
    from fabric_core.utilities.rank_zero import warn_once

    warn_once(whole_model_compile_message(owner))
    return False


def resolve_compile_blocks(value: Any, owner: str) -> dict[str, Any] | None:
    """The ``torch.compile`` keywords for each block, from a ``compile_blocks=`` value.

    Returns:
        ``None`` (``False``: no regional compile), ``{}`` (``True``: torch's defaults) or
        the dict given, after checking its keys are ``torch.compile`` parameters.

    Raises:
        TypeError: ``value`` is not a bool or dict, or a key is not a ``torch.compile``
            parameter (the message lists them).
    """
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise TypeError(
            f"{owner}(compile_blocks={value!r}) must be True, False, or a dict of torch.compile keywords, "
            "e.g. compile_blocks={'backend': 'inductor', 'mode': 'max-autotune'}."
        )
    known = compile_parameters()
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise TypeError(
            f"{owner}(compile_blocks={value!r}): {', '.join(unknown)} "
            f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} of torch.compile.\n"
            f"torch.compile takes: {', '.join(known)}."
        )
    return dict(value)


def compile_parameters() -> list[str]:
    """The keyword parameters of ``torch.compile`` in this torch version (``model`` excluded)."""
    parameters = inspect.signature(torch.compile).parameters
    return [name for name, p in parameters.items() if name != "model" and p.kind is p.KEYWORD_ONLY]


def checkpoint_block(block: nn.Module) -> None:
    """Recompute ``block``'s activations in backward: its ``forward`` becomes a non-reentrant checkpoint.

    Only the block's inputs are kept from forward to backward; its forward runs again
    (without FSDP's hooks, whose pre-backward all-gather has already run) when backward
    reaches it. Set on the instance, so names and state-dict keys do not change. Applying
    it twice is a no-op.
    """
    if is_checkpointed(block):
        return
    forward = block.forward

    # A closure, not functools.partial: dynamo compiled no frame for a partial set as the forward.
    def checkpointed_forward(*args: Any, **kwargs: Any) -> Any:
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)

    block.forward = checkpointed_forward
    object.__setattr__(block, _CHECKPOINTED, True)


def is_checkpointed(block: nn.Module) -> bool:
    """Whether `checkpoint_block` (or `prepare_blocks`) was applied to ``block``."""
    return bool(block.__dict__.get(_CHECKPOINTED, False))


def prepare_blocks(
    model: nn.Module,
    blocks: Iterable[nn.Module] | type[nn.Module] | Iterable[type[nn.Module]] | None = None,
    *,
    checkpoint: bool | Iterable[nn.Module] | type[nn.Module] | Iterable[type[nn.Module]] = False,
    compile: bool | dict[str, Any] | None = False,
) -> list[nn.Module]:
    """Checkpoint, then compile, each block of ``model`` in place; call ``fully_shard`` on them afterwards.

    The helper for a ``ModelParallelStrategy(parallelize_fn=...)``: call it after
    tensor-parallel plans and before ``fully_shard``, so that each block is checkpointed,
    compiled and sharded in that order (see this module's docstring for why)::

        def parallelize(model, device_mesh):
            blocks = fabric_fsdp.prepare_blocks(model, Block, checkpoint=True, compile=True)
            for block in blocks:
                fully_shard(block, mesh=device_mesh["data_parallel"])
            fully_shard(model, mesh=device_mesh["data_parallel"])
            return model

    Args:
        model: The model the blocks belong to.
        blocks: The blocks: modules of ``model``, or a block class (or classes) whose
            instances in ``model`` are the blocks. ``None``: ``default_units(model)``,
            the blocks ``ModelParallelStrategy`` shards by default.
        checkpoint: ``True`` checkpoints every block; modules of ``model`` (e.g. a subset
            of the blocks, or layers inside them) or a layer class (or classes) checkpoint
            those; ``False``: none.
        compile: ``True`` compiles every block with torch's defaults; a dict gives the
            ``torch.compile`` keywords; ``False``: none.

    Returns:
        The blocks, in the order found.

    Raises:
        TypeError: ``compile`` is not a bool or a dict of ``torch.compile`` keywords.
        ValueError: ``blocks`` or ``checkpoint`` selects no module, or names a module
            that is not part of ``model``.
    """
    compile_kwargs = resolve_compile_blocks(compile, "prepare_blocks")
    chosen = _resolve_blocks(model, blocks, "blocks")
    if checkpoint is True or checkpoint is False:
        to_checkpoint = chosen if checkpoint else []
    elif _classes(checkpoint) is not None:
        to_checkpoint = _resolve_blocks(model, checkpoint, "checkpoint")
    else:
        to_checkpoint = list(checkpoint)  # type: ignore[arg-type]
        _check_members(model, to_checkpoint, "checkpoint")
    apply_in_order(to_checkpoint, chosen if compile_kwargs is not None else [], compile_kwargs or {})
    return chosen


def apply_in_order(
    to_checkpoint: Iterable[nn.Module], to_compile: Iterable[nn.Module], compile_kwargs: dict[str, Any]
) -> None:
    """Step 1 (checkpoint) on every module of ``to_checkpoint``, then step 2 (compile) on ``to_compile``."""
    for module in to_checkpoint:
        checkpoint_block(module)
    for module in to_compile:
        module.compile(**compile_kwargs)


def check_selects(model: nn.Module, selected: list[nn.Module], argument: str, owner: str) -> None:
    """Refuse a policy that selected no module of ``model``, listing the classes it could have named.

    Raises:
        ValueError: ``selected`` is empty.
    """
    if selected:
        return
    classes = sorted({type(m).__name__ for m in model.modules() if m is not model})
    raise ValueError(
        f"{owner}({argument}=...) selects no module of {type(model).__name__}. Name one of its layer classes "
        f"instead: {', '.join(classes) or '(it has no submodules)'}."
    )


def is_compiled(block: nn.Module) -> bool:
    """Whether ``block`` was compiled in place (``nn.Module.compile``)."""
    return getattr(block, "_compiled_call_impl", None) is not None


def whole_model_compile_message(owner: str) -> str:
    """The warning for ``fabric.setup(torch.compile(model))`` with ``compile_blocks`` on."""
    return (
        f"fabric.setup got a torch.compile'd model and {owner}(compile_blocks=...) is on: the whole-model "
        "compile is dropped and each block is compiled on its own (with compile_blocks' keywords), then "
        "sharded. Compiling the whole model around compiled blocks retraces them, with graph breaks at FSDP's "
        "hooks, and is slower. Pass the plain model to silence this, or compile_blocks=False to keep your "
        "torch.compile."
    )


def _resolve_blocks(model: nn.Module, blocks: Any, argument: str) -> list[nn.Module]:
    if blocks is None:
        from fabric_fsdp.model_parallel import default_units

        chosen = default_units(model)
        check_selects(model, chosen, argument, "prepare_blocks")
        return chosen
    classes = _classes(blocks)
    if classes is not None:
        chosen = [m for m in model.modules() if m is not model and isinstance(m, classes)]
        check_selects(model, chosen, argument, "prepare_blocks")
        return chosen
    if isinstance(blocks, nn.Module):
        blocks = [blocks]
    chosen = list(blocks)
    if not chosen:
        raise ValueError(
            "prepare_blocks(model, blocks=[]) got no blocks. Pass the block modules or their class."
        )
    _check_members(model, chosen, "blocks")
    return chosen


def _classes(value: Any) -> tuple[type[nn.Module], ...] | None:
    if isinstance(value, type) and issubclass(value, nn.Module):
        return (value,)
    if isinstance(value, (set, frozenset, list, tuple)) and value:
        items = list(value)
        if all(isinstance(item, type) and issubclass(item, nn.Module) for item in items):
            return tuple(items)
    return None


def _check_members(model: nn.Module, modules: list[Any], argument: str) -> None:
    members = {id(m) for m in model.modules()}
    for module in modules:
        if not isinstance(module, nn.Module) or id(module) not in members:
            described = type(module).__name__ if isinstance(module, nn.Module) else repr(module)
            raise ValueError(
                f"prepare_blocks({argument}=...) got {described}, which is not a module of "
                f"{type(model).__name__}. Pass modules of the model itself (e.g. model.layers), or True."
            )
