"""Forked workers start safely next to the agent's rendezvous store.

The agent forks its workers from a process whose store server thread answers the
workers that started first. Without `ForkGate`, a worker forked while that thread held a
C-library lock (``getnameinfo``) hung in its first connection to the store: with 8
workers on 2 cores, within a few launches. These launches are real (the elastic agent,
forked processes, the agent's TCP store).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

from fabric_core.testing import run_process

_LAUNCHES = textwrap.dedent(
    """
    import os
    import sys

    from fabric_core.launchers.agent import AgentSettings, run_agent
    from fabric_core.launchers.elastic import attempt_store


    def connect(fail_first_attempt: bool) -> int:
        if fail_first_attempt and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0" and os.environ["RANK"] == "3":
            sys.exit(1)
        store = attempt_store("127.0.0.1", int(os.environ["MASTER_PORT"]), 8, None)
        store.set(f"rank_{os.environ['RANK']}", "here")
        return int(os.environ["RANK"])


    if __name__ == "__main__":
        launches, restarts = int(sys.argv[1]), int(sys.argv[2])
        settings = AgentSettings(nproc_per_node=8, start_method="fork", max_restarts=restarts)
        for _ in range(launches):
            ranks = run_agent(settings, connect, [restarts > 0])
            assert sorted(ranks.values()) == list(range(8)), ranks
        print("all launches finished")
    """
)


def _launch(tmp_path: Path, launches: int, restarts: int) -> None:
    script = tmp_path / "launches.py"
    script.write_text(_LAUNCHES)
    result = run_process(
        [sys.executable, str(script), str(launches), str(restarts)], timeout=90, merge_output=True
    )
    assert result.returncode == 0, result.stdout
    assert "all launches finished" in result.stdout


def test_eight_forked_workers_connect_to_the_agents_store_in_every_launch(tmp_path: Path) -> None:
    _launch(tmp_path, launches=20, restarts=0)


def test_a_restarted_attempt_passes_the_gate_again(tmp_path: Path) -> None:
    """Rank 3 fails the first attempt; the agent restarts all 8 workers, which meet again."""
    _launch(tmp_path, launches=2, restarts=1)
