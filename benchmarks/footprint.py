"""Start-up and memory of each framework's loop: import over ``import torch``, launch to first step, peak memory.

Each framework of ``_loops.frameworks()`` (torch, fabric, and Lightning Fabric and
Accelerate where installed) runs ``_footprint_target.py`` in fresh processes, in rotating
order round by round after one untimed warm-up process each (which fills the bytecode
cache; see ``--no-bytecode-cache``). Each process imports torch, then the framework, sets
up the tiny fp32 loop of ``_loops.py`` and trains ``STEPS`` steps. Reported per framework,
medians over rounds:

- **import**: the milliseconds the framework's import statement takes after ``import torch``
  (in-process ``perf_counter``; ``import_time.py`` has fabric's in more detail);
- **first step**: seconds from starting the process to the end of the first training step
  (interpreter start, imports, set-up, one step), and its difference to the torch loop's;
- **peak RSS**: the process's own peak resident memory after the steps (``VmHWM``);
- **tensor memory**: bytes of the tensors alive after the steps (every storage the garbage
  collector reaches, counted once). On a CPU torch keeps no allocator statistics; this is
  the figure closest to CUDA's ``max_memory_allocated``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
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
from _loops import frameworks

NAME = "footprint"
TARGET = BENCH_DIR / "_footprint_target.py"
STEPS = 50
ROUNDS = 7
QUICK_ROUNDS = 2


def _launch(framework: str) -> Result:
    start = time.time()
    env = child_env(FABRIC_BENCH_T0=repr(start), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, str(TARGET), framework, str(STEPS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"the {framework} footprint process failed:\n{completed.stderr[-3000:]}")
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    record: Result = json.loads(line.removeprefix("RESULT "))
    return record


def run(quick: bool = False) -> Result:
    """Fresh processes per framework, interleaved."""
    names = frameworks()
    rounds = QUICK_ROUNDS if quick else ROUNDS
    for name in names:
        _launch(name)
    records: dict[str, list[Result]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        order = names[shift:] + names[:shift]
        this_round = {name: _launch(name) for name in order}
        for name in names:
            record = this_round[name]
            record["first_step_over_torch_s"] = record["first_step_s"] - this_round["torch"]["first_step_s"]
            records[name].append(record)
    keys = (
        "import_ms",
        "first_step_s",
        "first_step_over_torch_s",
        "peak_rss_mib",
        "tensor_bytes",
        "torch_import_s",
    )
    return {
        "config": {"rounds": rounds, "steps": STEPS, "precision": "32-true"},
        "frameworks": {
            name: {key: summarize([record[key] for record in values]) for key in keys}
            for name, values in records.items()
        },
    }


def headlines(result: Result) -> list[Headline]:
    """The figures for the summary table of ``run_all.py``."""
    rows = []
    for name, entry in result["frameworks"].items():
        if name == "torch":
            continue
        rows.append(Headline(f"import {name} after torch (in-process)", entry["import_ms"], "ms", None))
        over = {key: value * 1e3 for key, value in entry["first_step_over_torch_s"].items()}
        rows.append(Headline(f"launch to first step, {name} - torch", over, "ms", None))
    return rows


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    config = result["config"]
    lines = [
        f"Start-up and memory: fresh process per framework, tiny fp32 loop, {config['steps']} steps, "
        f"{config['rounds']} interleaved rounds"
    ]
    for name, entry in result["frameworks"].items():
        tensor_mib = entry["tensor_bytes"]["median"] / 2**20
        lines += [
            f"  {name:<11} import {entry['import_ms']['median']:7.1f} ms after torch; first step "
            f"{spread(entry['first_step_s'], 's', 2)}, {entry['first_step_over_torch_s']['median']:+.2f} s over torch",
            f"  {'':<11} peak RSS {entry['peak_rss_mib']['median']:.0f} MiB, live tensors {tensor_mib:.2f} MiB",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/footprint.py [--quick] [--no-bytecode-cache]``."""
    args = make_parser(NAME, __doc__).parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
