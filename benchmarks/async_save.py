"""What an asynchronous sharded save saves: step time with ``FSDPStrategy(async_save=True)`` against a blocking save.

Usage: python benchmarks/async_save.py [--quick]

``_async_save_target.py`` trains a 4-layer MLP of width 1024 (4.2 M parameters; with Adam's
moments 50 MB of state, half of it per rank) under ``fsdp`` on 2 CPU processes, saving a
sharded (DCP) checkpoint every 10 steps, once with blocking saves and once with
``async_save=True``. Reported: the median plain step, the median step that ends with a save
and the median time inside ``fabric.save`` (the step loop is blocked that long), and the
whole run's time including the wait for the last save to finish.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, Result, apply_common_options, child_env, make_parser, standalone

NAME = "async_save"
TARGET = BENCH_DIR / "_async_save_target.py"


def measure(async_save: bool, steps: int) -> dict[str, Any]:
    """One run of the target; the medians in milliseconds."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "times.json"
        command = [sys.executable, str(TARGET), str(out), "--steps", str(steps)]
        if async_save:
            command.append("--async-save")
        subprocess.run(command, check=True, env=child_env(), timeout=1800)
        times = json.loads(out.read_text())
    return {
        "async_save": async_save,
        "saves": len(times["save_call"]),
        "step_ms": 1000 * statistics.median(times["step"]),
        "step_with_save_ms": 1000 * statistics.median(times["step_with_save"]),
        "save_call_ms": 1000 * statistics.median(times["save_call"]),
        "final_wait_ms": 1000 * times["final_wait"][0],
        "total_s": times["total"][0],
    }


def run(quick: bool) -> Result:
    """Blocking, then asynchronous."""
    steps = 20 if quick else 60
    return {"steps": steps, "rows": [measure(False, steps), measure(True, steps)]}


def format_report(result: Result) -> list[str]:
    """A line per mode, then how much of the blocked time the asynchronous save gave back."""
    lines = [f"async_save: fsdp, 2 CPU processes, {result['steps']} steps, a sharded save every 10"]
    for row in result["rows"]:
        lines.append(
            f"  {'async' if row['async_save'] else 'blocking':>8}: step {row['step_ms']:.1f} ms, step with save "
            f"{row['step_with_save_ms']:.1f} ms (inside fabric.save {row['save_call_ms']:.1f} ms), "
            f"last wait {row['final_wait_ms']:.1f} ms, run {row['total_s']:.2f} s"
        )
    blocking, background = result["rows"]
    saved = blocking["save_call_ms"] - background["save_call_ms"]
    lines.append(
        f"  the loop is blocked {saved:.1f} ms less per save ({saved / blocking['save_call_ms']:.0%})"
    )
    return lines


if __name__ == "__main__":
    arguments = make_parser(NAME, __doc__).parse_args()
    apply_common_options(arguments)
    raise SystemExit(standalone(NAME, run, format_report, arguments.quick))
