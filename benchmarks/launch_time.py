"""Launch to first training step: ``fabric run`` and ``fabric.launch()`` against ``torchrun``.

The same script (``_launch_target.py``: DDP on 2 CPU processes) is started three ways,
in interleaved rounds so machine drift affects each way alike:

- ``torchrun --nproc-per-node 2 script`` (the script's ``fabric.launch()`` joins),
- ``fabric run --devices 2 script``,
- ``python script`` (``fabric.launch()`` starts the workers itself).

Reported per way: seconds from starting the launcher to the end of rank 0's first
optimizer step, the ratio to torchrun in the same round, and the launcher process's peak
resident memory (``VmHWM`` of the process that was started, sampled until it exits).
Targets: ratio <= 1.05 for both fabric ways, launcher RSS <= 230 MiB.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import threading
import time
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

NAME = "launch_time"
TARGET = BENCH_DIR / "_launch_target.py"
WAYS = {
    "torchrun": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(TARGET)],
    "fabric run": [sys.executable, "-m", "fabric_core", "run", "--devices", "2", str(TARGET)],
    "fabric.launch()": [sys.executable, str(TARGET)],
}
TARGET_RATIO = 1.05
TARGET_RSS_MIB = 230.0


def _peak_rss_mib(pid: int, stop: threading.Event, peak: list[float]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]) / 1024)
        except OSError:
            return
        time.sleep(0.05)


def _launch(command: list[str]) -> tuple[float, float]:
    start = time.time()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(FABRIC_BENCH_T0=repr(start), OMP_NUM_THREADS="1"),
    )
    stop, peak = threading.Event(), [0.0]
    sampler = threading.Thread(target=_peak_rss_mib, args=(process.pid, stop, peak), daemon=True)
    sampler.start()
    output, errors = process.communicate(timeout=300)
    stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited with {process.returncode}:\n{output}\n{errors[-3000:]}"
        )
    first_step = next(float(line.split()[1]) for line in output.splitlines() if line.startswith("FIRST_STEP"))
    return first_step, peak[0]


def run(quick: bool) -> Result:
    """Launch each way ``rounds`` times, interleaved, after one warm-up round."""
    rounds = 2 if quick else 8
    seconds: dict[str, list[float]] = {way: [] for way in WAYS}
    rss: dict[str, list[float]] = {way: [] for way in WAYS}
    ratios: dict[str, list[float]] = {way: [] for way in WAYS if way != "torchrun"}
    names = list(WAYS)
    for way in names:  # warm-up: fills the bytecode cache
        _launch(WAYS[way])
    for index in range(rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        this_round = {}
        for way in order:
            this_round[way], peak = _launch(WAYS[way])
            seconds[way].append(this_round[way])
            rss[way].append(peak)
        for way in ratios:
            ratios[way].append(this_round[way] / this_round["torchrun"])
    return {
        "config": {"rounds": rounds, "processes": 2, "accelerator": "cpu"},
        "first_step_s": {way: summarize(values) for way, values in seconds.items()},
        "ratio_to_torchrun": {way: summarize(values) for way, values in ratios.items()},
        "launcher_rss_mib": {way: summarize(values) for way, values in rss.items()},
        "targets": {"ratio": TARGET_RATIO, "rss_mib": TARGET_RSS_MIB},
        "median_ratio": {way: statistics.median(values) for way, values in ratios.items()},
    }


def format_report(result: Result) -> list[str]:
    """Human-readable lines."""
    lines = [
        f"Launch -> first step, 2 CPU processes, {result['config']['rounds']} interleaved rounds "
        f"(targets: ratio <= {TARGET_RATIO}, launcher RSS <= {TARGET_RSS_MIB:.0f} MiB)"
    ]
    for way, summary in result["first_step_s"].items():
        ratio = result["ratio_to_torchrun"].get(way)
        ratio_text = f"ratio {spread(ratio, 'x', 3)}" if ratio else "baseline"
        rss = result["launcher_rss_mib"][way]["median"]
        lines.append(f"  {way:<16} {spread(summary, 's', 2)}; {ratio_text}; launcher RSS {rss:.0f} MiB")
    return lines


def main(argv: list[str] | None = None) -> int:
    """``python benchmarks/launch_time.py [--quick]``."""
    args = make_parser(NAME, __doc__).parse_args(argv)
    apply_common_options(args)
    return standalone(NAME, run, format_report, args.quick)


if __name__ == "__main__":
    sys.exit(main())
