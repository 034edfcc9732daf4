"""Step time of fabric's DDP, FSDP and DeepSpeed loops against the same loops written by hand.

One ``torchrun --nproc-per-node 2`` job per strategy (CPU, gloo, one torch thread per
process) runs ``_distributed_target.py``: a 3-block residual MLP (width 256, batch 32 per
process, SGD) trained by the fabric loop (``fabric.setup``, ``fabric.backward``) and by the
hand-written loop of that strategy, in alternating blocks of steps (ABBA...):

- ``ddp``: ``DistributedDataParallel(model)`` and ``loss.backward()``;
- ``fsdp``: ``fully_shard`` on every block and then on the root (FSDP2), against
  ``FSDPStrategy(auto_wrap_policy={Block})``;
- ``deepspeed``: ``deepspeed.initialize(model=..., optimizer=..., config=...)`` with
  ``engine.backward(loss); engine.step()``, given the ZeRO stage 2 config that fabric's
  ``DeepSpeedStrategy(stage=2)`` built, so both do the same work (DeepSpeed's CPU
  accelerator: ``DS_ACCELERATOR=cpu`` is set for the job).

Reported per strategy: the median per-step time of each loop (the slowest process's), the
median and spread of the per-round ratio fabric / hand (target: at most 1.01), whether the
losses of the two loops are identical, and the job's peak resident memory per process.
A strategy whose plugin (or deepspeed) is not installed is skipped and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    Headline,
    Result,
    apply_common_options,
    child_env,
    make_parser,
    spread,
    standalone,
    summarize,
)

NAME = "distributed_step"
TARGET = BENCH_DIR / "_distributed_target.py"
TARGET_RATIO = 1.01
NEEDS = {"ddp": ("fabric_ddp",), "fsdp": ("fabric_fsdp",), "deepspeed": ("fabric_deepspeed", "deepspeed")}


def missing(strategy: str) -> list[str]:
    """The modules ``strategy`` needs that are not installed."""
    return [module for module in NEEDS[strategy] if find_spec(module) is None]


def run_strategy(strategy: str, blocks: int, steps: int) -> Result:
    """One torchrun job for ``strategy``; the per-round ratios and step times."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [
            sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
            str(TARGET), strategy, str(blocks), str(steps), str(out),
        ]  # fmt: skip
        extensions = os.environ.get(
            "TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "fabric-deepspeed-ops")
        )
        env = child_env(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TORCH_EXTENSIONS_DIR=extensions)
        completed = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
        if completed.returncode != 0 or not out.exists():
            raise RuntimeError(f"the {strategy} step benchmark failed:\n{completed.stderr[-3000:]}")
        document = json.loads(out.read_text())
    seconds = document["seconds"]
    ratios = [f / h for f, h in zip(seconds["fabric"], seconds["hand"], strict=True)]
    return {
        "step_ms": {name: summarize([t * 1e3 for t in values]) for name, values in seconds.items()},
        "ratio": summarize(ratios),
        "identical_losses": document["losses"]["fabric"] == document["losses"]["hand"],
        "peak_rss_mib": document["peak_rss_mib"],
        "within_target": summarize(ratios)["median"] <= TARGET_RATIO,
    }


def run(quick: bool = False) -> Result:
    """Every strategy whose plugin is installed, one job each."""
    blocks, steps = (6, 4) if quick else (30, 8)
    strategies: Result = {}
    skipped: dict[str, list[str]] = {}
    for strategy in NEEDS:
        absent = missing(strategy)
        if absent:
            skipped[strategy] = absent
            continue
        strategies[strategy] = run_strategy(strategy, blocks, steps)
    return {
        "config": {"blocks": blocks, "steps_per_block": steps, "processes": 2, "threads_per_process": 1},
        "strategies": strategies,
        "skipped": skipped,
        "target_ratio": TARGET_RATIO,
    }


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    return [
        Headline(f"{strategy} step, fabric / hand-written", entry["ratio"], "x", TARGET_RATIO)
        for strategy, entry in result["strategies"].items()
    ]


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    config = result["config"]
    lines = [
        f"Distributed step time, 2 processes x 1 thread (gloo), {config['blocks']} rounds of two blocks of "
        f"{config['steps_per_block']} steps (target: fabric / hand <= {TARGET_RATIO})"
    ]
    for strategy, entry in result["strategies"].items():
        same = "identical losses" if entry["identical_losses"] else "LOSSES DIFFER"
        peak = max(entry["peak_rss_mib"])
        lines += [
            f"  {strategy}: hand {spread(entry['step_ms']['hand'], 'ms', 2)}",
            f"  {'':<{len(strategy)}}  fabric {spread(entry['step_ms']['fabric'], 'ms', 2)}",
            f"  {'':<{len(strategy)}}  fabric / hand {spread(entry['ratio'], 'x', 3)}; {same}; "
            f"peak RSS {peak:.0f} MiB per process",
        ]
    for strategy, absent in result["skipped"].items():
        lines.append(f"  {strategy}: skipped, not installed: {', '.join(absent)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/distributed_step.py [--quick]``."""
    args = make_parser(NAME, __doc__).parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
