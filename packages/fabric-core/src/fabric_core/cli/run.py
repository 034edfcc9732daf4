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
from fabric_core.launchers.agent import DEFAULT_GRACE_PERIOD

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
    parser.add_argument(
        "--grace-period",
        type=_seconds,
        default=DEFAULT_GRACE_PERIOD,
        metavar="SECONDS",
        help="on SIGTERM (or SIGINT, SIGUSR1, ...), how long the workers get to save and exit after the "
        f"signal is passed on to them, before they are killed (default: {DEFAULT_GRACE_PERIOD:g})",
    )
    parser.add_argument("script", help="the training script")
    parser.add_argument(
        "script_args", nargs=argparse.REMAINDER, help="arguments for the script, passed untouched"
    )


def run_run(args: argparse.Namespace) -> int:
    """Start the workers and return the launcher's exit status."""
    from fabric_core.launchers.agent import AgentSettings, WorkersFailedError, WorkersStoppedError, run_agent

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
        grace_period=args.grace_period,
    )
    try:
        run_agent(settings, sys.executable, ["-u", args.script, *args.script_args], label="fabric run")
    except (WorkersFailedError, WorkersStoppedError) as error:
        print(f"fabric run: {error}", file=sys.stderr, flush=True)
        return error.exitcode
    return 0


def _validate(args: argparse.Namespace) -> str | None:
    """The first problem with the options, in the command line's words; ``None`` when there is none.

    Everything is checked here, before any worker starts, so a mistake is printed once
    instead of once per rank. The checks that need no torch come first.
    """
    return (
        _script_problem(args.script)
        or _node_problem(args)
        or _port_problem(args.main_port, args.node_rank)
        or _name_problem(args.strategy)
        or _devices_problem(args.devices)
        or _precision_problem(args.precision)
    )


def _script_problem(script: str) -> str | None:
    if os.path.isdir(script):
        return f"the script '{script}' is a directory; pass the Python file to run, e.g. '{script}/train.py'."
    if not os.path.isfile(script):
        hint = f" Did you mean '{script}.py'?" if os.path.isfile(f"{script}.py") else ""
        return f"the script '{script}' does not exist.{hint}"
    return None


def _node_problem(args: argparse.Namespace) -> str | None:
    if args.num_nodes < 1:
        return f"--num-nodes {args.num_nodes} is not valid: pass the number of nodes, at least 1."
    if not 0 <= args.node_rank < args.num_nodes:
        return f"--node-rank {args.node_rank} is not valid with --num-nodes {args.num_nodes}: use 0 to {args.num_nodes - 1}."
    if args.max_restarts < 0:
        return f"--max-restarts {args.max_restarts} is not valid: use 0 or more."
    return None


def _port_problem(port: int | None, node_rank: int) -> str | None:
    if port is None:
        return None
    if not 1 <= port <= 65535:
        return f"--main-port {port} is not valid: a TCP port is a number from 1 to 65535 (or leave it out: a free one)."
    if node_rank != 0:
        return None  # node 0 listens there; the other nodes only connect
    import socket

    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError as error:
            return (
                f"--main-port {port} is in use on this machine ({error.strerror}), and node 0 must listen there. "
                "Pass another port, or leave --main-port out to get a free one."
            )
    return None


def _name_problem(strategy: str | None) -> str | None:
    if strategy is None or strategy == "auto":
        return None
    from fabric_core._registries import STRATEGY_REGISTRY
    from fabric_core.registry import UnknownNameError

    try:
        STRATEGY_REGISTRY.entry(strategy)
    except UnknownNameError as error:
        return f"--strategy {strategy}: {error}"
    return None


def _devices_problem(devices: str | None) -> str | None:
    if devices is None:
        return None
    from fabric_core.utilities.device_parser import parse_devices

    try:
        parse_devices(devices)
    except ValueError as error:
        reason = str(error).split(": ", 1)[-1].split(". Pass ", 1)[0]
        return (
            f"--devices {devices} is not valid: {reason}. Pass a count (--devices 2), -1 for all devices, "
            "indices (--devices 0,1) or auto."
        )
    return None


def _precision_problem(precision: str | None) -> str | None:
    from fabric_core._registries import PRECISION_REGISTRY

    if precision is None or precision in PRECISION_REGISTRY:
        return None
    import warnings

    from fabric_core.connector import resolve_precision

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # each worker warns about a legacy spelling
            resolve_precision(precision)
    except ValueError as error:
        return f"--precision {precision}: {error}"
    return None


def _processes_per_node(accelerator: str, devices: str) -> int:
    from fabric_core.connector import resolve_accelerator, resolve_devices

    return len(resolve_devices(devices, resolve_accelerator(accelerator)))


def _seconds(text: str) -> float:
    """``--grace-period``'s value: a number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: pass e.g. 25 (0 or more).")
    return value
