"""Per-step overhead of a Fabric training loop over the same loop written in plain PyTorch.

One process, ``Fabric(accelerator="cpu", devices=1)``, a tiny MLP (32 -> 64 -> 1, batch 16,
SGD) and one torch thread, so that the Python-level cost of the wrappers is not hidden
behind a large model. Each variant trains its own copy of the same initial weights on the
same batches; the variants run in blocks of ``STEPS`` steps, interleaved round by round
(the order rotates and reverses so that no variant always runs first), after a warm-up.
The overhead is the median over rounds of the per-step difference between a variant's
block and the plain block of the same round, so slow drift of the machine cancels out.
Blocks are timed in process CPU time, which preemption by other processes does not
inflate; the wall-time figure is recorded too (``wall_overhead_us``).

Sections:

- ``fp32``: plain loop vs ``fabric.setup(model, optimizer)`` + ``fabric.backward``, two
  loops alternating (the headline figure).
- ``breakdown``: five loops per round that add one wrapper at a time (set-up model, then
  ``fabric.backward``, then the set-up optimizer), and a second plain loop whose difference
  to the first (the A/A control) shows the bias and noise floor of the method.
- ``bf16_mixed``: ``Fabric(precision="bf16-mixed")`` vs a hand-written ``torch.autocast``
  loop doing the same work (forward under autocast, output cast to float32, loss outside).
- ``dataloader``: iterating ``fabric.setup_dataloaders(loader)`` vs the loader itself
  (batches only, no training), for information.

``--profile`` instead runs cProfile over the Fabric loop (the cost of each fabric_core
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
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from fabric_core import Fabric

NAME = "step_overhead"
STEPS = 200
ROUNDS = 50
QUICK_ROUNDS = 12
WARMUP_ROUNDS = 5
TARGET_US = 20.0
BATCH = 16
LR = 0.01

Loop = Callable[[], None]
Batches = list[tuple[Tensor, Tensor]]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 1))


def _batches(steps: int) -> Batches:
    generator = torch.Generator().manual_seed(1)
    return [
        (torch.randn(BATCH, 32, generator=generator), torch.randn(BATCH, 1, generator=generator))
        for _ in range(steps)
    ]


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR)


# -- the loops, written as a user would write them ----------------------------------------


def _plain(model: nn.Module, batches: Batches) -> Loop:
    optimizer = _sgd(model)

    def loop() -> None:
        for x, y in batches:
            loss = F.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    return loop


def _fabric_module_only(model: nn.Module, batches: Batches) -> Loop:
    fabric = Fabric(accelerator="cpu", devices=1)
    optimizer = _sgd(model)
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
    optimizer = _sgd(model)
    wrapped = fabric.setup(model)

    def loop() -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return loop


def _fabric(model: nn.Module, batches: Batches, precision: str | None = None) -> Loop:
    fabric = Fabric(accelerator="cpu", devices=1, precision=precision)
    wrapped, optimizer = fabric.setup(model, _sgd(model))

    def loop() -> None:
        for x, y in batches:
            loss = F.mse_loss(wrapped(x), y)
            fabric.backward(loss)
            optimizer.step()
            optimizer.zero_grad()

    return loop


def _autocast(model: nn.Module, batches: Batches) -> Loop:
    optimizer = _sgd(model)

    def loop() -> None:
        for x, y in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                output = model(x)
            loss = F.mse_loss(output.float(), y)
            loss.backward()
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


def _same_weights(models: list[nn.Module]) -> bool:
    first = [p.detach() for p in models[0].parameters()]
    return all(
        all(torch.equal(a, b.detach()) for a, b in zip(first, other.parameters(), strict=True))
        for other in models[1:]
    )


def _section(
    factories: dict[str, Callable[[nn.Module, Batches], Loop]],
    baseline: str,
    rounds: int,
    steps: int,
    warmup: int,
) -> tuple[Timings, bool]:
    torch.manual_seed(0)
    initial = _mlp()
    batches = _batches(steps)
    models = {name: copy.deepcopy(initial) for name in factories}
    loops = {name: factory(models[name], batches) for name, factory in factories.items()}
    times = time_interleaved(loops, rounds, steps, warmup)
    return times, _same_weights(list(models.values()))


def _overhead(timings: Timings, variant: str, baseline: str) -> dict[str, Any]:
    overhead = summarize(_differences(timings.cpu, variant, baseline))
    base = summarize(timings.cpu[baseline])
    return {
        "overhead_us": overhead,
        "relative_pct": 100.0 * overhead["median"] / base["median"],
        "wall_overhead_us": summarize(_differences(timings.wall, variant, baseline)),
    }


def measure_fp32(rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS) -> Result:
    """Plain loop vs Fabric loop in float32, alternating in pairs of blocks (the headline figure)."""
    factories: dict[str, Callable[[nn.Module, Batches], Loop]] = {"plain": _plain, "fabric": _fabric}
    timings, identical = _section(factories, "plain", rounds, steps, warmup)
    overhead = _overhead(timings, "fabric", "plain")
    return {
        "per_step_us": {name: summarize(values) for name, values in timings.cpu.items()},
        **overhead,
        "identical_weights": identical,
        "target_us": TARGET_US,
        "within_target": overhead["overhead_us"]["median"] <= TARGET_US,
    }


def measure_breakdown(rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS) -> Result:
    """Add one wrapper at a time, with a second plain loop as an A/A control (float32)."""
    factories: dict[str, Callable[[nn.Module, Batches], Loop]] = {
        "plain": _plain,
        "plain again (A/A control)": _plain,
        "setup(model)": _fabric_module_only,
        "setup(model) + fabric.backward": _fabric_module_backward,
        "fabric": _fabric,
    }
    timings, identical = _section(factories, "plain", rounds, steps, warmup)
    times = timings.cpu
    stages = list(factories)
    return {
        "per_step_us": {name: summarize(values) for name, values in times.items()},
        "control_us": summarize(_differences(times, stages[1], stages[0])),
        "steps_us": {
            "FabricModule forward": summarize(_differences(times, stages[2], stages[0])),
            "fabric.backward": summarize(_differences(times, stages[3], stages[2])),
            "FabricOptimizer step + zero_grad": summarize(_differences(times, stages[4], stages[3])),
            "all (fabric - plain)": summarize(_differences(times, stages[4], stages[0])),
        },
        "identical_weights": identical,
    }


def measure_bf16(rounds: int, steps: int = STEPS, warmup: int = WARMUP_ROUNDS) -> Result:
    """Hand-written autocast loop vs ``Fabric(precision="bf16-mixed")``."""
    factories: dict[str, Callable[[nn.Module, Batches], Loop]] = {
        "autocast": _autocast,
        "fabric bf16-mixed": lambda model, batches: _fabric(model, batches, precision="bf16-mixed"),
    }
    timings, identical = _section(factories, "autocast", rounds, steps, warmup)
    return {
        "per_step_us": {name: summarize(values) for name, values in timings.cpu.items()},
        **_overhead(timings, "fabric bf16-mixed", "autocast"),
        "identical_weights": identical,
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
                "model": "Linear(32, 64) -> ReLU -> Linear(64, 1)",
                "batch": BATCH,
                "optimizer": f"SGD(lr={LR})",
                "steps_per_block": STEPS,
                "rounds": rounds,
                "warmup_rounds": WARMUP_ROUNDS,
                "torch_threads": torch.get_num_threads(),
            },
            "fp32": measure_fp32(rounds),
            "breakdown": measure_breakdown(rounds),
            "bf16_mixed": measure_bf16(rounds),
            "dataloader": measure_dataloader(rounds),
        }
    finally:
        torch.set_num_threads(threads)


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    fp32, bf16 = result["fp32"], result["bf16_mixed"]
    return [
        Headline("step overhead, fp32 (fabric - plain)", fp32["overhead_us"], "µs", TARGET_US),
        Headline("step overhead, bf16-mixed (fabric - autocast)", bf16["overhead_us"], "µs", None),
        Headline("setup_dataloaders, per batch", result["dataloader"]["overhead_us"], "µs", None),
    ]


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    config = result["config"]
    fp32, breakdown, bf16, loader = (
        result["fp32"],
        result["breakdown"],
        result["bf16_mixed"],
        result["dataloader"],
    )
    plain, fabric = fp32["per_step_us"]["plain"]["median"], fp32["per_step_us"]["fabric"]["median"]
    lines = [
        f"Step overhead: {config['model']}, batch {config['batch']}, {config['optimizer']}, "
        f"{config['torch_threads']} thread, {config['rounds']} rounds x {config['steps_per_block']} steps",
        f"  fp32: plain {plain:.1f} µs/step, fabric {fabric:.1f} µs/step "
        f"(same weights: {fp32['identical_weights']})",
        f"    fabric - plain: {spread(fp32['overhead_us'], 'µs/step')}, {fp32['relative_pct']:+.1f}%  "
        f"[target <= {fp32['target_us']:.0f} µs]",
        f"    (from wall time instead of CPU time: {spread(fp32['wall_overhead_us'], 'µs/step')})",
        "  breakdown, adding one wrapper at a time (5 loops per round):",
    ]
    for name, summary in breakdown["steps_us"].items():
        lines.append(f"    {name:<34} {spread(summary, 'µs')}")
    lines.append(f"    {'A/A control (plain - plain)':<34} {spread(breakdown['control_us'], 'µs')}")
    autocast, mixed = (
        bf16["per_step_us"]["autocast"]["median"],
        bf16["per_step_us"]["fabric bf16-mixed"]["median"],
    )
    lines += [
        f"  bf16-mixed: autocast {autocast:.1f} µs/step, fabric {mixed:.1f} µs/step "
        f"(same weights: {bf16['identical_weights']})",
        f"    fabric - autocast: {spread(bf16['overhead_us'], 'µs/step')}, {bf16['relative_pct']:+.1f}%",
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
    batches = _batches(STEPS)
    loop = _fabric(_mlp(), batches)
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


class _FakeLoss:
    """Stands in for a loss tensor so that only fabric's Python path is timed."""

    requires_grad = True

    def backward(self, *args: Any, **kwargs: Any) -> None:
        pass


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
    plain_optimizer = _sgd(nn.Linear(32, 1))
    fabric_optimizer = Fabric(accelerator="cpu", devices=1).setup(linear, _sgd(linear))[1]
    loss = _FakeLoss()
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
        ("backward (no autograd)", lambda: loss.backward(), lambda: fabric.backward(loss)),
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
