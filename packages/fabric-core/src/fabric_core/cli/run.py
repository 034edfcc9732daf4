"""``fabric run``: start a script in one process per device, on one or several nodes.

Built on PyTorch's elastic agent, like ``torchrun``: the agent starts the workers, forms
the rendezvous, restarts them up to ``--max-restarts`` times, and stops every worker
when one fails. The options reach ``Fabric(...)`` in the script through ``FABRIC_*``
variables; everything after the script name is passed to the script untouched.
"""

from __future__ import annotations

import argparse
import os
import sys

from fabric_core.launch_variables import LAUNCHER_VARIABLES

__all__ = ["add_arguments", "run_run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``fabric run``'s options to ``parser``."""
    parser.add_argument(
        "--accelerator", help="cpu, cuda, gpu, mps, tpu or auto (default: what the script says)"
    )
    parser.add_argument("--strategy", help="a registered strategy name, e.g. ddp or fsdp")
    parser.add_argument(
        "--devices", help="devices (processes) per node: a count, -1, '0,1' or auto (default: 1 on CPU)"
    )
    parser.add_argument("--num-nodes", type=int, default=1, help="number of nodes (default: 1)")
    parser.add_argument(
        "--node-rank", type=int, default=0, help="rank of this node, 0 to num-nodes - 1 (default: 0)"
    )
    parser.add_argument("--main-address", default="127.0.0.1", help="address of node 0 (default: 127.0.0.1)")
    parser.add_argument(
        "--main-port",
        type=int,
        help="rendezvous port on node 0 (default: a free port, 29500 with several nodes)",
    )
    parser.add_argument("--precision", help="e.g. 32-true, bf16-mixed, 16-mixed")
    parser.add_argument(
        "--max-restarts", type=int, default=0, help="restarts of all workers after a failure (default: 0)"
    )
    parser.add_argument("script", help="the training script")
    parser.add_argument(
        "script_args", nargs=argparse.REMAINDER, help="arguments for the script, passed untouched"
    )


def run_run(args: argparse.Namespace) -> int:
    """Start the workers and return the launcher's exit status."""
    from fabric_core.launchers.agent import AgentSettings, WorkersFailedError, run_agent

    problem = _validate(args)
    if problem:
        print(f"fabric run: {problem}", file=sys.stderr)
        return 2
    try:
        nproc = _processes_per_node(args.accelerator or "auto", args.devices or "auto")
    except (ValueError, RuntimeError, LookupError) as error:
        print(f"fabric run: {error}", file=sys.stderr)
        return 2
    for name, variable in LAUNCHER_VARIABLES.items():
        value = getattr(args, name)
        if name == "num_nodes" or value is not None:
            os.environ[variable] = str(value)
    settings = AgentSettings(
        nproc_per_node=nproc,
        num_nodes=args.num_nodes,
        node_rank=args.node_rank,
        main_address=args.main_address,
        main_port=args.main_port,
        max_restarts=args.max_restarts,
    )
    try:
        run_agent(settings, sys.executable, ["-u", args.script, *args.script_args])
    except WorkersFailedError as error:
        print(f"fabric run: {error}", file=sys.stderr, flush=True)
        return error.exitcode
    return 0


def _validate(args: argparse.Namespace) -> str | None:
    if not os.path.isfile(args.script):
        return f"the script '{args.script}' does not exist."
    if args.num_nodes < 1:
        return f"--num-nodes {args.num_nodes} is not valid: pass the number of nodes, at least 1."
    if not 0 <= args.node_rank < args.num_nodes:
        return f"--node-rank {args.node_rank} is not valid with --num-nodes {args.num_nodes}: use 0 to {args.num_nodes - 1}."
    if args.max_restarts < 0:
        return f"--max-restarts {args.max_restarts} is not valid: use 0 or more."
    return None


def _processes_per_node(accelerator: str, devices: str) -> int:
    from fabric_core.connector import resolve_accelerator, resolve_devices

    return len(resolve_devices(devices, resolve_accelerator(accelerator)))
