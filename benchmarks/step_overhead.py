"""Per-step overhead of a training loop written with fabric (and Lightning Fabric, Accelerate) over plain PyTorch.

One process, one torch thread, the tiny model of ``_loops.py`` (32 -> 64 -> 1, batch 16, SGD),
so that the Python cost of the wrappers is not hidden behind the model's arithmetic. Each
variant trains its own copy of the same initial weights on the same batches; the variants run
in blocks of ``STEPS`` steps, interleaved round by round (the order rotates and reverses, so
no variant always runs first: ABCD, DCBA, BCDA, ...), after warm-up rounds. A variant's
overhead is the median over rounds of the per-step difference between its block and the
hand-written block of the same round, so slow drift of the machine cancels out; a second
hand-written loop in the same rounds (the A/A control) shows the bias and noise floor. Blocks
are timed in process CPU time, which preemption by other processes does not inflate; the
wall-time figure is recorded too (``wall_overhead_us``).

Sections:

- ``fp32`` and ``bf16_mixed``: the loop of each framework of ``_loops.frameworks()`` (torch,
  fabric, and Lightning Fabric and Accelerate where installed), all in the same rounds;
  fabric's overhead in fp32 is the headline figure.
- ``breakdown`` (fp32): loops that add one fabric wrapper at a time (set-up model, then
  ``fabric.backward``, then the set-up optimizer).
- ``dataloader``: iterating ``fabric.setup_dataloaders(loader)`` vs the loader itself
  (batches only, no training), for information.

``--profile`` instead runs cProfile over the fabric loop (the cost of each fabric_core
function per training step) and times each hot-path wrapper against its plain equivalent.
"""

from __future__ import annotations

