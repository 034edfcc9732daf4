"""One researcher's loop under every first-party CPU strategy, changing only the strategy's name.

The loop (``scripts/one_loop.py``) accumulates gradients with ``no_backward_sync``, clips them
with ``clip_gradients(max_norm=...)``, steps a ``LambdaLR`` built on the optimizer that
``fabric.setup`` returned, and resumes with ``fabric.save`` / ``fabric.load``. Under every
strategy, on 2 CPU processes (gloo), its per-step losses, clipping norms and learning rates
must equal one process with twice the batch (fp32: within 2e-4 relative), and a run that
loads the checkpoint saved at the middle step in new processes must reproduce the
uninterrupted second half (within 1e-6).

Each strategy costs two launches: the uninterrupted run, which saves at the middle step as
a periodically checkpointing loop does, and the second half starting with ``fabric.load``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from fabric_core.utilities.seed import SEED_VARIABLE, SEED_WORKERS_VARIABLE

SCRIPTS = Path(__file__).parent / "scripts"
SCRIPT = SCRIPTS / "one_loop.py"
sys.path.insert(0, str(SCRIPTS))
from one_loop import (  # noqa: E402
    ACCUMULATE,
    GLOBAL_BATCH,
    LR,
    MAX_NORM,
    RESUME_AT,
    STEPS,
    build_model,
    dataset,
    schedule,
)

STRATEGIES = (
    "single_device",
    "ddp",
    "fsdp",
    "deepspeed_stage_1",
    "deepspeed_stage_2",
    "deepspeed_stage_3",
    "model_parallel",
)
TEST_TIMEOUT_S = 600
"""Three launches; a DeepSpeed launch alone takes 20-120 s on a busy 2-core machine (import, engine set-up)."""
LAUNCHES_BUDGET_S = TEST_TIMEOUT_S - 30
"""The two launches of one test share this; a launch that runs past it is killed with its children."""
MATCHES_ONE_PROCESS = 2e-4
"""Relative tolerance against one process: fp32 sums in another order over 2 processes."""
RESUMES_EXACTLY = 1e-6
"""Relative tolerance of a resumed run against the uninterrupted one (same processes, same order)."""


def launch(strategy: str, mode: str, out_dir: Path, deadline: float) -> dict[str, Any]:
    """Run ``one_loop.py`` (which calls ``fabric.launch()`` itself) and return rank 0's record.

    The output goes to ``OUT_DIR/MODE.log`` (a pipe could be held open by a stray worker).
    A launch still running at ``deadline``, or when the test is interrupted, is stopped
    with SIGTERM, which the launching process passes on to its workers.
    """
    log = out_dir / f"{mode}.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, str(SCRIPT), strategy, mode, str(out_dir)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**_environment_without_seed(), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        timed_out = False
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            if process.poll() is None:
                _stop(process)
    output = _tail(log.read_text(errors="replace"))
    assert not timed_out, (
        f"{strategy} {mode}: stopped, the test's launches ran past {LAUNCHES_BUDGET_S} s:\n{output}"
    )
    assert process.returncode == 0, f"{strategy} {mode}: exit {process.returncode}; output:\n{output}"
    record = json.loads((out_dir / f"{mode}.json").read_text())
    assert isinstance(record, dict)
    return record


def _stop(process: subprocess.Popen[Any]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _environment_without_seed() -> dict[str, str]:
    # plain_pytorch_run's seed_everything exports the seed: launches must not depend on test order
    return {k: v for k, v in os.environ.items() if k not in (SEED_VARIABLE, SEED_WORKERS_VARIABLE)}


def _tail(output: str, lines: int = 80) -> str:
    return "\n".join(output.splitlines()[-lines:])


def mismatches(what: str, got: list[Any], expected: list[float], rel: float) -> list[str]:
    """One line per step where ``got`` is not within ``rel`` (relative) of ``expected``."""
    if len(got) != len(expected):
        return [f"{what}: {len(got)} steps, expected {len(expected)}: {got} vs {expected}"]
    problems = []
    for step, (value, want) in enumerate(zip(got, expected)):
        if value is None:
            problems.append(f"{what}, step {step}: got None, expected {want!r}")
            continue
        difference = abs(value - want) / abs(want)
        if difference > rel:
            problems.append(
                f"{what}, step {step}: {value!r} vs {want!r} (relative difference {difference:.1e} > {rel:.0e})"
            )
    return problems


def plain_pytorch_run() -> dict[str, list[float]]:
    """The loop without Fabric: one process, batch ``GLOBAL_BATCH``, ``clip_grad_norm_``."""
    model = build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    batches = iter(DataLoader(dataset(), batch_size=GLOBAL_BATCH, shuffle=False))
    record: dict[str, list[float]] = {"losses": [], "norms": [], "lrs": []}
    for _ in range(STEPS):
        record["lrs"].append(optimizer.param_groups[0]["lr"])
        step_loss = 0.0
        for _ in range(ACCUMULATE):
            x, y = next(batches)
            loss = nn.functional.mse_loss(model(x), y)
            (loss / ACCUMULATE).backward()
            step_loss += loss.item() / ACCUMULATE
        record["norms"].append(nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM).item())
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
        record["losses"].append(step_loss)
    return record


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The uninterrupted loop under ``single_device``: one process, batch ``GLOBAL_BATCH``."""
    out_dir = tmp_path_factory.mktemp("reference")
    record = launch("single_device", "full", out_dir, time.monotonic() + LAUNCHES_BUDGET_S)
    return {**record, "out_dir": str(out_dir)}


