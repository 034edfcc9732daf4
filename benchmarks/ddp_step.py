"""DDP step time: the Fabric loop against the hand-written ``torchrun`` + DDP loop.

One ``torchrun --nproc-per-node 2`` job (gloo, CPU, one thread per process) trains two
identical MLPs (256-512-512-10, batch 64 per process): one wrapped by hand in
``DistributedDataParallel`` and stepped with ``loss.backward()``, one set up by
``fabric.setup`` with ``strategy="ddp"`` and stepped with ``fabric.backward``. Blocks of
steps alternate between them. Reported: the median per-step time of each and the median
and spread of the per-block-pair ratio fabric / plain. Target: ratio <= 1.01.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    Result,
    apply_common_options,
    child_env,
    make_parser,
    spread,
    standalone,
    summarize,
)

NAME = "ddp_step"
TARGET = BENCH_DIR / "_ddp_step_target.py"
TARGET_RATIO = 1.01


def run(quick: bool) -> Result:
    """One torchrun job with interleaved blocks of steps."""
    blocks, steps = (10, 20) if quick else (30, 40)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        str(TARGET),
        str(blocks),
        str(steps),
    ]
    completed = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env=child_env(OMP_NUM_THREADS="1")
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the DDP step benchmark failed:\n{completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    times = json.loads(line.removeprefix("RESULT "))
    ratios = [f / p for f, p in zip(times["fabric"], times["plain"])]
    return {
        "config": {"blocks": blocks, "steps_per_block": steps, "processes": 2, "threads_per_process": 1},
        "step_ms": {name: summarize([t * 1e3 for t in values]) for name, values in times.items()},
        "ratio": summarize(ratios),
        "target_ratio": TARGET_RATIO,
    }


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    config = result["config"]
    return [
        f"DDP step time, 2 processes x 1 thread, {config['blocks']} alternating blocks of "
        f"{config['steps_per_block']} steps (target: ratio <= {TARGET_RATIO})",
        f"  hand-written DDP loop  {spread(result['step_ms']['plain'], 'ms', 3)}",
        f"  Fabric DDP loop        {spread(result['step_ms']['fabric'], 'ms', 3)}",
        f"  ratio fabric / plain   {spread(result['ratio'], 'x', 3)}",
    ]


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/ddp_step.py [--quick]``."""
    args = make_parser(NAME, __doc__).parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
