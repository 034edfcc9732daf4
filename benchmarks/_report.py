"""The harness's report: Markdown tables and PNG plots from the results of ``run_all.py``.

`markdown` turns a run's results into the tables that ``docs/guide/performance.md`` shows;
`plots` draws the figures with matplotlib's Agg backend (nothing needs a display);
`update_page` replaces the part of the page between the markers with fresh tables.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from _common import MARKDOWN_HEADER, Headline, Result

START, END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
PLOTS = ("step_overhead.png", "distributed.png", "startup_memory.png")


def _cell(summary: dict[str, float] | None, unit: str, digits: int = 1, scale: float = 1.0) -> str:
    if summary is None:
        return ""
    f = f"{{:.{digits}f}}"
    median, q25, q75 = (summary[key] * scale for key in ("median", "q25", "q75"))
    unit = f" {unit}" if unit else ""
    return f"{f.format(median)}{unit} ({f.format(q25)} .. {f.format(q75)})"


def framework_table(results: Result) -> list[str]:
    """One row per framework: step overhead in fp32 and bf16-mixed, import, first step, memory."""
    steps, start = results.get("step_overhead"), results.get("footprint")
    names: list[str] = []
    for source in (steps and steps["fp32"]["frameworks"], start and list(start["frameworks"])):
        names += [name for name in source or [] if name not in names]
    lines = [
        "| framework | step overhead, fp32 | step overhead, bf16-mixed | import after torch "
        "| launch to first step | peak RSS |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = []
        for key in ("fp32", "bf16_mixed"):
            if steps is None:
                cells.append("")
            elif name == "torch":
                cells.append(f"{steps[key]['per_step_us']['torch']['median']:.1f} µs per step")
            else:
                cells.append(_cell(steps[key]["versus_torch"].get(name, {}).get("overhead_us"), "µs"))
        entry = start["frameworks"].get(name) if start else None
        if entry is None:
            cells += ["", "", ""]
        else:
            cells += [
                "" if name == "torch" else _cell(entry["import_ms"], "ms"),
                _cell(entry["first_step_s"], "s", 2),
                f"{entry['peak_rss_mib']['median']:.0f} MiB",
            ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def distributed_table(results: Result) -> list[str]:
    """One row per strategy: hand-written and fabric step time, their ratio, losses, memory."""
    dist = results.get("distributed_step")
    if not dist or not dist["strategies"]:
        return []
    lines = [
        "| strategy (2 processes) | hand-written step | fabric step | fabric / hand | same losses | peak RSS |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for name, entry in dist["strategies"].items():
        lines.append(
            f"| {name} | {_cell(entry['step_ms']['hand'], 'ms', 2)} | {_cell(entry['step_ms']['fabric'], 'ms', 2)} "
            f"| {_cell(entry['ratio'], '', 3)} | {'yes' if entry['identical_losses'] else 'no'} "
            f"| {max(entry['peak_rss_mib']):.0f} MiB |"
        )
    return lines


def markdown(results: Result, headlines: list[Headline]) -> str:
    """Every table: frameworks, distributed strategies, then the summary of all headline figures."""
    parts = [
        "Medians, with the interquartile range in brackets.",
        "",
        *framework_table(results),
        "",
        *distributed_table(results),
        "",
        MARKDOWN_HEADER,
        *(headline.markdown_row() for headline in headlines),
    ]
    return "\n".join(parts).replace("\n\n\n", "\n\n") + "\n"


def update_page(page: Path, block: str) -> None:
    """Replace the text between the page's result markers with ``block``.

    Raises:
        ValueError: The page lacks the markers.
    """
    text = page.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    if not pattern.search(text):
        raise ValueError(f"{page} has no {START} ... {END} markers to put the results between.")
    page.write_text(pattern.sub(lambda _: f"{START}\n\n{block}\n{END}", text, count=1))


def plots(results: Result, directory: Path) -> list[Path]:
    """Draw the figures into ``directory``; return the files written (a figure without data is skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in (
        (PLOTS[0], _draw_step_overhead),
        (PLOTS[1], _draw_distributed),
        (PLOTS[2], _draw_startup_memory),
    ):
        figure = draw(plt, results)
        if figure is None:
            continue
        path = directory / name
        figure.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(figure)
        written.append(path)
    return written


def _errors(summaries: list[dict[str, float]], scale: float = 1.0) -> list[list[float]]:
    return [
        [(s["median"] - s["q25"]) * scale for s in summaries],
        [(s["q75"] - s["median"]) * scale for s in summaries],
    ]


def _draw_step_overhead(plt: Any, results: Result) -> Any:
    steps = results.get("step_overhead")
    if steps is None:
        return None
    names = [name for name in steps["fp32"]["frameworks"] if name != "torch"]
    figure, axes = plt.subplots(1, 2, figsize=(10, 0.6 * len(names) + 1.6))
    for axis, key, title in ((axes[0], "fp32", "fp32"), (axes[1], "bf16_mixed", "bf16-mixed")):
        summaries = [steps[key]["versus_torch"][name]["overhead_us"] for name in names]
        medians = [s["median"] for s in summaries]
        axis.barh(names, medians, xerr=_errors(summaries), color="#4c72b0", capsize=3)
        for index, (value, summary) in enumerate(zip(medians, summaries, strict=True)):
            # Right of the whisker, where the label does not cross it.
            axis.annotate(
                f"  {value:.1f} µs", (max(value, summary["q75"], 0), index), va="center", fontsize=9
            )
        axis.axvline(steps["target_us"], color="#c44e52", linestyle="--", linewidth=1)
        axis.set_xscale("symlog", linthresh=10)
        axis.set_xlim(left=min(0, *medians) * 1.2, right=max(*medians, 10) * 3)
        axis.invert_yaxis()
        torch_us = steps[key]["per_step_us"]["torch"]["median"]
        axis.set_title(f"{title}: extra µs per step over torch ({torch_us:.0f} µs)", fontsize=10)
        axis.set_xlabel("µs per step (median, IQR; dashed: fabric's target)")
    figure.tight_layout()
    return figure


def _draw_distributed(plt: Any, results: Result) -> Any:
    dist = results.get("distributed_step")
    if not dist or not dist["strategies"]:
        return None
    names = list(dist["strategies"])
    summaries = [dist["strategies"][name]["ratio"] for name in names]
    figure, axis = plt.subplots(figsize=(6, 0.6 * len(names) + 1.6))
    axis.barh(
        names,
        [s["median"] - 1 for s in summaries],
        left=1,
        xerr=_errors(summaries),
        color="#55a868",
        capsize=3,
    )
    for index, summary in enumerate(summaries):
        axis.annotate(
            f" {summary['median']:.3f}", (max(summary["median"], 1), index), va="center", fontsize=9
        )
    axis.axvline(1.0, color="black", linewidth=0.8)
    axis.axvline(dist["target_ratio"], color="#c44e52", linestyle="--", linewidth=1)
    axis.invert_yaxis()
    axis.set_title("step time, fabric / hand-written loop (2 CPU processes)", fontsize=10)
    axis.set_xlabel("ratio (median, IQR; dashed: target)")
    figure.tight_layout()
    return figure


def _draw_startup_memory(plt: Any, results: Result) -> Any:
    start = results.get("footprint")
    if start is None:
        return None
    entries = start["frameworks"]
    names = list(entries)
    figure, axes = plt.subplots(1, 3, figsize=(12, 0.6 * len(names) + 1.6))
    panels = (
        ("import_ms", 1.0, "import after torch (ms)"),
        ("first_step_s", 1.0, "launch to first step (s)"),
        ("peak_rss_mib", 1.0, "peak RSS (MiB)"),
    )
    for axis, (key, scale, title) in zip(axes, panels, strict=True):
        summaries = [entries[name][key] for name in names]
        medians = [s["median"] * scale for s in summaries]
        axis.barh(names, medians, xerr=_errors(summaries, scale), color="#8172b2", capsize=3)
        for index, value in enumerate(medians):
            axis.annotate(
                f" {value:.0f}" if value >= 10 else f" {value:.2f}", (value, index), va="center", fontsize=9
            )
        axis.set_xlim(right=max(medians) * 1.3 or 1)
        axis.invert_yaxis()
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    return figure