@pytest.mark.timeout(TEST_TIMEOUT_S)
def test_the_reference_is_the_plain_pytorch_loop_and_clipping_bites(reference):
    """``single_device`` is the loop without Fabric, and ``max_norm`` clips some steps but not all."""
    assert reference["world_size"] == 1
    plain = plain_pytorch_run()
    problems = [
        *mismatches("single_device loss vs plain PyTorch", reference["losses"], plain["losses"], 1e-6),
        *mismatches("single_device clip norm vs plain PyTorch", reference["norms"], plain["norms"], 1e-6),
        *mismatches("single_device learning rate vs plain PyTorch", reference["lrs"], plain["lrs"], 1e-12),
    ]
    assert not problems, "\n".join(problems)
    # clipping changes some steps, before and after the resume point, and leaves others alone
    clipped = [step for step, norm in enumerate(reference["norms"]) if norm > MAX_NORM]
    assert any(step < RESUME_AT for step in clipped) and any(step >= RESUME_AT for step in clipped), clipped
    assert len(clipped) < STEPS, reference["norms"]


@pytest.mark.timeout(TEST_TIMEOUT_S)
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_loop_matches_one_process_and_resumes_exactly(strategy, reference, tmp_path):
    """Losses, clip norms and learning rates equal one process's; a resumed run equals the uninterrupted one."""
    deadline = time.monotonic() + LAUNCHES_BUDGET_S
    single = strategy == "single_device"
    out_dir = Path(reference["out_dir"]) if single else tmp_path
    full = reference if single else launch(strategy, "full", out_dir, deadline)
    resumed = launch(strategy, "resume", out_dir, deadline)
    assert full["world_size"] == resumed["world_size"] == (1 if single else 2)

    problems = [
        *mismatches("loss vs one process", full["losses"], reference["losses"], MATCHES_ONE_PROCESS),
        *mismatches(
            "clip_gradients norm vs one process", full["norms"], reference["norms"], MATCHES_ONE_PROCESS
        ),
        *mismatches("learning rate vs one process", full["lrs"], reference["lrs"], RESUMES_EXACTLY),
        *mismatches(
            "resumed loss vs uninterrupted", resumed["losses"], full["losses"][RESUME_AT:], RESUMES_EXACTLY
        ),
        *mismatches(
            "resumed clip norm vs uninterrupted", resumed["norms"], full["norms"][RESUME_AT:], RESUMES_EXACTLY
        ),
        *mismatches(
            "resumed learning rate vs uninterrupted", resumed["lrs"], full["lrs"][RESUME_AT:], RESUMES_EXACTLY
        ),
    ]
    assert not problems, f"{strategy}:\n" + "\n".join(problems)