import copy
import cProfile
import gc
import io
import pstats
import sys
import time
import timeit
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
import torch.nn.functional as F
from _common import Headline, Result, apply_common_options, make_parser, spread, standalone, summarize
from _loops import (
    BATCH,
    LR,
    MODEL,
    Batches,
    build_loops,
    frameworks,
    make_batches,
    same_weights,
    sgd,
    tiny_model,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric

NAME = "step_overhead"
STEPS = 20
ROUNDS = 400
QUICK_ROUNDS = 100
WARMUP_ROUNDS = 20
TARGET_US = 5.0
CONTROL = "torch (A/A control)"

Loop = Callable[[], None]


def _bind(loop: Callable[[Batches], None], batches: Batches) -> Loop:
    return lambda: loop(batches)


# -- the breakdown's loops: one fabric wrapper at a time ----------------------------------


def _fabric_module_only(model: nn.Module, batches: Batches) -> Loop:
    fabric = Fabric(accelerator="cpu", devices=1)
    optimizer = sgd(model)
    wrapped = fabric.setup(model)

    def loop() -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return loop


def _fabric_module_backward(model: nn.Module, batches: Batches) -> Loop:
    fabric = Fabric(accelerator="cpu", devices=1)
    optimizer = sgd(model)
    wrapped = fabric.setup(model)

    def loop() -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return loop


# -- measurement --------------------------------------------------------------------------


@dataclass
class Timings:
    """µs per step of every block, by loop name: process CPU time and wall time."""

    cpu: dict[str, list[float]]
    wall: dict[str, list[float]]


def time_interleaved(loops: dict[str, Loop], rounds: int, steps: int, warmup: int) -> Timings:
    """Run every loop once per round, in a rotating order; return µs per step for each block.

    Both the process's CPU time and the wall time of each block are recorded. On a quiet
    machine they agree; when other processes compete for the cores, preemption inflates the
    wall time of whichever block it hits, while the CPU time stays close to the true cost,
    so the figures are computed from CPU time (torch runs with one thread, and backward on
    CPU runs in the calling thread, so the process's CPU time is the loop's).
    """
    names = list(loops)
    for _ in range(warmup):
        for name in names:
            loops[name]()
    timings = Timings({name: [] for name in names}, {name: [] for name in names})
    gc_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for index in range(rounds):
            shift = index % len(names)
            order = names[shift:] + names[:shift]
            if (index // len(names)) % 2:
                order.reverse()
            for name in order:
                wall, cpu = time.perf_counter_ns(), time.process_time_ns()
                loops[name]()
                timings.cpu[name].append((time.process_time_ns() - cpu) / steps / 1e3)
                timings.wall[name].append((time.perf_counter_ns() - wall) / steps / 1e3)
    finally:
        if gc_enabled:
            gc.enable()
    return timings


def _differences(times: dict[str, list[float]], variant: str, baseline: str) -> list[float]:
    return [a - b for a, b in zip(times[variant], times[baseline], strict=True)]


def _overhead(timings: Timings, variant: str, baseline: str) -> dict[str, Any]:
    overhead = summarize(_differences(timings.cpu, variant, baseline))
    base = summarize(timings.cpu[baseline])
    ratios = [a / b for a, b in zip(timings.cpu[variant], timings.cpu[baseline], strict=True)]
    return {
        "overhead_us": overhead,
        "relative_pct": 100.0 * overhead["median"] / base["median"],
        "ratio": summarize(ratios),
        "wall_overhead_us": summarize(_differences(timings.wall, variant, baseline)),
    }


def measure_frameworks(
    precision: str, rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS
) -> Result:
    """The loop of every available framework, plus an A/A control, in the same interleaved rounds."""
    names = frameworks()
    batches = make_batches(steps)
    loops, models = build_loops(["torch", CONTROL, *names[1:]], precision, tiny_model())
    timings = time_interleaved(
        {name: _bind(loop, batches) for name, loop in loops.items()}, rounds, steps, warmup
    )
    identical = {name: same_weights([models["torch"], models[name]]) for name in names[1:]}
    return {
        "precision": precision,
        "frameworks": names,
        "per_step_us": {name: summarize(values) for name, values in timings.cpu.items()},
        "control_us": summarize(_differences(timings.cpu, CONTROL, "torch")),
        "versus_torch": {name: _overhead(timings, name, "torch") for name in names[1:]},
        "identical_weights": identical,
    }


def measure_breakdown(rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS) -> Result:
    """Add one fabric wrapper at a time (float32)."""
    batches = make_batches(steps)
    initial = tiny_model()
    whole, models = build_loops(["torch", "fabric"], "32-true", initial)
    loops = {"torch": _bind(whole["torch"], batches)}
    partial = {"setup(model)": _fabric_module_only, "setup(model) + fabric.backward": _fabric_module_backward}
    for name, factory in partial.items():
        models[name] = copy.deepcopy(initial)
        loops[name] = factory(models[name], batches)
    loops["fabric"] = _bind(whole["fabric"], batches)
    order = list(loops)
    timings = time_interleaved(loops, rounds, steps, warmup)
    times = timings.cpu
    return {
        "per_step_us": {name: summarize(values) for name, values in times.items()},
        "steps_us": {
            "FabricModule forward": summarize(_differences(times, order[1], order[0])),
            "fabric.backward": summarize(_differences(times, order[2], order[1])),
            "FabricOptimizer step + zero_grad": summarize(_differences(times, order[3], order[2])),
            "all (fabric - torch)": summarize(_differences(times, order[3], order[0])),
        },
        "identical_weights": same_weights([models[name] for name in order]),
    }


def measure_dataloader(rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS) -> Result:
    """Iterating a set-up DataLoader vs the DataLoader itself (no training)."""
    generator = torch.Generator().manual_seed(2)
    dataset = TensorDataset(
        torch.randn(steps * BATCH, 32, generator=generator),
        torch.randn(steps * BATCH, 1, generator=generator),
    )
    loader = DataLoader(dataset, batch_size=BATCH)
    fabric = Fabric(accelerator="cpu", devices=1)
    fabric_loader = fabric.setup_dataloaders(DataLoader(dataset, batch_size=BATCH))

    def plain() -> None:
        for _batch in loader:
            pass

    def wrapped() -> None:
        for _batch in fabric_loader:
            pass

    timings = time_interleaved({"DataLoader": plain, "setup_dataloaders": wrapped}, rounds, steps, warmup)
    return {
        "per_batch_us": {name: summarize(values) for name, values in timings.cpu.items()},
        **_overhead(timings, "setup_dataloaders", "DataLoader"),
    }


def run(quick: bool = False) -> Result:
    """All sections; ``quick`` uses fewer rounds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    try:
        return {
            "config": {
                "model": MODEL,
                "batch": BATCH,
                "optimizer": f"SGD(lr={LR})",
                "steps_per_block": STEPS,
                "rounds": rounds,
                "warmup_rounds": WARMUP_ROUNDS,
                "torch_threads": torch.get_num_threads(),
                "versions": {name: _version(name) for name in ("torch", "lightning", "accelerate")},
            },
            "fp32": measure_frameworks("32-true", rounds),
            "bf16_mixed": measure_frameworks("bf16-mixed", rounds),
            "breakdown": measure_breakdown(rounds),
            "dataloader": measure_dataloader(rounds),
            "target_us": TARGET_US,
        }
    finally:
        torch.set_num_threads(threads)


def _version(name: str) -> str | None:
    from _common import package_version

    return package_version(name)


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    rows = []
    for key, label in (("fp32", "fp32"), ("bf16_mixed", "bf16-mixed")):
        for name, entry in result[key]["versus_torch"].items():
            target = TARGET_US if name == "fabric" else None
            rows.append(
                Headline(f"step overhead, {label}, {name} - torch", entry["overhead_us"], "µs", target)
            )
    rows.append(Headline("setup_dataloaders, per batch", result["dataloader"]["overhead_us"], "µs", None))
    return rows


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    config = result["config"]
    lines = [
        f"Step overhead: {config['model']}, batch {config['batch']}, {config['optimizer']}, "
        f"{config['torch_threads']} thread, {config['rounds']} rounds x {config['steps_per_block']} steps "
        f"[target for fabric: <= {result['target_us']:.0f} µs]",
    ]
    for key in ("fp32", "bf16_mixed"):
        section = result[key]
        torch_us = section["per_step_us"]["torch"]["median"]
        lines.append(f"  {section['precision']}: hand-written torch loop {torch_us:.1f} µs/step")
        for name, entry in section["versus_torch"].items():
            same = "same weights" if section["identical_weights"][name] else "weights differ"
            lines.append(
                f"    {name:<11} - torch: {spread(entry['overhead_us'], 'µs/step')}, "
                f"{entry['relative_pct']:+.1f}% ({same}; wall time: {entry['wall_overhead_us']['median']:.1f} µs)"
            )
        lines.append(f"    {'A/A control':<11}: {spread(section['control_us'], 'µs/step')}")
    breakdown, loader = result["breakdown"], result["dataloader"]
    lines.append(
        f"  fp32 breakdown, one fabric wrapper at a time (same weights: {breakdown['identical_weights']}):"
    )
    for name, summary in breakdown["steps_us"].items():
        lines.append(f"    {name:<34} {spread(summary, 'µs')}")
    lines += [
        f"  setup_dataloaders: DataLoader {loader['per_batch_us']['DataLoader']['median']:.1f} µs/batch",
        f"    wrapped - plain: {spread(loader['overhead_us'], 'µs/batch')}",
    ]
    return lines


def profile(steps: int = 5000, top: int = 25) -> str:
    """cProfile the float32 Fabric loop; return fabric_core's functions, costliest first.

    Deterministic profiling inflates the cost of every Python call, so the absolute figures
    are larger than in :func:`run`; the ranking is what matters.
    """
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batches = make_batches(STEPS)
    loop = _bind(build_loops(["fabric"], "32-true", tiny_model())[0]["fabric"], batches)
    for _ in range(WARMUP_ROUNDS):
        loop()
    blocks = max(1, steps // STEPS)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(blocks):
        loop()
    profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    rows: list[tuple[float, float, int, str]] = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "fabric_core" in filename or "torch/nn/modules/module.py" in filename:
            short = filename.split("site-packages/")[-1].split("src/")[-1]
            rows.append((own, cumulative, calls, f"{short}:{line}({function})"))
    rows.sort(reverse=True)
    total_steps = blocks * STEPS
    out = [f"cProfile of the fabric loop, {total_steps} steps; µs per training step (inflated by profiling)"]
    out.append(f"  {'own':>7} {'cumul.':>8} {'calls/step':>10}  function")
    for own, cumulative, calls, where in rows[:top]:
        per_step = (own / total_steps * 1e6, cumulative / total_steps * 1e6, calls / total_steps)
        out.append(f"  {per_step[0]:7.2f} {per_step[1]:8.2f} {per_step[2]:10.1f}  {where}")
    return "\n".join(out)


def components(number: int = 20_000, repeat: int = 7) -> str:
    """Time each wrapper on the hot path against its plain equivalent, in isolation (µs per call).

    Tight loops keep the interpreter's caches warm, so these are lower bounds: inside a
    real step, between torch kernels, the same Python calls cost about twice as much.
    """
    torch.set_num_threads(1)
    x = torch.randn(BATCH, 32)
    x_bf16 = x.bfloat16()
    identity = nn.Identity()
    fabric = Fabric(accelerator="cpu", devices=1)
    wrapped = fabric.setup(identity)
    mixed_fabric = Fabric(accelerator="cpu", devices=1, precision="bf16-mixed")
    mixed = mixed_fabric.setup(nn.Identity())
    precision = mixed_fabric.strategy.precision
    linear = nn.Linear(32, 1)
    plain_optimizer = sgd(nn.Linear(32, 1))
    fabric_optimizer = Fabric(accelerator="cpu", devices=1).setup(linear, sgd(linear))[1]
    loss = torch.zeros((), requires_grad=True)  # backward of a leaf: almost no autograd work
    strategy = fabric.strategy
    batch = (x, x)

    def autocast_forward() -> Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output: Tensor = identity(x_bf16)
        return output.float()

    pairs: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = [
        ("module call (fp32)", lambda: identity(x), lambda: wrapped(x)),
        ("attribute _forward_module", lambda: identity.training, lambda: wrapped._forward_module),
        ("module call (bf16-mixed)", autocast_forward, lambda: mixed(x_bf16)),
        ("output cast to float32", lambda: x_bf16.float(), lambda: precision.convert_output(x_bf16)),
        ("backward of a leaf tensor", lambda: loss.backward(), lambda: fabric.backward(loss)),
        ("optimizer.zero_grad()", lambda: plain_optimizer.zero_grad(), lambda: fabric_optimizer.zero_grad()),
        ("optimizer.step() (no grads)", lambda: plain_optimizer.step(), lambda: fabric_optimizer.step()),
        ("batch to device (x, y)", lambda: batch, lambda: strategy.batch_to_device(batch)),
    ]
    lines = [f"Hot-path pieces in isolation, best of {repeat} x {number} calls (µs per call, warm caches)"]
    lines.append(f"  {'piece':<30} {'plain':>7} {'fabric':>7} {'extra':>7}")
    for name, plain, fabric_call in pairs:
        plain_us = min(timeit.repeat(plain, number=number, repeat=repeat)) / number * 1e6
        fabric_us = min(timeit.repeat(fabric_call, number=number, repeat=repeat)) / number * 1e6
        lines.append(f"  {name:<30} {plain_us:7.2f} {fabric_us:7.2f} {fabric_us - plain_us:+7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/step_overhead.py [--quick] [--profile]``."""
    parser = make_parser(NAME, __doc__)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the Fabric loop instead of timing it"
    )
    args = parser.parse_args(argv)
    apply_common_options(args)
    if args.profile:
        print(profile())
        print(components())
        return 0
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
