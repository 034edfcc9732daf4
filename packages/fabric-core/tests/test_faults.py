"""Surviving faults, the in-process parts: resuming, preemption, and how the launcher tells who failed.

The real multi-process runs (a dead rank, a SIGTERM to `fabric run`, a skipped collective)
are in fabric-ddp's tests/test_faults.py.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from fabric_core import Fabric
from fabric_core.cli import main
from fabric_core.launchers.agent import (
    WorkerFailure,
    WorkersFailedError,
    WorkersStoppedError,
    _agent_log,
    _failure_of,
)
from fabric_core.launchers.worker_exit import record_for_agent
from fabric_core.utilities.checkpoint_manager import CheckpointManager
from fabric_core.utilities.collective_watch import CollectiveTimeoutError, _error_for, watched
from fabric_core.utilities.preemption import Preemption

# -- resuming from the latest checkpoint -------------------------------------------------------


def _trained_state(fabric: Fabric) -> dict[str, object]:
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    model, optimizer = fabric.setup(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    return {"model": model, "optimizer": optimizer}


def _step(state: dict[str, object]) -> None:
    model, optimizer = state["model"], state["optimizer"]
    model(torch.ones(3, 4)).pow(2).sum().backward()  # type: ignore[operator]
    optimizer.step()  # type: ignore[attr-defined]
    optimizer.zero_grad()  # type: ignore[attr-defined]


def test_checkpoint_manager_keeps_the_last_k_and_resumes_from_the_newest(tmp_path: Path) -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    manager = CheckpointManager(tmp_path / "ckpts", keep=2)
    assert manager.latest() is None
    assert manager.load(fabric, _trained_state(fabric)) is None  # nothing to resume: a fresh start

    state = _trained_state(fabric)
    for step in range(1, 5):
        _step(state)
        manager.save(fabric, state, step)
    (tmp_path / "ckpts" / ".step-000000005.ckpt.1234.tmp").write_bytes(b"half")  # a killed save's leftover
    assert [step for step, _ in manager.checkpoints()] == [3, 4]
    assert manager.latest() == manager.path(4)

    resumed = _trained_state(fabric)
    assert manager.load(fabric, resumed) == 4
    for name, value in state["model"].state_dict().items():  # type: ignore[attr-defined]
        torch.testing.assert_close(resumed["model"].state_dict()[name], value, rtol=0, atol=0)  # type: ignore[attr-defined]
    # the momentum buffers came back too: the next step is the same
    _step(state), _step(resumed)
    torch.testing.assert_close(resumed["model"].weight, state["model"].weight, rtol=0, atol=0)  # type: ignore[attr-defined]

    manager.save(fabric, state, 4)  # saving a step again (a restarted attempt) replaces it
    assert [step for step, _ in manager.checkpoints()] == [3, 4]


@pytest.mark.parametrize("keep", [0, -1, 1.5, True])
def test_checkpoint_manager_refuses_a_bad_keep(tmp_path: Path, keep: object) -> None:
    with pytest.raises(ValueError, match=r"keep must be a whole number of checkpoints, at least 1"):
        CheckpointManager(tmp_path, keep=keep)  # type: ignore[arg-type]


# -- preemption -------------------------------------------------------------------------------------


def test_preemption_notes_sigterm_and_restores_the_handler() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    before = signal.getsignal(signal.SIGTERM)
    with Preemption(fabric) as preemption:
        assert not preemption.requested() and preemption.signal is None
        os.kill(os.getpid(), signal.SIGTERM)  # the process lives on: the handler only notes it
        assert preemption.requested() and preemption.signal == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_preemption_catches_sigusr1_when_asked() -> None:
    fabric = Fabric(accelerator="cpu", devices=1)
    with Preemption(fabric, signals="usr1") as preemption:
        assert signal.getsignal(signal.SIGTERM) is not preemption._note
        os.kill(os.getpid(), signal.SIGUSR1)
        assert preemption.signal == "SIGUSR1"


@pytest.mark.parametrize(
    ("signals", "says"),
    [(("SIGTRM",), "'SIGTRM', which is not a signal"), (("SIGKILL",), "no process can catch")],
)
def test_preemption_refuses_signals_it_cannot_catch(signals: tuple[str], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Preemption(Fabric(accelerator="cpu", devices=1), signals=signals)


def test_preemption_must_be_created_in_the_main_thread() -> None:
    errors: list[BaseException] = []
    fabric = Fabric(accelerator="cpu", devices=1)
    thread = threading.Thread(target=lambda: _catch(errors, lambda: Preemption(fabric)))
    thread.start()
    thread.join()
    assert isinstance(errors[0], RuntimeError) and "main thread" in str(errors[0])


def _catch(errors: list[BaseException], function: object) -> None:
    try:
        function()  # type: ignore[operator]
    except BaseException as error:
        errors.append(error)


def test_fabric_run_refuses_a_negative_grace_period(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text("")
    with pytest.raises(SystemExit) as exited:
        main(["run", "--grace-period", "-3", str(script)])
    assert exited.value.code == 2
    assert "'-3' is not a number of seconds: pass e.g. 25 (0 or more)" in capsys.readouterr().err


# -- who caused a failure ---------------------------------------------------------------------------


def test_the_rank_that_did_not_arrive_is_blamed_even_when_the_agent_stopped_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rank 0 waited and recorded why, through the error file torch's agent reads
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    record_for_agent(CollectiveTimeoutError("Rank 0: all_reduce timed out", "all_reduce", [1], [0]))
    waited = _failure_of(0, ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(error_file)))
    assert waited.blames == (1,) and waited.role == "waited"
    stopped = WorkerFailure(1, 1, -signal.SIGTERM, "")

    error = WorkersFailedError([waited, stopped])

    assert str(error) == (
        "Rank 1 (local rank 1) did not arrive at all_reduce; rank(s) 0 waited for it. "
        "See the output above for the error."
    )
    assert [f.global_rank for f in error.failures] == [1, 0]
    assert error.exitcode == 1  # not 143: that the agent then stopped it is a consequence


def test_a_stopped_launch_reports_the_signal_and_the_workers_killed_after_the_grace_period() -> None:
    clean = WorkersStoppedError(signal.SIGTERM, workers=2, grace_period=25, killed=0)
    assert clean.exitcode == 143
    assert str(clean) == (
        "received SIGTERM and passed it on to the 2 local worker(s); they exited within the 25 s grace period. "
        "Exit status 143."
    )
    late = WorkersStoppedError(signal.SIGUSR1, workers=2, grace_period=2.5, killed=1)
    assert late.exitcode == 138
    assert "1 of them did not exit within the 2.5 s grace period (--grace-period) and were killed" in str(
        late
    )


def test_the_agents_log_becomes_fabrics_lines(capsys: pytest.CaptureFixture[str]) -> None:
    agent = logging.getLogger("torch.distributed.elastic.agent.server.api")
    processes = logging.getLogger("torch.distributed.elastic.multiprocessing.api")
    with _agent_log("fabric run", max_restarts=3) as log:
        records = [
            agent.makeRecord(agent.name, logging.INFO, __file__, 1, "[%s] Worker group %s. %s/%s attempts left;"
                             " will restart worker group", ("default", "FAILED", 3, 3), None),
            agent.makeRecord(agent.name, logging.WARNING, __file__, 1, "Received %s death signal, shutting down "
                             "workers", (signal.SIGTERM,), None),
            processes.makeRecord(processes.name, logging.WARNING, __file__, 1, "Unable to shutdown process %s via "
                                 "%s, forcefully exiting via %s", (1, "SIGTERM", "SIGKILL"), None),
            agent.makeRecord(agent.name, logging.INFO, __file__, 1, "[%s] Rendezvous'ing worker group", ("x",), None),
        ]  # fmt: skip
        assert [log.filter(record) for record in records] == [False, False, False, False]
        assert log.killed == 1
        assert log.filter(agent.makeRecord(agent.name, logging.WARNING, __file__, 1, "other", (), None))
    assert capsys.readouterr().err == (
        "fabric run: a worker failed (its error is above); restarting all workers (restart 1 of 3).\n"
    )
    assert log not in agent.filters


# -- the report of a collective that timed out ------------------------------------------------------


def test_outside_a_process_group_a_watched_collective_is_unchanged() -> None:
    with pytest.raises(RuntimeError, match="Timed out waiting"), watched("all_reduce"):
        raise RuntimeError("Timed out waiting 3000ms for recv operation to complete")


def test_the_report_names_a_rank_in_another_collective_and_one_that_did_not_answer() -> None:
    stack = ['  File "train.py", line 9, in <module>\n    fabric.barrier()\n']
    verdict = {
        "op": "all_reduce",
        "seq": 7,
        "waited": 3.0,
        "missing": [1, 2],
        "waited_ranks": [0],
        "states": {
            "0": {"active": [7, "all_reduce"], "stack": stack},
            "1": {"active": [7, "barrier"], "stack": stack},
        },
    }
    message = str(_error_for(2, verdict))
    assert message.startswith(
        "Rank 2: all_reduce (collective #7) timed out after 3.0 s: rank(s) 1, 2 did not arrive; rank(s) 0 waited"
    )
    assert 'Rank 1 is in barrier (its collective #7) instead:\n    File "train.py", line 9' in message
    assert "Rank 2 did not answer within 10 s" in message
    assert "TORCH_DISTRIBUTED_DEBUG=DETAIL" in message
    assert json.loads(json.dumps(_error_for(2, verdict).agent_info)) == {
        "blame": [1, 2],
        "summary": "did not arrive at all_reduce; rank(s) 0 waited for it",
    }
