"""Does a long run grow? 10,000 steps with a checkpoint every 500, memory and file descriptors sampled.

Usage: python benchmarks/leak.py [--quick]

``_leak_target.py`` trains a small MLP with Adam for 10,000 steps (2,000 with ``--quick``)
under ``single_device`` (1 process), ``ddp`` and ``fsdp`` (2 CPU processes, gloo), saving
a checkpoint every 500 steps (the last two kept). Every 100 steps each rank records its
resident memory (``VmRSS``) and its number of open file descriptors.

Reported per strategy and rank: the least-squares slope of each after the warm-up (the
first fifth of the run, where allocator pools and caches fill), in MiB and descriptors per
1,000 steps, and the range over the whole run. A run that leaks shows a positive slope
that does not shrink with more steps; targets: |RSS slope| <= 0.5 MiB per 1,000 steps, no
descriptor growth at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_DIR, Result, apply_common_options, child_env, make_parser, standalone

NAME = "leak"
TARGET = BENCH_DIR / "_leak_target.py"
STRATEGIES = {"single_device": 1, "ddp": 2, "fsdp": 2}
RSS_TARGET_MIB_PER_1K = 0.5


def slope_per_1k(steps: list[float], values: list[float]) -> float:
    """The least-squares slope of ``values`` over ``steps``, per 1,000 steps."""
    mean_x = sum(steps) / len(steps)
    mean_y = sum(values) / len(values)
    covariance = sum((x - mean_x) * (y - mean_y) for x, y in zip(steps, values))
    variance = sum((x - mean_x) ** 2 for x in steps)
    return 1000 * covariance / variance


def measure(strategy: str, devices: int, steps: int) -> list[dict[str, Any]]:
    """Run the target once; per rank, the slopes after warm-up and the ranges."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "samples.json"
        command = [sys.executable, str(TARGET), str(out), "--strategy", strategy, "--devices", str(devices)]
        command += ["--steps", str(steps)]
        subprocess.run(command, check=True, env=child_env(), timeout=1800)
        ranks = json.loads(out.read_text())["ranks"]
    rows = []
    for rank, samples in enumerate(ranks):
        after = [sample for sample in samples if sample["step"] > steps // 5]
        x = [float(sample["step"]) for sample in after]
        rss = [sample["rss_mib"] for sample in samples]
        fds = [sample["fds"] for sample in samples]
        rows.append(
            {
                "strategy": strategy,
                "rank": rank,
                "rss_slope_mib_per_1k": slope_per_1k(x, [sample["rss_mib"] for sample in after]),
                "fd_slope_per_1k": slope_per_1k(x, [float(sample["fds"]) for sample in after]),
                "rss_mib": {"first": rss[0], "after_warmup": after[0]["rss_mib"], "last": rss[-1]},
                "fds": {"first": fds[0], "after_warmup": after[0]["fds"], "last": fds[-1], "max": max(fds)},
            }
        )
    return rows


def run(quick: bool) -> Result:
    """Every strategy once, in turn."""
    steps = 2_000 if quick else 10_000
    rows = [row for strategy, devices in STRATEGIES.items() for row in measure(strategy, devices, steps)]
    return {"steps": steps, "checkpoint_every": 500, "rows": rows}


def format_report(result: Result) -> list[str]:
    """A line per strategy and rank: the slopes and whether they meet the targets."""
    lines = [
        f"leak: {result['steps']} steps, a checkpoint every {result['checkpoint_every']} (after warm-up)"
    ]
    for row in result["rows"]:
        rss_ok = abs(row["rss_slope_mib_per_1k"]) <= RSS_TARGET_MIB_PER_1K
        fd_ok = row["fds"]["last"] <= row["fds"]["after_warmup"]
        lines.append(
            f"  {row['strategy']:>13} rank {row['rank']}: RSS {row['rss_slope_mib_per_1k']:+.3f} MiB/1k steps "
            f"({row['rss_mib']['first']:.0f} -> {row['rss_mib']['last']:.0f} MiB) "
            f"[{'ok' if rss_ok else 'GROWS'}], fds {row['fd_slope_per_1k']:+.3f}/1k steps "
            f"({row['fds']['first']} -> {row['fds']['last']}, max {row['fds']['max']}) "
            f"[{'ok' if fd_ok else 'GROWS'}]"
        )
    return lines


if __name__ == "__main__":
    arguments = make_parser(NAME, __doc__).parse_args()
    apply_common_options(arguments)
    raise SystemExit(standalone(NAME, run, format_report, arguments.quick))
