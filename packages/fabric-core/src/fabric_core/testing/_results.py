"""Turning what the launcher and every rank recorded into one `CheckResult` per check."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from fabric_core.testing._checks import CHECK_NAMES, CHECKS
from fabric_core.testing._plan import Plan
from fabric_core.testing._worker import describe_error
from fabric_core.testing.report import CheckResult

if TYPE_CHECKING:
    from fabric_core.fabric import Fabric

__all__ = ["collect_results", "finished", "run_in_launcher"]


def run_in_launcher(name: str, fabric: Fabric, plan: Plan) -> CheckResult:
    """Run a launcher-side check on the configured strategy, before the launch."""
    start = time.perf_counter()
    try:
        CHECKS[name].run(fabric, plan)
    except Exception as error:
        problem = describe_error(error)
        return CheckResult(
            name, "failed", (f"in the launching process: {problem}",), time.perf_counter() - start
        )
    return CheckResult(name, "passed", (), time.perf_counter() - start)


def collect_results(
    plan: Plan, skipped: tuple[str, ...], launch_error: str, launcher_results: dict[str, CheckResult]
) -> tuple[CheckResult, ...]:
    """One result per check: skipped, from the launcher, or merged from every rank's file.

    A check fails when it failed, timed out or did not run on any rank, or when its
    cross-rank verification finds a problem; it is skipped when every rank skipped it.
    """
    ranks = _read_ranks(plan)
    startup = "; ".join(f"rank {rank}: {data['error']}" for rank, data in ranks.items() if data.get("error"))
    reason = startup or launch_error or "the process stopped before it"
    results = []
    for name in CHECK_NAMES:
        if name in skipped:
            results.append(CheckResult(name, "skipped", ("skipped by StrategyConformance(skip=...)",)))
        elif CHECKS[name].where == "launcher":
            not_run = CheckResult(name, "failed", (f"did not run: {launch_error}",))
            results.append(launcher_results.get(name, not_run))
        else:
            results.append(_result(name, plan, ranks, reason))
    return tuple(results)


def finished(plan: Plan) -> bool:
    """Whether every rank recorded an outcome for every check of the plan that runs on the ranks."""
    ranks = _read_ranks(plan)
    names = [name for name in plan.checks if CHECKS[name].where == "ranks"]
    for rank in range(plan.world_size):
        checks = ranks.get(rank, {}).get("checks", {})
        if any(checks.get(name, {}).get("status") in (None, "running") for name in names):
            return False
    return True


def _read_ranks(plan: Plan) -> dict[int | str, dict[str, Any]]:
    found: dict[int | str, dict[str, Any]] = {}
    for entry in sorted(os.listdir(plan.results_dir)):
        if entry.startswith("rank-") and entry.endswith(".json"):
            with open(os.path.join(plan.results_dir, entry)) as file:
                data = json.load(file)
            found[data["rank"]] = data
    return found


def _result(name: str, plan: Plan, ranks: dict[int | str, dict[str, Any]], reason: str) -> CheckResult:
    entries = {rank: ranks.get(rank, {}).get("checks", {}).get(name) for rank in range(plan.world_size)}
    seconds = max((entry.get("seconds", 0.0) for entry in entries.values() if entry), default=0.0)
    problems: dict[str, list[int]] = {}
    for rank, entry in entries.items():
        if entry is None:
            message = f"did not run: {reason}"
        elif entry["status"] in ("failed", "timed out", "running"):
            message = entry["message"] or f"stopped during this check: {reason}"
        else:
            continue
        problems.setdefault(message, []).append(rank)
    if problems:
        lines = tuple(f"{_ranks(ranks_)}: {message}" for message, ranks_ in problems.items())
        return CheckResult(name, "failed", lines, seconds)
    statuses = {entry["status"] for entry in entries.values() if entry}
    if statuses == {"skipped"}:
        return CheckResult(name, "skipped", (entries[0]["message"],) if entries[0] else (), seconds)
    verify = CHECKS[name].verify
    if verify is not None:
        observations = {rank: entry.get("observations", {}) for rank, entry in entries.items() if entry}
        across = verify(observations, plan)
        if across:
            return CheckResult(
                name, "failed", tuple(f"across ranks: {problem}" for problem in across), seconds
            )
    return CheckResult(name, "passed", (), seconds)


def _ranks(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"
