"""``fabric estimate``: per-rank memory of parameters, gradients and optimizer state, before a run.

The model is built on the meta device (nothing is allocated) from a factory named
``package.module:function`` or ``path/to/script.py:function``; the strategy is configured
as ``Fabric(...)`` would configure it, without starting processes. See
`fabric_core.utilities.memory.estimate_memory`. A mistake prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["add_arguments", "run_estimate"]

_PROG = "fabric estimate"
_OPTIMIZERS = (
    "sgd",
    "sgd-momentum",
    "adam",
    "adamw",
)  # the keys of memory.OPTIMIZER_KINDS (no torch import here)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``estimate`` options to ``parser``."""
    parser.add_argument(
        "--model",
        required=True,
        help="the function that builds the model: 'package.module:function' or 'path/to/script.py:function'",
    )
    parser.add_argument("--strategy", default="auto", help="a strategy name (see `fabric strategies`)")
    parser.add_argument("--devices", type=int, default=1, help="processes per node (default 1)")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes (default 1)")
    parser.add_argument("--precision", default="32-true", help="as Fabric(precision=...) (default 32-true)")
    parser.add_argument(
        "--optimizer", choices=_OPTIMIZERS, default="adam", help="the optimizer kind (default adam)"
    )
    parser.add_argument("--data-parallel-size", type=int, help="model_parallel: the data-parallel axis size")
    parser.add_argument(
        "--tensor-parallel-size", type=int, help="model_parallel: the tensor-parallel axis size"
    )
    parser.add_argument(
        "--parallelize-fn",
        help="model_parallel: the parallelize_fn(model, device_mesh), as 'package.module:function' or "
        "'path/to/script.py:function'",
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run_estimate(args: argparse.Namespace) -> int:
    """Run the ``estimate`` command and return the exit status."""
    from fabric_core.registry import UnknownNameError
    from fabric_core.utilities.memory import estimate_memory, load_function

    strategy_kwargs: dict[str, Any] = {
        name: value
        for name, value in (
            ("data_parallel_size", args.data_parallel_size),
            ("tensor_parallel_size", args.tensor_parallel_size),
        )
        if value is not None
    }
    try:
        if args.parallelize_fn is not None:
            strategy_kwargs["parallelize_fn"] = load_function(
                args.parallelize_fn, "--parallelize-fn", "parallelizes the model"
            )
        estimate = estimate_memory(
            args.model,
            strategy=args.strategy,
            devices=args.devices,
            num_nodes=args.num_nodes,
            precision=args.precision,
            optimizer=args.optimizer,
            **strategy_kwargs,
        )
    except (ValueError, TypeError, RuntimeError, UnknownNameError) as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return 2
    print(json.dumps(estimate.as_dict(), indent=1) if args.json else estimate.table())
    return 0
