"""Launchers: how the processes of a multi-process strategy come to exist."""

from fabric_core.launchers.agent import AgentSettings, WorkerFailure, WorkersFailedError, run_agent
from fabric_core.launchers.elastic import ElasticLauncher, is_interactive
from fabric_core.launchers.launcher import Launcher

__all__ = [
    "AgentSettings",
    "ElasticLauncher",
    "Launcher",
    "WorkerFailure",
    "WorkersFailedError",
    "is_interactive",
    "run_agent",
]
